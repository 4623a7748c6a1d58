/**
 * The cluster-driver seam: what a sheep needs of whatever keeps its cluster together. A driver
 * gives it membership and the epoch (views, turned into ring views), one total order of cluster
 * events (format, VDI changes, attach locks, recovery reports) with the proposer's result, the
 * node's standing (primary, minority, waiting) and a way to catch up state it missed.
 *
 * Two drivers implement it: the built-in group (`cluster_member.ts`, multicast and seeds,
 * multi-Paxos views and events) and etcd (`net/etcd/`, leases, a revision-ordered event log).
 * Placement, replication and recovery only see the views and events a driver delivers through
 * {@link MemberHost}, so they are the same whichever driver runs.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import type { ClusterView } from "../../core/cluster/view.ts";
import type { ClusterEvent } from "../../core/cluster/cluster_events.ts";
import type { ClusterState } from "./cluster_state.ts";
import type { StoredEpoch } from "./epoch_log.ts";
import type { Logger } from "./logger.ts";
import type { Peers } from "./peers.ts";
import type { Changes } from "./changes.ts";

/** Where a node stands in its cluster (the built-in group's `GroupState` is one of these). */
export type ClusterStanding =
  /** No cluster yet, or not yet admitted to one (or still fetching its peers' state). */
  | "forming"
  /** After a full stop: waiting for the last epoch's members (or `recover force`). */
  | "waiting-for-nodes"
  /**
   * A member of the current view, able to change the cluster. A node that must catch up from
   * its peers first (its first view, a resync) is primary only once their state is merged:
   * something it proposed before could already be in that state, applied twice or never
   * answered.
   */
  | "primary"
  /** Cut off (from the majority, or from etcd's quorum): changes and writes are refused. */
  | "minority"
  /**
   * Left for good: stopped, or gone on its own because it could not persist its epoch log
   * (`leftReason`); clients are refused until the sheep restarts.
   */
  | "left";

/**
 * What a driver needs of its node: who it is, where it keeps its epoch log, how to reach peers,
 * and where delivered events, views and fetched state go (applied strictly in delivery order).
 */
export interface MemberHost {
  /** "host:port", the node's identity in the cluster and on the ring. */
  readonly id: string;
  /** The node's directory (the epoch log lives there). */
  readonly dir: string;
  readonly logger: Logger;
  readonly peers: Pick<Peers, "get">;
  /** The wall clock: epoch records' dates, the incarnation. */
  now(): number;
  /** A clock nobody sets: leases, settling, deadlines (`SheepOptions.monotonic`). */
  monotonic(): number;
  ringNode(): RingNode;
  /** Applies one delivered event; resolves with this node's result (the proposer's answer). */
  applyEvent(event: ClusterEvent): Promise<unknown>;
  installView(view: ClusterView, options: { previousMembers: ReadonlySet<string> }): Promise<void>;
  /** The member's standing changed (e.g. back to primary when a partition heals). */
  statusChanged?(): void;
  /** Merges the state a peer sent (GET_CLUSTER_STATE) into the node's. */
  mergeState(state: ClusterState): Promise<void>;
}

/** A sheep's membership in its cluster, whichever mechanism provides it. */
export interface ClusterDriver {
  readonly state: ClusterStanding;
  /** The member that sequences changes (the group's master, etcd's epoch writer), if known. */
  readonly master: string | null;
  /** Members of the current view (witnesses included). */
  readonly members: readonly string[];
  /**
   * The position in the event order that this node's state reflects (sent with
   * GET_CLUSTER_STATE, so a node that merges it knows which later events to apply).
   */
  readonly lastSeq: number;
  /**
   * Why the node left its cluster on its own, in one line ("cannot persist the epoch log: ..."),
   * when it did (its standing is then "left"); undefined otherwise.
   */
  readonly leftReason?: string;
  start(): Promise<void>;
  /** `leave: false` skips saying goodbye, as a crash would. */
  stop(options: { leave: boolean }): Promise<void>;
  /**
   * Applies `event` on every member in one order; resolves with what applying it returned on
   * this node, or rejects with its error (the same on every node). If this node got the event's
   * effect with its peers' state instead (it was cut off, and caught up past it), it rejects
   * with `appliedElsewhere()` (proposals.ts): applied cluster-wide, result unknown here.
   */
  propose<T>(event: ClusterEvent): Promise<T>;
  /** False for a peer the driver knows is gone or cut off (requests to it fail at once). */
  isHeard(id: string): boolean;
  /** Operator override after a full stop: start with the nodes present. False if not waiting. */
  forceRecover(): boolean;
  /** Installed views, newest first. */
  epochHistory(): Promise<StoredEpoch[]>;
}

/** Makes a driver for a sheep (the sheep is its host). */
export type ClusterDriverFactory = (host: MemberHost) => ClusterDriver;

/** How long a proposal waits for a node that is still forming or joining. */
const PROPOSE_WAIT_MS = 10_000;

/**
 * What every client request to a sheep that left its cluster on its own is answered (HALT, as a
 * minority's: the node takes no part in the cluster), in one line.
 */
export function leftClusterError(reason: string): SheepdogError {
  return new SheepdogError(
    ResultCode.HALT,
    `This sheep has left the cluster (${reason}): restart it once that is fixed`,
  );
}

/**
 * Waits (up to PROPOSE_WAIT_MS) until a node that is forming or joining has a standing, then
 * throws the refusal that standing calls for, if any. Both drivers propose through it, so a
 * client sees the same errors whichever driver runs. `changes` is notified by the driver at
 * every change of standing and when it stops: the wait is woken, not polled. `leftReason`: why
 * the node left on its own, if it did (`ClusterDriver.leftReason`).
 */
export async function admitProposal(
  changes: Changes,
  node: {
    standing: () => ClusterStanding;
    running: () => boolean;
    leftReason?: () => string | undefined;
  },
): Promise<void> {
  const { standing, running } = node;
  const leftReason = node.leftReason ?? (() => undefined);
  await changes.until(
    () =>
      !running() || leftReason() !== undefined || standing() === "primary" ||
      standing() === "minority",
    PROPOSE_WAIT_MS,
  );
  const left = leftReason();
  if (left !== undefined) throw leftClusterError(left);
  if (!running()) throw new SheepdogError(ResultCode.SHUTDOWN, "The sheep is not running");
  const state = standing();
  if (state === "minority") {
    throw new SheepdogError(
      ResultCode.HALT,
      "This node is cut off from the majority of the cluster: changes are refused",
    );
  }
  if (state !== "primary") {
    throw new SheepdogError(ResultCode.WAIT_FOR_JOIN, "Waiting for other nodes to join cluster");
  }
}
