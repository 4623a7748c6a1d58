import assert from "node:assert/strict";
import { ResultCode, SheepdogError } from "../errors.ts";
import { isDeleted, isSnapshot, sheepTime } from "../vdi/inode.ts";
import { type ClusterConfig, vdiTimeMs } from "./cluster_config.ts";
import { type ClusterEvent, decodeEvent, encodeEvent } from "./cluster_events.ts";
import { type Applied, ClusterStateMachine, encodeFoundHeaders } from "./cluster_state_machine.ts";

const CONFIG: ClusterConfig = {
  ctimeMs: 1000,
  flags: 0,
  copies: 3,
  blockSizeShift: 22,
  shutdown: false,
};

const mkfs = (force = false, copies = 3): ClusterEvent => ({
  type: "mkfs",
  config: { ...CONFIG, copies },
  force,
});

const create = (name: string): ClusterEvent => ({
  type: "vdi",
  // After the formats below (1000 and 2000 ms), as VdiService dates every VDI (`vdiTimeMs`).
  event: { type: "create", name, sizeBytes: 1 << 30, copies: 3, blockSizeShift: 22, nowMs: 5000 },
});

const lock = (vid: number, client: string, node = "n1", force = false): ClusterEvent => ({
  type: "lock",
  vid,
  client,
  node,
  sinceMs: 5,
  force,
});

/** The error `fn` throws, as the code and message every node must agree on. */
function errorOf(fn: () => unknown): { code: number; message: string } {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof SheepdogError, `not a SheepdogError: ${error}`);
    return { code: error.code, message: error.message };
  }
  throw new Error("expected an error");
}

/** Applies each event (through the wire codec, as delivered), recording results and errors. */
function run(machine: ClusterStateMachine, events: readonly ClusterEvent[]): unknown[] {
  return events.map((event) => {
    try {
      return machine.apply(decodeEvent(encodeEvent(event)));
    } catch (error) {
      return { error: (error as SheepdogError).code, message: (error as Error).message };
    }
  });
}

Deno.test("ClusterStateMachine.apply(mkfs) formats once, asks to persist the config", () => {
  const machine = new ClusterStateMachine();
  assert.equal(new ClusterStateMachine().config, undefined, "unformatted at first");
  const applied = machine.apply(mkfs());
  assert.deepEqual(applied, {
    result: undefined,
    effects: [{ type: "persist-config", config: CONFIG }],
  });
  assert.deepEqual(machine.config, CONFIG);
  const refused = errorOf(() => machine.apply(mkfs(false, 2)));
  assert.equal(refused.code, ResultCode.INVALID_PARMS);
  assert.match(refused.message, /formatted already/);
  assert.equal(machine.config?.copies, 3, "a refused format changes nothing");
});

Deno.test("ClusterStateMachine.apply(mkfs --force) forgets VDIs and locks, erases the store", () => {
  const machine = new ClusterStateMachine();
  machine.apply(mkfs());
  const { result } = machine.apply(create("alpha"));
  machine.apply(lock(result!.vid, "qemu"));
  const applied = machine.apply(mkfs(true, 2));
  assert.deepEqual(applied.effects, [
    { type: "erase-store" },
    { type: "persist-config", config: { ...CONFIG, copies: 2 } },
  ]);
  assert.equal(machine.registry.all().length, 0);
  assert.equal(machine.locks.size, 0);
  assert.equal(machine.config?.copies, 2);
});

Deno.test("ClusterStateMachine.apply(vdi) answers the registry's change; a snapshot moves the lock", () => {
  const machine = new ClusterStateMachine();
  const created = machine.apply(create("test")).result!;
  assert.equal(created.vid, 0x7c2b25);
  machine.apply(lock(0x7c2b25, "qemu"));
  const snap = machine.apply({
    type: "vdi",
    event: { type: "snapshot", vid: 0x7c2b25, tag: "one", nowMs: 2 },
  });
  assert.equal(snap.result?.vid, 0x7c2b26);
  assert.deepEqual(snap.effects, [{ type: "remember-vdis" }], "the node keeps its table");
  assert.ok(isSnapshot(machine.registry.get(0x7c2b25)!));
  assert.equal(machine.locks.get(0x7c2b25), undefined);
  assert.deepEqual(machine.locks.get(0x7c2b26), {
    vid: 0x7c2b26,
    client: "qemu",
    sinceMs: 5,
    node: "n1",
  });
  machine.apply({ type: "vdi", event: { type: "delete", vid: 0x7c2b26 } });
  assert.ok(isDeleted(machine.registry.get(0x7c2b26)!));
  assert.equal(machine.locks.size, 0, "a deleted VDI is attached by no one");
  const missing = errorOf(() =>
    machine.apply({ type: "vdi", event: { type: "delete", vid: 0x7c2b26 } })
  );
  assert.equal(missing.code, ResultCode.NO_VDI);
});

