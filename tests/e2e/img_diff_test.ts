// Goal: incremental backup in Ceph's rbd diff format as a user meets it, with the built
// ./sheepdog and Ceph's own `rbd`: our diffs are ones `rbd merge-diff` reads and merges, and
// applying the merged diff gives the same bytes as applying both in turn and as the source; a
// nightly backup (full export-diff, a day's writes through NBD, an incremental one) restores
// byte-equal into a fresh VDI; every bad diff is refused with one line before anything is
// written, and leaves the VDI as it was.
// Method: a daemonised sheep on a temp dir and free loopback ports (NBD on); the real rbd
// (ceph-common, `rbd -c /dev/null merge-diff` works on files, no Ceph cluster) and qemu-io.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import {
  encodeDataRecordHead,
  encodeDiffEnd,
  encodeDiffHeader,
} from "../../core/format/rbd_diff.ts";
import { randomBytes, tempDir } from "../harness.ts";
import { RawClient } from "../nbd/raw_client.ts";
import { ok as tool, requireTools, run } from "../nbd/tools.ts";
import { EXECUTABLE, freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";

const MiB = 2 ** 20;

/** `rbd` is required: CI installs ceph-common, so a missing one fails here, loudly. */
async function requireRbd(): Promise<void> {
  const found = await run("/bin/sh", ["-c", "command -v rbd"]);
  if (found.code !== 0) {
    throw new Error(
      "the rbd diff interoperability test needs Ceph's 'rbd' on PATH " +
        "(Debian/Ubuntu: apt-get install ceph-common; .ci/run installs it)",
    );
  }
}

/** Runs ./sheepdog with stdin from a file (or nothing) and stdout as bytes. */
function sheepdogBytes(
  args: string[],
  env: Record<string, string>,
  stdinFile?: string,
): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const input = stdinFile === undefined ? "ignore" : fs.openSync(stdinFile, "r");
    const child = spawn(EXECUTABLE, args, {
      env: { PATH: "/usr/bin:/bin", ...env },
      stdio: [input, "pipe", "pipe"],
    });
    if (typeof input === "number") fs.closeSync(input); // the child has its own copy
    const out: Buffer[] = [];
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => out.push(chunk));
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out), stderr }));
  });
}

