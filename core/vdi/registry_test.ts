import assert from "node:assert/strict";
import { VdiRegistry } from "./registry.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import { isSnapshot } from "./inode.ts";

const create = (name: string) => ({
  type: "create" as const,
  name,
  sizeBytes: 1 << 30,
  copies: 3,
  blockSizeShift: 22,
  nowMs: 1000,
});

function codeOf(fn: () => unknown): number {
  try {
    fn();
  } catch (error) {
    if (error instanceof SheepdogError) return error.code;
    throw error;
  }
  throw new Error("expected an error");
}

Deno.test("VdiRegistry.apply() gives a family consecutive vids from the name's hash", () => {
  const registry = new VdiRegistry();
  assert.equal(registry.apply(create("test")).vid, 0x7c2b25);
  const snap = registry.apply({ type: "snapshot", vid: 0x7c2b25, tag: "one", nowMs: 2000 });
  assert.equal(snap.vid, 0x7c2b26);
  assert.equal(snap.copyTableFrom, 0x7c2b25);
  assert.equal(registry.lookup("test").vdiId, 0x7c2b26);
  assert.equal(registry.lookup("test", { snapId: 1 }).vdiId, 0x7c2b25);
  assert.equal(registry.lookup("test", { tag: "one" }).vdiId, 0x7c2b25);
  assert.ok(isSnapshot(registry.get(0x7c2b25)!));
  assert.equal(registry.lookup("test").snapId, 2);
});

Deno.test("VdiRegistry.apply() refuses duplicates, bad clones and unknown names", () => {
  const registry = new VdiRegistry();
  registry.apply(create("alice"));
  assert.equal(codeOf(() => registry.apply(create("alice"))), ResultCode.VDI_EXIST);
  const alice = registry.lookup("alice").vdiId;
  assert.equal(
    codeOf(() => registry.apply({ type: "clone", baseVid: alice, name: "bob", nowMs: 0 })),
    ResultCode.INVALID_PARMS,
  );
  assert.equal(codeOf(() => registry.lookup("nobody")), ResultCode.NO_VDI);
  assert.equal(codeOf(() => registry.lookup("alice", { snapId: 9 })), ResultCode.NO_TAG);
});

Deno.test("VdiRegistry clones, deletes and computes families", () => {
  const registry = new VdiRegistry();
  const alice = registry.apply(create("alice")).vid;
  registry.apply({ type: "snapshot", vid: alice, tag: "", nowMs: 5 });
  const charlie = registry.apply({ type: "clone", baseVid: alice, name: "charlie", nowMs: 6 }).vid;
  assert.equal(registry.get(charlie)!.parentVdiId, alice);
  assert.equal(registry.family(charlie).length, 3);
  registry.apply({ type: "delete", vid: charlie });
  assert.equal(codeOf(() => registry.lookup("charlie")), ResultCode.NO_VDI);
  assert.equal(registry.family(alice).length, 2);
  assert.equal(registry.live().length, 2);
  // A deleted name can be created again.
  assert.notEqual(registry.apply(create("charlie")).vid, charlie);
});

Deno.test("VdiRegistry rolls back to a snapshot", () => {
  const registry = new VdiRegistry();
  const alice = registry.apply(create("alice")).vid;
  registry.apply({ type: "snapshot", vid: alice, tag: "s1", nowMs: 5 });
  const working = registry.lookup("alice").vdiId;
  const change = registry.apply({ type: "rollback", snapshotVid: alice, nowMs: 6 });
  assert.equal(registry.lookup("alice").vdiId, change.vid);
  assert.equal(registry.lookup("alice").snapId, 3);
  assert.equal(registry.get(working)!.name, "");
});
