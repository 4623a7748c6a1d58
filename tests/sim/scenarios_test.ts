/**
 * Hand-written scenarios on the simulated cluster, with production timing (one tick = 100 ms:
 * hello every 5 ticks, failure after 50, settle 30). Each test states its goal; the method is
 * always: build a cluster, inject one fault, run simulated time, assert on statuses and
 * deliveries (the checkers watch every delivery as well).
 */

import assert from "node:assert/strict";
import { SimCluster, type SimNode } from "./cluster.ts";

const production = {
  heartbeatTicks: 5,
  failureTimeoutTicks: 50,
  settleTicks: 30,
  retransmitTicks: 2,
};

function cluster(nodes: number, options: { witnesses?: number; seed?: number } = {}): SimCluster {
  return new SimCluster({
    seed: options.seed ?? 1,
    nodes,
    witnesses: options.witnesses ?? 0,
    timing: production,
  });
}

function startAll(sim: SimCluster): void {
  for (const node of sim.nodes) sim.start(node);
  assert.ok(sim.runUntil(() => sim.converged(), 200), sim.describe());
}

function epochOf(node: SimNode): number {
  return node.status().view?.epoch ?? 0;
}

function viewDeliveries(sim: SimCluster, node: SimNode): string[] {
  return node.history === null ? [] : [...sim.checker.viewsSeenBy(node.history)];
}

Deno.test("three nodes started at once form one view, epoch 1, smallest id as master", () => {
  const sim = cluster(3);
  startAll(sim);
  for (const node of sim.nodes) {
    const status = node.status();
    assert.equal(status.state, "primary");
    assert.equal(status.view?.epoch, 1);
    assert.equal(status.master, "10.0.0.1:7000");
    assert.deepEqual(status.view?.members.map((m) => m.id), sim.nodes.map((n) => n.id));
    assert.deepEqual(viewDeliveries(sim, node), ["view 1"]);
  }
});

Deno.test("a killed member is detected after the failure timeout and epoch + 1 drops it", () => {
  const sim = cluster(3);
  startAll(sim);
  const crashedAt = sim.now;
  sim.crash(sim.node(2));
  const survivors = [sim.node(0), sim.node(1)];
  sim.runUntil(() => survivors.every((n) => epochOf(n) === 2), 300);
  const detectedAfter = sim.now - crashedAt;
  assert.ok(detectedAfter >= 50 && detectedAfter <= 70, `detected after ${detectedAfter} ticks`);
  for (const node of survivors) {
    assert.equal(node.status().state, "primary");
    assert.deepEqual(node.status().view?.members.map((m) => m.id), [
      sim.node(0).id,
      sim.node(1).id,
    ]);
  }
});

Deno.test("a killed master is replaced by the next longest-lived member", () => {
  const sim = cluster(3);
  startAll(sim);
  sim.crash(sim.node(0));
  const survivors = [sim.node(1), sim.node(2)];
  assert.ok(sim.runUntil(() => survivors.every((n) => epochOf(n) === 2), 300), sim.describe());
  for (const node of survivors) assert.equal(node.status().master, sim.node(1).id);
  const pid = sim.propose(sim.node(2), new TextEncoder().encode("after failover"));
  sim.run(10);
  for (const node of survivors) {
    assert.ok(node.history!.delivered.has(`${sim.node(2).id}#1#${pid}`));
  }
});

Deno.test("partition 2|3: the 3-side installs a view, the 2-side is minority, heal converges", () => {
  const sim = cluster(5);
  startAll(sim);
  const small = [sim.node(0), sim.node(1)];
  const large = [sim.node(2), sim.node(3), sim.node(4)];
  sim.network.partition([small.map((n) => n.id), large.map((n) => n.id)]);
  assert.ok(sim.runUntil(() => large.every((n) => epochOf(n) === 2), 300), sim.describe());
  sim.run(100);
  for (const node of large) {
    assert.equal(node.status().state, "primary");
    assert.deepEqual(node.status().view?.members.map((m) => m.id), large.map((n) => n.id));
  }
  for (const node of small) {
    assert.equal(node.status().state, "minority");
    assert.equal(node.status().view?.primary, false);
    assert.equal(epochOf(node), 1, "a minority never installs a view");
  }
  // Events go on in the primary while the minority is away.
  sim.propose(sim.node(3), new TextEncoder().encode("while partitioned"));
  sim.run(10);
  sim.network.heal();
  assert.ok(sim.runUntil(() => sim.converged(), 300), sim.describe());
  for (const node of sim.nodes) assert.equal(epochOf(node), 3);
  // The minority caught up from the retained log: it saw the views and the event it missed.
  for (const node of small) {
    assert.deepEqual(viewDeliveries(sim, node), ["view 1", "view 2", "view 3"]);
    assert.ok(node.history!.delivered.has(`${sim.node(3).id}#1#1`));
  }
});

Deno.test("full stop: restarted nodes wait for every member of the last epoch, then regroup", () => {
  const sim = cluster(3);
  startAll(sim);
  const lastEpoch = epochOf(sim.node(0));
  for (const node of sim.nodes) sim.crash(node);
  sim.run(10);
  sim.start(sim.node(1));
  sim.start(sim.node(2));
  sim.run(300);
  for (const node of [sim.node(1), sim.node(2)]) {
    assert.equal(node.status().state, "waiting-for-nodes");
  }
  sim.start(sim.node(0));
  assert.ok(sim.runUntil(() => sim.converged(), 200), sim.describe());
  for (const node of sim.nodes) {
    assert.equal(epochOf(node), lastEpoch + 1);
    assert.equal(node.status().view?.members.length, 3);
  }
});