Deno.test("ClusterStateMachine.apply(vdi): a rollback moves the lock, a resize keeps it", () => {
  const machine = new ClusterStateMachine();
  machine.apply(create("test"));
  machine.apply({ type: "vdi", event: { type: "snapshot", vid: 0x7c2b25, tag: "", nowMs: 2 } });
  machine.apply(lock(0x7c2b26, "qemu"));
  machine.apply({ type: "vdi", event: { type: "resize", vid: 0x7c2b26, sizeBytes: 2 ** 31 } });
  assert.equal(machine.locks.get(0x7c2b26)?.client, "qemu");
  const rolled = machine.apply({
    type: "vdi",
    event: { type: "rollback", snapshotVid: 0x7c2b25, nowMs: 3 },
  }).result!;
  assert.equal(rolled.vid, 0x7c2b27);
  assert.deepEqual([...machine.locks.keys()], [0x7c2b27]);
  assert.equal(machine.locks.get(0x7c2b27)?.client, "qemu");
});

Deno.test("ClusterStateMachine.apply(lock/unlock): one holder unless forced; unlock by holder", () => {
  const machine = new ClusterStateMachine();
  machine.apply(lock(7, "a"));
  machine.apply(lock(7, "a"));
  const refused = errorOf(() => machine.apply(lock(7, "b")));
  assert.deepEqual(refused, { code: ResultCode.VDI_LOCKED, message: "VDI is in use by a" });
  assert.equal(machine.locks.get(7)?.client, "a");
  machine.apply(lock(7, "b", "n2", true));
  assert.equal(machine.locks.get(7)?.client, "b");
  machine.apply({ type: "unlock", vid: 7, client: "a" });
  assert.equal(machine.locks.get(7)?.client, "b", "only the holder's unlock releases");
  machine.apply({ type: "unlock", vid: 7, client: "b" });
  assert.equal(machine.locks.size, 0);
  machine.apply(lock(8, "c"));
  machine.apply({ type: "unlock", vid: 8 });
  assert.equal(machine.locks.size, 0, "an unlock without a client releases any holder");
});

Deno.test("ClusterStateMachine.apply(recovered) asks for a purge once every member reported", () => {
  const machine = new ClusterStateMachine();
  machine.installView(3, ["a", "b"]);
  const early = machine.apply({ type: "recovered", node: "a", epoch: 2 });
  assert.deepEqual(early.effects, [], "a report of an older epoch purges nothing");
  assert.deepEqual(machine.apply({ type: "recovered", node: "a", epoch: 3 }).effects, []);
  assert.deepEqual(machine.recoveredBy(3), ["a"]);
  const last = machine.apply({ type: "recovered", node: "b", epoch: 3 });
  assert.deepEqual(last, { result: undefined, effects: [{ type: "purge", epoch: 3 }] });
  assert.deepEqual(machine.recoveredBy(2), [], "reports of earlier epochs are dropped");
  assert.deepEqual(machine.recoveredBy(3), ["a", "b"]);
});

Deno.test("ClusterStateMachine.installView() drops the locks taken through departed nodes", () => {
  const machine = new ClusterStateMachine();
  machine.apply(lock(1, "x", "n1"));
  machine.apply(lock(2, "y", "n2"));
  const dropped = machine.installView(2, ["n1", "n3"]);
  assert.deepEqual(dropped.map((l) => l.vid), [2]);
  assert.deepEqual([...machine.locks.keys()], [1]);
  assert.equal(machine.epoch, 2);
});

