// Goal: QEMU 5.2's own sheepdog block driver, the last QEMU that had one, works against the built
// ./sheepdog: create, I/O, convert, snapshots (create, list, read, revert, delete), clones,
// discard, resize, map, a snapshot taken under a running client, two clients on one VDI, and a
// client across a sheep restart; nothing a driver operation does loses or corrupts data.
// Method: one daemonised sheep on a free loopback port; /tmp/q52/qemu-img and qemu-io (built by
// ../shared/tools/qemu52/build.sh) run as separate processes, a long-running qemu-io is driven
// one command at a time on its stdin; data is checked with qemu-io patterns, convert round
// trips and the object files in the sheep's directory.
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { randomBytes, tempDir } from "../harness.ts";
import { freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";

/** Where build.sh puts them (its default; QEMU52_DIR for another place). */
const QEMU_DIR = Deno.env.get("QEMU52_DIR") ?? "/tmp/q52";
const QEMU_IMG = path.join(QEMU_DIR, "qemu-img");
const QEMU_IO = path.join(QEMU_DIR, "qemu-io");
const MiB = 1 << 20;

function requireQemu52(): void {
  if (!fs.existsSync(QEMU_IMG) || !fs.existsSync(QEMU_IO)) {
    throw new Error(
      `${QEMU_IMG} is missing: run ../shared/tools/qemu52/build.sh ${QEMU_DIR} (QEMU 5.2 with its sheepdog driver, ~5 min once)`,
    );
  }
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Without what QEMU prints on every use of the driver: its deprecation warning, the warning about
 * a probed raw image, and the one about a backing file without a format (`-F sheepdog` crashes
 * QEMU 5.2's sheepdog create, `-F raw` is refused by it).
 */
function quiet(text: string): string {
  const noise = new RegExp(
    "sheepdog block driver is deprecated|Image format was not specified|" +
      "Automatically detecting the format|Specify the 'raw' format|" +
      "backing file without explicit backing format",
  );
  return text.split("\n").filter((line) => !noise.test(line)).join("\n");
}

function run(file: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 60_000, maxBuffer: 1 << 26 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolve({ code, stdout, stderr: quiet(stderr) });
    });
  });
}

/** A qemu-io that stays open, fed one command at a time (it reads one line per wake-up). */
class QemuIoSession {
  readonly #child: ChildProcess;
  #stdout = "";
  #stderr = "";
  #seen = 0;
  #exit: Promise<number>;
  #wake: (() => void) | undefined;

