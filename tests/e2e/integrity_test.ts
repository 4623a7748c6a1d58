// Goal (issue 8): data integrity as separate processes. Three `sheep` daemons on loopback (seeds
// pointing at each other, no multicast, a 1.5 s failure timeout) survive kill -9 and restarts,
// serve the newest data from every node afterwards, repair a rotted replica from a good one,
// refuse to serve rot they cannot repair, and never lose a write whose flush was acknowledged.
// Method: real NBD clients (qemu-io, fio's nbd engine, libnbd's Python binding) against each
// sheep's own NBD port; recovery is awaited through `shepherd info -t recovery --json`; at the
// end every node is read and every object's replicas on disk are compared. Needs qemu-utils, fio
// (with its nbd engine) and python3-libnbd. Test 4's kill schedule is seeded: it prints the seed,
// and SHEEPDOG_TEST_SEED=N replays it.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type ChildProcessByStdio, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import * as readline from "node:readline";
import type { Readable } from "node:stream";
import { randomBytes } from "../harness.ts";
import { sheepdog } from "./cli.ts";
import { eventually, Herd, procState, runTool, seededRandom, testSeed } from "./herd.ts";

const VDI = "Disk";
const MiB = 1 << 20;
const OBJECT = 4 * MiB;
const PYTHON = "/usr/bin/python3";
const RECORDS = path.resolve(new URL("./nbd_records.py", import.meta.url).pathname);
/** Records nbd_records.py places (64 KiB each, 256 MiB in all). */
const RECORD_SLOTS = 4096;

let toolsChecked: Promise<void> | undefined;

/** The NBD clients these tests drive; a missing one fails loudly with the package to install. */
function requireClients(): Promise<void> {
  toolsChecked ??= (async () => {
    const missing: string[] = [];
    for (const [tool, pkg] of [["qemu-io", "qemu-utils"], ["fio", "fio"]]) {
      const r = await runTool("/bin/sh", ["-c", `command -v ${tool}`]);
      if (r.code !== 0) missing.push(pkg!);
    }
    if ((await runTool(PYTHON, ["-c", "import nbd"])).code !== 0) missing.push("python3-libnbd");
    const engines = await runTool("fio", ["--enghelp"]).catch(() => undefined);
    if (engines && engines.code === 0 && !/\bnbd\b/.test(engines.stdout)) {
      missing.push("fio with the nbd engine");
    }
    if (missing.length > 0) {
      throw new Error(`integrity tests need: apt-get install ${missing.join(" ")}`);
    }
  })();
  return toolsChecked;
}

/** qemu-io on an NBD URI with `-c` commands; resolves with its status and output. */
function qemuIo(uri: string, commands: string[]) {
  return runTool("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), uri]);
}

/** qemu-io that must succeed and verify every pattern it was given. */
async function qemuIoOk(uri: string, commands: string[]): Promise<void> {
  const r = await qemuIo(uri, commands);
  const what = `qemu-io ${commands.join("; ")} on ${uri}`;
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stdout, /Pattern verification failed|failed/, `${what}:\n${r.stdout}`);
}

interface ReadResult {
  data: Uint8Array;
  /** [offset, length, errno, message] of every chunk that failed. */
  failed: [number, number, number | string, string][];
}

