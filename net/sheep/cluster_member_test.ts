// Goal: a node that is still fetching its peers' state at its first view (a) takes no proposal
// until that state is in, and (b) does not apply again the events that state already holds. The
// e2e race this pins down: `shepherd mkfs` right after three sheep started was applied on the
// master, fetched with its state by the proposer, then applied there a second time and answered
// "formatted already".
//
// Method: two ClusterMembers on loopback (the real group, seeds), each host a real cluster state
// machine; GET_CLUSTER_STATE answered in-process, node B's answer held until the test lets it go.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import type { ClusterEvent } from "../../core/cluster/cluster_events.ts";
import { retainedEntriesMax } from "../group/limits.ts";
import { freePort, tempDir } from "../../tests/harness.ts";
import {
  assertAppliedElsewhere,
  type FakeNode,
  fakeNode,
  lockOf,
  outcomeOf,
  stateOf,
  within,
} from "../../tests/member_fakes.ts";
import { ClusterMember } from "./cluster_member.ts";
import type { ClusterState } from "./cluster_state.ts";

type Node = FakeNode<ClusterMember>;

/** How a node is started beyond its port and directory. */
interface NodeOptions {
  /** Peers' ports it finds the group through. */
  seeds: number[];
  /** Nodes that must be present for the first view (default 2: one view of both). */
  bootstrapMinMembers?: number;
  /** Group datagrams from peers this returns false for are dropped. */
  reachable?: (id: string) => boolean;
}

/** Starts a node; `answer(id)` gives the state it gets when it asks the peer `id`. */
async function startNode(
  port: number,
  options: NodeOptions,
  dir: string,
  answer: (id: string) => Promise<ClusterState>,
): Promise<Node> {
  const node = fakeNode(port, dir, answer, (host) =>
    new ClusterMember(host, {
      seeds: options.seeds.map((seed) => `127.0.0.1:${seed}`),
      multicast: false,
      failureTimeoutMs: 2000,
      settleMs: 100,
      // One first view of all: each fetches the others' state.
      bootstrapMinMembers: options.bootstrapMinMembers ?? 2,
      ...(options.reachable ? { reachable: options.reachable } : {}),
    }));
  await node.member.start();
  return node;
}

