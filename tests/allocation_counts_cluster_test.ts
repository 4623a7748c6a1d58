// Listings (VDI_SUMMARY: info -t vdi/vm, img du, the HTTP API, the dashboard's poll) answer from
// the counts each holder keeps, reading no inode, and those counts equal what the inodes hold
// (countObjects of each inode read whole, the definition listings used before) through writes,
// snapshots, clones, a rollback, a delete, and a node that crashed, missed writes and recovered.
import assert from "node:assert/strict";
import { countObjects } from "../core/vdi/cow.ts";
import { isVdiOid, type Oid } from "../core/vdi/oid.ts";
import { VdiIo } from "../core/vdi/io.ts";
import type { Sheep } from "../net/sheep/sheep.ts";
import type { AdminService } from "../net/admin/admin_service.ts";
import { TestCluster } from "./cluster_harness.ts";
import { randomBytes } from "./harness.ts";

const MiB = 1 << 20;

/** Counts every read of an inode copy from any store of `cluster` while `work` runs. */
async function inodeReadsDuring(cluster: TestCluster, work: () => Promise<void>): Promise<number> {
  let reads = 0;
  const restore: (() => void)[] = [];
  for (const sheep of cluster.live()) {
    const store = sheep.store;
    const read = store.read;
    store.read = (oid: Oid, offset: number, length: number) => {
      if (isVdiOid(oid)) reads++;
      return read.call(store, oid, offset, length);
    };
    restore.push(() => (store.read = read));
  }
  try {
    await work();
  } finally {
    for (const undo of restore) undo();
  }
  return reads;
}

/** What every live inode holds, read whole through `sheep`'s gateway. */
async function truth(sheep: Sheep) {
  const rows = [];
  for (const header of sheep.registry.live()) {
    const { allocated, shared } = countObjects(await sheep.vdis.readInode(header.vdiId));
    rows.push({ vid: header.vdiId, allocated, shared });
  }
  return rows;
}

async function listed(admin: AdminService) {
  return (await admin.vdis()).map((row) => ({
    vid: row.vid,
    allocated: row.allocatedBytes / (4 * MiB),
    shared: row.sharedBytes / (4 * MiB),
  }));
}

Deno.test("listings read no inode and their counts equal the inodes', across a crash", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 2 });
  try {
    const admin = cluster.admin(0);
    const sheep = cluster.node(0);
    await admin.createVdi({ name: "a", sizeBytes: 256 * MiB });
    const a = await VdiIo.open(sheep.localClient(), "a");
    await a.write(0, randomBytes(10 * MiB));
    await admin.snapshot("a", "base");
    const again = await VdiIo.open(sheep.localClient(), "a");
    await again.write(MiB, randomBytes(MiB)); // copy-on-write of one object
    await again.write(64 * MiB, randomBytes(MiB)); // a new one
    await admin.clone("a:base", "b");
    const b = await VdiIo.open(cluster.node(1).localClient(), "b");
    await b.write(8 * MiB, randomBytes(MiB));
    await admin.createVdi({ name: "gone", sizeBytes: 64 * MiB });
    await (await VdiIo.open(sheep.localClient(), "gone")).write(0, randomBytes(MiB));
    await admin.deleteVdi("gone");
    await admin.snapshot("a", "second");
    await admin.rollback("a:base");
    await (await VdiIo.open(sheep.localClient(), "a")).write(20 * MiB, randomBytes(MiB));

    const expected = await truth(sheep);
    assert.deepEqual(
      expected.map((r) => [r.allocated, r.shared]).sort(),
      // b (one object copied on write), a after the rollback (one new), second, base
      [[1, 2], [1, 3], [2, 2], [3, 0]],
    );
    let rows: Awaited<ReturnType<typeof listed>> = [];
    const reads = await inodeReadsDuring(cluster, async () => {
      for (const i of [0, 1, 2]) rows = await listed(cluster.admin(i));
    });
    assert.deepEqual(rows, expected);
    assert.equal(reads, 0, "a listing read an inode");

    // A node crashes, the cluster writes on without it, it comes back and recovers.
    await cluster.kill(2);
    await cluster.waitForView(2);
    const a2 = await VdiIo.open(sheep.localClient(), "a");
    await a2.write(100 * MiB, randomBytes(2 * MiB));
    await a2.write(24 * MiB, randomBytes(MiB));
    await cluster.startNode(2);
    await cluster.waitForView(3);
    await cluster.waitForRecovery();
    const after = await truth(sheep);
    for (const i of [0, 1, 2]) assert.deepEqual(await listed(cluster.admin(i)), after);
    // Recovered copies were counted once; polls after that read nothing.
    const later = await inodeReadsDuring(cluster, async () => {
      for (const i of [0, 1, 2]) assert.deepEqual(await listed(cluster.admin(i)), after);
    });
    assert.equal(later, 0, "a listing after recovery read an inode");
  } finally {
    await cluster.stop();
  }
});