/** Reads a range through libnbd in `chunk`-byte requests; failed chunks are reported, not fatal. */
async function nbdRead(
  herd: Herd,
  uri: string,
  offset: number,
  length: number,
  chunk = MiB,
): Promise<ReadResult> {
  const out = path.join(herd.root, `read-${offset}-${length}.raw`);
  const r = await runTool(PYTHON, [
    RECORDS,
    "read",
    uri,
    String(offset),
    String(length),
    out,
    String(chunk),
  ]);
  assert.equal(r.code, 0, `reading ${uri} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  const data = new Uint8Array(await fsp.readFile(out));
  await fsp.rm(out);
  return { data, failed: JSON.parse(r.stdout).failed };
}

/** Where `a` and `b` first differ, for messages. */
function firstDifference(a: Uint8Array, b: Uint8Array): string {
  if (a.length !== b.length) return `lengths ${a.length} and ${b.length}`;
  const i = a.findIndex((x, k) => x !== b[k]);
  return i < 0 ? "equal" : `first difference at byte ${i}: ${a[i]} vs ${b[i]}`;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(
    Buffer.from(b.buffer, b.byteOffset, b.length),
  );
}

/** The data objects (bit 63 clear) a sheep holds, with their index in the VDI. */
function dataObjects(herd: Herd, i: number): { oid: string; index: number }[] {
  return herd.objects(i)
    .filter((oid) => parseInt(oid[0]!, 16) < 8)
    .map((oid) => ({ oid, index: parseInt(oid.slice(8), 16) }));
}

/** Flips one byte of a file in place (under the running sheep) and returns its old value. */
function flipByte(file: string, position: number): number {
  const fd = fs.openSync(file, "r+");
  try {
    const byte = Buffer.alloc(1);
    assert.equal(fs.readSync(fd, byte, 0, 1, position), 1, `${file} is shorter than ${position}`);
    const old = byte[0]!;
    byte[0] = old ^ 0xff;
    fs.writeSync(fd, byte, 0, 1, position);
    fs.fsyncSync(fd);
    return old;
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `data` at offset 0 of the VDI through sheep `via`'s NBD port, then flushes. */
async function writeImage(herd: Herd, via: number, data: Uint8Array): Promise<void> {
  const source = path.join(herd.root, "source.raw");
  await fsp.writeFile(source, data);
  await qemuIoOk(herd.nbdUri(via, VDI), [`write -s ${source} 0 ${data.length}`, "flush"]);
  await fsp.rm(source);
}

/** Fails with every problem found (so one run shows the state of every node). */
function assertNoProblems(problems: string[], what: string): void {
  assert.deepEqual(problems, [], `${what}:\n  ${problems.join("\n  ")}`);
}

Deno.test("integrity: a restarted sheep serves the data written while it was dead", async () => {
  await requireClients();
  await Herd.with({ prefix: "sd-e2e-restart-" }, async (herd) => {
    await herd.img(["create", VDI, "64M"]);
    await qemuIoOk(herd.nbdUri(0, VDI), ["write -P 0xaa 0 8M", "flush"]);
    await herd.kill9(2);
    await qemuIoOk(herd.nbdUri(0, VDI), ["write -P 0xbb 0 8M", "flush"]);
    await herd.startSheep(2);
    await herd.waitRecovered();

    const problems: string[] = [];
    for (let i = 0; i < herd.size; i++) {
      const r = await qemuIo(herd.nbdUri(i, VDI), ["read -P 0xbb 0 8M", "read -P 0 8M 56M"]);
      if (r.code !== 0 || /failed/.test(r.stdout)) {
        problems.push(`sheep ${i}: ${(r.stdout + r.stderr).trim().replaceAll("\n", " | ")}`);
      }
    }
    problems.push(...herd.replicaProblems());
    assertNoProblems(problems, "after restarting sheep 2, every sheep must serve 0xbb");
  });
});

Deno.test("integrity: a rotted replica is detected on read and repaired (3 copies)", async () => {
  await requireClients();
  await Herd.with({ prefix: "sd-e2e-rot3-" }, async (herd) => {
    await herd.img(["create", VDI, "64M"]);
    const image = randomBytes(16 * MiB);
    await writeImage(herd, 0, image);
    assertNoProblems(herd.replicaProblems(), "replicas before the rot");

    const objects = dataObjects(herd, 1);
    assert.equal(objects.length, 4, `16 MiB is 4 data objects: ${objects.map((o) => o.oid)}`);
    const victim = objects[1]!;
    const position = OBJECT / 2;
    const offset = victim.index * OBJECT + position;
    const old = flipByte(herd.objectPath(1, victim.oid), position);
    assert.equal(old, image[offset], "an object file holds the object's bytes at their offsets");

    const problems: string[] = [];
    // First the 4 KiB around the flipped byte alone: a short read the sheep answers at once when
    // its copy verifies (net/nbd/session.ts `#readNow`), and through the gateway when it does not.
    const block = offset - (offset % 4096);
    const small = await nbdRead(herd, herd.nbdUri(1, VDI), block, 4096, 4096);
    if (small.failed.length > 0 || !equal(small.data, image.subarray(block, block + 4096))) {
      problems.push(
        `the 4 KiB read of the rotted block through sheep 1: ${
          small.failed.length > 0 ? `failed: ${small.failed[0]}` : "other bytes than were written"
        }`,
      );
    }
    const read = await nbdRead(herd, herd.nbdUri(1, VDI), 0, image.length);
    for (const [off, len, errno, message] of read.failed) {
      problems.push(`read of [${off}, +${len}) through sheep 1 failed: errno ${errno} ${message}`);
    }
    if (!equal(read.data, image)) {
      const at = read.data.findIndex((x, k) => x !== image[k]);
      problems.push(
        `sheep 1 returned other bytes than were written: ${firstDifference(read.data, image)}` +
          (at === offset ? " (the flipped byte)" : ""),
      );
    }
    assertNoProblems(problems, "reading through sheep 1 must return what was written");

    const repaired = new RegExp(`repaired object ${victim.oid}`);
    await eventually(
      `sheep 1's log to say /${repaired.source}/`,
      () => Promise.resolve(repaired.test(herd.log(1))),
      10_000,
    );
    let last: string[] = [];
    await eventually(
      "the rotted replica to equal the others on disk again",
      () => Promise.resolve((last = herd.replicaProblems()).length === 0),
      10_000,
      () => last.join("; "),
    );
  });
});

