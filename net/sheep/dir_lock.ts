/**
 * One sheep per directory: `DIR/lock` holds the owner's pid, created exclusively. A lock whose
 * process is gone is stale and taken over, so a crash never blocks the next start.
 *
 * @module
 */

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { ResultCode, SheepdogError } from "../../core/errors.ts";

/**
 * True while `pid` runs. A killed sheep that its parent has not reaped yet is a zombie: it
 * still answers signal 0 but holds nothing, so it does not count (where /proc tells).
 */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // "pid (comm) S ...": the state follows the last ')' (comm may contain spaces or parens).
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

/** A held directory lock. */
export class DirLock {
  readonly file: string;

  private constructor(file: string) {
    this.file = file;
  }

  /** Takes the lock of `dir`; throws naming the owner when another live sheep holds it. */
  static async acquire(dir: string, owner: string): Promise<DirLock> {
    const file = path.join(dir, "lock");
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await fsp.writeFile(file, `${process.pid} ${owner}\n`, { flag: "wx" });
        return new DirLock(file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const text = await fsp.readFile(file, "utf8").catch(() => "");
      const pid = Number(text.split(" ")[0]);
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
        throw new SheepdogError(
          ResultCode.SYSTEM_ERROR,
          `Cannot use ${dir}: it is locked by another sheep (pid ${pid}, ${
            text.trim().split(" ")[1] ?? "?"
          })`,
        );
      }
      await fsp.rm(file, { force: true }); // Stale: its process is gone.
    }
    throw new SheepdogError(
      ResultCode.SYSTEM_ERROR,
      `Cannot lock ${dir}: lock file keeps changing`,
    );
  }

  async release(): Promise<void> {
    await fsp.rm(this.file, { force: true });
  }
}
