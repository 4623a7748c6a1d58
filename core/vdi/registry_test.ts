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

Deno.test("VdiRegistry.plan() changes nothing; apply() refuses an event whose expectVid is taken", () => {
  const registry = new VdiRegistry();
  const test = registry.plan(create("test"));
  assert.equal(test.vid, 0x7c2b25);
  assert.equal(registry.get(test.vid), undefined);
  assert.equal(registry.bitmap.has(test.vid), false);
  registry.apply({ ...create("test"), expectVid: test.vid });
  // Two snapshots planned against the same state expect the same vid: the second is refused.
  const first = { type: "snapshot" as const, vid: test.vid, tag: "a", nowMs: 1 };
  const expected = registry.plan(first).vid;
  assert.equal(expected, 0x7c2b26);
  registry.apply({ ...first, expectVid: expected });
  const working = registry.lookup("test").vdiId;
  const second = { type: "snapshot" as const, vid: working, tag: "b", nowMs: 2 };
  assert.equal(codeOf(() => registry.apply({ ...second, expectVid: expected })), ResultCode.AGAIN);
  assert.equal(registry.lookup("test").vdiId, working, "a refused event changes nothing");
  assert.equal(registry.apply({ ...second, expectVid: 0x7c2b27 }).vid, 0x7c2b27);
});

Deno.test("VdiRegistry.settle() keeps the oldest working VDI of a name and drops the rest", () => {
  // Headers as a crash leaves them: a snapshot's new working inode written, its parent not
  // yet frozen; a rollback's new branch written, the old working VDI not yet deleted.
  const done = new VdiRegistry();
  const alice = done.apply(create("alice")).vid;
  const snapshot = done.plan({ type: "snapshot", vid: alice, tag: "", nowMs: 5 });
  const bob = done.apply(create("bob")).vid;
  done.apply({ type: "snapshot", vid: bob, tag: "s", nowMs: 5 });
  const bobWorking = done.lookup("bob").vdiId;
  const rollback = done.plan({ type: "rollback", snapshotVid: bob, nowMs: 6 });

  const rebuilt = new VdiRegistry();
  const headers = [...done.all(), ...snapshot.created, ...rollback.created];
  for (const header of headers.reverse()) rebuilt.load(header);
  const dropped = rebuilt.settle().map((h) => h.vdiId).sort();
  assert.deepEqual(dropped, [snapshot.vid, rollback.vid].sort());
  assert.equal(rebuilt.lookup("alice").vdiId, alice);
  assert.equal(rebuilt.lookup("bob").vdiId, bobWorking);
  assert.equal(rebuilt.bitmap.has(snapshot.vid), false);
  assert.deepEqual(rebuilt.settle(), []);
  // The same events then give the same vids as they would have.
  assert.equal(rebuilt.plan({ type: "snapshot", vid: alice, tag: "", nowMs: 7 }).vid, snapshot.vid);

  // Once the parent is frozen, the new working VDI is the only one: nothing to drop.
  const frozen = new VdiRegistry();
  for (const header of [...done.all(), ...snapshot.created, ...snapshot.updated]) {
    frozen.load(header);
  }
  assert.deepEqual(frozen.settle(), []);
  assert.equal(frozen.lookup("alice").vdiId, snapshot.vid);
  assert.ok(isSnapshot(frozen.get(alice)!));
});

Deno.test("VdiRegistry.keepsAtSettle() says which leftover inodes settle would drop", () => {
  const registry = new VdiRegistry();
  const alice = registry.apply(create("alice")).vid;
  const snapshot = registry.plan({ type: "snapshot", vid: alice, tag: "", nowMs: 5 });
  // A snapshot that failed before its event left its new working inode: settle drops it.
  assert.equal(registry.keepsAtSettle(snapshot.created[0]!), false);
  // Its frozen parent, and a VDI of a name the table lacks, stay.
  assert.equal(registry.keepsAtSettle(snapshot.updated[0]!), true);
  const other = new VdiRegistry().plan(create("carol")).created[0]!;
  assert.equal(registry.keepsAtSettle(other), true);
  assert.equal(registry.keepsAtSettle(registry.get(alice)!), true, "itself");
  // The same answer as a load and a settle.
  const probe = new VdiRegistry();
  for (const header of [...registry.all(), snapshot.created[0]!]) probe.load(header);
  assert.deepEqual(probe.settle().map((h) => h.vdiId), [snapshot.vid]);
});