Deno.test("integrity: with 1 copy, rot is an I/O error, never wrong data", async () => {
  await requireClients();
  await Herd.with({ prefix: "sd-e2e-rot1-", nodes: 1, copies: 1 }, async (herd) => {
    await herd.img(["create", VDI, "64M"]);
    const image = randomBytes(16 * MiB);
    await writeImage(herd, 0, image);
    const objects = dataObjects(herd, 0);
    assert.equal(objects.length, 4, `16 MiB is 4 data objects: ${objects.map((o) => o.oid)}`);
    const victim = objects[1]!;
    const position = OBJECT / 2 + 123;
    const offset = victim.index * OBJECT + position;
    const old = flipByte(herd.objectPath(0, victim.oid), position);
    assert.equal(old, image[offset], "an object file holds the object's bytes at their offsets");

    const problems: string[] = [];
    const uri = herd.nbdUri(0, VDI);
    // qemu-io: the 4 KiB around the flipped byte (twice: the error must not go away by itself).
    const block = offset - (offset % 4096);
    for (const attempt of [1, 2]) {
      const r = await qemuIo(uri, [`read ${block} 4k`]);
      if (r.code === 0 || !/read failed: Input\/output error/.test(r.stdout + r.stderr)) {
        problems.push(
          `qemu-io read ${block} 4k (attempt ${attempt}): status ${r.code}, ` +
            (r.stdout + r.stderr).trim().replaceAll("\n", " | "),
        );
      }
    }
    // libnbd, in 64 KiB requests over the whole image: only requests within the rotted object
    // may fail, with EIO, and the one covering the flipped byte must; every byte returned must
    // be the byte written.
    const read = await nbdRead(herd, uri, 0, image.length, 64 * 1024);
    const covering = (o: number, l: number) => o <= offset && offset < o + l;
    const inVictim = (o: number) => o >= victim.index * OBJECT && o < (victim.index + 1) * OBJECT;
    if (!read.failed.some(([o, l]) => covering(o, l))) {
      problems.push(`reading [${offset - (offset % 65536)}, +64k) succeeded despite the rot`);
    }
    for (const [o, l, errno, message] of read.failed) {
      if (!inVictim(o)) {
        problems.push(`[${o}, +${l}) of another object failed: errno ${errno} ${message}`);
      } else if (errno !== 5 && errno !== "EIO") {
        problems.push(`[${o}, +${l}) failed with errno ${errno} (${message}), want EIO (5)`);
      }
    }
    const failed = (k: number) => read.failed.some(([o, l]) => o <= k && k < o + l);
    for (let k = 0; k < image.length; k += 65536) {
      if (failed(k)) continue;
      if (!equal(read.data.subarray(k, k + 65536), image.subarray(k, k + 65536))) {
        problems.push(
          `[${k}, +64k) returned wrong data` + (covering(k, 65536) ? " (the flipped byte)" : ""),
        );
      }
    }
    assertNoProblems(problems, "a rotted object with no other copy");
  });
});

