/**
 * `sheep --checksum-workers N`: values 0..CHECKSUM_WORKERS_MAX, the flag winning over
 * SHEEPDOG_CHECKSUM_WORKERS, bad values refused with one line and status 2 before anything is
 * made; and what a sheep with a worker pool reports in /metrics after a large read.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { checksumWorkers } from "../cmd/sheep.ts";
import { UsageError } from "../cmd/cli.ts";
import { CHECKSUM_OFFLOAD_BYTES_MIN, CHECKSUM_WORKERS_MAX } from "../core/limits.ts";
import { checksumWorkersDefault } from "../core/store/checksum_workers.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { startHttpService } from "../net/http/node_server.ts";
import { randomBytes, withSheep } from "./harness.ts";
import { sample } from "./http/prom_text.ts";

const exe = new URL("../sheepdog", import.meta.url).pathname;

Deno.test("sheep --checksum-workers: 0..max, the flag wins over the environment, bad values refused", () => {
  assert.equal(checksumWorkers("0", undefined), 0);
  assert.equal(checksumWorkers(String(CHECKSUM_WORKERS_MAX), undefined), CHECKSUM_WORKERS_MAX);
  assert.equal(checksumWorkers(undefined, undefined), checksumWorkersDefault());
  assert.equal(checksumWorkers(undefined, "0"), 0, "SHEEPDOG_CHECKSUM_WORKERS=0 still works");
  assert.equal(checksumWorkers("2", "0"), 2, "the flag wins");
  assert.equal(checksumWorkers("0", "3"), 0, "the flag wins");
  for (const bad of ["-1", "1.5", String(CHECKSUM_WORKERS_MAX + 1), "two", ""]) {
    assert.throws(
      () => checksumWorkers(bad, undefined),
      (error) =>
        error instanceof UsageError &&
        error.message === `Invalid --checksum-workers '${bad}': use 0..${CHECKSUM_WORKERS_MAX}`,
      bad,
    );
  }
});

Deno.test("sheep with a bad --checksum-workers says why in one line and starts nothing", async () => {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "sd-csw-")), "sheep");
  try {
    const invalid = (value: string) =>
      `sheep: Invalid --checksum-workers '${value}': use 0..${CHECKSUM_WORKERS_MAX}`;
    const tooMany = String(CHECKSUM_WORKERS_MAX + 1);
    const cases: [string[], string][] = [
      [["--checksum-workers", tooMany], invalid(tooMany)],
      [["--checksum-workers=-1"], invalid("-1")],
      [["--checksum-workers", "1.5"], invalid("1.5")],
      // A negative value as a separate argument looks like another flag to the parser.
      [
        ["--checksum-workers", "-1"],
        "sheep: Option --checksum-workers needs a value (one starting with '-' as " +
        "--checksum-workers=VALUE)",
      ],
    ];
    for (const [flag, message] of cases) {
      const run = await new Deno.Command(exe, {
        args: ["sheep", dir, "--host", "127.0.0.1", ...flag],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(run.code, 2, flag.join(" "));
      const first = new TextDecoder().decode(run.stderr).split("\n")[0]!;
      assert.equal(first, message, flag.join(" "));
      assert.equal(fs.existsSync(dir), false, "nothing made");
    }
  } finally {
    fs.rmSync(path.dirname(dir), { recursive: true, force: true });
  }
});

Deno.test("a sheep with checksum workers counts the large reads they verified in /metrics", async () => {
  await withSheep(async ({ sheep, client }) => {
    const service = await startHttpService(sheep, { port: 0 });
    const metrics = async () => await (await fetch(`${service.url}/metrics`)).text();
    try {
      let text = await metrics();
      assert.equal(sample(text, "sheepdog_checksum_worker_jobs_total", { outcome: "answered" }), 0);
      assert.equal(sample(text, "sheepdog_checksum_workers_running"), 0, "started on first use");

      // One read just large enough to go to a worker (workers are slow under Deno).
      await client.newVdi({ name: "disk", sizeBytes: 4 * CHECKSUM_OFFLOAD_BYTES_MIN });
      const io = await VdiIo.open(client, "disk");
      const data = randomBytes(CHECKSUM_OFFLOAD_BYTES_MIN);
      await io.write(0, data);
      await io.flush();
      assert.deepEqual(await io.read(0, data.length), data);

      text = await metrics();
      const answered = sample(text, "sheepdog_checksum_worker_jobs_total", { outcome: "answered" });
      assert.ok(answered! >= 1, `answered ${answered}`);
      assert.equal(sample(text, "sheepdog_checksum_worker_jobs_total", { outcome: "fallback" }), 0);
      assert.equal(sample(text, "sheepdog_checksum_workers_running"), 1);
      assert.equal(sample(text, "sheepdog_checksum_worker_deaths_total"), 0);
    } finally {
      await service.close();
    }
  }, { checksumWorkers: 1 });
});