  private constructor(uri: string) {
    this.#child = spawn(QEMU_IO, ["-f", "raw", uri], { stdio: ["pipe", "pipe", "pipe"] });
    this.#child.stdout!.on("data", (chunk: Uint8Array) => {
      this.#stdout += new TextDecoder().decode(chunk);
      this.#wake?.();
    });
    this.#child.stderr!.on("data", (chunk: Uint8Array) => {
      this.#stderr += new TextDecoder().decode(chunk);
    });
    this.#exit = new Promise((resolve) => {
      this.#child.on("exit", (code) => {
        resolve(code ?? 1);
        this.#wake?.();
      });
    });
  }

  /** Opens `uri`; resolves at the first prompt, rejects if qemu-io exits first. */
  static async open(uri: string): Promise<QemuIoSession> {
    const session = new QemuIoSession(uri);
    await session.#prompt(30_000);
    return session;
  }

  /** Everything qemu-io wrote to stderr so far, without the deprecation warnings. */
  get stderr(): string {
    return quiet(this.#stderr);
  }

  async #prompt(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void this.#exit.then(() => exited = true);
    for (;;) {
      const end = this.#stdout.indexOf("qemu-io> ", this.#seen);
      if (end >= 0) {
        const output = this.#stdout.slice(this.#seen, end);
        this.#seen = end + "qemu-io> ".length;
        return output;
      }
      if (exited) throw new Error(`qemu-io exited: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`qemu-io did not answer: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 200);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Runs one command; resolves with what it printed on stdout. */
  async run(command: string, timeoutMs = 30_000): Promise<string> {
    this.#child.stdin!.write(command + "\n");
    return await this.#prompt(timeoutMs);
  }

  /** Runs a command that must succeed (no failed pattern check, no error). */
  async ok(command: string, timeoutMs?: number): Promise<void> {
    const out = await this.run(command, timeoutMs);
    assert.doesNotMatch(out, /verification failed|failed|error/i, `${command}: ${out}`);
  }

  async quit(): Promise<number> {
    this.#child.stdin!.end("quit\n");
    return await this.#exit;
  }

  /**
   * kill -9 by PID. Deno's `ChildProcess.kill` closes the child's stdin before signalling it,
   * so qemu-io could read EOF, quit cleanly and release its VDI first (4 of 20 in a probe).
   */
  kill(): void {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    process.kill(this.#child.pid!, "SIGKILL");
  }
}

Deno.test("e2e: QEMU 5.2's sheepdog driver against ./sheepdog", async (t) => {
  requireExecutable();
  requireQemu52();
  const dir = await tempDir("sd-q52-");
  const sheepDir = path.join(dir, "sd");
  const port = await freePort();
  const cluster = `127.0.0.1:${port}`;
  const uri = (name: string) => `sheepdog://${cluster}/${name}`;
  const sessions: QemuIoSession[] = [];
  const startSheep = async () => {
    const started = await sheepdog([
      ...["sheep", sheepDir, "--host", "127.0.0.1", "--port", String(port)],
      ...["--multicast", "off", "--no-http", "--no-nbd"],
    ]);
    assert.equal(started.code, 0, started.stderr);
  };
  const sd = async (args: string[]) => {
    const result = await sheepdog([...args, "--cluster", cluster]);
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  const img = async (args: string[]) => {
    const result = await run(QEMU_IMG, args);
    assert.equal(result.code, 0, `qemu-img ${args.join(" ")}: ${result.stderr}`);
    assert.equal(result.stderr.trim(), "", `qemu-img ${args.join(" ")} complained`);
    return result.stdout;
  };
  /** qemu-io with `-c` commands, each of which must succeed (patterns verified). */
  const io = async (
    target: string,
    commands: string[],
    options: { readOnly?: boolean; cache?: string } = {},
  ) => {
    const args = ["-f", "raw", ...(options.readOnly ? ["-r"] : [])];
    if (options.cache) args.push("-t", options.cache);
    for (const command of commands) args.push("-c", command);
    const result = await run(QEMU_IO, [...args, target]);
    const what = `qemu-io ${commands.join("; ")} on ${target}`;
    assert.equal(result.code, 0, `${what}: ${result.stderr}`);
    assert.doesNotMatch(result.stdout, /verification failed|failed/i, `${what}: ${result.stdout}`);
    assert.equal(result.stderr.trim(), "", `${what} complained`);
  };
  const vdis = async (): Promise<{ name: string; vid: number; tag: string; snapshot: boolean }[]> =>
    JSON.parse(await sd(["shepherd", "info", "-t", "vdi", "--json"]));
  /** The data objects of `vid` stored in the sheep's directory, by index. */
  const objectsOf = async (vid: number): Promise<number[]> => {
    const prefix = "00" + vid.toString(16).padStart(6, "0");
    return (await fsp.readdir(path.join(sheepDir, "obj")))
      .filter((name) => name.length === 16 && name.startsWith(prefix))
      .map((name) => parseInt(name.slice(8), 16)).sort((a, b) => a - b);
  };
  try {
    await startSheep();
    await sd(["shepherd", "mkfs", "--copies=1"]);

    await t.step("create, info, write and read patterns, reopen", async () => {
      await img(["create", "-f", "sheepdog", uri("Alice"), "64M"]);
      assert.match(await img(["info", uri("Alice")]), /virtual size: 64 MiB/);
      await io(uri("Alice"), [
        "write -P 0x5a 0 5M",
        "write -P 0xa5 20M 1M",
        "read -P 0x5a 0 5M",
        "read -P 0xa5 20M 1M",
      ]);
      await io(uri("Alice"), ["read -P 0x5a 0 5M", "read -P 0 5M 15M", "read -P 0xa5 20M 1M"]);
      assert.match(await img(["info", uri("Alice")]), /disk size: 12 MiB/);
    });

    await t.step(
      "cache=none: the driver sends DIRECT writes and no flush; they read back",
      async () => {
        // The sheep makes each DIRECT write durable before answering (request_handlers_test.ts
        // checks that against a power loss); here the real driver's requests must go through.
        await img(["create", "-f", "sheepdog", uri("Direct"), "16M"]);
        await io(uri("Direct"), ["write -P 0x3c 0 6M", "write -P 0xc3 8M 64k", "flush"], {
          cache: "none",
        });
        await io(uri("Direct"), ["read -P 0x3c 0 6M", "read -P 0 6M 2M", "read -P 0xc3 8M 64k"]);
      },
    );

    await t.step("convert raw to sheepdog and back: the same bytes", async () => {
      const raw = path.join(dir, "in.raw");
      const image = new Uint8Array(14 * MiB);
      image.set(randomBytes(3 * MiB), MiB);
      image.set(randomBytes(64 * 1024), 13 * MiB);
      await fsp.writeFile(raw, image);
      await img(["convert", "-f", "raw", "-O", "sheepdog", raw, uri("Imported")]);
      const out = path.join(dir, "out.raw");
      await img(["convert", "-O", "raw", uri("Imported"), out]);
      assert.deepEqual(new Uint8Array(await fsp.readFile(out)), image);
    });

    await t.step("snapshot -c and -l; NAME#TAG reads the snapshot", async () => {
      await img(["snapshot", "-c", "snap1", uri("Alice")]);
      await io(uri("Alice"), ["write -P 0x77 0 1M"]);
      assert.match(await img(["snapshot", "-l", uri("Alice")]), /^1\s+snap1\s/m);
      await io(uri("Alice#snap1"), ["read -P 0x5a 0 5M", "read -P 0xa5 20M 1M"], {
        readOnly: true,
      });
      await io(uri("Alice"), ["read -P 0x77 0 1M", "read -P 0x5a 1M 4M"]);
    });

    await t.step("clone from NAME#TAG reads through, writes stay in the clone", async () => {
      await img(["create", "-f", "sheepdog", "-b", uri("Alice#snap1"), uri("Charlie")]);
      await io(uri("Charlie"), ["read -P 0x5a 0 5M", "write -P 0x33 2M 1M"]);
      await io(uri("Charlie"), ["read -P 0x5a 0 2M", "read -P 0x33 2M 1M", "read -P 0x5a 3M 2M"]);
      await io(uri("Alice#snap1"), ["read -P 0x5a 0 5M"], { readOnly: true });
    });

    await t.step("snapshot -a (revert): the working VDI reads the snapshot's data", async () => {
      await img(["snapshot", "-a", "snap1", uri("Alice")]);
      await io(uri("Alice"), ["read -P 0x5a 0 5M", "read -P 0xa5 20M 1M"]);
      assert.match(await img(["snapshot", "-l", uri("Alice")]), /^1\s+snap1\s/m);
      // The revert left nothing attached.
      assert.match(await sd(["shepherd", "info", "-t", "vm"]), /^Alice\s.*not running/m);
      await io(uri("Charlie"), ["read -P 0x33 2M 1M", "read -P 0x5a 3M 2M"]);
    });

    await t.step("snapshot -d drops what only the snapshot had; the rest reads right", async () => {
      await img(["create", "-f", "sheepdog", uri("Eve"), "32M"]);
      await io(uri("Eve"), ["write -P 0x11 0 8M"]);
      await img(["snapshot", "-c", "s1", uri("Eve")]);
      await io(uri("Eve"), ["write -P 0x22 0 4M"]);
      await img(["snapshot", "-c", "s2", uri("Eve")]);
      await img(["create", "-f", "sheepdog", "-b", uri("Eve#s2"), uri("Frank")]);
      await io(uri("Eve"), ["write -P 0x33 0 4M", "write -P 0x44 28M 4M"]);
      const s1 = (await vdis()).find((v) => v.name === "Eve" && v.tag === "s1")!;
      // s1 owns objects 0 (0x11, overwritten everywhere since) and 1 (0x11, still shared).
      assert.deepEqual(await objectsOf(s1.vid), [0, 1]);

      await img(["snapshot", "-d", "s1", uri("Eve")]);
      assert.doesNotMatch(await img(["snapshot", "-l", uri("Eve")]), /\ss1\s/);
      assert.deepEqual(await objectsOf(s1.vid), [1], "only the object nobody else reads goes");
      await io(uri("Eve"), ["read -P 0x33 0 4M", "read -P 0x11 4M 4M", "read -P 0x44 28M 4M"]);
      await io(uri("Eve#s2"), ["read -P 0x22 0 4M", "read -P 0x11 4M 4M"], { readOnly: true });
      await io(uri("Frank"), ["read -P 0x22 0 4M", "read -P 0x11 4M 4M", "read -P 0 8M 24M"]);

      // The driver opened on the snapshot itself (its table is the one it zeroes then).
      await img(["snapshot", "-d", "s2", uri("Eve#s2")]);
      assert.doesNotMatch(await img(["snapshot", "-l", uri("Eve")]), /\ss2\s/);
      await io(uri("Frank"), ["read -P 0x22 0 4M", "read -P 0x11 4M 4M"]);
      await io(uri("Eve"), ["read -P 0x33 0 4M", "read -P 0x11 4M 4M", "read -P 0x44 28M 4M"]);
    });

    await t.step(
      "discard makes whole objects holes and frees them; map and reads agree",
      async () => {
        await img(["create", "-f", "sheepdog", uri("Gina"), "64M"]);
        await io(uri("Gina"), ["write -P 0x11 0 12M"]);
        const gina = (await vdis()).find((v) => v.name === "Gina")!;
        assert.deepEqual(await objectsOf(gina.vid), [0, 1, 2]);
        await io(uri("Gina"), ["discard 4M 4M", "read -P 0 4M 4M"]);
        assert.deepEqual(await objectsOf(gina.vid), [0, 2], "the discarded object is reclaimed");
        const map = JSON.parse(await img(["map", "--output=json", uri("Gina")]));
        const data = map.filter((e: { data: boolean }) => e.data)
          .map((e: { start: number; length: number }) => [e.start, e.length]);
        assert.deepEqual(data, [[0, 4 * MiB], [8 * MiB, 4 * MiB]]);
        await io(uri("Gina"), ["read -P 0x11 0 4M", "read -P 0 4M 4M", "read -P 0x11 8M 4M"]);
        assert.match(await img(["info", uri("Gina")]), /disk size: 8 MiB/);
      },
    );

    await t.step("resize grows the VDI, and a snapshot keeps the new size", async () => {
      await img(["resize", uri("Gina"), "128M"]);
      assert.match(await img(["info", uri("Gina")]), /virtual size: 128 MiB/);
      await io(uri("Gina"), ["write -P 0x66 100M 1M", "read -P 0x66 100M 1M"]);
      await img(["snapshot", "-c", "grown", uri("Gina")]);
      assert.match(await img(["info", uri("Gina")]), /virtual size: 128 MiB/);
      assert.match(await sd(["img", "info", "Gina"]), /virtual size: 128 MB/);
      await io(uri("Gina"), ["read -P 0x66 100M 1M", "read -P 0x11 0 4M"]);
    });

    await t.step("a snapshot taken under a running client: its writes follow", async () => {
      await img(["create", "-f", "sheepdog", uri("Hank"), "64M"]);
      const session = await QemuIoSession.open(uri("Hank"));
      sessions.push(session);
      await session.ok("write -P 0x11 0 8M");
      await sd(["img", "snapshot", "-c", "under", "Hank"]);
      // Writes into objects the snapshot now owns are refused (READONLY); the driver reloads
      // its inode and sends them again as copy-on-write. A refusal carrying a payload would
      // leave bytes in the stream that the driver reads as the next reply's header.
      await session.ok("write -P 0x22 0 64k");
      await session.ok("write -P 0x33 4M 64k");
      await session.ok("read -P 0x22 0 64k");
      await session.ok("read -P 0x11 64k 64k");
      await session.ok("read -P 0x33 4M 64k");
      assert.equal(await session.quit(), 0);
      assert.equal(session.stderr.trim(), "", "no reply misread, no reconnect");
      await io(uri("Hank#under"), ["read -P 0x11 0 8M"], { readOnly: true });
      await io(uri("Hank"), ["read -P 0x22 0 64k", "read -P 0x11 64k 64k", "read -P 0x33 4M 64k"]);
    });

    await t.step("two clients on one VDI: the second gets 'VDI is already locked'", async () => {
      // Sheepdog 1.0 let every client attach unless the cluster was formatted with locking
      // (`cluster format -l`); then a second LOCK_VDI of a locked VDI was refused, whoever sent
      // it, and QEMU failed to open the image. One writer per VDI is our rule: we do as 1.0 -l.
      const first = await QemuIoSession.open(uri("Hank"));
      sessions.push(first);
      const second = await run(QEMU_IO, ["-f", "raw", "-c", "read 0 4k", uri("Hank")]);
      assert.notEqual(second.code, 0);
      assert.match(second.stderr, /cannot get vdi info, VDI is already locked, Hank/);
      // Nor can anything else take the VDI from under it.
      const revert = await run(QEMU_IMG, ["snapshot", "-a", "under", uri("Hank")]);
      assert.notEqual(revert.code, 0);
      assert.match(revert.stderr, /VDI is already locked/);
      const removed = await sheepdog(["shepherd", "vdi", "delete", "Hank", "--cluster", cluster]);
      assert.equal(removed.code, 1);
      assert.match(removed.stderr, /Cannot delete 'Hank': it is attached by 127\.0\.0\.1/);
      assert.match(await sd(["shepherd", "info", "-t", "vm"]), /^Hank\s.*running on 127\.0\.0\.1/m);
      await first.ok("write -P 0x44 8M 1M");
      assert.equal(await first.quit(), 0);
      await io(uri("Hank"), ["read -P 0x44 8M 1M"]);
    });

    await t.step(
      "a client killed while attached: the VDI stays attached until unlocked",
      async () => {
        const session = await QemuIoSession.open(uri("Hank"));
        sessions.push(session);
        session.kill();
        assert.match(
          await sd(["shepherd", "info", "-t", "vm"]),
          /^Hank\s.*running on 127\.0\.0\.1/m,
        );
        const refused = await run(QEMU_IO, ["-f", "raw", "-c", "read 0 4k", uri("Hank")]);
        assert.match(refused.stderr, /VDI is already locked/);
        assert.match(
          await sd(["shepherd", "vdi", "unlock", "Hank"]),
          /Released Hank \(attached by 127\.0\.0\.1\)/,
        );
        await io(uri("Hank"), ["read -P 0x44 8M 1M"]);
      },
    );

    await t.step("a client across a sheep restart reconnects and resends", async () => {
      await img(["create", "-f", "sheepdog", uri("Ivy"), "64M"]);
      const session = await QemuIoSession.open(uri("Ivy"));
      sessions.push(session);
      await session.ok("write -P 0x11 0 4M");
      const pid = Number((await fsp.readFile(path.join(sheepDir, "sheep.pid"), "utf8")).trim());
      process.kill(pid, "SIGKILL");
      await waitUntilGone(pid);
      // Sent while the sheep is down: the driver retries the connection every second and sends
      // it again once the sheep is back.
      const pending = session.run("write -P 0x22 1M 1M", 60_000);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await startSheep();
      assert.match(await pending, /wrote 1048576\/1048576 bytes at offset 1048576/, session.stderr);
      await session.ok("read -P 0x11 0 1M");
      await session.ok("read -P 0x22 1M 1M");
      await session.ok("write -P 0x33 40M 4M");
      await session.ok("read -P 0x11 2M 2M");
      assert.equal(await session.quit(), 0);
      assert.match(session.stderr, /Failed to connect to '127\.0\.0\.1:\d+': Connection refused/);
      await io(uri("Ivy"), ["read -P 0x11 0 1M", "read -P 0x22 1M 1M", "read -P 0x33 40M 4M"]);
    });
  } finally {
    for (const session of sessions) session.kill();
    await stopDaemon(sheepDir).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

/** Waits until `pid` is gone or a zombie (a daemon is not our child: init reaps it). */
async function waitUntilGone(pid: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const status = await fsp.readFile(`/proc/${pid}/status`, "utf8").catch(() => "State:\tX");
    if (/^State:\s+[ZX]/m.test(status)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`sheep ${pid} did not exit`);
}
