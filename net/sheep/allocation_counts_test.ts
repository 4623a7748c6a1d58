// The allocation counts a sheep keeps for its inode copies always equal the counts of the copy
// as stored (countObjects of the inode read whole): through creates (sparse, ending inside an
// entry), table writes (whole and partial entries, several at once), header writes, changes
// that bypass the counts (a recovery pull, a removal), and a restart.
import assert from "node:assert/strict";
import { FsObjectStore } from "../../core/store/fs_object_store.ts";
import { MemDisk } from "../../core/store/mem_disk.ts";
import { trimTrailingZeros } from "../../core/bytes.ts";
import { countObjects } from "../../core/vdi/cow.ts";
import {
  dataVdiIdOffset,
  decodeInode,
  encodeInode,
  encodeInodeHeader,
  INODE_SIZE,
} from "../../core/vdi/inode.ts";
import { newInode } from "../../core/vdi/cow.ts";
import { vdiOid, type Vid } from "../../core/vdi/oid.ts";
import { AllocationCounts, countCopy } from "./allocation_counts.ts";

/** A store on a MemDisk whose every change reaches `counts`, and the tracked ways to change it. */
async function tracked(disk = new MemDisk()) {
  // The store reports every change to the counts (created just below, before any change).
  const store = new FsObjectStore("/sd/obj", disk, { onChange: (oid) => counts.changed(oid) });
  const counts = new AllocationCounts(store);
  await store.open();
  let version = 1;
  return {
    store,
    counts,
    disk,
    create: (vid: Vid, bytes: Uint8Array) =>
      counts.create(
        vdiOid(vid),
        bytes,
        0,
        () => store.create(vdiOid(vid), bytes, 0, { size: INODE_SIZE, version: version++ }),
      ),
    write: (vid: Vid, bytes: Uint8Array, offset: number) =>
      counts.write(
        vdiOid(vid),
        bytes,
        offset,
        () => store.write(vdiOid(vid), bytes, offset, version++),
      ),
    /** What the copy holds, counted the one way listings counted before: the inode whole. */
    truth: async (vid: Vid) =>
      countObjects(decodeInode(await store.read(vdiOid(vid), 0, INODE_SIZE))),
  };
}

function entry(owner: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, owner, true);
  return bytes;
}

const VID = 0x7c2b25;
const PARENT = 0x7c2b24;

function inodeWith(entries: [number, number][]) {
  const inode = newInode({
    name: "a",
    vid: VID,
    sizeBytes: 1 << 30,
    copies: 1,
    blockSizeShift: 22,
    nowMs: 0,
  });
  for (const [index, owner] of entries) inode.dataVdiId[index] = owner;
  return inode;
}

Deno.test("counts follow creates and table writes without reading the inode", async () => {
  const t = await tracked();
  // Sparse: the last entry's high byte is zero, so the stored bytes end inside it.
  const inode = inodeWith([[0, PARENT], [1, PARENT], [7, VID]]);
  await t.create(VID, trimTrailingZeros(encodeInode(inode)));
  assert.deepEqual(await t.counts.counts([VID]), new Map([[VID, { allocated: 1, shared: 2 }]]));
  assert.equal(t.counts.recounts, 0);

  await t.write(VID, entry(VID), dataVdiIdOffset(0)); // copy-on-write of a shared object
  await t.write(VID, entry(VID), dataVdiIdOffset(9)); // a new object
  await t.write(VID, entry(VID), dataVdiIdOffset(9)); // the same entry again: no change
  // Two entries in one write, and a write of half an entry (an old client may send one).
  const two = new Uint8Array(8);
  two.set(entry(VID), 0);
  two.set(entry(PARENT), 4);
  await t.write(VID, two, dataVdiIdOffset(20));
  await t.write(VID, entry(VID).subarray(0, 2), dataVdiIdOffset(30));
  // A header write that reaches into the table, and one that does not.
  const header = encodeInodeHeader({ ...inode, tag: "x" });
  const reaching = new Uint8Array(header.length + 4);
  reaching.set(header);
  reaching.set(entry(PARENT), header.length);
  await t.write(VID, reaching, 0);
  await t.write(VID, encodeInodeHeader({ ...inode, tag: "y" }), 0);

  const counted = (await t.counts.counts([VID])).get(VID);
  assert.deepEqual(counted, await t.truth(VID));
  assert.deepEqual(counted, { allocated: 3, shared: 4 }); // entry 30 holds half a vid: "shared"
  assert.equal(t.counts.recounts, 0, "no inode was read to count it");
});