Deno.test("ClusterStateMachine: two machines fed the same events agree, errors included", () => {
  const events: ClusterEvent[] = [
    mkfs(),
    create("alpha"),
    create("alpha"), // VDI_EXIST on both
    create("test"),
    lock(0x7c2b25, "qemu"),
    lock(0x7c2b25, "other"), // VDI_LOCKED on both
    { type: "vdi", event: { type: "snapshot", vid: 0x7c2b25, tag: "s", nowMs: 3 } },
    { type: "vdi", event: { type: "resize", vid: 0x7c2b26, sizeBytes: 2 * 2 ** 30 } },
    mkfs(), // formatted already on both
    { type: "unlock", vid: 0x7c2b26, client: "qemu" },
    { type: "recovered", node: "n1", epoch: 1 },
  ];
  const [one, two] = [new ClusterStateMachine(), new ClusterStateMachine()];
  one.installView(1, ["n1"]);
  two.installView(1, ["n1"]);
  const results = run(one, events);
  assert.deepEqual(run(two, events), results);
  assert.deepEqual(two.snapshot(), one.snapshot());
  const errors = results.filter((r) => (r as { error?: number }).error !== undefined);
  assert.deepEqual(errors.map((e) => (e as { error: number }).error), [
    ResultCode.VDI_EXIST,
    ResultCode.VDI_LOCKED,
    ResultCode.INVALID_PARMS,
  ]);
  assert.deepEqual((results.at(-1) as Applied).effects, [{ type: "purge", epoch: 1 }]);
});

Deno.test("ClusterStateMachine.snapshot()/merge() bring a fresh machine up to date", () => {
  const source = new ClusterStateMachine();
  source.installView(4, ["n1", "n2"]);
  source.apply(mkfs());
  source.apply(create("alpha"));
  const vid = source.registry.lookup("alpha").vdiId;
  source.apply(lock(vid, "qemu"));
  source.apply({ type: "recovered", node: "n1", epoch: 4 });
  const joiner = new ClusterStateMachine();
  const effects = joiner.merge(source.snapshot());
  assert.deepEqual(effects, [
    { type: "persist-config", config: CONFIG },
    { type: "remember-vdis" },
  ]);
  assert.deepEqual(joiner.snapshot(), source.snapshot());
  assert.deepEqual(
    joiner.merge(source.snapshot()),
    [],
    "a config and headers it has are not written again",
  );
  // The joiner's report completes the epoch it learned of.
  joiner.installView(4, ["n1", "n2"]);
  assert.deepEqual(joiner.apply({ type: "recovered", node: "n2", epoch: 4 }).effects, [
    { type: "purge", epoch: 4 },
  ]);
});

Deno.test("ClusterStateMachine.merge() keeps the newer header of a vid and settles", () => {
  const older = new ClusterStateMachine();
  older.apply(create("alpha"));
  const newer = new ClusterStateMachine();
  newer.merge(older.snapshot());
  const vid = newer.registry.lookup("alpha").vdiId;
  newer.apply({ type: "vdi", event: { type: "delete", vid } });
  // The tombstone wins whichever way the states meet.
  older.merge(newer.snapshot());
  assert.ok(isDeleted(older.registry.get(vid)!));
  newer.merge(new ClusterStateMachine().snapshot());
  assert.ok(isDeleted(newer.registry.get(vid)!));
  // Locks it has are kept; others are added.
  older.apply(lock(vid, "mine"));
  const other = new ClusterStateMachine();
  other.apply(lock(vid, "theirs"));
  other.apply(lock(99, "theirs"));
  older.merge(other.snapshot());
  assert.equal(older.locks.get(vid)?.client, "mine");
  assert.equal(older.locks.get(99)?.client, "theirs");
});

