/**
 * Goal: the single-member contract of the state machine: validation, the Ready/advance
 * protocol, first formation, restart from the epoch log, proposals, leave, determinism.
 * Method: drive one or two machines by hand, wiring messages between them directly.
 * (Multi-node behaviour under faults is in tests/sim.)
 */

import assert from "node:assert/strict";
import { AssertionError } from "../../core/assert.ts";
import { Membership, type MembershipOptions } from "./membership.ts";
import type { Delivery, EpochRecord, Ready } from "./types.ts";

const fast = { heartbeatTicks: 2, failureTimeoutTicks: 10, settleTicks: 4, retransmitTicks: 1 };

function node(id: string, extra: Partial<MembershipOptions> = {}): Membership {
  return new Membership({ self: { id, incarnation: 1 }, ...fast, ...extra });
}

/** Ticks a machine, collecting everything it hands out. */
function run(machine: Membership, ticks: number): Ready[] {
  const readies: Ready[] = [];
  for (let i = 0; i < ticks; i++) {
    machine.tick();
    if (machine.hasReady()) {
      readies.push(machine.ready());
      machine.advance();
    }
  }
  return readies;
}

function deliveries(readies: Ready[]): Delivery[] {
  return readies.flatMap((r) => [...r.deliver]);
}

Deno.test("new Membership() rejects bad ids, incarnations, info and timing", () => {
  const self = { id: "10.0.0.1:7000", incarnation: 1 };
  assert.throws(() => new Membership({ self: { ...self, id: "" } }), TypeError);
  assert.throws(() => new Membership({ self: { ...self, id: "x".repeat(101) } }), TypeError);
  assert.throws(() => new Membership({ self: { ...self, incarnation: -1 } }), RangeError);
  assert.throws(
    () => new Membership({ self: { ...self, info: { blob: "x".repeat(400) } } }),
    RangeError,
  );
  assert.throws(() => new Membership({ self: { ...self, info: { $blob: 1 } } }), TypeError);
  assert.throws(() => new Membership({ self, heartbeatTicks: 0 }), RangeError);
  assert.throws(
    () => new Membership({ self, heartbeatTicks: 10, failureTimeoutTicks: 15 }),
    RangeError,
  );
  assert.throws(() => new Membership({ self, bootstrapMinMembers: 0 }), RangeError);
  assert.throws(
    () => new Membership({ self, persisted: { cluster: "", epoch: 0 } as unknown as EpochRecord }),
    TypeError,
  );
});

Deno.test("a lone fresh node forms epoch 1 after the settle period, persisting first", () => {
  const machine = node("10.0.0.1:7000");
  assert.deepEqual(machine.status(), { state: "forming", cluster: "", view: null, master: null });
  const readies = run(machine, 3);
  assert.equal(deliveries(readies).length, 0, "nothing forms before the settle period");
  const formed = run(machine, 2).find((r) => r.deliver.length > 0);
  assert.ok(formed !== undefined);
  assert.equal(formed.persist.length, 1);
  assert.equal(formed.persist[0]!.epoch, 1);
  assert.deepEqual(formed.deliver.map((d) => d.kind), ["view"]);
  assert.equal(formed.status?.state, "primary");
  assert.equal(machine.status().master, "10.0.0.1:7000");
  assert.equal(machine.status().cluster, "10.0.0.1:7000/1");
});

Deno.test("ready() twice without advance(), or advance() alone, is a programming error", () => {
  const machine = node("10.0.0.1:7000");
  machine.tick();
  machine.ready();
  assert.throws(() => machine.ready(), AssertionError);
  machine.advance();
  assert.throws(() => machine.advance(), AssertionError);
});

Deno.test("proposals on a lone member are delivered in order with their ids", () => {
  const machine = node("10.0.0.1:7000");
  run(machine, 5);
  const first = machine.propose(new Uint8Array([1]));
  const second = machine.propose(new Uint8Array([2]));
  const events = deliveries(run(machine, 2)).filter((d) => d.kind === "event");
  assert.deepEqual(
    events.map((e) => e.kind === "event" && [e.seq, e.proposalId, e.payload[0]]),
    [[1, first, 1], [2, second, 2]],
  );
  assert.throws(() => machine.propose(new Uint8Array(60_001)), RangeError);
});

Deno.test("a proposal made before the first view is delivered once a view exists", () => {
  const machine = node("10.0.0.1:7000");
  const pid = machine.propose(new TextEncoder().encode("early"));
  const events = deliveries(run(machine, 8)).filter((d) => d.kind === "event");
  assert.equal(events.length, 1);
  assert.equal(events[0]?.kind === "event" && events[0].proposalId, pid);
});

Deno.test("a restarted lone member waits for its last epoch's members, then regroups", () => {
  const record: EpochRecord = {
    cluster: "10.0.0.1:7000/1",
    era: 1,
    epoch: 5,
    slot: 9,
    seq: 3,
    members: [{ id: "10.0.0.1:7000", incarnation: 1, witness: false, info: {} }],
    pids: [],
  };
  const waiting = new Membership({
    self: { id: "10.0.0.1:7000", incarnation: 2 },
    persisted: record,
    ...fast,
  });
  assert.equal(waiting.status().state, "waiting-for-nodes");
  const readies = run(waiting, 2);
  assert.equal(waiting.status().state, "primary");
  assert.equal(waiting.status().view?.epoch, 6);
  assert.deepEqual(deliveries(readies).map((d) => d.kind), ["resync"]);

  // With a second member in the record, it waits (that member is not back).
  const pair = {
    ...record,
    members: [...record.members, { ...record.members[0]!, id: "10.0.0.2:7000" }],
  };
  const stuck = new Membership({
    self: { id: "10.0.0.1:7000", incarnation: 2 },
    persisted: pair,
    ...fast,
  });
  run(stuck, 50);
  assert.equal(stuck.status().state, "waiting-for-nodes");
  assert.equal(stuck.forceRecover(), true);
  assert.equal(stuck.status().state, "primary");
  assert.equal(stuck.status().view?.epoch, 6);
});