Deno.test("a change that bypasses the counts makes them stale: the copy is counted again", async () => {
  const t = await tracked();
  await t.create(VID, trimTrailingZeros(encodeInode(inodeWith([[0, VID]]))));
  assert.deepEqual((await t.counts.counts([VID])).get(VID), { allocated: 1, shared: 0 });

  // A recovery pull replaces the copy through the store alone.
  const pulled = encodeInode(inodeWith([[0, VID], [1, VID], [2, PARENT]]));
  await t.store.create(vdiOid(VID), pulled, 0, { size: INODE_SIZE, version: 100 });
  assert.deepEqual((await t.counts.counts([VID])).get(VID), { allocated: 2, shared: 1 });
  assert.equal(t.counts.recounts, 1);
  // Counted once: the next listing reads nothing.
  await t.counts.counts([VID]);
  assert.equal(t.counts.recounts, 1);

  // A tracked write after a stale count does not move a count it cannot vouch for.
  await t.store.write(vdiOid(VID), entry(VID), dataVdiIdOffset(5), 101);
  await t.write(VID, entry(VID), dataVdiIdOffset(6));
  assert.deepEqual((await t.counts.counts([VID])).get(VID), await t.truth(VID));
  assert.deepEqual((await t.counts.counts([VID])).get(VID), { allocated: 4, shared: 1 });

  // Removed: no copy here, so this node counts nothing for it.
  await t.store.remove(vdiOid(VID));
  assert.deepEqual(await t.counts.counts([VID]), new Map());
});

Deno.test("writes racing on one inode each move the count once", async () => {
  const t = await tracked();
  await t.create(VID, trimTrailingZeros(encodeInode(inodeWith([]))));
  await t.counts.counts([VID]);
  await Promise.all(
    Array.from({ length: 64 }, (_, i) => t.write(VID, entry(VID), dataVdiIdOffset(i % 16))),
  );
  assert.deepEqual((await t.counts.counts([VID])).get(VID), { allocated: 16, shared: 0 });
  assert.equal(t.counts.recounts, 0);
});

Deno.test("after a restart the counts come from the copies themselves", async () => {
  const first = await tracked();
  await first.create(VID, trimTrailingZeros(encodeInode(inodeWith([[0, VID], [3, PARENT]]))));
  await first.write(VID, entry(VID), dataVdiIdOffset(4));
  await first.store.flush();
  await first.store.close();
  const again = await tracked(first.disk);
  assert.deepEqual((await again.counts.counts([VID])).get(VID), { allocated: 2, shared: 1 });
  assert.equal(again.counts.recounts, 1);
});

Deno.test("a copy is counted alike wherever its bytes sit and wherever they end", () => {
  const whole = encodeInode(inodeWith([[0, PARENT], [1, VID], [7, VID]]));
  // Sparse: entry 7's high byte is zero, so the stored bytes end inside it.
  const sparse = trimTrailingZeros(whole);
  assert.notEqual((sparse.length - whole.length) % 4, 0);
  for (const bytes of [whole, sparse]) {
    for (const shift of [0, 1, 2, 3]) {
      const buffer = new Uint8Array(bytes.length + shift);
      buffer.set(bytes, shift);
      assert.deepEqual(countCopy(VID, buffer.subarray(shift)), { allocated: 2, shared: 1 });
    }
  }
});
