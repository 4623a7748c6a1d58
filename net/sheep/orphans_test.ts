import assert from "node:assert/strict";
import { type Inode, type InodeHeader, isDeleted } from "../../core/vdi/inode.ts";
import { dataOid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import { OrphanCheck, type OrphanSource } from "./orphans.ts";

/** VDIs by id: `deleted` ones are tombstones; `table` lists (index, owner) entries. */
function source(
  vdis: { vid: Vid; deleted?: boolean; table?: [number, Vid][] }[],
): OrphanSource & { reads: Vid[] } {
  const reads: Vid[] = [];
  const headers = new Map<Vid, InodeHeader>();
  const inodes = new Map<Vid, Inode>();
  for (const v of vdis) {
    const dataVdiId = new Uint32Array(16);
    for (const [index, owner] of v.table ?? []) dataVdiId[index] = owner;
    const header = { vdiId: v.vid, name: v.deleted ? "" : `v${v.vid}` } as InodeHeader;
    headers.set(v.vid, header);
    inodes.set(v.vid, { ...header, dataVdiId } as Inode);
  }
  return {
    reads,
    header: (vid) => headers.get(vid),
    liveFamily: () => [...headers.values()].filter((h) => !isDeleted(h)),
    readInode: (vid) => {
      reads.push(vid);
      return Promise.resolve(inodes.get(vid)!);
    },
  };
}

Deno.test("OrphanCheck: an object of a deleted VDI is an orphan unless a live VDI reads it", async () => {
  // VDI 5 is deleted; its clone 6 still reads object (5, 1) and has its own (6, 2).
  const from = source([{ vid: 5, deleted: true, table: [[1, 5], [2, 5]] }, {
    vid: 6,
    table: [[1, 5], [2, 6]],
  }]);
  assert.ok(isDeleted(from.header(5)!), "the fixture's tombstone is one");
  const check = new OrphanCheck(from);
  assert.equal(await check.isOrphan(dataOid(5, 1)), false, "the clone reads it");
  assert.equal(await check.isOrphan(dataOid(5, 2)), true, "the clone has its own");
  assert.equal(await check.isOrphan(dataOid(5, 9)), true, "never in any table (a failed create)");
  assert.equal(await check.isOrphan(dataOid(6, 9)), false, "a live VDI's object never is");
  assert.equal(await check.isOrphan(dataOid(7, 0)), false, "nor an unknown VDI's");
  assert.equal(await check.isOrphan(vdiOid(5)), false, "nor an inode (the tombstone)");
  assert.deepEqual(from.reads, [6], "the live family's tables are read once per check");
});

Deno.test("OrphanCheck: an inode it cannot read makes nothing an orphan", async () => {
  const from = source([{ vid: 5, deleted: true }, { vid: 6 }]);
  from.readInode = () => Promise.reject(new Error("unreachable"));
  const check = new OrphanCheck(from);
  await assert.rejects(check.isOrphan(dataOid(5, 1)), /unreachable/);
});