Deno.test("integrity: 1 MiB reads are verified in a checksum worker, which ends with the sheep", async () => {
  // With a worker (the default beyond two cores; asked for here, since this host may have two),
  // the executable verifies reads of 128 KiB and more in a worker thread (started on the first
  // one): the thread appears, rot is still found, and SIGTERM ends the process, worker and all.
  await requireClients();
  const options = {
    prefix: "sd-e2e-workers-",
    nodes: 1,
    copies: 1,
    sheepArgs: ["--checksum-workers", "1"],
  };
  await Herd.with(options, async (herd) => {
    const pid = herd.pids[0]!;
    const threads = () => fs.readdirSync(`/proc/${pid}/task`).length;
    const before = threads(); // nothing large read yet
    await herd.img(["create", VDI, "64M"]);
    const image = randomBytes(16 * MiB);
    await writeImage(herd, 0, image);
    const uri = herd.nbdUri(0, VDI);
    const read = await nbdRead(herd, uri, 0, image.length, MiB);
    assertNoProblems(read.failed.map((f) => f.join(" ")), "1 MiB reads of good data");
    assert.ok(equal(read.data, image), `other bytes: ${firstDifference(read.data, image)}`);
    assert.ok(threads() > before, `a checksum worker thread started (${before} threads before)`);

    const victim = dataObjects(herd, 0)[2]!;
    const position = 3 * MiB + 77;
    flipByte(herd.objectPath(0, victim.oid), position);
    const rotted = await nbdRead(herd, uri, victim.index * OBJECT + 3 * MiB, MiB, MiB);
    assert.deepEqual(
      rotted.failed.map(([, , errno]) => errno === 5 ? "EIO" : errno),
      ["EIO"],
      "the 1 MiB read over the rot is an I/O error",
    );
    assert.doesNotMatch(herd.log(0), /checksum worker/, "no worker died");

    process.kill(pid, "SIGTERM");
    await eventually(
      `sheep 0 (pid ${pid}) to exit on SIGTERM`,
      () => Promise.resolve(procState(pid) === undefined),
      10_000,
      () => `It is in state ${procState(pid)}`,
    );
    herd.pids[0] = undefined;
  });
});

/**
 * Writes numbered records through one NBD URI with nbd_records.py, a flush after each, and keeps
 * the numbers of those whose flush returned. If the writer fails before `stop()`, the failure is
 * kept and a new writer goes on with the next record (so one run shows every symptom).
 */
class RecordStream {
  readonly acked: number[] = [];
  /** Writer failures before `stop()`. */
  readonly failures: string[] = [];
  /** Output of the last writer (its error line, after `stop()`). */
  lastOutput = "";
  readonly done: Promise<void>;
  #next = 0;
  #stopping = false;
  #finished = false;
  #child: ChildProcessByStdio<null, Readable, Readable> | undefined;
  #waiters: { count: number; resolve: () => void }[] = [];