Deno.test("ClusterStateMachine.aheadOf() names what a peer's table lacks or holds older", () => {
  const peer = new ClusterStateMachine();
  peer.apply(create("both"));
  peer.apply(create("deleted"));
  const node = new ClusterStateMachine();
  node.merge(peer.snapshot());
  node.apply(create("mine"));
  const deleted = node.registry.lookup("deleted").vdiId;
  node.apply({ type: "vdi", event: { type: "delete", vid: deleted } });
  const ahead = node.aheadOf(peer.snapshot().headers);
  assert.deepEqual(ahead.map((h) => isDeleted(h) ? h.vdiId : h.name).sort(), [deleted, "mine"]);
  assert.deepEqual(peer.aheadOf(node.snapshot().headers), [], "the peer holds nothing newer");
  node.merge(peer.snapshot());
  peer.merge(node.snapshot());
  assert.deepEqual(node.aheadOf(peer.snapshot().headers), [], "in step once merged both ways");
});

Deno.test("ClusterStateMachine: found headers are taken in where no newer one is known", () => {
  const source = new ClusterStateMachine();
  source.apply(create("alpha"));
  source.apply(create("beta"));
  const alpha = source.registry.lookup("alpha");
  const beta = source.registry.lookup("beta");
  const found = (...headers: (typeof alpha)[]): ClusterEvent => ({
    type: "found",
    headers: encodeFoundHeaders(headers),
  });
  const machine = new ClusterStateMachine();
  assert.deepEqual(machine.apply(found(alpha, beta)), {
    result: undefined,
    effects: [{ type: "remember-vdis" }],
  });
  assert.deepEqual(machine.registry.lookup("alpha"), alpha);
  assert.deepEqual(machine.registry.lookup("beta"), beta);
  // An older copy changes nothing; a newer one (a tombstone) wins, as in a merge.
  machine.apply({ type: "vdi", event: { type: "resize", vid: alpha.vdiId, sizeBytes: 2 ** 31 } });
  assert.deepEqual(machine.apply(found(alpha)).effects, [], "nothing taken, nothing to keep");
  assert.equal(machine.registry.get(alpha.vdiId)?.vdiSize, 2 ** 31);
  machine.apply(found({ ...alpha, name: "", tag: "" }));
  assert.ok(isDeleted(machine.registry.get(alpha.vdiId)!));
  // The event survives its encoding; what is not headers is refused alike on every node.
  assert.deepEqual(decodeEvent(encodeEvent(found(beta))), found(beta));
  for (
    const [text, why] of [
      ["AAAA", /3 bytes, not a whole number of 4664/],
      ["", /0 bytes/],
      [encodeFoundHeaders([beta, { ...beta, vdiId: 0 }]), /names vid 0, outside 1 to 16777215/],
    ] as const
  ) {
    const before = new ClusterStateMachine();
    assert.throws(() => before.apply({ type: "found", headers: text }), why);
    assert.deepEqual(before.registry.all(), []);
  }
});

Deno.test("ClusterStateMachine.loadHeaders() keeps one working VDI of a name", () => {
  const source = new ClusterStateMachine();
  source.apply(create("alpha"));
  const working = source.registry.lookup("alpha");
  const machine = new ClusterStateMachine();
  machine.loadConfig(CONFIG);
  machine.loadHeaders([{ ...working, vdiId: working.vdiId + 1, snapId: 2 }, working]);
  assert.equal(machine.registry.lookup("alpha").vdiId, working.vdiId);
  assert.equal(machine.registry.all().length, 1);
  assert.deepEqual(machine.config, CONFIG);
});

Deno.test("ClusterStateMachine.snapshot() does not share lock objects with the machine", () => {
  const machine = new ClusterStateMachine();
  machine.apply(lock(3, "a"));
  const state = machine.snapshot();
  state.locks[0]!.client = "changed";
  assert.equal(machine.locks.get(3)?.client, "a");
});

Deno.test("ClusterStateMachine.merge(): a rename or a shrink a node missed wins by generation", () => {
  const missed = new ClusterStateMachine();
  missed.apply(create("alpha"));
  const current = new ClusterStateMachine();
  current.merge(missed.snapshot());
  const vid = current.registry.lookup("alpha").vdiId;
  current.apply({ type: "vdi", event: { type: "rename", vid, name: "beta" } });
  current.apply({ type: "vdi", event: { type: "resize", vid, sizeBytes: 1 << 20, shrink: true } });
  // Same kind, a smaller size: only the generation says the cluster's header is newer.
  missed.merge(current.snapshot());
  assert.equal(missed.registry.lookup("beta").vdiId, vid);
  assert.equal(missed.registry.lookup("beta").vdiSize, 1 << 20);
  current.merge(new ClusterStateMachine().snapshot());
  assert.equal(current.registry.lookup("beta").generation, 2);
});

