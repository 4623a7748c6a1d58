import assert from "node:assert/strict";
import {
  cloneInode,
  countObjects,
  newInode,
  planWrite,
  resizeInode,
  rollbackInode,
  snapshotInodes,
  tombstone,
  unreferencedObjects,
} from "./cow.ts";
import { dataOid } from "./oid.ts";
import { isSnapshot } from "./inode.ts";
import { ResultCode, SheepdogError } from "../errors.ts";

const base = () =>
  newInode({
    name: "alice",
    vid: 100,
    sizeBytes: 64 << 20,
    copies: 1,
    blockSizeShift: 22,
    nowMs: 1000,
  });

function code(fn: () => unknown): number {
  try {
    fn();
  } catch (error) {
    if (error instanceof SheepdogError) return error.code;
    throw error;
  }
  throw new Error("expected a SheepdogError");
}

Deno.test("planWrite() creates, writes in place, or copies on write", () => {
  const inode = base();
  assert.deepEqual(planWrite(inode, 0), { kind: "create" });
  inode.dataVdiId[0] = 100;
  assert.deepEqual(planWrite(inode, 0), { kind: "write" });
  inode.dataVdiId[1] = 50;
  assert.deepEqual(planWrite(inode, 1), { kind: "cow", from: dataOid(50, 1) });
});

Deno.test("snapshotInodes() freezes the old vid and shares every object", () => {
  const working = base();
  working.dataVdiId[2] = 100;
  const { frozen, next } = snapshotInodes(working, { newVid: 101, tag: "before", nowMs: 5000 });
  assert.ok(isSnapshot(frozen));
  assert.equal(frozen.vdiId, 100);
  assert.equal(frozen.tag, "before");
  assert.equal(next.vdiId, 101);
  assert.equal(next.parentVdiId, 100);
  assert.equal(next.snapId, 2);
  assert.equal(next.dataVdiId[2], 100);
  assert.deepEqual(planWrite(next, 2), { kind: "cow", from: dataOid(100, 2) });
  next.dataVdiId[2] = 101;
  assert.equal(frozen.dataVdiId[2], 100, "the snapshot's table is a separate copy");
  assert.equal(
    code(() => snapshotInodes(frozen, { newVid: 102, tag: "", nowMs: 0 })),
    ResultCode.READONLY,
  );
});

Deno.test("cloneInode() only clones snapshots", () => {
  const working = base();
  assert.equal(
    code(() => cloneInode(working, { name: "c", newVid: 7, nowMs: 0 })),
    ResultCode.INVALID_PARMS,
  );
  const { frozen } = snapshotInodes(working, { newVid: 101, tag: "", nowMs: 0 });
  const clone = cloneInode(frozen, { name: "charlie", newVid: 200, nowMs: 0 });
  assert.equal(clone.parentVdiId, 100);
  assert.equal(clone.snapId, 1);
  assert.ok(!isSnapshot(clone));
});

Deno.test("rollbackInode() continues the snap id sequence", () => {
  const { frozen } = snapshotInodes(base(), { newVid: 101, tag: "", nowMs: 0 });
  const rolled = rollbackInode(frozen, { newVid: 102, nowMs: 0, latestSnapId: 2 });
  assert.equal(rolled.name, "alice");
  assert.equal(rolled.snapId, 3);
  assert.equal(rolled.parentVdiId, 100);
});

Deno.test("resizeInode() grows and refuses shrinking or oversize", () => {
  assert.equal(resizeInode(base(), 128 << 20).vdiSize, 128 << 20);
  assert.equal(code(() => resizeInode(base(), 1 << 20)), ResultCode.INVALID_PARMS);
  assert.equal(code(() => resizeInode(base(), 2 ** 43)), ResultCode.INVALID_PARMS);
});

Deno.test("newInode() refuses long names and bad sizes", () => {
  const options = { vid: 1, sizeBytes: 1 << 20, copies: 1, blockSizeShift: 22, nowMs: 0 };
  assert.equal(
    code(() => newInode({ ...options, name: "x".repeat(256) })),
    ResultCode.INVALID_PARMS,
  );
  assert.equal(code(() => newInode({ ...options, name: "" })), ResultCode.INVALID_PARMS);
  assert.equal(
    code(() => newInode({ ...options, name: "x", sizeBytes: 0 })),
    ResultCode.INVALID_PARMS,
  );
  assert.equal(
    code(() => newInode({ ...options, name: "x", sizeBytes: 2 ** 42 + 1 })),
    ResultCode.INVALID_PARMS,
  );
  assert.equal(
    newInode({ ...options, name: "x".repeat(255), sizeBytes: 2 ** 42 }).vdiSize,
    2 ** 42,
  );
});

Deno.test("unreferencedObjects() keeps what a live child still reads", () => {
  const working = base();
  working.dataVdiId[0] = 100;
  working.dataVdiId[1] = 100;
  const { frozen, next } = snapshotInodes(working, { newVid: 101, tag: "", nowMs: 0 });
  next.dataVdiId[1] = 101; // COW of index 1
  next.dataVdiId[2] = 101; // new index 2
  // Deleting the snapshot frees only what the child no longer reads.
  assert.deepEqual(unreferencedObjects(frozen, [frozen, next]), [dataOid(100, 1)]);
  // Then deleting the child frees the rest, including the snapshot's object it kept alive.
  const dead = tombstone(frozen);
  assert.deepEqual(unreferencedObjects(next, [dead, next]), [
    dataOid(100, 0),
    dataOid(101, 1),
    dataOid(101, 2),
  ]);
  assert.deepEqual(countObjects(next), { allocated: 2, shared: 1 });
});
