import assert from "node:assert/strict";
import { sample } from "../../tests/http/prom_text.ts";
import { makeView } from "../../core/cluster/view.ts";
import { VdiRegistry } from "../../core/vdi/registry.ts";
import { Metrics } from "./metrics.ts";
import { collectSheepGauges, type GaugeSource } from "./sheep_gauges.ts";

Deno.test("Metrics counts requests by protocol, op and result, with latency histograms", async () => {
  const metrics = new Metrics();
  metrics.observeRequest("object", "READ_OBJ", 0.002, true);
  metrics.observeRequest("object", "READ_OBJ", 0.004, false);
  metrics.observeRequest("nbd", "READ", 0.0001, true);
  const done = metrics.startRequest("nbd", "WRITE");
  done(true);
  const text = await metrics.text();
  assert.equal(
    sample(text, "sheepdog_requests_total", { protocol: "object", op: "READ_OBJ", result: "ok" }),
    1,
  );
  assert.equal(
    sample(text, "sheepdog_requests_total", {
      protocol: "object",
      op: "READ_OBJ",
      result: "error",
    }),
    1,
  );
  assert.equal(
    sample(text, "sheepdog_requests_total", { protocol: "nbd", op: "WRITE", result: "ok" }),
    1,
  );
  assert.equal(
    sample(text, "sheepdog_request_duration_seconds_count", { protocol: "object", op: "READ_OBJ" }),
    2,
  );
  assert.equal(
    sample(text, "sheepdog_request_duration_seconds_bucket", { op: "READ_OBJ", le: "0.0025" }),
    1,
  );
  assert.ok(
    Math.abs(sample(text, "sheepdog_request_duration_seconds_sum", { op: "READ_OBJ" })! - 0.006) <
      1e-9,
  );
});

Deno.test("Metrics counts bytes, clients, gauges and recovery; memory is read at scrape", async () => {
  const metrics = new Metrics();
  metrics.addBytes("read", 4096);
  metrics.addBytes("write", 512, "nbd");
  metrics.addBytes("write", 0, "nbd");
  metrics.clientConnected("nbd");
  metrics.clientConnected("nbd");
  metrics.clientDisconnected("nbd");
  metrics.nbdTls("secured");
  metrics.nbdTls("refused");
  metrics.nbdTls("refused");
  metrics.setGauges({ epoch: 7, objects: 42, usedBytes: 1000, freeBytes: 2000, totalBytes: 5000 });
  metrics.setRecovery({ active: true, done: 3, total: 10, rate: 1.5 });
  assert.deepEqual(metrics.recovery, { active: true, done: 3, total: 10, rate: 1.5 });
  const text = await metrics.text();
  assert.equal(
    sample(text, "sheepdog_io_bytes_total", { protocol: "object", direction: "read" }),
    4096,
  );
  assert.equal(
    sample(text, "sheepdog_io_bytes_total", { protocol: "nbd", direction: "write" }),
    512,
  );
  assert.equal(sample(text, "sheepdog_connected_clients", { protocol: "nbd" }), 1);
  assert.equal(sample(text, "sheepdog_nbd_tls_connections_total", { outcome: "secured" }), 1);
  assert.equal(sample(text, "sheepdog_nbd_tls_connections_total", { outcome: "refused" }), 2);
  assert.equal(
    sample(text, "sheepdog_nbd_tls_connections_total", { outcome: "failed" }),
    undefined,
  );
  assert.equal(sample(text, "sheepdog_epoch"), 7);
  assert.equal(sample(text, "sheepdog_objects_stored"), 42);
  assert.equal(sample(text, "sheepdog_space_free_bytes"), 2000);
  assert.equal(sample(text, "sheepdog_recovery_active"), 1);
  assert.equal(sample(text, "sheepdog_recovery_objects_total"), 10);
  assert.equal(sample(text, "sheepdog_recovery_rate_objects_per_second"), 1.5);
  assert.ok(sample(text, "sheepdog_process_memory_bytes", { kind: "rss" })! > 0);
  assert.ok(sample(text, "sheepdog_process_memory_bytes", { kind: "heap_used" })! > 0);
});