Deno.test("ClusterStateMachine: nothing of another format is taken in, merged or found", () => {
  // A node that missed a `mkfs --force` holds the old format's VDIs: the cluster's nodes take
  // none of them, and it takes none of theirs (it leaves: net/sheep/sheep.ts).
  const old = new ClusterStateMachine();
  old.apply(mkfs());
  old.apply({
    type: "vdi",
    event: {
      type: "create",
      name: "erased",
      sizeBytes: 1 << 30,
      copies: 3,
      blockSizeShift: 22,
      nowMs: 1500,
    },
  });
  const erased = old.registry.lookup("erased");
  const cluster = new ClusterStateMachine();
  cluster.apply({ type: "mkfs", config: { ...CONFIG, ctimeMs: 2000 }, force: false });
  cluster.apply(create("vm"));
  const before = cluster.snapshot();
  for (const [into, from] of [[cluster, old], [old, cluster]] as const) {
    assert.throws(
      () => into.merge(from.snapshot()),
      /its state is of the format of 1970-01-01T00:00:0\d\.000Z, this node's of .*: not taken in/,
    );
  }
  assert.deepEqual(cluster.snapshot(), before);
  assert.deepEqual(old.registry.live().map((h) => h.name), ["erased"]);
  // Headers found in a store of another format are not taken in; of this one, they are.
  const found = (formatMs?: number): ClusterEvent => ({
    type: "found",
    headers: encodeFoundHeaders([erased]),
    ...(formatMs === undefined ? {} : { formatMs }),
  });
  assert.deepEqual(run(cluster, [found(1000)]), [{ result: undefined, effects: [] }]);
  assert.equal(cluster.registry.get(erased.vdiId), undefined);
  assert.deepEqual(decodeEvent(encodeEvent(found(2000))), found(2000));
  // Nor, whoever finds them, are inodes older than the format: copies of VDIs it erased, one
  // a copy in flight at the erase brought back. Every VDI of a format is dated after it.
  assert.deepEqual(run(cluster, [found(2000), found()]), [
    { result: undefined, effects: [] },
    { result: undefined, effects: [] },
  ]);
  assert.equal(cluster.registry.get(erased.vdiId), undefined);
  assert.equal(vdiTimeMs(1500, cluster.config?.ctimeMs), 2001);
  assert.equal(vdiTimeMs(2500, cluster.config?.ctimeMs), 2500);
  const later = { ...erased, createTime: sheepTime(vdiTimeMs(1500, cluster.config?.ctimeMs)) };
  cluster.apply({ type: "found", headers: encodeFoundHeaders([later]), formatMs: 2000 });
  assert.deepEqual(cluster.registry.get(erased.vdiId), later);
  // A node without a config yet takes the cluster's as before.
  const fresh = new ClusterStateMachine();
  fresh.merge(cluster.snapshot());
  assert.equal(fresh.config?.ctimeMs, 2000);
  // One that lost its config file holds its old store's VDIs: its peers take none of them.
  const configless = new ClusterStateMachine();
  configless.loadHeaders([erased]);
  const peerState = configless.snapshot();
  assert.deepEqual(configless.merge(cluster.snapshot()).map((e) => e.type), [
    "persist-config",
    "remember-vdis",
  ]);
  // Its old 'erased' is forgotten once it has a config; the cluster's VDI of that vid is taken.
  assert.deepEqual(configless.registry.get(erased.vdiId), later);
  const peer = new ClusterStateMachine();
  peer.apply({ type: "mkfs", config: { ...CONFIG, ctimeMs: 2000 }, force: false });
  peer.merge(peerState); // what it offered before it had a config
  assert.equal(peer.registry.get(erased.vdiId), undefined);
  peer.merge(configless.snapshot());
  assert.deepEqual(peer.registry.get(erased.vdiId), later);
  const vm = cluster.registry.lookup("vm");
  assert.deepEqual(peer.registry.get(vm.vdiId), vm, "this format's are taken");
});
