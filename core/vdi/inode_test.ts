import assert from "node:assert/strict";
import {
  dataVdiIdOffset,
  decodeInode,
  decodeInodeHeader,
  encodeDataVdiIdRange,
  encodeInode,
  encodeInodeHeader,
  INODE_HEADER_SIZE,
  INODE_SIZE,
  sheepTime,
  sheepTimeToMs,
} from "./inode.ts";
import { newInode } from "./cow.ts";
import { SheepdogError } from "../errors.ts";

Deno.test("encodeInode() lays fields out where QEMU's driver reads them", () => {
  const inode = newInode({
    name: "Alice's Disk",
    vid: 0x7c2b25,
    sizeBytes: 256 * 2 ** 30,
    copies: 3,
    blockSizeShift: 22,
    nowMs: 1_255_600_000_123,
  });
  inode.dataVdiId[5] = 0x7c2b25;
  inode.dataVdiId[(1 << 20) - 1] = 0x10;
  const bytes = encodeInode(inode);
  assert.equal(bytes.length, INODE_SIZE);
  assert.equal(INODE_SIZE, 4_198_968);
  const view = new DataView(bytes.buffer);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 12)), "Alice's Disk");
  assert.equal(view.getBigUint64(536, true), 256n * 2n ** 30n);
  assert.equal(bytes[554], 3);
  assert.equal(bytes[555], 22);
  assert.equal(view.getUint32(560, true), 0x7c2b25);
  assert.equal(view.getUint32(dataVdiIdOffset(5), true), 0x7c2b25);
  const back = decodeInode(bytes);
  assert.deepEqual(back, inode);
});

Deno.test("decodeInodeHeader() refuses a short buffer with an EIO error", () => {
  assert.throws(() => decodeInodeHeader(new Uint8Array(100)), SheepdogError);
  const header = decodeInodeHeader(new Uint8Array(INODE_HEADER_SIZE));
  assert.equal(header.name, "");
});

Deno.test("encodeDataVdiIdRange() encodes the slice a client writes back", () => {
  const inode = newInode({
    name: "x",
    vid: 9,
    sizeBytes: 1 << 30,
    copies: 1,
    blockSizeShift: 22,
    nowMs: 0,
  });
  inode.dataVdiId[3] = 9;
  inode.dataVdiId[4] = 7;
  const bytes = encodeDataVdiIdRange(inode, 3, 4);
  assert.deepEqual([...new Uint32Array(bytes.buffer)], [9, 7]);
});

Deno.test("sheepTime() round-trips milliseconds", () => {
  assert.equal(sheepTimeToMs(sheepTime(1_700_000_000_456)), 1_700_000_000_456);
});

Deno.test("inode header: generation and rename marker round-trip, absent when unset", () => {
  const { dataVdiId: _table, ...header } = newInode({
    name: "Alice's Disk",
    vid: 0x7c2b25,
    sizeBytes: 1 << 30,
    copies: 3,
    blockSizeShift: 22,
    nowMs: 1000,
  });
  const plain = decodeInodeHeader(encodeInodeHeader(header));
  assert.equal("generation" in plain, false);
  assert.equal("renamedFrom" in plain, false);
  const marked = { ...header, generation: 3, renamedFrom: "Bob's Disk", renameAnchor: 0x7c2b25 };
  assert.deepEqual(decodeInodeHeader(encodeInodeHeader(marked)), marked);
});