  constructor(readonly uri: string, readonly seed: number) {
    this.done = this.#loop();
  }

  async #loop(): Promise<void> {
    try {
      while (!this.#stopping && this.#next < RECORD_SLOTS && this.failures.length < 5) {
        const first = this.#next;
        const { code, output } = await this.#runWriter(first);
        this.lastOutput = output;
        if (code !== 0 && !this.#stopping) {
          this.failures.push(`writer from record ${first} exited ${code}: ${output.trim()}`);
        }
      }
    } finally {
      this.#finished = true;
      this.#wake();
    }
  }

  #runWriter(first: number): Promise<{ code: number | null; output: string }> {
    const args = [RECORDS, "write", this.uri, String(this.seed), String(first)];
    const child = spawn(PYTHON, [...args, String(RECORD_SLOTS - first)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#child = child;
    let output = "";
    child.stderr.on("data", (chunk) => (output += String(chunk)));
    const lines = readline.createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const ack = /^ack (\d+)$/.exec(line);
      const error = /^error (\d+) /.exec(line);
      if (ack) {
        this.acked.push(Number(ack[1]));
        this.#next = Number(ack[1]) + 1;
      } else {
        output += line + "\n";
        if (error) this.#next = Number(error[1]) + 1; // that record stays unacknowledged
      }
      this.#wake();
    });
    const closed = new Promise<void>((resolve) => lines.on("close", resolve));
    return new Promise((resolve) => {
      child.on("exit", (code) => closed.then(() => resolve({ code, output })));
    });
  }

  #wake(): void {
    this.#waiters = this.#waiters.filter((w) => {
      if (this.acked.length < w.count && !this.#finished) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves once `count` records are acknowledged; fails if writing ends first. */
  async waitAcks(count: number, timeoutMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      new Promise<void>((resolve) => {
        this.#waiters.push({ count, resolve });
        this.#wake();
      }),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no ${count} acknowledged records after ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    assert.ok(
      this.acked.length >= count,
      `writing stopped after ${this.acked.length} records, before ${count}: ` +
        this.failures.join("; "),
    );
  }

  /** No new writer from now on (the current one ends when its sheep dies). */
  stop(): void {
    this.#stopping = true;
  }

  /** Stops and kills the current writer (cleanup). */
  async kill(): Promise<void> {
    this.stop();
    const child = this.#child;
    if (child && child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid!, "SIGKILL"); // by PID: ChildProcess.kill closes stdin first
    }
    await this.done;
  }
}

