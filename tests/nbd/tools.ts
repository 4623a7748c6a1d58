/**
 * Running the real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy) from tests. They are
 * required: CI installs qemu-utils and libnbd-bin, and a missing one fails loudly.
 *
 * @module
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";

const TOOL_TIMEOUT_MS = 20_000;
const OUTPUT_BYTES_MAX = 16 * 1024 * 1024;
export const TOOLS = ["qemu-io", "qemu-img", "nbdinfo", "nbdcopy"];

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a tool; resolves with its exit code and output (rejects only if it could not run). */
export function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { timeout: TOOL_TIMEOUT_MS, maxBuffer: OUTPUT_BYTES_MAX, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err !== null && typeof err.code !== "number") {
          reject(new Error(`${cmd} ${args.join(" ")}: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err === null ? 0 : Number(err.code), stdout, stderr });
      },
    );
  });
}

/** Runs a tool that must succeed (and, for qemu-io, verify its patterns); returns stdout. */
export async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  assert.equal(r.code, 0, `${cmd} ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stdout, /Pattern verification failed/, `${cmd} ${args.join(" ")}`);
  return r.stdout;
}

let toolsChecked: Promise<void> | null = null;

/** Fails with the install hint when a client is missing. */
export function requireTools(): Promise<void> {
  toolsChecked ??= (async () => {
    const missing: string[] = [];
    for (const tool of TOOLS) {
      const r = await run("/bin/sh", ["-c", `command -v ${tool}`]);
      if (r.code !== 0) missing.push(tool);
    }
    if (missing.length > 0) {
      throw new Error(
        `NBD interoperability tests need ${missing.join(", ")} on PATH ` +
          `(Debian/Ubuntu: apt-get install qemu-utils libnbd-bin)`,
      );
    }
  })();
  return toolsChecked;
}
