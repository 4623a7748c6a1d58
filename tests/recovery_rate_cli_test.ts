/**
 * `sheep --recovery-rate`: sizes with K/M/G (and "/s"), "off", and bad values refused with one
 * line and status 2 before anything is made (no directory, no daemon).
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { recoveryRate } from "../cmd/sheep.ts";
import { UsageError } from "../cmd/cli.ts";
import { RECOVERY_BYTES_PER_SECOND_BUSY } from "../core/limits.ts";

const MiB = 2 ** 20;
const exe = new URL("../sheepdog", import.meta.url).pathname;

Deno.test("sheep --recovery-rate: sizes, 'off' (never paced), and values refused", () => {
  assert.equal(recoveryRate("32M"), RECOVERY_BYTES_PER_SECOND_BUSY);
  assert.equal(recoveryRate("1G/s"), 1024 * MiB);
  assert.equal(recoveryRate("off"), 0);
  assert.throws(() => recoveryRate("fast"), UsageError);
  assert.throws(() => recoveryRate("-1M"), UsageError);
  assert.throws(() => recoveryRate("0"), /at least 1M/);
  assert.throws(() => recoveryRate("512K"), /at least 1M/);
});

Deno.test("sheep with a bad --recovery-rate says why in one line and starts nothing", async () => {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "sd-rate-")), "sheep");
  try {
    for (const bad of ["fast", "512K", ""]) {
      const run = await new Deno.Command(exe, {
        args: ["sheep", dir, "--host", "127.0.0.1", "--recovery-rate", bad],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(run.code, 2, bad);
      const first = new TextDecoder().decode(run.stderr).split("\n")[0]!;
      assert.match(first, /^sheep: Invalid --recovery-rate '.*': /, bad);
      assert.equal(fs.existsSync(dir), false, "nothing made");
    }
  } finally {
    fs.rmSync(path.dirname(dir), { recursive: true, force: true });
  }
});