Deno.test("integrity: writes whose flush was acknowledged survive kill -9 of two sheep", async () => {
  await requireClients();
  const seed = testSeed();
  const random = seededRandom(seed);
  console.log(`kill -9 schedule seed ${seed} (rerun with SHEEPDOG_TEST_SEED=${seed})`);
  await Herd.with({ prefix: "sd-e2e-flush-" }, async (herd) => {
    await herd.img(["create", VDI, "256M"]);
    const killSheep1After = 20 + Math.floor(random() * 80);
    const killSheep0After = 20 + Math.floor(random() * 120);
    const stream = new RecordStream(herd.nbdUri(0, VDI), seed);
    try {
      await stream.waitAcks(killSheep1After, 30_000);
      await new Promise((resolve) => setTimeout(resolve, random() * 30)); // a random point of a write
      const atKill1 = stream.acked.length;
      await herd.kill9(1);
      await herd.waitView(2);
      await herd.startSheep(1);
      // Writes go on while sheep 1 rejoins and recovers; then the writer's own sheep dies.
      await stream.waitAcks(Math.min(stream.acked.length + killSheep0After, RECORD_SLOTS), 60_000);
      // Sheep 1 must be back in the view first: killed before it was (a loaded machine, its join
      // still settling), sheep 2 alone is a minority of the last view {0, 2} and waits for sheep
      // 0 by design, which the wait below does not start.
      await herd.waitView(3);
      await new Promise((resolve) => setTimeout(resolve, random() * 30));
      const atKill0 = stream.acked.length;
      stream.stop();
      await herd.kill9(0);
      await stream.done;
      console.log(
        `kill -9 of sheep 1 after ${atKill1} and of sheep 0 after ${atKill0} acknowledged ` +
          `records; ${stream.acked.length} acknowledged in all; the last writer said: ` +
          stream.lastOutput.trim(),
      );
      assert.ok(atKill0 < RECORD_SLOTS, "every record was written before sheep 0 was killed");
    } finally {
      await stream.kill();
    }
    await herd.waitView(2);
    await herd.startSheep(0);
    await herd.waitRecovered();

    const acked = [...stream.acked];
    const list = path.join(herd.root, "acked.txt");
    await fsp.writeFile(list, acked.join("\n"));
    const problems = stream.failures.map((f) => `before sheep 0 was killed, ${f}`);
    for (let i = 0; i < herd.size; i++) {
      const r = await runTool(PYTHON, [RECORDS, "verify", herd.nbdUri(i, VDI), String(seed), list]);
      if (r.code !== 0) {
        problems.push(`sheep ${i}: verify failed (${r.code}): ${r.stdout}${r.stderr}`);
        continue;
      }
      const result = JSON.parse(r.stdout) as { checked: number; bad: number[]; errors: unknown[] };
      assert.equal(result.checked, acked.length);
      if (result.bad.length > 0) {
        problems.push(
          `sheep ${i}: ${result.bad.length} of ${acked.length} acknowledged records read back ` +
            `wrong: ${result.bad.slice(0, 20).join(", ")}${result.bad.length > 20 ? "..." : ""}`,
        );
      }
      if (result.errors.length > 0) {
        problems.push(`sheep ${i}: read errors ${JSON.stringify(result.errors.slice(0, 5))}`);
      }
    }
    problems.push(...herd.replicaProblems());
    assertNoProblems(problems, `acknowledged records after kill -9 (seed ${seed})`);
  });
});

Deno.test("integrity: fio verify through every sheep after kill -9 chaos", async () => {
  await requireClients();
  await Herd.with({ prefix: "sd-e2e-chaos-" }, async (herd) => {
    await herd.img(["create", VDI, "64M"]);
    const fio = (via: number, extra: string[]) =>
      runTool("fio", [
        "--name=chaos",
        "--ioengine=nbd",
        `--uri=${herd.nbdUri(via, VDI)}`,
        ...["--rw=randwrite", "--bs=64k", "--size=64m", "--iodepth=4", "--randseed=8"],
        ...["--verify=crc32c", "--verify_state_save=0", "--end_fsync=1"],
        ...extra,
      ], { timeoutMs: 100_000, cwd: herd.root });
    // About 32 s of writes at 2 MiB/s: long enough for three kill -9 rounds (~3 s each here) to
    // land inside it.
    let writing = true;
    const write = fio(0, ["--do_verify=0", "--rate=2m"]).finally(() => (writing = false));
    const killedWhileWriting: boolean[] = [];
    for (const victim of [1, 2, 1]) {
      const started = Date.now();
      await herd.kill9(victim);
      killedWhileWriting.push(writing);
      await herd.waitView(2);
      const noticed = Date.now();
      await herd.startSheep(victim);
      await herd.waitRecovered();
      console.log(
        `kill -9 of sheep ${victim}: noticed in ${noticed - started} ms, restarted and ` +
          `recovered in ${Date.now() - noticed} ms`,
      );
    }
    const written = await write;
    const problems: string[] = [];
    if (written.code !== 0) {
      problems.push(
        `fio write through sheep 0 failed (${written.timedOut ? "timed out" : written.code}): ` +
          (written.stdout + written.stderr).split("\n").filter((l) => /err|fail/i.test(l))
            .slice(0, 5).join(" | "),
      );
    }
    assert.deepEqual(
      killedWhileWriting,
      [true, true, true],
      "every kill -9 must land while fio writes (the rounds took too long?)",
    );
    await herd.waitRecovered();
    for (let i = 0; i < herd.size; i++) {
      const r = await fio(i, ["--verify_only=1"]);
      if (r.code !== 0) {
        problems.push(
          `fio verify through sheep ${i} failed (${r.timedOut ? "timed out" : r.code}): ` +
            (r.stdout + r.stderr).split("\n").filter((l) => /verify/i.test(l)).slice(0, 2)
              .join(" | "),
        );
      }
    }
    problems.push(...herd.replicaProblems());
    assertNoProblems(problems, "fio verify after kill -9 chaos");
  });
});

