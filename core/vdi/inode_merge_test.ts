import assert from "node:assert/strict";
import { CHECKSUM_BLOCK_BYTES as B } from "../limits.ts";
import { newInode } from "./cow.ts";
import { dataVdiIdOffset, decodeInode, decodeInodeHeader, encodeInode } from "./inode.ts";
import { keepAllocations, keepNewestHeader } from "./inode_merge.ts";

const OWN = 0x7c2b25;
const PARENT = 0x7c2b24;

/** An inode of OWN whose table holds `entries` (index → owner). */
function inode(entries: Record<number, number>): Uint8Array {
  const base = newInode({
    name: "v",
    vid: OWN,
    sizeBytes: 64 << 22,
    copies: 2,
    blockSizeShift: 22,
    nowMs: 0,
  });
  for (const [index, owner] of Object.entries(entries)) base.dataVdiId[Number(index)] = owner;
  return encodeInode(base);
}

const table = (bytes: Uint8Array, n = 8) => [...decodeInode(bytes).dataVdiId.subarray(0, n)];

Deno.test("keepAllocations: the VDI's own object beats another's and none; another's beats none", () => {
  // As a crash may leave them: the merge took a table block from the copy that lost the most.
  const merged = inode({ 1: PARENT, 3: OWN });
  const copies = [
    { data: inode({ 0: OWN, 1: PARENT, 3: OWN }), version: 7 },
    { data: inode({ 1: OWN, 2: PARENT, 3: OWN }), version: 7 },
  ];
  assert.equal(keepAllocations(merged, copies, new Set()), 3);
  assert.deepEqual(table(merged), [OWN, OWN, PARENT, OWN, 0, 0, 0, 0]);
});

Deno.test("keepAllocations: never from a copy's bad block, never into a lost block", () => {
  const entryBlock = Math.floor(dataVdiIdOffset(0) / B);
  const far = (B * 3) / 4; // an index whose entry lies two blocks further on
  const farBlock = Math.floor(dataVdiIdOffset(far) / B);
  assert.notEqual(farBlock, entryBlock);
  const merged = inode({});
  const copies = [
    { data: inode({ 0: OWN, [far]: OWN }), version: 7, bad: [entryBlock] },
    { data: inode({ [far]: OWN }), version: 7 },
  ];
  assert.equal(keepAllocations(merged, copies, new Set([farBlock])), 0);
  assert.equal(decodeInode(merged).dataVdiId[0], 0, "the bad block's entry is not taken");
  assert.equal(decodeInode(merged).dataVdiId[far], 0, "a lost block stays as the merge left it");
  assert.equal(keepAllocations(merged, copies, new Set()), 1);
  assert.equal(decodeInode(merged).dataVdiId[far], OWN);
});

Deno.test("keepAllocations: never from a copy older than the newest (a leftover a discard did not write)", () => {
  // Seed 9132: objects 2 and 3 were discarded (the table flushed on every target, then the
  // objects removed); a leftover copy of the inode on a node that was no longer a target still
  // named them. After a crash of every holder the targets' copies (newest, their last sync the
  // discard's or later) differed in an unsynced allocation of object 1, and the merge took the
  // entries of 2 and 3 from the leftover: reads of them failed, no node held a copy.
  const targets = inode({ 0: OWN, 1: OWN, 4: OWN });
  const merged = inode({ 0: OWN, 1: OWN, 4: OWN });
  const copies = [
    { data: targets, version: 90 },
    { data: inode({ 0: OWN, 4: OWN }), version: 90 },
    { data: inode({ 0: OWN, 2: OWN, 3: OWN }), version: 74 }, // the leftover
  ];
  assert.equal(keepAllocations(merged, copies, new Set()), 0);
  assert.deepEqual(table(merged), [OWN, OWN, 0, 0, OWN, 0, 0, 0]);
  // Among the newest copies every allocation one records is kept (seed 12797).
  const lostOne = inode({ 0: OWN, 4: OWN });
  assert.equal(keepAllocations(lostOne, copies, new Set()), 1);
  assert.deepEqual(table(lostOne), [OWN, OWN, 0, 0, OWN, 0, 0, 0]);
});

Deno.test("keepAllocations: a lost header (no vid to tell own objects by) changes nothing", () => {
  const merged = new Uint8Array(inode({}).length);
  assert.equal(keepAllocations(merged, [{ data: inode({ 0: OWN }), version: 7 }], new Set()), 0);
  assert.deepEqual(merged, new Uint8Array(merged.length));
});

Deno.test("keepNewestHeader: the newest whole header of a copy at the newest version, as one piece", () => {
  // A snapshot's header write reached one copy only (a failed change), then every holder crashed.
  const working = inode({ 0: OWN });
  const frozen = decodeInode(inode({ 0: OWN }));
  frozen.snapCtime = 5n;
  frozen.tag = "s0";
  const snapshot = encodeInode(frozen);
  const merged = working.slice();
  const copies = [{ data: working, version: 7 }, { data: snapshot, version: 7 }];
  assert.equal(keepNewestHeader(merged, copies, new Set()), true);
  assert.deepEqual(decodeInodeHeader(merged), decodeInodeHeader(snapshot));
  assert.equal(keepNewestHeader(merged, copies, new Set()), false, "already the newest");
  // Not from a copy whose header blocks are bad or lost, nor from an older version.
  const none = working.slice();
  assert.equal(keepNewestHeader(none, [{ ...copies[1]!, bad: [1] }, copies[0]!], new Set()), false);
  assert.equal(keepNewestHeader(none, copies, new Set([0])), false);
  assert.equal(
    keepNewestHeader(none, [copies[0]!, { ...copies[1]!, version: 6 }], new Set()),
    false,
  );
  assert.deepEqual(decodeInodeHeader(none), decodeInodeHeader(working));
});
