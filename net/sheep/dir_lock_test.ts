import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { DirLock } from "./dir_lock.ts";

/** A process that forks a child which exits at once and is never reaped: a zombie. */
async function withZombie(fn: (pid: number) => Promise<void>): Promise<void> {
  const parent = spawn("/usr/bin/python3", [
    "-c",
    "import os, sys, time\npid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid, flush=True)\ntime.sleep(60)",
  ], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const pid = await new Promise<number>((resolve, reject) => {
      parent.stdout!.once("data", (chunk) => resolve(Number(String(chunk).trim())));
      parent.once("error", reject);
    });
    // Wait until the child really is a zombie.
    for (;;) {
      const stat = await fsp.readFile(`/proc/${pid}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await fn(pid);
  } finally {
    parent.kill("SIGKILL");
    await new Promise((resolve) => parent.once("exit", resolve));
  }
}

Deno.test("DirLock: a lock held by a live process is refused; by a dead or zombie one, taken over", async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-lock-"));
  try {
    const lockFile = path.join(dir, "lock");
    // Our own pid stands for a live sheep.
    await fsp.writeFile(lockFile, `${process.pid} 127.0.0.1:7000\n`);
    await assert.rejects(
      DirLock.acquire(dir, "me"),
      /locked by another sheep \(pid \d+, 127\.0\.0\.1:7000\)/,
    );
    await withZombie(async (pid) => {
      await fsp.writeFile(lockFile, `${pid} 127.0.0.1:7000\n`);
      const lock = await DirLock.acquire(dir, "me");
      assert.match(await fsp.readFile(lockFile, "utf8"), new RegExp(`^${process.pid} me`));
      await lock.release();
    });
    await fsp.writeFile(lockFile, "999999999 gone\n");
    await (await DirLock.acquire(dir, "me")).release();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