Deno.test("integrity: rot and scrubs on one sheep while fio writes through another lose no write", async () => {
  // The repair of a rotted copy and a client's writes reach the copy through different gateways,
  // whose locks do not exclude each other. A whole-copy repair read before a write and put in
  // place after it lost that write (the data-path simulation's seed 18724; by hand, fio's verify
  // failed in one of two runs on the build before the fix); and once repairs refused to replace
  // a copy that changed meanwhile, every repair of a busy object gave up. Now the scrub heals
  // the rotted blocks in place.
  await requireClients();
  await Herd.with({ prefix: "sd-e2e-rotrace-" }, async (herd) => {
    await herd.img(["create", VDI, "64M"]);
    let writing = true;
    const write = runTool("fio", [
      "--name=rotrace",
      "--ioengine=nbd",
      `--uri=${herd.nbdUri(0, VDI)}`,
      ...["--rw=randwrite", "--bs=4k", "--size=64m", "--iodepth=16", "--randseed=11"],
      ...["--verify=crc32c", "--verify_state_save=0", "--do_verify=1", "--verify_fatal=1"],
      ...["--time_based=0", "--loops=2"],
    ], { timeoutMs: 120_000, cwd: herd.root }).finally(() => (writing = false));
    const random = seededRandom(testSeed());
    let flips = 0;
    let scrubs = 0;
    while (writing) {
      const objects = dataObjects(herd, 2);
      if (objects.length > 0) {
        const victim = objects[Math.floor(random() * objects.length)]!;
        const file = herd.objectPath(2, victim.oid);
        const size = fs.statSync(file).size;
        if (size > 0) {
          flipByte(file, Math.floor(random() * size));
          flips++;
        }
      }
      await herd.shepherd(["cluster", "scrub", VDI], 2);
      scrubs++;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const written = await write;
    const problems: string[] = [];
    if (written.code !== 0) {
      problems.push(
        `fio through sheep 0 failed (${written.timedOut ? "timed out" : written.code}): ` +
          (written.stdout + written.stderr).split("\n").filter((l) => /err|fail|verify/i.test(l))
            .slice(0, 5).join(" | "),
      );
    }
    assert.ok(flips >= 5, `only ${flips} bytes flipped while fio wrote`);
    // A scrub started in the loop may have passed an object before its last flip: two more. The
    // first may report a pass the loop started (a node already scrubbing reports its running
    // pass), which a flip landing between a heal and its check leaves "not repaired" (once in
    // seven runs on 2026-11-30): only the last counts.
    await sheepdog(["shepherd", "cluster", "scrub", "--wait", "--cluster", herd.id(2)]);
    const final = await sheepdog([
      "shepherd",
      "cluster",
      "scrub",
      "--wait",
      "--cluster",
      herd.id(2),
    ]);
    if (final.code !== 0) problems.push(`the last scrub: ${final.stdout}${final.stderr}`);
    problems.push(...herd.replicaProblems());
    console.log(`${flips} bytes flipped on sheep 2, ${scrubs} scrubs started while fio wrote`);
    assertNoProblems(problems, "rot and scrubs while writing");
  });
});