Deno.test("a node catching up from its peers proposes nothing until it has, and applies nothing twice", async () => {
  const dir = await tempDir("sd-member-");
  const [portA, portB] = [await freePort(), await freePort()];
  let fetchStarted!: () => void;
  const bFetching = new Promise<void>((resolve) => (fetchStarted = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const nodes: Node[] = [];
  try {
    const a = await startNode(
      portA,
      { seeds: [portB] },
      `${dir}/a`,
      () => Promise.resolve(stateOf(nodes[1]!)),
    );
    nodes.push(a);
    const b = await startNode(portB, { seeds: [portA] }, `${dir}/b`, async () => {
      fetchStarted();
      await released;
      return stateOf(a); // what A holds once the test lets the answer go
    });
    nodes.push(b);
    await within("B's first view and its fetch from A", bFetching);
    assert.equal(b.member.state, "forming", "not primary while its state is being fetched");

    // A formats meanwhile: the event is delivered to B too, behind B's fetch.
    const mkfs: ClusterEvent = {
      type: "mkfs",
      config: { ctimeMs: 1, flags: 0, copies: 2, blockSizeShift: 22, shutdown: false },
      force: false,
    };
    await within("A's format", a.member.propose(mkfs));
    // B proposes now: it must wait for its state, else A's answer (which holds B's event) would
    // make B skip its own event, and B's caller would never hear back.
    const lock: ClusterEvent = {
      type: "lock",
      vid: 7,
      client: "client@b",
      node: b.id,
      sinceMs: 0,
      force: false,
    };
    const proposed = b.member.propose(lock);
    proposed.catch(() => {}); // a failed assertion below stops B: its answer is that assertion's
    // A lock admitted now would reach A within milliseconds; half a second without it is none.
    assert.equal(
      await a.changes.until(() => a.applied.length > 1, 500),
      false,
      "B proposes nothing while it catches up",
    );

    release();
    await within("B's proposal, once B has A's state", proposed);
    assert.equal(b.member.state, "primary");
    assert.deepEqual(b.machine.config, a.machine.config, "B has A's format, from A's state");
    assert.deepEqual(b.refused, [], "nothing B fetched was applied again on top of it");
    assert.deepEqual(b.applied, ["lock"], "the format came with A's state");
    assert.ok(await a.changes.until(() => a.applied.length === 2, 10_000), "A applies B's lock");
    assert.deepEqual(a.applied, ["mkfs", "lock"]);
    assert.equal(a.machine.locks.get(7)?.client, "client@b");
    assert.equal(b.machine.locks.get(7)?.client, "client@b");
  } finally {
    release();
    for (const node of nodes) await node.member.stop({ leave: false });
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

// Goal: a proposal the group sequenced while its proposer was cut off is answered once the
// proposer is back, never left waiting for its client's timeout: the proposer catches up from
// a snapshot and its peers' state, which already hold the proposal, so its delivery is skipped
// (whole, inside the snapshot, or as an event the fetched state holds). The proposal is applied
// once everywhere, and its proposer hears that it was.
//
// Method: three ClusterMembers (the real group on loopback); the proposer's datagrams are
// dropped (one way, or both) while it proposes, and the master makes more history than the
// group retains meanwhile, so that the proposer comes back through a snapshot and a state fetch.

/** Which traffic the test drops: everything to `isolated`, and with `both` from it too. */
interface Cut {
  isolated: string | null;
  both: boolean;
}

/** Three nodes in one first view; `answer(asker, peer)` gives what `peer` sends `asker`. */
async function startThree(
  dir: string,
  cut: Cut,
  answer: (asker: Node, peer: Node) => Promise<ClusterState>,
): Promise<Node[]> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const nodes: Node[] = [];
  const byId = (id: string) => nodes.find((n) => n.id === id)!;
  await Promise.all(ports.map(async (port, i) => {
    const id = `127.0.0.1:${port}`;
    const node = await startNode(
      port,
      {
        seeds: ports.filter((p) => p !== port),
        bootstrapMinMembers: 3,
        reachable: (from) =>
          cut.isolated !== id && !(cut.both && cut.isolated !== null && from === cut.isolated),
      },
      `${dir}/${i}`,
      (peer) => answer(byId(id), byId(peer)),
    );
    nodes.push(node);
  }));
  await within(
    "one view of the three, every state fetched",
    Promise.all(
      nodes.map((n) =>
        n.changes.until(() => n.member.state === "primary" && n.member.members.length === 3, 10_000)
      ),
    ),
  );
  assert.ok(nodes.every((n) => n.member.state === "primary" && n.member.members.length === 3));
  return nodes;
}

/** The master, the proposer (another node) and the third node. */
function roles(nodes: Node[]): { master: Node; proposer: Node; other: Node } {
  const master = nodes.find((n) => n.id === nodes[0]!.member.master);
  assert.ok(master, "a master is known");
  const [proposer, other] = nodes.filter((n) => n !== master);
  return { master, proposer: proposer!, other: other! };
}

/** More events from `node` than the group retains: a node away meanwhile gets a snapshot. */
async function outgrowRetainedLog(node: Node): Promise<void> {
  for (let i = 0; i < retainedEntriesMax + 20; i++) {
    await node.member.propose(
      i % 2 === 0
        ? { type: "lock", vid: 99, client: "filler", node: node.id, sinceMs: 0, force: false }
        : { type: "unlock", vid: 99 },
    );
  }
}

Deno.test("a proposal sequenced while its proposer was cut off is answered when a snapshot brings it back", async () => {
  const dir = await tempDir("sd-member-");
  const cut: Cut = { isolated: null, both: false };
  let nodes: Node[] = [];
  try {
    nodes = await startThree(dir, cut, (_asker, peer) => Promise.resolve(stateOf(peer)));
    const { master, proposer, other } = roles(nodes);
    // The proposer hears nobody (it still reaches the others): its proposal is sequenced, but
    // the proposer is not told.
    cut.isolated = proposer.id;
    const outcome = outcomeOf(proposer.member.propose(lockOf(proposer)));
    assert.ok(await master.changes.until(() => master.machine.locks.has(7), 10_000));
    await outgrowRetainedLog(master);
    assert.deepEqual(proposer.lockedHere, [], "the proposer was away for all of it");

    cut.isolated = null;
    await assertAppliedElsewhere(outcome, proposer, [master, other]);
    assert.ok(await proposer.changes.until(() => proposer.member.state === "primary", 10_000));
  } finally {
    for (const node of nodes) await node.member.stop({ leave: false });
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("a proposal resent after a partition, which the proposer's fetched state already holds, is answered", async () => {
  const dir = await tempDir("sd-member-");
  const cut: Cut = { isolated: null, both: true };
  /** The node whose state fetches are held until the test releases them. */
  let holding: string | null = null;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let nodes: Node[] = [];
  try {
    nodes = await startThree(dir, cut, async (asker, peer) => {
      if (asker.id === holding) await released;
      return stateOf(peer);
    });
    const { master, proposer, other } = roles(nodes);
    // The proposer is cut off both ways: its proposal reaches no one, and the others drop it
    // from their view.
    cut.isolated = proposer.id;
    const outcome = outcomeOf(proposer.member.propose(lockOf(proposer)));
    assert.ok(
      await master.changes.until(() => master.member.members.length === 2, 10_000),
      "the others go on without the proposer",
    );
    assert.equal(master.machine.locks.has(7), false, "not sequenced while cut off");
    await outgrowRetainedLog(master);

    // Back: the proposer comes in through a snapshot, fetches the state (held here), and the
    // group resends its proposal, which the others apply before the state goes out.
    holding = proposer.id;
    cut.isolated = null;
    assert.ok(await master.changes.until(() => master.machine.locks.has(7), 10_000));
    release();
    await assertAppliedElsewhere(outcome, proposer, [master, other]);
    assert.ok(await proposer.changes.until(() => proposer.member.state === "primary", 10_000));
  } finally {
    release();
    for (const node of nodes) await node.member.stop({ leave: false });
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
