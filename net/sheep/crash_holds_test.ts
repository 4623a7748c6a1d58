/**
 * Goal: a copy a crash left suspect is held exactly while a node that held the object since its
 * journal entry is absent (crash_holds.ts). Method: views of four nodes; find an object whose
 * targets differ between views, and check who it waits for.
 */

import assert from "node:assert/strict";
import { ResultCode } from "../../core/errors.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import { makeView, targetsOf } from "../../core/cluster/view.ts";
import { isResult } from "../../core/errors.ts";
import { dataOid, type Oid } from "../../core/vdi/oid.ts";
import { CrashHolds } from "./crash_holds.ts";

const node = (i: number): RingNode => ({
  id: `10.0.0.${i}:7000`,
  host: `10.0.0.${i}`,
  port: 7000,
  zone: i,
  vnodes: 64,
});
const [a, b, c, d] = [1, 2, 3, 4].map(node) as [RingNode, RingNode, RingNode, RingNode];

function holds(since: Map<Oid, number>, past: ReturnType<typeof makeView>[]): CrashHolds {
  return new CrashHolds({
    selfId: a.id,
    crashSuspectSince: (oid) => since.get(oid),
    copies: () => 2,
  }, past);
}

Deno.test("crash holds: a suspect copy waits for the other targets of the views since its entry", () => {
  const v5 = makeView(5, [a, b, c, d]);
  const v6 = makeView(6, [a, b, c]); // d left
  // An object on `a` with another target at epoch 5 that is not its target at epoch 6.
  const oid = [...Array(1000).keys()].map((i) => dataOid(0x123, i)).find((o) => {
    const t5 = targetsOf(v5, o, 2).map((n) => n.id);
    const t6 = targetsOf(v6, o, 2).map((n) => n.id);
    return t5.includes(a.id) && t6.includes(a.id) &&
      t5.find((id) => id !== a.id) !== t6.find((id) => id !== a.id);
  })!;
  const other5 = targetsOf(v5, oid, 2).find((n) => n.id !== a.id)!;
  const other6 = targetsOf(v6, oid, 2).find((n) => n.id !== a.id)!;
  const since = new Map<Oid, number>([[oid, 5]]);
  const h = holds(since, [v6, v5]);
  // The view after the crash: both earlier holders present, nothing to wait for.
  assert.deepEqual(h.absentHolders(oid, makeView(8, [a, b, c, d])), []);
  // One of them away: held, named.
  const without5 = makeView(9, [a, b, c, d].filter((n) => n.id !== other5.id));
  assert.deepEqual(h.absentHolders(oid, without5), [other5.id]);
  const error = (() => {
    try {
      h.check(oid, without5);
    } catch (e) {
      return e;
    }
  })();
  assert.ok(isResult(error, ResultCode.WAIT_FOR_JOIN), String(error));
  assert.match((error as Error).message, new RegExp(other5.id.replaceAll(".", "\\.")));
  // Its entry from epoch 6 on: epoch 5's holder never held a write this copy lost.
  since.set(oid, 6);
  assert.deepEqual(h.absentHolders(oid, makeView(10, [a, other6])), []);
  assert.deepEqual(
    h.absentHolders(oid, makeView(11, [a, b, c, d].filter((n) => n.id !== other6.id))),
    [other6.id],
  );
  // Verified or replaced: no longer suspect, never held.
  since.delete(oid);
  assert.deepEqual(h.absentHolders(oid, makeView(12, [a])), []);
});

Deno.test("crash holds: views this node was not in, and an unknown epoch (0), count as they should", () => {
  const v1 = makeView(1, [b, c]); // before `a` joined: no write reached it
  const v2 = makeView(2, [a, b]);
  const oid = dataOid(0x77, 3);
  const since = new Map<Oid, number>([[oid, 0]]);
  const h = holds(since, [v1, v2]);
  // Copies 2 on two nodes: b held it with a at epoch 2; c held it only before a was there.
  assert.deepEqual(h.absentHolders(oid, makeView(3, [a, c])), [b.id]);
  assert.deepEqual(h.absentHolders(oid, makeView(4, [a, b])), []);
});

Deno.test("crash holds: a node forgotten (gone for good) is waited for no more", () => {
  const v5 = makeView(5, [a, b, c, d]);
  const oid = dataOid(0x55, 1);
  const since = new Map<Oid, number>([[oid, 5]]);
  const others = targetsOf(v5, oid, 2).filter((n) => n.id !== a.id).map((n) => n.id);
  const h = holds(since, [v5]);
  const alone = makeView(6, [a]);
  assert.deepEqual([...h.absentHolders(oid, alone)], others.length > 0 ? others : []);
  h.forget(others);
  assert.deepEqual(h.absentHolders(oid, alone), []);
  const remembered = new CrashHolds(
    { selfId: a.id, crashSuspectSince: (o) => since.get(o), copies: () => 2 },
    [v5],
    others,
  );
  assert.deepEqual(remembered.absentHolders(oid, alone), [], "forgotten across a restart");
});