Deno.test("a persisted dissolved-cluster marker restarts the node fresh", () => {
  const marker: EpochRecord = {
    cluster: "x/1",
    era: 1,
    epoch: 1,
    slot: 0,
    seq: 0,
    members: [],
    pids: [],
  };
  const machine = node("10.0.0.1:7000", { persisted: marker });
  assert.equal(machine.status().state, "forming");
});

Deno.test("leave() on a lone member leaves at once; a left member ignores everything", () => {
  const machine = node("10.0.0.1:7000");
  run(machine, 5);
  machine.leave();
  assert.equal(machine.status().state, "left");
  assert.equal(machine.ready().status?.state, "left");
  machine.advance();
  assert.deepEqual(run(machine, 20), []);
  assert.throws(() => machine.propose(new Uint8Array(1)), /has left the group/);
});

/** Two machines wired directly, without loss. */
function pairRun(a: Membership, b: Membership, ticks: number): Delivery[][] {
  const got: Delivery[][] = [[], []];
  const machines = [a, b];
  const pump = () => {
    for (let moved = true; moved;) {
      moved = false;
      machines.forEach((machine, i) => {
        if (!machine.hasReady()) return;
        moved = true;
        const ready = machine.ready();
        const other = machines[1 - i]!;
        for (const { to, msg } of ready.messages) {
          if (to === "broadcast" || to === other.id) other.step(machine.id, msg);
        }
        got[i]!.push(...ready.deliver);
        machine.advance();
      });
    }
  };
  for (let i = 0; i < ticks; i++) {
    a.tick();
    b.tick();
    pump();
  }
  return got;
}

Deno.test("two fresh nodes form one view; the smaller id forms and leads", () => {
  const a = node("10.0.0.2:7000", { seeds: ["10.0.0.1:7000"] });
  const b = node("10.0.0.1:7000", { seeds: ["10.0.0.2:7000"] });
  const [gotA, gotB] = pairRun(a, b, 10);
  for (const machine of [a, b]) {
    assert.equal(machine.status().state, "primary");
    assert.equal(machine.status().master, "10.0.0.1:7000");
    assert.deepEqual(machine.status().view?.members.map((m) => m.id), [
      "10.0.0.1:7000",
      "10.0.0.2:7000",
    ]);
  }
  assert.deepEqual(gotA!.map((d) => d.kind), ["view"]);
  assert.deepEqual(gotB!.map((d) => d.kind), ["view"]);
});

Deno.test("messages from ourselves and from stale incarnations are ignored", () => {
  const a = node("10.0.0.1:7000", { seeds: ["10.0.0.2:7000"] });
  const b = new Membership({
    self: { id: "10.0.0.2:7000", incarnation: 5 },
    seeds: ["10.0.0.1:7000"],
    ...fast,
  });
  pairRun(a, b, 10);
  const before = JSON.stringify(a.status());
  a.step("10.0.0.2:7000", { type: "leave", inc: 4, cluster: a.status().cluster, era: 1 });
  a.step("10.0.0.1:7000", { type: "leave", inc: 1, cluster: a.status().cluster, era: 1 });
  assert.equal(JSON.stringify(a.status()), before);
});

Deno.test("the same inputs give the same outputs (determinism)", () => {
  const transcript = () => {
    const a = node("10.0.0.1:7000", { seeds: ["10.0.0.2:7000"] });
    const b = node("10.0.0.2:7000", { seeds: ["10.0.0.1:7000"] });
    a.propose(new Uint8Array([1]));
    b.propose(new Uint8Array([2]));
    return JSON.stringify(pairRun(a, b, 30), (_k, v) => (v instanceof Uint8Array ? [...v] : v));
  };
  assert.equal(transcript(), transcript());
});

Deno.test("isHeard(): a peer is heard until it is silent for the failure timeout", () => {
  const a = node("10.0.0.2:7000", { seeds: ["10.0.0.1:7000"] });
  const b = node("10.0.0.1:7000", { seeds: ["10.0.0.2:7000"] });
  assert.equal(a.isHeard("10.0.0.1:7000"), false, "never heard yet");
  pairRun(a, b, 10);
  assert.ok(a.isHeard("10.0.0.1:7000"));
  assert.ok(a.isHeard("10.0.0.2:7000"), "itself");
  run(a, fast.failureTimeoutTicks - 1); // b is cut off: a hears nothing more
  assert.ok(a.isHeard("10.0.0.1:7000"), "silent for less than the failure timeout");
  run(a, 1);
  assert.equal(a.isHeard("10.0.0.1:7000"), false, "silent for the failure timeout");
  assert.equal(a.isHeard("10.0.0.9:7000"), false, "a stranger");
});
