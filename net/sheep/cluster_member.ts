/**
 * The built-in cluster driver: a sheep's membership through the group (the seed's `dog` role,
 * embedded; net/group). It turns the group's views into ring views, proposes cluster events
 * and applies delivered ones in order, and catches up from peers when it missed history (a
 * join, a restart, a healed partition). The other driver is etcd's (net/etcd/); both implement
 * `ClusterDriver` (cluster_driver.ts).
 *
 * @module
 */

import type { RingNode } from "../../core/hash/ring.ts";
import { makeView } from "../../core/cluster/view.ts";
import { type ClusterEvent, decodeEvent, encodeEvent } from "../../core/cluster/cluster_events.ts";
import { GroupDriver, type GroupState, type View } from "../group/mod.ts";
import type { GroupEventDelivery } from "../group/driver.ts";
import type { DatagramSeal, SealRefusal } from "../auth/datagram_seal.ts";
import { EpochLog, type StoredEpoch } from "./epoch_log.ts";
import { nextIncarnation } from "./incarnation.ts";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { admitProposal, type ClusterDriver, type MemberHost } from "./cluster_driver.ts";
import { ApplyQueue } from "./apply_queue.ts";
import { Changes } from "./changes.ts";
import { mergeFromPeers } from "./peer_state.ts";
import { Proposals } from "./proposals.ts";
import { memberInfoOf, storageNodesOf } from "./member_info.ts";

/** How a sheep finds and watches its peers. */
export interface ClusterOptions {
  /** Unicast "host:port" of other sheep (their object ports); the alternative to multicast. */
  seeds?: string[];
  /** Multicast group and port, or false for seeds only. */
  multicast?: { group: string; port: number } | false;
  /** Failure detection in ms (default 5000). */
  failureTimeoutMs?: number;
  /** How long a fresh node listens for peers before forming a cluster (default 3000). */
  settleMs?: number;
  /** Don't form a new cluster with fewer fresh nodes than this. */
  bootstrapMinMembers?: number;
  /**
   * Fault injection for tests: peers this returns false for are unreachable (group datagrams
   * dropped, object-protocol requests failing), as in a network partition.
   */
  reachable?: (id: string) => boolean;
  /** The cluster key's seal on group datagrams (net/auth/datagram_seal.ts). */
  seal?: DatagramSeal;
  /** A datagram was refused (bad MAC or replay). */
  onRefusal?: (reason: SealRefusal, sender: string) => void;
}

/** Group ticks are 100 ms. */
const TICK_MS = 100;
/** Proposals remembered for deduplication. */
const APPLIED_REMEMBERED = 10_000;
export class ClusterMember implements ClusterDriver {
  readonly #host: MemberHost;
  readonly #options: ClusterOptions;
  readonly epochLog: EpochLog;
  #driver: GroupDriver | undefined;
  #state: GroupState = "forming";
  /** Notified at every change of standing and at stop (a proposal waits for a standing). */
  readonly #standing = new Changes();
  #incarnation = 0;
  readonly #proposals = new Proposals<number>();
  readonly #queue: ApplyQueue;
  #lastSeq = 0;
  /** Catch-ups from peers queued and not yet done: until they are, the node is not primary. */
  #catchingUp = 0;
  /** The standing last reported (to proposals waiting and to the host). */
  #reported: GroupState = "forming";
  #members: string[] = [];
  #firstView = true;
  #master: string | null = null;
  /** Recently applied proposals, oldest first (insertion order), to drop redeliveries. */
  #applied = new Set<string>();
  /** Why the group driver stopped itself (it could not persist the epoch log), if it did. */
  #leftReason: string | undefined;

  constructor(host: MemberHost, options: ClusterOptions) {
    this.#host = host;
    this.#options = options;
    this.epochLog = new EpochLog(host.dir, undefined, (line) => host.logger.warn(line));
    this.#queue = new ApplyQueue(host.logger);
  }

