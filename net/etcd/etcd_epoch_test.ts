import assert from "node:assert/strict";
import { epochWriter, type LiveMember, nextEpoch } from "./etcd_epoch.ts";
import type { MemberRecord } from "./etcd_layout.ts";

function member(id: string, incarnation = 1): MemberRecord {
  return {
    id,
    incarnation,
    host: "127.0.0.1",
    port: Number(id.split(":")[1]),
    zone: 1,
    vnodes: 128,
  };
}

function live(...members: [MemberRecord, number][]): LiveMember[] {
  return members.map(([record, createRevision]) => ({ record, createRevision }));
}

const [a, b, c] = [member("127.0.0.1:1"), member("127.0.0.1:2"), member("127.0.0.1:3")];

Deno.test("etcd epochs: the first epoch has every live sheep, sorted", () => {
  const decision = nextEpoch(null, live([c, 5], [a, 7]), false);
  assert.deepEqual(decision, { kind: "propose", value: { epoch: 1, members: [a, c] } });
  assert.deepEqual(nextEpoch(null, [], false), { kind: "keep" });
});

Deno.test("etcd epochs: a lapsed lease or a join makes the next epoch; the same set keeps it", () => {
  const view = { epoch: 4, members: [a, b, c] };
  assert.deepEqual(nextEpoch(view, live([a, 1], [b, 2], [c, 3]), false), { kind: "keep" });
  assert.deepEqual(nextEpoch(view, live([a, 1], [c, 3]), false), {
    kind: "propose",
    value: { epoch: 5, members: [a, c] },
  });
  const d = member("127.0.0.1:4");
  assert.deepEqual(nextEpoch(view, live([a, 1], [b, 2], [c, 3], [d, 9]), false), {
    kind: "propose",
    value: { epoch: 5, members: [a, b, c, d] },
  });
});

Deno.test("etcd epochs: a restarted sheep (same id, new incarnation) is a new member", () => {
  const view = { epoch: 2, members: [a, b] };
  const b2 = member("127.0.0.1:2", 2);
  assert.deepEqual(nextEpoch(view, live([a, 1], [b2, 8]), false), {
    kind: "propose",
    value: { epoch: 3, members: [a, b2] },
  });
});

Deno.test("etcd epochs: after a full stop, wait for every node of the last epoch, or a force", () => {
  const view = { epoch: 7, members: [a, b, c] };
  const [a2, b2, c2] = [a, b, c].map((m) => ({ ...m, incarnation: 2 }));
  assert.deepEqual(nextEpoch(view, live([a2!, 10], [b2!, 11]), false), {
    kind: "wait",
    missing: ["127.0.0.1:3"],
  });
  assert.deepEqual(nextEpoch(view, live([a2!, 10], [b2!, 11]), true), {
    kind: "propose",
    value: { epoch: 8, members: [a2, b2] },
  });
  assert.equal(nextEpoch(view, live([a2!, 10], [b2!, 11], [c2!, 12]), false).kind, "propose");
});

Deno.test("etcd epochs: the writer is the longest-lived member of the view, else of all", () => {
  const view = { epoch: 3, members: [b, c] };
  const members = live([a, 1], [b, 5], [c, 4]);
  assert.equal(epochWriter(view, members), "127.0.0.1:3", "a is not in the view");
  assert.equal(epochWriter(null, members), "127.0.0.1:1");
  const restarted = live([{ ...b, incarnation: 9 }, 20], [{ ...c, incarnation: 9 }, 21]);
  assert.equal(epochWriter(view, restarted), "127.0.0.1:2", "no view member alive: the oldest");
  assert.equal(epochWriter(view, []), null);
});
