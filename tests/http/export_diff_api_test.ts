/**
 * GET /api/v1/vdis/:name/export-diff through `app.request()` against a real in-process sheep:
 * the body is the rbd diff `img export-diff` writes (checked by parsing it back), it needs the
 * token like a change does, and a bad request is a JSON error before any byte of a diff.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DiffParser, memorySource } from "../../core/format/rbd_diff.ts";
import { VdiIo } from "../../core/vdi/io.ts";
import { AdminService } from "../../net/admin/admin_service.ts";
import { createAdminApp, ENDPOINTS } from "../../net/http/app.ts";
import { withSheep } from "../harness.ts";

const MiB = 2 ** 20;

Deno.test("GET export-diff streams the rbd diff between two snapshots, with the token", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    const app = createAdminApp({ admin, mutable: true, token: "s3cret" });
    const bearer = { authorization: "Bearer s3cret" };
    await admin.createVdi({ name: "Web Disk", sizeBytes: 64 * MiB });
    let io = await VdiIo.open(admin.client, "Web Disk");
    await io.write(0, new Uint8Array(MiB).fill(0x61));
    await admin.snapshot("Web Disk", "mon");
    io = await VdiIo.open(admin.client, "Web Disk");
    await io.write(8 * MiB + 4096, new Uint8Array(8192).fill(0x62));
    await io.write(0, new Uint8Array(4096)); // zeroed: a 'z' record
    await admin.snapshot("Web Disk", "tue");

    const path = `/api/v1/vdis/${encodeURIComponent("Web Disk")}/export-diff?from=mon&to=tue`;
    const anonymous = await app.request(path);
    assert.equal(anonymous.status, 401);
    assert.match((await anonymous.json()).error, /needs 'Authorization: Bearer <token>'/);

    const response = await app.request(path, { headers: bearer });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/octet-stream");
    assert.match(
      response.headers.get("content-disposition")!,
      /filename="Web_Disk_mon_tue\.rbd-diff"/,
    );
    const bytes = new Uint8Array(await response.arrayBuffer());
    const parser = new DiffParser(memorySource(bytes), "the download");
    assert.deepEqual(await parser.readHeader(), { from: "mon", to: "tue", size: 64 * MiB });
    const records = [];
    for (let record = await parser.next(); record; record = await parser.next()) {
      records.push(record);
      if (record.kind === "w") {
        assert.ok((await parser.readData(record.length)).every((b) => b === 0x62));
      }
    }
    assert.deepEqual(records, [
      { kind: "z", offset: 0, length: 4096 },
      { kind: "w", offset: 8 * MiB + 4096, length: 8192 },
    ]);

    // Since creation, to the current data: no names but the size.
    const full = await app.request(
      `/api/v1/vdis/${encodeURIComponent("Web Disk")}/export-diff`,
      { headers: bearer },
    );
    const fullParser = new DiffParser(
      memorySource(new Uint8Array(await full.arrayBuffer())),
      "the download",
    );
    assert.deepEqual(await fullParser.readHeader(), { size: 64 * MiB });

    const missing = await app.request("/api/v1/vdis/Nope/export-diff", { headers: bearer });
    assert.equal(missing.status, 404);
    assert.match((await missing.json()).error, /Nope/);
    const backwards = await app.request(
      `/api/v1/vdis/${encodeURIComponent("Web Disk:mon")}/export-diff?from=tue`,
      { headers: bearer },
    );
    assert.equal(backwards.status, 400);
    assert.match((await backwards.json()).error, /not older than snapshot 'mon'/);
  });
});

Deno.test("export-diff is listed, and refused by a read-only API", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    const app = createAdminApp({ admin, mutable: false });
    assert.ok(ENDPOINTS.some((e) => e.path === "/api/v1/vdis/:name/export-diff"));
    const refused = await app.request("/api/v1/vdis/x/export-diff");
    assert.equal(refused.status, 403);
    assert.match((await refused.json()).error, /read-only/);
  });
});
