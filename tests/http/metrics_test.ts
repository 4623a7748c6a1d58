/**
 * Metrics move with real I/O: a VDI written and read over TCP and in-process shows up in
 * `GET /metrics` as request counts, latencies, bytes, objects and space.
 *
 * @module
 */

import assert from "node:assert/strict";
import { VdiIo } from "../../core/vdi/io.ts";
import { AdminService } from "../../net/admin/admin_service.ts";
import { createAdminApp } from "../../net/http/app.ts";
import { watchSheep } from "../../net/metrics/sheep_gauges.ts";
import { sample } from "./prom_text.ts";
import { randomBytes, withSheep } from "../harness.ts";

const MiB = 2 ** 20;

Deno.test("GET /metrics shows counters moving as a VDI is written and read", async () => {
  await withSheep(async ({ sheep, client }) => {
    watchSheep(sheep.metrics, sheep);
    watchSheep(sheep.metrics, sheep);
    const admin = new AdminService(sheep.localClient());
    const app = createAdminApp({ admin, metrics: sheep.metrics, mutable: true });
    const scrape = async () => {
      const response = await app.request("/metrics");
      assert.equal(response.status, 200);
      return await response.text();
    };

    const before = await scrape();
    assert.equal(sample(before, "sheepdog_epoch"), 1);
    assert.equal(sample(before, "sheepdog_objects_stored"), 0);
    assert.equal(sample(before, "sheepdog_io_bytes_total", { direction: "write" }), undefined);

    await admin.createVdi({ name: "Dora", sizeBytes: 64 * MiB });
    const data = randomBytes(6 * MiB);
    const writer = await VdiIo.open(client, "Dora"); // over TCP
    await writer.write(MiB, data);
    const reader = await VdiIo.open(sheep.localClient(), "Dora"); // in-process
    assert.deepEqual(await reader.read(MiB, data.length), data);
    await client.lockVdi("Dora");

    const after = await scrape();
    const created = sample(after, "sheepdog_requests_total", {
      protocol: "object",
      op: "CREATE_AND_WRITE_OBJ",
      result: "ok",
    })!;
    assert.ok(created >= 2, `objects created: ${created}`);
    assert.ok(sample(after, "sheepdog_requests_total", { op: "READ_OBJ", result: "ok" })! >= 2);
    assert.ok(sample(after, "sheepdog_requests_total", { op: "NEW_VDI", result: "ok" })! >= 1);
    assert.ok(
      sample(after, "sheepdog_request_duration_seconds_count", {
        protocol: "object",
        op: "READ_OBJ",
      })! >= 2,
    );
    // Data bytes plus the inode table updates.
    assert.ok(
      sample(after, "sheepdog_io_bytes_total", { protocol: "object", direction: "write" })! >=
        data.length,
    );
    assert.ok(
      sample(after, "sheepdog_io_bytes_total", { protocol: "object", direction: "read" })! >=
        data.length,
    );
    assert.ok(sample(after, "sheepdog_objects_stored")! >= 3, "inode + 2 data objects");
    assert.ok(sample(after, "sheepdog_space_used_bytes")! >= data.length);
    assert.ok(sample(after, "sheepdog_space_total_bytes")! > 0);
    assert.equal(sample(after, "sheepdog_vdis"), 1);
    assert.equal(sample(after, "sheepdog_attached_vdis"), 1);

    // A failed request counts as an error.
    await assert.rejects(admin.vdi("nobody"));
    const failed = await scrape();
    assert.ok(
      sample(failed, "sheepdog_requests_total", { op: "GET_VDI_INFO", result: "error" })! >= 1,
    );
    assert.equal(sample(failed, "sheepdog_metrics_collect_errors_total"), 0);
  });
});
