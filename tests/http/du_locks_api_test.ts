/**
 * Space and locks over HTTP (`app.request()` against a real in-process sheep): `/api/v1/du` as
 * `img du` reports it, `/api/v1/locks` as `shepherd vdi lock list --json`, and lock break with
 * the token; bad input (an unknown VDI, an unattached one, a missing or wrong token) gets one
 * clear error and changes nothing. The calls a dashboard poll makes read no inode.
 *
 * @module
 */

import assert from "node:assert/strict";
import { AdminService } from "../../net/admin/admin_service.ts";
import { createAdminApp } from "../../net/http/app.ts";
import { VdiIo } from "../../core/vdi/io.ts";
import { isVdiOid, type Oid } from "../../core/vdi/oid.ts";
import { randomBytes, withSheep } from "../harness.ts";

const MiB = 2 ** 20;

type App = ReturnType<typeof createAdminApp>;

// deno-lint-ignore no-explicit-any
async function call(app: App, method: string, path: string, headers = {}): Promise<any> {
  const response = await app.request(path, { method, headers });
  return { status: response.status, body: await response.json() };
}

const u = encodeURIComponent;

Deno.test("GET /api/v1/du reports space as img du; an unknown VDI is a 404", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    const app = createAdminApp({ admin, mutable: true });
    await admin.createVdi({ name: "Alice's Disk", sizeBytes: 64 * MiB });
    await (await VdiIo.open(sheep.localClient(), "Alice's Disk")).write(0, randomBytes(6 * MiB));
    await admin.snapshot("Alice's Disk", "base");
    await (await VdiIo.open(sheep.localClient(), "Alice's Disk")).write(0, randomBytes(MiB));
    await admin.createVdi({ name: "scratch", sizeBytes: 32 * MiB });

    const all = await call(app, "GET", "/api/v1/du");
    assert.equal(all.status, 200);
    assert.deepEqual(all.body, await admin.du());
    assert.deepEqual(
      all.body.vdis.map((r: Record<string, unknown>) => [
        r.ref,
        r.sizeBytes,
        r.allocatedBytes,
        r.sharedBytes,
      ]),
      [
        ["Alice's Disk:1", 64 * MiB, 8 * MiB, 0],
        ["Alice's Disk", 64 * MiB, 4 * MiB, 4 * MiB],
        ["scratch", 32 * MiB, 0, 0],
      ],
    );
    assert.deepEqual(all.body.total, {
      sizeBytes: 96 * MiB,
      allocatedBytes: 12 * MiB,
      sharedBytes: 4 * MiB,
    });
    // The same counts as the VDI list: one definition.
    const listed = (await call(app, "GET", "/api/v1/vdis")).body;
    for (const row of all.body.vdis) {
      const same = listed.find((v: { ref: string }) => v.ref === row.ref);
      assert.equal(same.allocatedBytes, row.allocatedBytes);
      assert.equal(same.sharedBytes, row.sharedBytes);
    }

    const one = await call(app, "GET", `/api/v1/du/${u("Alice's Disk")}`);
    assert.deepEqual(one.body.vdis.map((r: { ref: string }) => r.ref), [
      "Alice's Disk:1",
      "Alice's Disk",
    ]);
    const snap = await call(app, "GET", `/api/v1/du/${u("Alice's Disk:base")}`);
    assert.deepEqual(snap.body.vdis.map((r: { ref: string }) => r.ref), ["Alice's Disk:1"]);

    const missing = await call(app, "GET", "/api/v1/du/nosuch");
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, "NO_VDI");
    assert.match(missing.body.error, /Cannot find VDI 'nosuch'/);
    const noTag = await call(app, "GET", `/api/v1/du/${u("Alice's Disk:nosuch")}`);
    assert.equal(noTag.status, 404);
  });
});

Deno.test("lock list and lock break over HTTP: the token, an unattached VDI, nothing changed", async () => {
  await withSheep(async ({ sheep, client }) => {
    const admin = new AdminService(sheep.localClient());
    const app = createAdminApp({ admin, mutable: true, token: "s3cret" });
    const bearer = { authorization: "Bearer s3cret" };
    await admin.createVdi({ name: "vm", sizeBytes: 8 * MiB });
    await admin.createVdi({ name: "idle", sizeBytes: 8 * MiB });
    await client.lockVdi("vm");

    const locks = await call(app, "GET", "/api/v1/locks");
    assert.equal(locks.status, 200);
    assert.deepEqual(locks.body, await admin.locks());
    assert.equal(locks.body.length, 1);
    assert.equal(locks.body[0].vdi, "vm");
    assert.equal(locks.body[0].node, sheep.id);

    // Without the token, or with a wrong one: 401, and the lock stays.
    for (const headers of [{}, { authorization: "Bearer nope" }, { authorization: "s3cret" }]) {
      const refused = await call(app, "POST", `/api/v1/vdis/vm/lock/break`, headers);
      assert.equal(refused.status, 401);
      assert.equal(refused.body.code, "UNAUTHORIZED");
      assert.equal((await admin.locks()).length, 1);
    }
    // An unattached VDI: 409, and still nothing changes.
    const unlocked = await call(app, "POST", `/api/v1/vdis/idle/lock/break`, bearer);
    assert.equal(unlocked.status, 409);
    assert.equal(unlocked.body.code, "VDI_NOT_LOCKED");
    assert.match(unlocked.body.error, /Cannot break the lock of 'idle': it is not attached/);
    assert.equal((await admin.locks()).length, 1);
    const unknown = await call(app, "POST", `/api/v1/vdis/nosuch/lock/break`, bearer);
    assert.equal(unknown.status, 404);

    const broken = await call(app, "POST", `/api/v1/vdis/vm/lock/break`, bearer);
    assert.equal(broken.status, 200);
    assert.equal(broken.body.released, "vm");
    assert.match(broken.body.holder, /^127\.0\.0\.1:\d+$/, "held by our client's connection");
    assert.deepEqual((await call(app, "GET", "/api/v1/locks")).body, []);
    assert.equal((await call(app, "GET", "/api/v1/vdis/vm")).body.attachedTo, undefined);
  });
});

Deno.test("a dashboard poll reads no inode", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    const app = createAdminApp({ admin, mutable: true });
    for (const name of ["a", "b", "c"]) {
      await admin.createVdi({ name, sizeBytes: 64 * MiB });
      await (await VdiIo.open(sheep.localClient(), name)).write(0, randomBytes(5 * MiB));
    }
    await admin.snapshot("a", "s");
    await admin.clone("a:s", "d");
    let inodeReads = 0;
    const read = sheep.store.read;
    sheep.store.read = (oid: Oid, offset: number, length: number) => {
      if (isVdiOid(oid)) inodeReads++;
      return read.call(sheep.store, oid, offset, length);
    };
    try {
      for (let poll = 0; poll < 3; poll++) {
        for (const path of ["/api/v1/vdis", "/api/v1/du", "/api/v1/locks", "/api/v1/cluster"]) {
          assert.equal((await call(app, "GET", path)).status, 200, path);
        }
      }
    } finally {
      sheep.store.read = read;
    }
    assert.equal(inodeReads, 0);
  });
});
