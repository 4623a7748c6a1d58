// Goal: a data disk filled by a client never costs the cluster a vote. Three ./sheepdog sheep,
// 3 copies, sheep 2's DIR on a 40 MiB tmpfs; a client fills it through NBD until writes fail with
// "No space left on device"; then sheep 1 is killed. Sheep 2 must persist the new epoch (its
// object store keeps the last METADATA_RESERVE_BYTES free of data), so sheeps 0 and 2 are the
// majority of the old view: the cluster goes on running, sheep 2 a voting member of it, and data
// writes go on failing cleanly with ENOSPC while what was written reads back. Before the reserve,
// sheep 2 logged "Cannot persist the epoch log: ENOSPC", left, and sheep 0 was cut off.
// Method: the herd of e2e/herd.ts with sheep 2's DIR a symlink to a tmpfs mounted for the test
// (needs root; skipped otherwise), qemu-io as the client.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fsp from "node:fs/promises";
import process from "node:process";
import { tempDir } from "../harness.ts";
import { run } from "../nbd/tools.ts";
import { Herd } from "./herd.ts";

function exec(command: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(command, args, (error, _stdout, stderr) => {
      resolve(
        error ? `${command} ${args.join(" ")}: ${stderr.trim() || error.message}` : undefined,
      );
    });
  });
}

/** Mounts a tmpfs of `size` on a new temp dir; the dir, or why it cannot. */
async function mountTmpfs(size: string): Promise<{ dir: string } | { problem: string }> {
  if (process.getuid?.() !== 0) return { problem: "not root" };
  const dir = await tempDir("sd-e2e-tmpfs-");
  const problem = await exec("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]);
  if (problem === undefined) return { dir };
  await fsp.rm(dir, { recursive: true, force: true });
  return { problem };
}

const probe = await mountTmpfs("1m");
if ("dir" in probe) {
  await exec("umount", [probe.dir]);
  await fsp.rm(probe.dir, { recursive: true, force: true });
} else console.error(`full_disk_test: skipped (${probe.problem})`);

/** One qemu-io command on `uri` (raw). */
function qemuIo(command: string, uri: string) {
  return run("qemu-io", ["-f", "raw", "-c", command, uri]);
}

Deno.test({
  name:
    "a sheep whose data disk a client filled keeps its epoch log and its vote when another sheep dies",
  ignore: "problem" in probe,
  fn: async () => {
    const tmpfs = await mountTmpfs("40m");
    assert.ok("dir" in tmpfs, "problem" in tmpfs ? tmpfs.problem : "");
    try {
      await Herd.with(
        { prepare: (herd) => fsp.symlink(tmpfs.dir, herd.dirs[2]!) },
        async (herd) => {
          await herd.img(["create", "vm", "64M"]);
          const first = await qemuIo("write -P 0x61 0 8M", herd.nbdUri(0, "vm"));
          assert.equal(first.code, 0, first.stderr);
          const fill = await qemuIo("write -P 0x5a 8M 56M", herd.nbdUri(0, "vm"));
          assert.notEqual(fill.code, 0, "64 MiB do not fit on a 40 MiB disk");
          assert.match(fill.stdout + fill.stderr, /No space left on device/);
          assert.match(
            herd.log(2),
            /the disk is full \(the last 8 MB stay free for the epoch log\)/,
          );

          await herd.kill9(1);
          const epoch = await herd.waitView(2);
          const info = await herd.cluster(2);
          assert.equal(info?.status, "running");
          assert.deepEqual(info?.nodes.sort(), [herd.id(0), herd.id(2)].sort());
          assert.ok(epoch >= 2);
          assert.doesNotMatch(herd.log(2), /Cannot persist the epoch log|left the cluster/);
          assert.doesNotMatch(herd.log(0), /cut off/);

          const write = await qemuIo("write -P 0x33 48M 4M", herd.nbdUri(2, "vm"));
          assert.notEqual(write.code, 0);
          assert.match(write.stdout + write.stderr, /No space left on device/);
          const read = await qemuIo("read -P 0x61 0 8M", herd.nbdUri(2, "vm"));
          assert.equal(read.code, 0, read.stdout + read.stderr);
          // A change of the cluster (a new VDI) still goes through the majority.
          await herd.img(["create", "vm2", "16M"], 2);
        },
      );
    } finally {
      await exec("umount", [tmpfs.dir]);
      await fsp.rm(tmpfs.dir, { recursive: true, force: true });
    }
  },
});