  /**
   * The group's standing, except that a node still catching up from its peers (its first view,
   * a resync) is not yet primary: its state is not the cluster's yet.
   */
  get state(): GroupState {
    if (this.#leftReason !== undefined) return "left";
    return this.#state === "primary" && this.#catchingUp > 0 ? "forming" : this.#state;
  }

  get leftReason(): string | undefined {
    return this.#leftReason;
  }

  get master(): string | null {
    return this.#master;
  }

  async start(): Promise<void> {
    try {
      await this.#startDriver(this.#options.multicast ?? false);
    } catch (error) {
      if (!this.#options.multicast || !/multicast/i.test((error as Error).message)) throw error;
      // No multicast here (no route, a container): seeds still work, so carry on without it.
      this.#host.logger.warn(`${(error as Error).message}; continuing with seeds only`);
      await this.#driver?.stop();
      await this.#startDriver(false);
    }
  }

  async #startDriver(multicast: ClusterOptions["multicast"]): Promise<void> {
    const host = this.#host;
    const records = await this.epochLog.list();
    const persisted = records[0] ?? null;
    this.#incarnation = await nextIncarnation({
      dir: host.dir,
      selfId: host.id,
      nowMs: host.now(),
      records,
      warn: (line) => host.logger.warn(line),
    });
    const node = host.ringNode();
    const failureTicks = Math.max(
      5,
      Math.round((this.#options.failureTimeoutMs ?? 5000) / TICK_MS),
    );
    const settleTicks = Math.max(1, Math.round((this.#options.settleMs ?? 3000) / TICK_MS));
    this.#driver = new GroupDriver({
      address: host.id,
      incarnation: this.#incarnation,
      info: memberInfoOf(node),
      persisted: persisted ? stripTime(persisted) : null,
      persist: (records) => this.epochLog.append(records, host.now()),
      seeds: this.#options.seeds ?? [],
      multicast: multicast ?? false,
      timing: {
        failureTimeoutTicks: failureTicks,
        heartbeatTicks: Math.max(1, Math.floor(failureTicks / 10)),
        settleTicks,
      },
      ...(this.#options.bootstrapMinMembers
        ? { bootstrapMinMembers: this.#options.bootstrapMinMembers }
        : {}),
      ...(this.#options.reachable ? { acceptFrom: this.#options.reachable } : {}),
      ...(this.#options.seal ? { seal: this.#options.seal } : {}),
      ...(this.#options.onRefusal ? { onRefusal: this.#options.onRefusal } : {}),
      onView: (view) => this.#onView(view),
      onEvent: (event) => this.#onEvent(event),
      onResync: (view, delivered) => this.#onResync(view, delivered),
      onStatus: (status) => {
        this.#state = status.state;
        this.#master = status.master;
        this.#reportStanding();
      },
      onError: (error) => host.logger.warn(`group: ${error.message}`),
      onFailed: (reason) => this.#onFailed(reason),
    });
    await this.#driver.start();
  }

  /**
   * The group driver stopped itself: this node is out of the group (its peers install a view
   * without it). It says so to every client and proposal from now on, until it restarts.
   */
  #onFailed(reason: string): void {
    this.#leftReason = reason;
    this.#host.logger.error(
      `left the cluster: ${reason}; clients are refused until this sheep restarts`,
    );
    // Proposals in flight may have been sequenced before the driver stopped: not "refused".
    this.#proposals.shutdown(
      new SheepdogError(
        ResultCode.NETWORK_ERROR,
        `This sheep has left the cluster (${reason}) before its change was answered: it may ` +
          "have been applied; read the state back before retrying",
      ),
    );
    this.#reportStanding();
  }

  async stop(options: { leave: boolean }): Promise<void> {
    const driver = this.#driver;
    this.#driver = undefined;
    this.#standing.notify(); // proposals waiting for a standing give up now
    if (!driver) return;
    if (options.leave && this.#leftReason === undefined) {
      try {
        driver.leave();
        await new Promise((resolve) => setTimeout(resolve, 100));
      } catch {
        // Leaving is a courtesy: the others detect the silence anyway.
      }
    }
    await driver.stop();
    this.#proposals.shutdown();
  }

  /**
   * Proposes an event and resolves with what applying it returned on this node. While the
   * node is still forming or joining, it waits a little for a view rather than failing.
   */
  async propose<T>(event: ClusterEvent): Promise<T> {
    await admitProposal(this.#standing, {
      standing: () => this.state,
      running: () => this.#driver !== undefined,
      leftReason: () => this.#leftReason,
    });
    const id = this.#driver!.propose(encodeEvent(event));
    // A proposal id is also its place among this node's proposals, the order the group's
    // master takes them in: what a resync says was delivered is every id up to one.
    return await this.#proposals.expect<T>(id, id);
  }

  /** False for a peer the group has not heard from lately (cut off, or gone). */
  isHeard(id: string): boolean {
    return this.#driver?.isHeard(id) ?? true;
  }

  /** Operator override after a full stop: start with the nodes present. */
  forceRecover(): boolean {
    if (this.#leftReason !== undefined) return false;
    return this.#driver?.forceRecover() ?? false;
  }

  /** Members of the current view, witnesses included. */
  get members(): readonly string[] {
    return this.#members;
  }

  /** Installed views, newest first (the group's empty "dissolved" markers left out). */
  async epochHistory(): Promise<StoredEpoch[]> {
    return (await this.epochLog.list()).filter((record) => record.members.length > 0);
  }

  /** Tells proposals waiting and the host when the standing they see changed. */
  #reportStanding(): void {
    const standing = this.state;
    if (standing === this.#reported) return;
    this.#reported = standing;
    this.#standing.notify();
    this.#host.statusChanged?.();
  }

  #onView(view: View): void {
    const previous = new Set(this.#members);
    this.#members = view.members.map((m) => m.id);
    const nodes = storageNodesOf(view.members);
    const first = this.#firstView;
    this.#firstView = false;
    // The first view of this process: learn what the others know (VDIs this node stores no
    // inode of, locks, the config).
    if (first && nodes.some((n) => n.id !== this.#host.id)) this.#catchUp(nodes);
    const ringView = makeView(view.epoch, nodes);
    this.#enqueue(() => this.#host.installView(ringView, { previousMembers: previous }));
  }

  #onEvent(event: GroupEventDelivery): void {
    this.#enqueue(() => this.#apply(event));
  }

  async #apply(delivery: GroupEventDelivery): Promise<void> {
    const mine = delivery.origin === this.#host.id &&
      delivery.originIncarnation === this.#incarnation;
    if (delivery.seq <= this.#lastSeq) {
      // The state fetched from peers holds it already (see #catchUp): not applied again, but
      // its proposer, if this node, is told.
      if (mine) this.#proposals.skipped(delivery.proposalId);
      return;
    }
    this.#lastSeq = delivery.seq;
    // After a full stop the group may deliver a proposal again (its log is not durable):
    // apply each (origin, incarnation, proposal) once.
    const key = `${delivery.origin}/${delivery.originIncarnation}/${delivery.proposalId}`;
    if (this.#applied.has(key)) return;
    this.#applied.add(key);
    if (this.#applied.size > APPLIED_REMEMBERED) {
      this.#applied.delete(this.#applied.values().next().value!);
    }
    const pending = mine ? this.#proposals.take(delivery.proposalId) : undefined;
    try {
      const result = await this.#host.applyEvent(decodeEvent(delivery.payload));
      pending?.resolve(result);
    } catch (error) {
      pending?.reject(error as Error);
    }
  }

  /**
   * Missed history: fetch the state from peers, then install the view it came with. Our own
   * proposals up to `delivered` were in that history: the group never delivers them here, so
   * once the state that holds them is in, their proposers hear so. The ones after it were not
   * sequenced (lost with a partition, say): the group still holds them and sends them to the
   * master again, which takes each proposal id of ours once, so they are applied exactly once
   * and answered at their delivery. Failing them instead could not say "not applied": the
   * group may have sequenced them already, or will, since it keeps sending them.
   */
  #onResync(view: View, delivered: number): void {
    this.#firstView = false;
    this.#catchUp(storageNodesOf(view.members), delivered);
    this.#onView(view);
  }

  /**
   * Fetches the peers' state (queued, so in delivery order) and adopts the position in the event
   * order it reflects: a peer answers with what it applied up to now, which may include events
   * delivered after the view that called for the fetch, and those must not be applied a second
   * time on top of it (a format would then fail as "formatted already" on this node, and its
   * proposer's client would hear that; a proposal of ours among them is answered by
   * `#apply`). Until it is done the node is not primary, so it proposes nothing new that the
   * fetched state could already hold. `delivered`: our proposals up to this id are in the
   * history that state reflects (a resync's, see `#onResync`).
   */
  #catchUp(nodes: readonly RingNode[], delivered = 0): void {
    this.#catchingUp++;
    this.#enqueue(async () => {
      try {
        await mergeFromPeers(this.#host, nodes, (seq) => {
          this.#lastSeq = Math.max(this.#lastSeq, seq);
        });
      } finally {
        // Applied cluster-wide whether or not a peer answered: the group never delivers them.
        this.#proposals.skippedThrough(delivered);
        this.#catchingUp--;
        this.#reportStanding();
      }
    });
  }

  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** Views, events and syncs are applied strictly one after another, in delivery order. */
  #enqueue(work: () => Promise<void>): void {
    this.#queue.enqueue(work);
  }
}

function stripTime(record: StoredEpoch) {
  const { timeMs: _time, ...rest } = record;
  return rest;
}
