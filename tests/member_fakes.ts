/**
 * A cluster driver's host for tests of the drivers themselves (the built-in group's
 * ClusterMember, the EtcdDriver): a real cluster state machine applies what the driver delivers,
 * and GET_CLUSTER_STATE is answered in-process with whatever the test says, so a test can hold
 * a state fetch open or answer with any peer's state. No sheep, no store.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClusterStateMachine } from "../core/cluster/cluster_state_machine.ts";
import type { ClusterEvent } from "../core/cluster/cluster_events.ts";
import { isResult, ResultCode } from "../core/errors.ts";
import { ObjectClient } from "../net/object/client.ts";
import { LocalTransport } from "../net/object/transport.ts";
import type { ClusterDriver, MemberHost } from "../net/sheep/cluster_driver.ts";
import { type ClusterState, encodeClusterState } from "../net/sheep/cluster_state.ts";
import type { Peers } from "../net/sheep/peers.ts";
import { Changes } from "../net/sheep/changes.ts";

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** A node: its driver, its state machine, what it applied and what applying threw. */
export interface FakeNode<D extends ClusterDriver> {
  id: string;
  member: D;
  machine: ClusterStateMachine;
  applied: ClusterEvent["type"][];
  /** The locks of `vid` this node applied itself (not with a state fetched from peers). */
  lockedHere: number[];
  refused: string[];
  /** Notified at every event applied, view installed and change of standing. */
  changes: Changes;
}

/**
 * A node on 127.0.0.1:`port` whose driver `driverOf` makes for the host; `answer(peer)` gives
 * the state it gets when it asks `peer` (an id). The caller starts the driver.
 */
export function fakeNode<D extends ClusterDriver>(
  port: number,
  dir: string,
  answer: (peer: string) => Promise<ClusterState>,
  driverOf: (host: MemberHost) => D,
): FakeNode<D> {
  const id = `127.0.0.1:${port}`;
  const machine = new ClusterStateMachine();
  const node = {
    id,
    machine,
    applied: [],
    lockedHere: [],
    refused: [],
    changes: new Changes(),
  } as unknown as FakeNode<D>;
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
    monotonic: () => performance.now(),
    ringNode: () => ({ id, host: "127.0.0.1", port, zone: port, vnodes: 128 }),
    applyEvent: (event) => {
      try {
        const { result } = machine.apply(event);
        node.applied.push(event.type);
        if (event.type === "lock") node.lockedHere.push(event.vid);
        node.changes.notify();
        return Promise.resolve(result);
      } catch (error) {
        node.refused.push(`${event.type}: ${(error as Error).message}`);
        return Promise.reject(error);
      }
    },
    installView: (view) => {
      machine.installView(view.epoch, view.nodes.map((n) => n.id));
      node.changes.notify();
      return Promise.resolve();
    },
    statusChanged: () => node.changes.notify(),
    mergeState: (state) => {
      machine.merge(state);
      return Promise.resolve();
    },
  };
  node.member = driverOf(host);
  return node;
}

/** The state `node` answers GET_CLUSTER_STATE with, as a sheep does. */
export function stateOf(node: FakeNode<ClusterDriver>): ClusterState {
  return { seq: node.member.lastSeq, ...node.machine.snapshot() };
}

/** `promise`, or an error naming `what` after `ms`. */
export function within<T>(what: string, promise: Promise<T>, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A lock of `vid` for a client of `node`. */
export function lockOf(node: { id: string }, vid = 7): ClusterEvent {
  return {
    type: "lock",
    vid,
    client: `client@${node.id}`,
    node: node.id,
    sinceMs: 0,
    force: false,
  };
}

/** Settles to `{ value }`, or to the error it was rejected with. */
export function outcomeOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then((value) => ({ value }), (error) => error);
}

/**
 * `proposer`'s lock of `vid` (`outcome`, see outcomeOf) came to it with its peers' state: it
 * hears the change was applied (within 10 s), has it in its state, and each of `others` applied
 * it once, the proposer never.
 */
export async function assertAppliedElsewhere(
  outcome: Promise<unknown>,
  proposer: FakeNode<ClusterDriver>,
  others: FakeNode<ClusterDriver>[],
  vid = 7,
): Promise<void> {
  const answer = await within(`the answer to the lock of ${vid}`, outcome);
  assert.ok(
    isResult(answer, ResultCode.NETWORK_ERROR) && /applied/.test(answer.message),
    `the proposer hears its change was applied, not ${JSON.stringify(answer)} (${answer})`,
  );
  assert.equal(proposer.machine.locks.get(vid)?.client, `client@${proposer.id}`, "in its state");
  for (const node of others) {
    assert.equal(node.lockedHere.filter((v) => v === vid).length, 1, `applied once by ${node.id}`);
  }
  assert.ok(!proposer.lockedHere.includes(vid), "and never by the proposer itself");
}
