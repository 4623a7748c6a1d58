/**
 * Runs the built ./sheepdog as a separate process, as a user would.
 *
 * @module
 */

import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { freePort } from "../harness.ts";
export { freePort };

export const EXECUTABLE = path.resolve(new URL("../../sheepdog", import.meta.url).pathname);

export function requireExecutable(): void {
  if (!fs.existsSync(EXECUTABLE)) {
    throw new Error(`${EXECUTABLE} is missing: run 'npm run build' first (npm test does)`);
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `./sheepdog ARGS` with a clean environment plus `env`. */
export function sheepdog(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(EXECUTABLE, args, {
      env: { PATH: "/usr/bin:/bin", ...env },
      timeout: 60_000,
      maxBuffer: 1 << 26,
    }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Stops a daemon we started, by the pid it wrote. */
export async function stopDaemon(dir: string): Promise<void> {
  const pidFile = path.join(dir, "sheep.pid");
  const pid = Number(fs.readFileSync(pidFile, "utf8").trim());
  process.kill(pid, "SIGTERM");
  for (let i = 0; i < 100 && fs.existsSync(pidFile); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
}