Deno.test("VdiRegistry rename: snapshots follow, the old name is free, collisions are refused", () => {
  const registry = new VdiRegistry();
  const first = registry.apply(create("old")).vid;
  registry.apply({ type: "snapshot", vid: first, tag: "t1", nowMs: 2000 });
  registry.apply(create("taken"));
  const working = registry.lookup("old").vdiId;
  const plan = registry.plan({ type: "rename", vid: working, name: "new" });
  // Write order: the snapshot first, the working VDI (the commit point) last.
  assert.deepEqual(plan.updated.map((h) => h.vdiId), [first, working]);
  assert.equal(
    codeOf(() => registry.apply({ type: "rename", vid: working, name: "taken" })),
    ResultCode.VDI_EXIST,
  );
  assert.equal(
    codeOf(() => registry.apply({ type: "rename", vid: working, name: "a:b" })),
    ResultCode.INVALID_PARMS,
  );
  assert.equal(
    codeOf(() => registry.apply({ type: "rename", vid: first, name: "x" })),
    ResultCode.INVALID_PARMS,
  );
  registry.apply({ type: "rename", vid: working, name: "new" });
  assert.equal(registry.lookup("new").vdiId, working);
  assert.equal(registry.lookup("new", { tag: "t1" }).vdiId, first);
  assert.equal(registry.lookup("new", { snapId: 1 }).vdiId, first);
  assert.equal(codeOf(() => registry.lookup("old")), ResultCode.NO_VDI);
  // The old name is free again, and the renamed VDI snapshots on under its new name.
  const again = registry.apply(create("old")).vid;
  assert.equal(registry.lookup("old").vdiId, again);
  const snap = registry.apply({ type: "snapshot", vid: working, tag: "t2", nowMs: 3000 });
  assert.equal(registry.lookup("new").vdiId, snap.vid);
  assert.equal(registry.lookup("new").snapId, 3);
});

Deno.test("VdiRegistry.settle() undoes a rename whose working VDI kept the old name", () => {
  const source = new VdiRegistry();
  const first = source.apply(create("old")).vid;
  source.apply({ type: "snapshot", vid: first, tag: "t1", nowMs: 2000 });
  const working = source.lookup("old");
  const [snapshot, renamed] = source.plan({ type: "rename", vid: working.vdiId, name: "new" })
    .updated;
  // A crash after the snapshot's header was written, before the working VDI's.
  const cut = new VdiRegistry();
  cut.load(snapshot!);
  cut.load(working);
  cut.settle();
  assert.equal(cut.lookup("old", { tag: "t1" }).vdiId, first);
  assert.equal(cut.lookup("old", { tag: "t1" }).generation ?? 0, 0);
  assert.equal(codeOf(() => cut.lookup("new")), ResultCode.NO_VDI);
  // Both written: the rename stands.
  const whole = new VdiRegistry();
  whole.load(snapshot!);
  whole.load(renamed!);
  whole.settle();
  assert.equal(whole.lookup("new", { tag: "t1" }).vdiId, first);
});

Deno.test("VdiRegistry flatten and shrink: only clones flatten, shrinking needs asking", () => {
  const registry = new VdiRegistry();
  const base = registry.apply(create("base")).vid;
  registry.apply({ type: "snapshot", vid: base, tag: "s", nowMs: 2000 });
  const clone = registry.apply({ type: "clone", baseVid: base, name: "c", nowMs: 3000 }).vid;
  const working = registry.lookup("base").vdiId;
  assert.equal(
    codeOf(() => registry.apply({ type: "flatten", vid: working })),
    ResultCode.INVALID_PARMS,
  );
  registry.apply({ type: "flatten", vid: clone });
  assert.equal(registry.get(clone)!.parentVdiId, 0);
  assert.equal(registry.get(clone)!.generation, 1);
  assert.equal(
    codeOf(() => registry.apply({ type: "resize", vid: working, sizeBytes: 1 << 20 })),
    ResultCode.INVALID_PARMS,
  );
  registry.apply({ type: "resize", vid: working, sizeBytes: 1 << 20, shrink: true });
  assert.equal(registry.get(working)!.vdiSize, 1 << 20);
  assert.equal(registry.get(working)!.generation, 1);
  assert.equal(
    registry.lookup("base", { tag: "s" }).vdiSize,
    1 << 30,
    "the snapshot keeps its size",
  );
});