Deno.test("Metrics runs collectors before each scrape and survives a failing one", async () => {
  const metrics = new Metrics();
  let epoch = 1;
  metrics.addCollector(() => metrics.setGauges({ epoch: epoch++ }));
  metrics.addCollector(() => Promise.reject(new Error("disk gone")));
  assert.equal(sample(await metrics.text(), "sheepdog_epoch"), 1);
  const text = await metrics.text();
  assert.equal(sample(text, "sheepdog_epoch"), 2);
  assert.equal(sample(text, "sheepdog_metrics_collect_errors_total"), 2);
});

Deno.test("two Metrics keep separate registries (several sheep in one process)", async () => {
  const a = new Metrics();
  const b = new Metrics();
  a.observeRequest("object", "FLUSH_VDI", 0.001, true);
  assert.equal(sample(await a.text(), "sheepdog_requests_total", { op: "FLUSH_VDI" }), 1);
  assert.equal(sample(await b.text(), "sheepdog_requests_total", { op: "FLUSH_VDI" }), undefined);
});

Deno.test("Metrics.setIntegrity() moves counters by the difference of absolute totals", async () => {
  const metrics = new Metrics();
  metrics.setIntegrity({
    scrubRunning: true,
    scrubFinishedMs: 0,
    scrubBytesVerified: 4096,
    scrubBadBlocks: 2,
    objectRepairs: 1,
    checksumErrors: 3,
  });
  let text = await metrics.text();
  assert.equal(sample(text, "sheepdog_scrub_running"), 1);
  assert.equal(sample(text, "sheepdog_scrub_bytes_verified_total"), 4096);
  assert.equal(sample(text, "sheepdog_scrub_bad_blocks_total"), 2);
  assert.equal(sample(text, "sheepdog_scrub_copies_unrepaired_total"), 0);
  assert.equal(sample(text, "sheepdog_object_repairs_total"), 1);
  assert.equal(sample(text, "sheepdog_checksum_errors_total"), 3);
  assert.match(text, /# TYPE sheepdog_scrub_bytes_verified_total counter/);
  metrics.setIntegrity({
    scrubRunning: false,
    scrubFinishedMs: 1_700_000_000_000,
    scrubBytesVerified: 10_000,
    objectRepairs: 1,
  });
  text = await metrics.text();
  assert.equal(sample(text, "sheepdog_scrub_running"), 0);
  assert.equal(sample(text, "sheepdog_scrub_last_finished_seconds"), 1_700_000_000);
  assert.equal(sample(text, "sheepdog_scrub_bytes_verified_total"), 10_000);
  assert.equal(sample(text, "sheepdog_object_repairs_total"), 1);
  // A source that went back (restarted) starts the counter again from its value.
  metrics.setIntegrity({ checksumErrors: 1 });
  assert.equal(sample(await metrics.text(), "sheepdog_checksum_errors_total"), 1);
});

Deno.test("collectSheepGauges() reads repairs, checksum errors and the scrubber's totals", async () => {
  const metrics = new Metrics();
  const scrub = {
    state: "running" as const,
    finishedMs: 0,
    totals: { passes: 2, bytesVerified: 8 * 2 ** 20, badBlocks: 5, repaired: 4, repairFailed: 1 },
  };
  const source = {
    view: makeView(3, []),
    locks: new Map(),
    registry: new VdiRegistry(),
    status: "running",
    recovery: {
      status: () => ({ state: "idle", done: 0, total: 0, objectsPerSecond: 0 }),
    },
    repairs: 6,
    store: {
      list: () => Promise.resolve([1n, 2n]),
      space: () => Promise.resolve({ usedBytes: 1, freeBytes: 2, totalBytes: 3 }),
      health: () => ({ noSpaceErrors: 0, checksumErrors: 7, syncErrors: 0 }),
    },
    scrubber: { status: () => scrub },
  } as unknown as GaugeSource;
  await collectSheepGauges(metrics, source);
  const text = await metrics.text();
  assert.equal(sample(text, "sheepdog_scrub_running"), 1);
  assert.equal(sample(text, "sheepdog_scrub_bytes_verified_total"), 8 * 2 ** 20);
  assert.equal(sample(text, "sheepdog_scrub_bad_blocks_total"), 5);
  assert.equal(sample(text, "sheepdog_scrub_copies_unrepaired_total"), 1);
  assert.equal(sample(text, "sheepdog_object_repairs_total"), 6);
  assert.equal(sample(text, "sheepdog_checksum_errors_total"), 7);
  assert.equal(sample(text, "sheepdog_objects_stored"), 2);
});

Deno.test("Metrics.setChecksumWorkers() counts jobs by outcome, deaths and running workers", async () => {
  const metrics = new Metrics();
  const jobs = (outcome: string, text: string) =>
    sample(text, "sheepdog_checksum_worker_jobs_total", { outcome });
  metrics.setChecksumWorkers({ running: 2, answered: 5, fallbacks: 1, deaths: 1 });
  let text = await metrics.text();
  assert.equal(jobs("answered", text), 5);
  assert.equal(jobs("fallback", text), 1);
  assert.equal(sample(text, "sheepdog_checksum_workers_running"), 2);
  assert.equal(sample(text, "sheepdog_checksum_worker_deaths_total"), 1);
  assert.match(text, /# TYPE sheepdog_checksum_worker_jobs_total counter/);
  metrics.setChecksumWorkers({ running: 1, answered: 9, fallbacks: 1, deaths: 1 });
  text = await metrics.text();
  assert.equal(jobs("answered", text), 9);
  assert.equal(jobs("fallback", text), 1);
  assert.equal(sample(text, "sheepdog_checksum_workers_running"), 1);
  // A pool that went back (a new one) starts its series again; the other outcome is kept.
  metrics.setChecksumWorkers({ running: 0, answered: 3, fallbacks: 2, deaths: 1 });
  text = await metrics.text();
  assert.equal(jobs("answered", text), 3);
  assert.equal(jobs("fallback", text), 2);
});

Deno.test("collectSheepGauges() reads the checksum workers' stats, zeros without a pool", async () => {
  const source = (checksumWorkers?: GaugeSource["checksumWorkers"]) =>
    ({
      view: makeView(1, []),
      locks: new Map(),
      registry: new VdiRegistry(),
      status: "stopped",
      recovery: { status: () => ({ state: "idle", done: 0, total: 0, objectsPerSecond: 0 }) },
      repairs: 0,
      store: { health: () => ({ noSpaceErrors: 0, checksumErrors: 0 }) },
      checksumWorkers,
    }) as unknown as GaugeSource;
  const none = new Metrics();
  await collectSheepGauges(none, source());
  let text = await none.text();
  for (const outcome of ["answered", "fallback"]) {
    assert.equal(sample(text, "sheepdog_checksum_worker_jobs_total", { outcome }), 0, outcome);
  }
  assert.equal(sample(text, "sheepdog_checksum_workers_running"), 0);
  assert.equal(sample(text, "sheepdog_checksum_worker_deaths_total"), 0);

  const pooled = new Metrics();
  const stats = { running: 1, answered: 4, fallbacks: 2, deaths: 1 };
  await collectSheepGauges(pooled, source({ stats }));
  text = await pooled.text();
  assert.equal(sample(text, "sheepdog_checksum_worker_jobs_total", { outcome: "answered" }), 4);
  assert.equal(sample(text, "sheepdog_checksum_worker_jobs_total", { outcome: "fallback" }), 2);
  assert.equal(sample(text, "sheepdog_checksum_workers_running"), 1);
  assert.equal(sample(text, "sheepdog_checksum_worker_deaths_total"), 1);
});

Deno.test("Metrics latency buckets are cumulative, a bound inclusive, +Inf the count", async () => {
  const metrics = new Metrics();
  const reads = metrics.requestSeries("nbd", "READ");
  reads.record(0.001, true); // exactly on a bound: in it
  reads.record(0.0011, true);
  reads.record(60, false); // beyond the last bound
  metrics.requestSeries("nbd", "TRIM"); // resolved, never timed: no series
  const text = await metrics.text();
  const bucket = (le: string) =>
    sample(text, "sheepdog_request_duration_seconds_bucket", { op: "READ", le });
  assert.equal(bucket("0.0005"), 0);
  assert.equal(bucket("0.001"), 1);
  assert.equal(bucket("0.0025"), 2);
  assert.equal(bucket("10"), 2);
  assert.equal(bucket("+Inf"), 3);
  assert.equal(sample(text, "sheepdog_request_duration_seconds_count", { op: "READ" }), 3);
  assert.equal(
    sample(text, "sheepdog_requests_total", { protocol: "nbd", op: "READ", result: "error" }),
    1,
  );
  assert.equal(sample(text, "sheepdog_request_duration_seconds_count", { op: "TRIM" }), undefined);
  assert.match(text, /# TYPE sheepdog_request_duration_seconds histogram/);
});
