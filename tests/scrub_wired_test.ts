// Goal: the scrub as a user reaches it on a real cluster, once sheep.ts owns a Scrubber and the
// op table answers START_SCRUB and STAT_SCRUB: a start through one node runs a pass on every
// node, the status shows the repaired rot, the VDI filter reaches every node, and the HTTP API
// and metrics of the node that held the rot report it.
// Method: three in-process sheep, two copies; one byte flipped in one node's copy; everything
// driven through AdminService over TCP and the admin app of that node.
// Until the wiring lines are in sheep.ts and request_handlers.ts this test fails on purpose,
// saying so (the rest of the scrub is tested without them: scrub_cluster_test.ts and others).
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { TestCluster, waitFor } from "./cluster_harness.ts";
import { randomBytes } from "./harness.ts";
import { sample } from "./http/prom_text.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { isDataOid, oidToHex } from "../core/vdi/oid.ts";
import { AdminService } from "../net/admin/admin_service.ts";
import { createAdminApp } from "../net/http/app.ts";
import { watchSheep } from "../net/metrics/sheep_gauges.ts";

const MiB = 2 ** 20;

Deno.test("scrub through the cluster: START_SCRUB on every node, status, VDI filter, HTTP, metrics", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 2 });
  try {
    assert.ok(
      "scrubber" in cluster.node(0),
      "sheep.ts does not build a Scrubber yet: add the wiring lines of the scrub branch",
    );
    const admin = cluster.admin(0);
    const vid = await admin.createVdi({ name: "disk", sizeBytes: 16 * MiB });
    const writer = await VdiIo.open(admin.client, "disk");
    await writer.write(0, randomBytes(8 * MiB));
    await writer.flush();
    // Two copies on three nodes: the victim is a node that holds a data object.
    const holders = await Promise.all(
      cluster.live().map(async (sheep) => ({
        sheep,
        oid: (await sheep.store.list()).find(isDataOid),
      })),
    );
    const { sheep: victim, oid: rotten } = holders.find((h) => h.oid !== undefined)!;
    assert.ok(rotten !== undefined);
    // Flip the byte (writing a fixed value was a no-op 1 time in 256: the data is random).
    const handle = await fsp.open(path.join(victim.dir, "obj", oidToHex(rotten)), "r+");
    const byte = new Uint8Array(1);
    await handle.read(byte, 0, 1, 4096 * 2 + 1);
    byte[0] = ~byte[0]! & 0xff;
    await handle.write(byte, 0, 1, 4096 * 2 + 1);
    await handle.close();

    const started = await admin.startScrub();
    assert.deepEqual(started.map((r) => r.node).sort(), cluster.live().map((s) => s.id).sort());
    assert.ok(started.every((r) => r.started === true), JSON.stringify(started));
    await waitFor(
      "every node's pass",
      async () => (await admin.scrubStatus()).every((r) => r.state === "done"),
    );
    const rows = await admin.scrubStatus();
    const findings = rows.flatMap((r) => r.findings ?? []);
    assert.deepEqual(
      findings.map((f) => [f.oid, f.node, f.repaired]),
      [[oidToHex(rotten), victim.id, true]],
    );
    assert.deepEqual(await victim.store.verify(rotten), []);

    const filtered = await admin.startScrub({ vdi: "disk" });
    assert.ok(filtered.every((r) => r.vid === vid), JSON.stringify(filtered));
    await waitFor(
      "the VDI's pass",
      async () => (await admin.scrubStatus()).every((r) => r.state === "done"),
    );

    const app = createAdminApp({
      admin: new AdminService(victim.localClient()),
      metrics: victim.metrics,
      mutable: true,
    });
    watchSheep(victim.metrics, victim);
    const report = await (await app.request("/api/v1/scrub")).json();
    assert.equal(report.state, "idle");
    assert.equal(report.nodes.length, 3);
    const text = await (await app.request("/metrics")).text();
    assert.equal(sample(text, "sheepdog_scrub_bad_blocks_total"), 1);
    assert.ok(sample(text, "sheepdog_object_repairs_total")! >= 1);
    assert.ok(sample(text, "sheepdog_checksum_errors_total")! >= 1);
    assert.ok(sample(text, "sheepdog_scrub_bytes_verified_total")! > 0);
    assert.equal(sample(text, "sheepdog_scrub_running"), 0);
  } finally {
    await cluster.stop();
  }
});