Deno.test("e2e: rbd diffs with ./sheepdog and Ceph's rbd; nightly backup; bad diffs refused", async (t) => {
  requireExecutable();
  await requireTools();
  await requireRbd();
  const dir = await tempDir("sd-e2e-diff-");
  const sheepDir = path.join(dir, "sd0");
  const spool = path.join(dir, "tmp");
  await fsp.mkdir(spool);
  const port = await freePort();
  let nbdPort = await freePort();
  while (nbdPort === port) nbdPort = await freePort();
  // TMPDIR: where import-diff spools standard input (checked empty after each use).
  const env = { SHEEPDOG_CLUSTER: `127.0.0.1:${port}`, TMPDIR: spool };
  const ok = async (args: string[]) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")} failed: ${result.stderr}`);
    return result.stdout;
  };
  const file = (name: string) => path.join(dir, name);
  const spooled = async () =>
    (await fsp.readdir(spool)).filter((name) => name.startsWith("sheepdog-import-diff-"));
  const bytesOf = async (vdi: string) => {
    const out = file(`export-${Math.random().toString(36).slice(2)}.raw`);
    await ok(["img", "convert", "-O", "raw", vdi, out]);
    const bytes = await fsp.readFile(out);
    await fsp.rm(out);
    return bytes;
  };
  const sameBytes = (a: Uint8Array, b: Uint8Array, what: string) => {
    assert.equal(a.length, b.length, `${what}: lengths`);
    assert.ok(Buffer.from(a).equals(Buffer.from(b)), `${what}: bytes differ`);
  };
  const nbd = (vdi: string) => `nbd://127.0.0.1:${nbdPort}/${encodeURIComponent(vdi)}`;
  try {
    await ok([
      ...["sheep", sheepDir, "--host", "127.0.0.1", "--port", String(port)],
      ...["--multicast", "off", "--no-http", "--nbd-port", String(nbdPort)],
    ]);
    await ok(["shepherd", "mkfs", "--copies=1"]);

    // Monday's image: data in objects 0-1, a zero run inside it, data at 30 MiB.
    const monday = new Uint8Array(48 * MiB);
    monday.set(randomBytes(6 * MiB), 0);
    monday.fill(0, 2 * MiB, 2 * MiB + 256 * 1024);
    monday.set(randomBytes(100_000), 30 * MiB + 12345);
    // Tuesday: some of it rewritten, a range zeroed, new data past Monday's last object.
    const tuesday = monday.slice();
    tuesday.set(randomBytes(50_000), 1 * MiB + 777);
    tuesday.fill(0, 4 * MiB, 6 * MiB);
    tuesday.set(randomBytes(3 * MiB), 40 * MiB);
    await fsp.writeFile(file("monday.raw"), monday);
    await fsp.writeFile(file("tuesday.raw"), tuesday);

    await t.step("rbd merge-diff merges our diffs; every way of applying them agrees", async () => {
      await ok(["img", "create", "Src", "48M"]);
      await ok(["img", "convert", "-n", file("monday.raw"), "Src"]);
      await ok(["img", "snapshot", "-c", "mon", "Src"]);
      await ok(["img", "export-diff", "Src:mon", file("full.diff")]);
      // `img convert -n` rewrites every data block: only those that differ go in the diff.
      await ok(["img", "convert", "-n", file("tuesday.raw"), "Src"]);
      await ok(["img", "snapshot", "-c", "tue", "Src"]);
      const summary = await ok([
        ...["img", "export-diff", "-p", "--from-snap", "mon", "Src:tue", file("inc.diff")],
      ]);
      assert.match(summary, /of diff in [\d.]+ s/);
      const incSize = (await fsp.stat(file("inc.diff"))).size;
      assert.ok(incSize < 3 * MiB + 50_000 + 4 * 4096 + 200, `incremental is small: ${incSize}`);

      const listed = JSON.parse(
        await ok(["img", "diff", "--from-snap", "mon", "Src:tue", "--json"]),
      );
      // Object 1 (4-8 MiB) is all zeros now: convert dropped it, a whole-object zero extent.
      assert.deepEqual(listed.filter((e: { exists: string }) => e.exists === "false"), [
        { offset: 4 * MiB, length: 4 * MiB, exists: "false" },
      ]);
      assert.ok(listed.some((e: { offset: number }) => e.offset === 40 * MiB));

      await tool("rbd", [
        ...["-c", "/dev/null", "merge-diff", "--no-progress"],
        ...[file("full.diff"), file("inc.diff"), file("merged.diff")],
      ]);
      // The merged diff into a VDI import-diff creates; both diffs in turn into another.
      assert.match(
        await ok(["img", "import-diff", file("merged.diff"), "Merged"]),
        /Applied \d+ records to 'Merged': .* snapshot 'tue' taken/,
      );
      await ok(["img", "import-diff", file("full.diff"), "Chain"]);
      await ok(["img", "import-diff", file("inc.diff"), "Chain"]);
      const source = await bytesOf("Src:tue");
      sameBytes(source, tuesday, "Src:tue and tuesday.raw");
      sameBytes(await bytesOf("Merged:tue"), source, "merged diff applied");
      sameBytes(await bytesOf("Chain:tue"), source, "both diffs applied");
      sameBytes(await bytesOf("Chain:mon"), monday, "the full diff applied");
      const snapshots = await ok(["img", "snapshot", "-l", "Chain"]);
      assert.match(snapshots, /1 +mon .*\n2 +tue /);
    });

    await t.step("export-diff to standard output and import-diff from standard input", async () => {
      const piped = await sheepdogBytes(
        ["img", "export-diff", "--from-snap", "mon", "Src:tue", "-"],
        env,
      );
      assert.equal(piped.code, 0, piped.stderr);
      sameBytes(piped.stdout, await fsp.readFile(file("inc.diff")), "stdout and file exports");
      await ok(["img", "import-diff", file("full.diff"), "Piped"]);
      const applied = await sheepdogBytes(
        ["img", "import-diff", "-", "Piped"],
        env,
        file("inc.diff"),
      );
      assert.equal(applied.code, 0, applied.stderr);
      sameBytes(await bytesOf("Piped:tue"), tuesday, "applied from standard input");
      assert.deepEqual(await spooled(), [], "the spooled copy is removed");
    });

    await t.step("bad diffs are refused in one line; the VDI is left as it was", async () => {
      await ok(["img", "import-diff", file("full.diff"), "Target"]);
      const before = await bytesOf("Target");
      const snapshotsBefore = await ok(["img", "snapshot", "-l", "Target"]);
      const inc = await fsp.readFile(file("inc.diff"));
      const header = encodeDiffHeader({ from: "mon", to: "tue", size: 48 * MiB });
      assert.ok(Buffer.from(header).equals(inc.subarray(0, header.length)), "our header");
      const record = (kind: "w" | "z", offset: number, length: number) =>
        kind === "z"
          ? encodeDataRecordHead({ kind, offset, length })
          : Buffer.concat([encodeDataRecordHead({ kind, offset, length }), randomBytes(length)]);
      const crafted = (...records: Uint8Array[]) =>
        Buffer.concat([header, ...records, encodeDiffEnd()]);
      const unknownTag = Buffer.from(inc);
      unknownTag[header.length] = "q".charCodeAt(0);
      const otherFrom = Buffer.concat([
        encodeDiffHeader({ from: "sunday", to: "tue", size: 48 * MiB }),
        inc.subarray(header.length),
      ]);
      const noSize = Buffer.concat([
        encodeDiffHeader({ from: "mon", to: "tue" }),
        record("w", 48 * MiB, 4096),
        encodeDiffEnd(),
      ]);
      const cases: [string, Uint8Array, RegExp][] = [
        ["truncated", inc.subarray(0, inc.length - 1000), /truncated at byte \d+ \(in the data/],
        [
          "bad header",
          Buffer.concat([Buffer.from("RBD DIFF V1\n"), inc.subarray(12)]),
          /does not start with "rbd diff v1"/,
        ],
        ["unknown tag", unknownTag, /unknown record tag 0x71 \('q'\) at byte 37$/],
        [
          "other from",
          otherFrom,
          /from snapshot 'sunday' to 'Target': its latest snapshot is 'mon'$/,
        ],
        [
          "past the size",
          crafted(record("w", 48 * MiB - 4096, 8192)),
          /ends past the image size 50331648/,
        ],
        ["past the VDI", noSize, /its records reach byte 50335744, past the VDI's 50331648 bytes$/],
        [
          "overlapping",
          crafted(record("w", 0, 8192), record("z", 4096, 4096)),
          /overlaps the record before it \(0\+8192\)$/,
        ],
        ["out of order", crafted(record("z", MiB, 4096), record("w", 0, 4096)), /is out of order/],
      ];
      for (const [what, bytes, pattern] of cases) {
        const bad = file(`bad-${what.replaceAll(" ", "-")}.diff`);
        await fsp.writeFile(bad, bytes);
        // From a file, and from standard input.
        for (const stdin of [false, true]) {
          const result = stdin
            ? await sheepdogBytes(["img", "import-diff", "-", "Target"], env, bad)
            : await sheepdogBytes(["img", "import-diff", bad, "Target"], env);
          const how = `${what}${stdin ? " (standard input)" : ""}`;
          assert.equal(result.code, 1, `${how}: ${result.stderr}`);
          assert.match(result.stderr.trim(), pattern, how);
          assert.equal(result.stderr.trim().split("\n").length, 1, `${how}: one line`);
        }
      }
      assert.deepEqual(await spooled(), [], "no spooled copy is left behind");
      sameBytes(await bytesOf("Target"), before, "the refused diffs changed nothing");
      assert.equal(await ok(["img", "snapshot", "-l", "Target"]), snapshotsBefore);
      // A VDI written after its snapshot, and one a client has attached, are refused too.
      // (A diff of the working VDI since 'tue': no "to" name, so no snapshot is taken.)
      await ok(["img", "convert", "-n", file("monday.raw"), "Src"]);
      await ok(["img", "export-diff", "--from-snap", "tue", "Src", file("wed.diff")]);
      assert.match(
        await ok(["img", "import-diff", file("wed.diff"), "Chain"]),
        /Applied \d+ records to 'Chain': [^,]*, [^,]* zeroed$/m,
      );
      sameBytes(await bytesOf("Chain"), monday, "Chain after the diff of the working VDI");
      const written = await sheepdog(["img", "import-diff", file("wed.diff"), "Src"], env);
      assert.equal(written.code, 1);
      assert.equal(
        written.stderr,
        "img: Cannot apply a diff to 'Src': it was written after its snapshot 'tue' " +
          "(revert it with 'img snapshot -a tue' first)\n",
      );
      const holder = await RawClient.connect({ port: nbdPort });
      try {
        await holder.start();
        await holder.go("Target");
        const attached = await sheepdog(["img", "import-diff", file("inc.diff"), "Target"], env);
        assert.equal(attached.code, 1);
        assert.match(
          attached.stderr,
          /^img: Cannot write into 'Target': it is attached by 127\.0\.0\.1:\d+; detach it first\n$/,
        );
      } finally {
        await holder.destroy();
      }
      sameBytes(await bytesOf("Target"), before, "the attached VDI is untouched");
      // Once the client is gone the same diff applies.
      for (let attempt = 0;; attempt++) {
        const result = await sheepdog(["img", "import-diff", file("inc.diff"), "Target"], env);
        if (result.code === 0) break;
        assert.ok(attempt < 50 && /attached/.test(result.stderr), result.stderr);
        await new Promise((resolve) => setTimeout(resolve, 100)); // the detach is asynchronous
      }
      sameBytes(await bytesOf("Target:tue"), tuesday, "applied once detached");
    });

    await t.step(
      "nightly backup: full, a day's writes through NBD, incremental, restored",
      async () => {
        await ok(["img", "create", "VM Disk", "64M"]);
        await tool("qemu-io", [
          ...["-f", "raw", "-c", "write -P 0x11 0 5M", "-c", "write -P 0x22 20M 1M"],
          ...["-c", "write -P 0x33 63M 1M", nbd("VM Disk")],
        ]);
        await ok(["img", "snapshot", "-c", "night-1", "VM Disk"]);
        await ok(["img", "export-diff", "VM Disk:night-1", file("night-1.diff")]);
        // A day: rewrites, new data, a zeroed range and a discard.
        await tool("qemu-io", [
          ...["-f", "raw", "-c", "write -P 0x44 1M 4k", "-c", "write -P 0x55 40M 3M"],
          ...["-c", "write -z 2M 2M", "-c", "discard 20M 1M", nbd("VM Disk")],
        ]);
        await ok(["img", "snapshot", "-c", "night-2", "VM Disk"]);
        await ok([
          ...["img", "export-diff", "--from-snap", "night-1", "VM Disk:night-2"],
          file("night-2.diff"),
        ]);
        const incremental = (await fsp.stat(file("night-2.diff"))).size;
        assert.ok(incremental < 4 * MiB + 4096 + 1000, `the day's diff is small: ${incremental}`);
        await ok(["img", "import-diff", file("night-1.diff"), "Restored"]);
        await ok(["img", "import-diff", file("night-2.diff"), "Restored"]);
        const original = await bytesOf("VM Disk:night-2");
        sameBytes(await bytesOf("Restored:night-2"), original, "restored from two nights");
        sameBytes(await bytesOf("Restored:night-1"), await bytesOf("VM Disk:night-1"), "night 1");
        await tool("qemu-io", ["-f", "raw", "-r", "-c", "read -P 0x55 40M 3M", nbd("Restored")]);
      },
    );
  } finally {
    await stopDaemon(sheepDir).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