Deno.test("forceRecover starts a view with the survivors of a full stop", () => {
  const sim = cluster(3);
  startAll(sim);
  for (const node of sim.nodes) sim.crash(node);
  sim.start(sim.node(1));
  sim.start(sim.node(2));
  sim.run(100);
  assert.equal(sim.node(1).status().state, "waiting-for-nodes");
  assert.equal(sim.node(0).machine, null);
  assert.equal(sim.node(2).machine!.forceRecover(), true);
  const survivors = [sim.node(1), sim.node(2)];
  assert.ok(sim.runUntil(() => sim.converged(), 200), sim.describe());
  for (const node of survivors) {
    assert.equal(node.status().state, "primary");
    assert.equal(epochOf(node), 2);
    assert.deepEqual(
      node.status().view?.members.map((m) => m.id).sort(),
      survivors.map((n) => n.id),
    );
  }
  // The missing node comes back later and is simply admitted.
  sim.start(sim.node(0));
  assert.ok(sim.runUntil(() => sim.converged(), 200), sim.describe());
  assert.equal(epochOf(sim.node(0)), 3);
});

Deno.test("a restarted member (new incarnation) replaces its old self in one view change", () => {
  const sim = cluster(3);
  startAll(sim);
  sim.crash(sim.node(1));
  sim.run(5);
  sim.start(sim.node(1));
  assert.ok(sim.runUntil(() => sim.converged(), 300), sim.describe());
  for (const node of sim.nodes) {
    assert.equal(epochOf(node), 2);
    const member = node.status().view?.members.find((m) => m.id === sim.node(1).id);
    assert.equal(member?.incarnation, 2);
  }
  assert.deepEqual(viewDeliveries(sim, sim.node(1)), ["resync 2"]);
});

Deno.test("leave(): the master installs a view without the member, which goes quiet", () => {
  const sim = cluster(3);
  startAll(sim);
  sim.node(0).machine!.leave(); // the master itself leaves
  sim.run(20);
  assert.equal(sim.node(0).status().state, "left");
  for (const node of [sim.node(1), sim.node(2)]) {
    assert.equal(epochOf(node), 2);
    assert.equal(node.status().state, "primary");
    assert.deepEqual(node.status().view?.members.map((m) => m.id), [
      sim.node(1).id,
      sim.node(2).id,
    ]);
  }
  sim.run(20);
  assert.equal(sim.node(1).status().master, sim.node(1).id);
});

Deno.test("a witness keeps quorum for two storage nodes when one of them dies", () => {
  const sim = cluster(3, { witnesses: 1 });
  startAll(sim);
  assert.equal(
    sim.node(2).status().view?.members.find((m) => m.id === sim.node(2).id)?.witness,
    true,
  );
  sim.crash(sim.node(0));
  const rest = [sim.node(1), sim.node(2)];
  assert.ok(sim.runUntil(() => rest.every((n) => epochOf(n) === 2), 300), sim.describe());
  for (const node of rest) assert.equal(node.status().state, "primary");
});

Deno.test("concurrent proposals from every member are delivered in one order everywhere", () => {
  const sim = new SimCluster({
    seed: 7,
    nodes: 4,
    timing: production,
    faults: { dropRate: 0.1, duplicateRate: 0.1, delayMin: 1, delayMax: 5, codecRate: 1 },
  });
  startAll(sim);
  for (let round = 0; round < 20; round++) {
    for (const node of sim.nodes) {
      sim.propose(node, new TextEncoder().encode(`${node.id} ${round}`));
    }
    sim.run(1);
  }
  const all = () => sim.nodes.every((n) => n.history!.delivered.size === 80);
  assert.ok(sim.runUntil(all, 500), sim.describe());
  const orders = sim.nodes.map((n) => [...n.history!.delivered].join(" "));
  for (const order of orders) assert.equal(order, orders[0]);
});

Deno.test("a proposal larger than one datagram is refused with a clear error", () => {
  const sim = cluster(3);
  startAll(sim);
  assert.throws(
    () => sim.propose(sim.node(0), new Uint8Array(60_001)),
    /Cannot propose 60001 bytes: a proposal must fit one datagram \(60000 bytes\)/,
  );
  sim.propose(sim.node(1), new Uint8Array(60_000));
  sim.run(10);
  for (const node of sim.nodes) assert.equal(node.history!.delivered.size, 1);
});

Deno.test("simultaneous starts with bootstrapMinMembers wait for everyone, then form once", () => {
  const sim = new SimCluster({ seed: 3, nodes: 5, timing: production, bootstrapMinMembers: 5 });
  for (const node of sim.nodes.slice(0, 4)) sim.start(node);
  sim.run(200);
  for (const node of sim.nodes.slice(0, 4)) assert.equal(node.status().state, "forming");
  sim.start(sim.node(4));
  assert.ok(sim.runUntil(() => sim.converged(), 200), sim.describe());
  for (const node of sim.nodes) assert.deepEqual(viewDeliveries(sim, node).slice(0, 1), ["view 1"]);
});
