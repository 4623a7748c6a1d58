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
import { ClusterStateMachine } from "../../core/cluster/cluster_state_machine.ts";
import type { ClusterEvent } from "../../core/cluster/cluster_events.ts";
import { ResultCode } from "../../core/errors.ts";
import { ObjectClient } from "../object/client.ts";
import { LocalTransport } from "../object/transport.ts";
import { freePort, tempDir } from "../../tests/harness.ts";
import { ClusterMember } from "./cluster_member.ts";
import type { MemberHost } from "./cluster_driver.ts";
import { type ClusterState, encodeClusterState } from "./cluster_state.ts";
import type { Peers } from "./peers.ts";
import { Changes } from "./changes.ts";

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** A node: its member, its state machine, what it applied and what applying threw. */
interface Node {
  id: string;
  member: ClusterMember;
  machine: ClusterStateMachine;
  applied: ClusterEvent["type"][];
  refused: string[];
  /** Notified at every event applied. */
  changes: Changes;
}

/** Starts a node; `answer(id)` gives the state it gets when it asks the peer `id`. */
async function startNode(
  port: number,
  seed: number,
  dir: string,
  answer: (id: string) => Promise<ClusterState>,
): Promise<Node> {
  const id = `127.0.0.1:${port}`;
  const machine = new ClusterStateMachine();
  const node = { id, machine, applied: [], refused: [], changes: new Changes() } as unknown as Node;
  const peers = {
    get: (peer: { id: string }) =>
      new ObjectClient(
        new LocalTransport(async (request) => ({
          header: request.header.reply(ResultCode.SUCCESS, 0),
          data: encodeClusterState(await answer(peer.id)),
        })),
      ),
  } as Pick<Peers, "get">;
  const host: MemberHost = {
    id,
    dir,
    logger: silent,
    peers,
    now: () => Date.now(),
    ringNode: () => ({ id, host: "127.0.0.1", port, zone: port, vnodes: 128 }),
    applyEvent: (event) => {
      try {
        const { result } = machine.apply(event);
        node.applied.push(event.type);
        node.changes.notify();
        return Promise.resolve(result);
      } catch (error) {
        node.refused.push(`${event.type}: ${(error as Error).message}`);
        return Promise.reject(error);
      }
    },
    installView: (view) => {
      machine.installView(view.epoch, view.nodes.map((n) => n.id));
      return Promise.resolve();
    },
    mergeState: (state) => {
      machine.merge(state);
      return Promise.resolve();
    },
  };
  node.member = new ClusterMember(host, {
    seeds: [`127.0.0.1:${seed}`],
    multicast: false,
    failureTimeoutMs: 2000,
    settleMs: 100,
    bootstrapMinMembers: 2, // one first view of both: each fetches the other's state
  });
  await node.member.start();
  return node;
}

/** The state `node` answers GET_CLUSTER_STATE with, as a sheep does. */
function stateOf(node: Node): ClusterState {
  return { seq: node.member.lastSeq, ...node.machine.snapshot() };
}

function within<T>(what: string, promise: Promise<T>, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
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
    const a = await startNode(portA, portB, `${dir}/a`, () => Promise.resolve(stateOf(nodes[1]!)));
    nodes.push(a);
    const b = await startNode(portB, portA, `${dir}/b`, async () => {
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
