/**
 * The group-membership state machine: pure and deterministic. No sockets, timers, clock or
 * randomness: messages come in through `step()`, time through `tick()`, and effects go out
 * through `ready()` (see the module doc of `mod.ts` for the protocol and the order of effects).
 *
 * @module
 */

import { assert } from "../../core/assert.ts";
import {
  entriesPerReplyMax,
  entriesReplyBytesMax,
  entryBytesMax,
  entryEventsMax,
  eventOverheadBytes,
  idLengthMax,
  membersMax,
  peersMax,
  pendingProposalsMax,
  pidTableMax,
  proposalBytesMax,
  proposalsInFlightMax,
  retainedEntriesMax,
} from "./limits.ts";
import {
  compareBallots,
  entryBytes,
  latestRecord,
  majorityOf,
  maxSeq,
  memberKey,
  type Present,
  statusKeyOf,
  summaryOf,
  type Timing,
  validateRecord,
  validateSelf,
  validateTiming,
  zeroBallot,
} from "./_support.ts";
import type {
  AcceptedValue,
  AcceptMessage,
  Ballot,
  Delivery,
  EntriesMessage,
  Entry,
  EpochRecord,
  GroupMessage,
  GroupState,
  GroupStatus,
  HelloMessage,
  JsonObject,
  MemberInfo,
  Outgoing,
  PromiseMessage,
  Ready,
  SequencedEvent,
  SnapshotMessage,
  View,
} from "./types.ts";

export { compareBallots } from "./_support.ts";

/** Construction parameters of a {@link Membership}. Times are in ticks. */
export interface MembershipOptions {
  /** This member. `incarnation` must grow with every start of the process. */
  readonly self: {
    readonly id: string;
    readonly incarnation: number;
    readonly witness?: boolean;
    readonly info?: JsonObject;
  };
  /** The last record of the epoch log, on restart; absent for a brand-new node. */
  readonly persisted?: EpochRecord | null;
  /** Unicast addresses to say hello to (for networks without multicast). */
  readonly seeds?: readonly string[];
  /** Hello (heartbeat) period. Default 5. */
  readonly heartbeatTicks?: number;
  /** Silence after which a member is suspected. Default 50. */
  readonly failureTimeoutTicks?: number;
  /** How long a fresh node listens before the first view may form. Default 30. */
  readonly settleTicks?: number;
  /** Resend period of unanswered protocol messages. Default 2. */
  readonly retransmitTicks?: number;
  /**
   * Fresh nodes (naming the former) needed before the very first view forms. Default 1. Set it
   * to the intended cluster size to make the first formation single even under partitions.
   */
  readonly bootstrapMinMembers?: number;
}

interface Peer {
  inc: number;
  /** Tick of the last message from this incarnation; -Infinity if never heard. */
  lastHeard: number;
  /** Tick since which this incarnation has been heard without a silence of a failure timeout. */
  firstHeard: number;
  /** Tick it was last named by someone (gossip) or configured. */
  mentioned: number;
  hello: HelloMessage | null;
}

interface PromiseInfo {
  readonly inc: number;
  readonly applied: number;
  readonly accepted: AcceptedValue | null;
}

interface Config {
  readonly epoch: number;
  readonly slot: number;
  readonly members: readonly MemberInfo[];
}

interface Inflight {
  readonly slot: number;
  readonly entry: Entry;
  readonly acks: Set<string>;
  sentTick: number;
}

interface Pending {
  readonly pid: number;
  readonly payload: Uint8Array;
}

interface Queued {
  readonly origin: string;
  readonly incarnation: number;
  readonly pid: number;
  readonly payload: Uint8Array;
}

/**
 * One member of the group. See `mod.ts` for the protocol.
 *
 * @example
 * ```ts
 * import { Membership } from "./membership.ts";
 * const node = new Membership({ self: { id: "127.0.0.1:7001", incarnation: 1 }, settleTicks: 1 });
 * for (let i = 0; i < 3; i++) node.tick();
 * const ready = node.ready();
 * node.advance();
 * console.assert(ready.deliver.some((d) => d.kind === "view"));
 * ```
 */
export class Membership {
  readonly #self: MemberInfo;
  readonly #timing: Timing;
  readonly #seeds: ReadonlySet<string>;
  #now = 0;
  #left = false;
  #leaving = false;

  // The log this member follows.
  #cluster: string;
  #era = 0;
  #applied = -1;
  #seq = 0;
  #config: Config | null = null;
  #record: EpochRecord | null;
  readonly #log = new Map<number, Entry>();
  #logStart = 0;
  #pids = new Map<string, number>();

  // Acceptor.
  #promised: Ballot = zeroBallot;
  #accepted: AcceptedValue | null = null;

  // Proposer (candidate or master).
  #role: "follower" | "candidate" | "leader" = "follower";
  #ballot: Ballot = zeroBallot;
  #maxRound = 0;
  #roleTick = 0;
  #phase1Free = false;
  readonly #promises = new Map<string, PromiseInfo>();
  #lastPrepareTick = -Infinity;
  #inflight: Inflight | null = null;
  #recoveredSlot = -1;
  #queue: Queued[] = [];
  readonly #queuedPids = new Map<string, number>();
  readonly #leaveRequests = new Set<string>();
  /** Incarnations that left the group (in order, bounded): never admitted again. */
  readonly #departed = new Set<string>();
  /** Clusters this node dissolved out of: stale snapshots of them must not pull it back. */
  readonly #abandoned = new Set<string>();

  // What this member knows of the master.
  #leader: string | null = null;
  #leaderBallot: Ballot = zeroBallot;
  #leaderHeardTick = -Infinity;

  // Peers, newest lineage seen, own proposals.
  readonly #peers = new Map<string, Peer>();
  #newest = { era: 0, epoch: 0, tick: -Infinity };
  #nextPid = 1;
  #mine: Pending[] = [];
  #lastProposeTick = -Infinity;
  #lastFetchTick = -Infinity;
  #lastLeaveTick = -Infinity;

  // Effects not yet handed out.
  #outbox: Outgoing[] = [];
  #notices: string[] = [];
  /** The joiners a full view last left out (said once per change, not every tick). */
  #leftOutNoted = "";
  #persistQueue: EpochRecord[] = [];
  #deliverQueue: Delivery[] = [];
  #statusKey = "";
  #statusDirty = false;
  #handedOut = false;

  /**
   * @throws {TypeError|RangeError} on an invalid id, incarnation, info, timing or record.
   */
  constructor(options: MembershipOptions) {
    this.#self = validateSelf(options.self);
    this.#timing = validateTiming(options);
    this.#seeds = new Set((options.seeds ?? []).filter((id) => id !== this.#self.id));
    for (const id of this.#seeds) this.#mention(id);
    let persisted = options.persisted ?? null;
    if (persisted !== null) validateRecord(persisted);
    if (persisted?.members.length === 0) persisted = null; // a dissolved cluster: start fresh
    this.#record = persisted;
    this.#cluster = persisted?.cluster ?? "";
    this.#mergePids(persisted?.pids ?? []);
    this.#statusKey = statusKeyOf(this.status(), this.#era);
  }

  /** This member's id. */
  get id(): string {
    return this.#self.id;
  }

  /** Advances time by one tick. */
  tick(): void {
    if (this.#left) return;
    this.#now++;
    if (this.#now === 1 || this.#now % this.#timing.heartbeat === 0) this.#sendHellos();
    if (this.#now % this.#timing.heartbeat === 0) this.#prunePeers();
    if (this.#cluster === "") this.#maybeForm();
    else this.#maybeRegroup();
    this.#maybeElect();
    this.#retransmit();
    this.#drive();
    this.#refreshStatus();
  }

  /** Feeds one message received from `from` (the sender's id). */
  step(from: string, msg: GroupMessage): void {
    if (this.#left || from === this.#self.id) return;
    if (!this.#notePeer(from, msg)) return;
    this.#dispatch(from, msg);
    this.#drive();
    this.#refreshStatus();
  }

  /**
   * Queues a cluster event for total-order delivery; it is resent until delivered.
   *
   * @returns the proposal id, found again as `proposalId` of the delivered event.
   * @throws {RangeError} when the payload exceeds `proposalBytesMax` or too many are pending.
   * @throws {Error} after `leave()`.
   */
  propose(payload: Uint8Array): number {
    if (this.#left) throw new Error("Cannot propose: this member has left the group");
    if (!(payload instanceof Uint8Array)) throw new TypeError("Cannot propose: not a Uint8Array");
    if (payload.length > proposalBytesMax) {
      throw new RangeError(
        `Cannot propose ${payload.length} bytes: a proposal must fit one datagram ` +
          `(${proposalBytesMax} bytes); send bulk data over the object protocol instead`,
      );
    }
    if (this.#mine.length >= pendingProposalsMax) {
      throw new RangeError(`Cannot propose: ${pendingProposalsMax} proposals are already pending`);
    }
    const pid = this.#nextPid++;
    this.#mine.push({ pid, payload: payload.slice() });
    this.#lastProposeTick = -Infinity; // send at once rather than at the next retransmit
    this.#sendProposals();
    this.#drive();
    return pid;
  }

  /** Leaves the group: the master installs a view without this member, then it goes quiet. */
  leave(): void {
    if (this.#left) return;
    const config = this.#config;
    if (config === null || !this.#isMemberSelf() || config.members.length === 1) {
      this.#becomeLeft();
      return;
    }
    this.#leaving = true;
    this.#lastLeaveTick = -Infinity;
    this.#sendLeave();
    this.#drive();
    this.#refreshStatus();
  }

  /**
   * Operator override while waiting for nodes (or cut off): start a new view with the nodes
   * present now instead of waiting for every member of the last epoch.
   *
   * @returns whether a view was formed.
   */
  forceRecover(): boolean {
    if (this.#left || this.#cluster === "") return false;
    const state = this.#computeState();
    if (state !== "waiting-for-nodes" && state !== "minority") return false;
    if (this.#primaryPeerPresent()) return false;
    const present = this.#presentNonPrimary();
    const latest = latestRecord(present);
    if (latest === null) return false;
    const inRecord = latest.members.flatMap((m) => present.get(m.id) ?? []);
    const others = [...present.values()]
      .filter((p) => !latest.members.some((m) => m.id === p.id))
      .sort((a, b) => (a.id < b.id ? -1 : 1));
    const members = [...inRecord, ...others].slice(0, membersMax).map((p) => p.info);
    for (const node of present.values()) this.#mergePids(node.pids);
    this.#startEra(latest.epoch + 1, maxSeq(present), members, "resync");
    this.#drive();
    this.#refreshStatus();
    return true;
  }

  /** Whether `ready()` has anything to hand out. */
  /**
   * True when `id` (any incarnation) was heard from within the failure timeout: a peer the
   * group has not heard from is not worth a request that would wait for a timeout.
   */
  isHeard(id: string): boolean {
    if (id === this.#self.id) return true;
    const peer = this.#peers.get(id);
    return peer !== undefined && this.#now - peer.lastHeard < this.#timing.failure;
  }

  hasReady(): boolean {
    return this.#outbox.length > 0 || this.#notices.length > 0 || this.#persistQueue.length > 0 ||
      this.#deliverQueue.length > 0 || this.#statusDirty;
  }

  /**
   * Hands out the pending effects (and forgets them). Persist them, then send, then deliver,
   * then call `advance()`.
   */
  ready(): Ready {
    assert(!this.#handedOut, "ready() called again before advance()");
    this.#handedOut = true;
    const ready: Ready = {
      persist: this.#persistQueue,
      messages: this.#outbox,
      deliver: this.#deliverQueue,
      status: this.#statusDirty ? this.status() : null,
      notices: this.#notices,
    };
    this.#persistQueue = [];
    this.#outbox = [];
    this.#notices = [];
    this.#deliverQueue = [];
    this.#statusDirty = false;
    return ready;
  }

  /** Acknowledges that the last `ready()` was acted upon. */
  advance(): void {
    assert(this.#handedOut, "advance() without ready()");
    this.#handedOut = false;
  }

  /** A snapshot of this member's standing. */
  status(): GroupStatus {
    const state = this.#computeState();
    const config = this.#config;
    const view: View | null = config === null
      ? null
      : { epoch: config.epoch, members: config.members, primary: state === "primary" };
    return {
      state,
      cluster: this.#cluster,
      view,
      master: this.#leaderAlive() ? this.#leader : null,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Input handling.

  #dispatch(from: string, msg: GroupMessage): void {
    switch (msg.type) {
      case "hello":
        return this.#onHello(from, msg);
      case "prepare":
        return this.#onPrepare(from, msg.inc, msg);
      case "promise":
        return this.#onPromise(from, msg);
      case "nack":
        return this.#onNack(msg);
      case "accept":
        return this.#onAccept(from, msg);
      case "accepted":
        return this.#onAccepted(from, msg.inc, msg);
      case "commit":
        return this.#onCommit(from, msg);
      case "fetch":
        return this.#onFetch(from, msg);
      case "entries":
        return this.#onEntries(from, msg);
      case "snapshot":
        return this.#onSnapshot(msg);
      case "propose":
        if (this.#sameLog(msg)) {
          this.#acceptProposal({
            origin: from,
            incarnation: msg.inc,
            pid: msg.pid,
            payload: msg.payload,
          }, msg.after);
        }
        return;
      case "leave":
        if (this.#sameLog(msg) && this.#isMember(from, msg.inc)) {
          this.#leaveRequests.add(memberKey(from, msg.inc));
        }
        return;
    }
  }

  /** Records that `from` is alive; false if the message comes from a stale incarnation. */
  #notePeer(from: string, msg: GroupMessage): boolean {
    if (from.length === 0 || from.length > idLengthMax) return false;
    let peer = this.#peers.get(from);
    if (peer === undefined) {
      if (this.#peers.size >= peersMax) return false;
      peer = {
        inc: msg.inc,
        lastHeard: -Infinity,
        firstHeard: this.#now,
        mentioned: this.#now,
        hello: null,
      };
      this.#peers.set(from, peer);
    }
    if (msg.inc < peer.inc) return false;
    if (msg.inc > peer.inc) {
      peer.inc = msg.inc;
      peer.hello = null;
      peer.lastHeard = -Infinity;
    }
    if (this.#now - peer.lastHeard >= this.#timing.failure) peer.firstHeard = this.#now;
    peer.lastHeard = this.#now;
    if (msg.type === "hello") peer.hello = msg;
    return true;
  }

  #onHello(from: string, hello: HelloMessage): void {
    for (const id of hello.peers) this.#mention(id);
    if (hello.leader !== "") this.#mention(hello.leader);
    if (this.#cluster === "") {
      // A fresh node asks the cluster it waits for; only a member gets an answer.
      const wanted = hello.cluster !== "" && hello.cluster === this.#joinClusterNow();
      if (wanted && hello.state === "primary") this.#maybeFetch(from, -1);
      return;
    }
    if (hello.cluster !== this.#cluster) {
      this.#maybeDissolve(hello);
      return;
    }
    this.#maybeFetchRecord(from, hello);
    this.#noteNewest(hello);
    if (hello.era > this.#era) {
      this.#maybeFetch(from, -1);
      return;
    }
    if (hello.era !== this.#era) return;
    if (hello.leading) this.#adoptLeader(from, hello.ballot);
    // Catch up from the master, which retains the log; others only when there is none.
    if (hello.applied <= this.#applied || !(hello.leading || !this.#leaderAlive())) return;
    const accepted = this.#accepted;
    if (
      hello.leading && accepted !== null && accepted.slot === this.#applied + 1 &&
      accepted.slot <= hello.applied && compareBallots(accepted.ballot, hello.ballot) === 0
    ) {
      // The master chose what it proposed in its ballot: our copy is the chosen value.
      this.#applyEntry(accepted.slot, accepted.entry, "view");
    }
    if (hello.applied > this.#applied) this.#maybeFetch(from, this.#applied + 1);
  }

  /**
   * Two clusters can form when nodes start seconds apart on a lossy network. A cluster that
   * has never sequenced an event holds nothing: it dissolves into the smaller-id cluster it
   * hears, whose master then admits its members.
   */
  #maybeDissolve(hello: HelloMessage): void {
    if (this.#era !== 1 || this.#seq !== 0 || this.#leaving) return;
    if (hello.cluster === "" || hello.cluster > this.#cluster || hello.state !== "primary") return;
    if (this.#role !== "follower") this.#stepDown();
    // Persisted so that a restart starts fresh instead of waiting for the abandoned cluster.
    const marker: EpochRecord = {
      cluster: this.#cluster,
      era: this.#era,
      epoch: this.#config?.epoch ?? 1,
      slot: this.#applied,
      seq: 0,
      members: [],
      pids: [],
    };
    this.#persistQueue.push(marker);
    if (this.#abandoned.size >= membersMax) this.#abandoned.clear();
    this.#abandoned.add(this.#cluster);
    this.#cluster = "";
    this.#era = 0;
    this.#record = null;
    this.#config = null;
    this.#applied = -1;
    this.#log.clear();
    this.#logStart = 0;
    this.#promised = zeroBallot;
    this.#accepted = null;
    this.#leader = null;
    this.#leaderBallot = zeroBallot;
    this.#leaveRequests.clear();
  }

  /**
   * A restarted node may hold a committed view that no live member knows (those who applied
   * it crashed). If we belong to it, we take it as a snapshot: with the other survivors of
   * that view we may be a majority of it, able to continue instead of waiting forever.
   */
  #maybeFetchRecord(from: string, hello: HelloMessage): void {
    const record = hello.record;
    if (record === null || hello.era !== 0) return; // live members serve their log instead
    const self = this.#self;
    const mine = record.members.some((m) => m.id === self.id && m.incarnation === self.incarnation);
    const newer = record.era > this.#era ||
      (record.era === this.#era && record.epoch > (this.#config?.epoch ?? 0));
    if (mine && newer) this.#maybeFetch(from, -1);
  }

  #onPrepare(from: string, inc: number, msg: { readonly ballot: Ballot } & GroupMessage): void {
    if (!this.#sameLog(msg) || !this.#isMember(from, inc)) return;
    // A live master keeps its followers: a member that merely lost contact cannot depose it.
    if (this.#leaderAlive() && this.#leader !== from) return;
    if (compareBallots(msg.ballot, this.#promised) < 0) {
      this.#send(from, { ...this.#base(), type: "nack", ballot: this.#promised });
      return;
    }
    this.#promised = msg.ballot;
    this.#noteRound(msg.ballot.round);
    if (this.#role !== "follower" && compareBallots(msg.ballot, this.#ballot) > 0) {
      this.#stepDown();
    }
    const accepted = this.#accepted !== null && this.#accepted.slot > this.#applied
      ? this.#accepted
      : null;
    this.#send(from, {
      ...this.#base(),
      type: "promise",
      ballot: msg.ballot,
      applied: this.#applied,
      accepted,
    });
  }

  #onPromise(from: string, msg: PromiseMessage): void {
    if (!this.#sameLog(msg) || this.#role === "follower") return;
    if (compareBallots(msg.ballot, this.#ballot) !== 0 || !this.#isMember(from, msg.inc)) return;
    this.#promises.set(from, { inc: msg.inc, applied: msg.applied, accepted: msg.accepted });
  }

  #onNack(msg: GroupMessage & { readonly ballot: Ballot }): void {
    if (!this.#sameLog(msg) || this.#role === "follower") return;
    if (compareBallots(msg.ballot, this.#ballot) <= 0) return;
    this.#noteRound(msg.ballot.round);
    this.#stepDown();
  }

  #onAccept(from: string, msg: AcceptMessage): void {
    if (!this.#sameLog(msg)) return;
    if (compareBallots(msg.ballot, this.#promised) < 0) {
      this.#send(from, { ...this.#base(), type: "nack", ballot: this.#promised });
      return;
    }
    this.#promised = msg.ballot;
    this.#adoptLeader(from, msg.ballot);
    if (msg.slot <= this.#applied) {
      // Already chosen here; a correct master can only be proposing the chosen value.
      this.#sendAccepted(from, msg);
      return;
    }
    const accepted = this.#accepted;
    if (
      msg.slot === this.#applied + 2 && accepted !== null && accepted.slot === this.#applied + 1 &&
      compareBallots(accepted.ballot, msg.ballot) === 0
    ) {
      // The master moves on only once the previous slot is chosen, in this very ballot.
      this.#applyEntry(accepted.slot, accepted.entry, "view");
    }
    if (msg.slot !== this.#applied + 1) {
      // Accept only right after what we applied, so at most one slot is ever in doubt here.
      this.#maybeFetch(from, this.#applied + 1);
      return;
    }
    this.#accepted = { slot: msg.slot, ballot: msg.ballot, entry: msg.entry };
    this.#sendAccepted(from, msg);
  }

  #sendAccepted(to: string, msg: AcceptMessage): void {
    this.#send(to, { ...this.#base(), type: "accepted", ballot: msg.ballot, slot: msg.slot });
  }

  #onAccepted(from: string, inc: number, msg: GroupMessage & { ballot: Ballot; slot: number }) {
    const inflight = this.#inflight;
    if (this.#role !== "leader" || inflight === null || !this.#sameLog(msg)) return;
    if (compareBallots(msg.ballot, this.#ballot) !== 0 || msg.slot !== inflight.slot) return;
    if (this.#isMember(from, inc)) inflight.acks.add(memberKey(from, inc));
  }

  #onCommit(from: string, msg: GroupMessage & { ballot: Ballot; slot: number }): void {
    if (!this.#sameLog(msg) || msg.slot <= this.#applied) return;
    const accepted = this.#accepted;
    if (
      accepted !== null && accepted.slot === msg.slot && msg.slot === this.#applied + 1 &&
      compareBallots(accepted.ballot, msg.ballot) === 0
    ) {
      this.#applyEntry(accepted.slot, accepted.entry, "view");
      return;
    }
    this.#maybeFetch(from, this.#applied + 1);
  }

  #onFetch(from: string, msg: GroupMessage & { from: number }): void {
    const config = this.#config;
    if (this.#era === 0) {
      this.#sendRecordSnapshot(from, msg);
      return;
    }
    if (config === null) return;
    const member = this.#isMember(from, msg.inc);
    if (msg.cluster !== this.#cluster && !(msg.cluster === "" && member)) return;
    if (msg.from < 0 || msg.era !== this.#era || msg.from < this.#logStart) {
      // Replay is impossible: only a member of the current view gets the state itself.
      if (member) this.#sendSnapshot(from);
      return;
    }
    if (msg.from > this.#applied) return;
    this.#send(from, this.#entriesFrom(msg.from));
  }

  /** A restarted node answers a member of its persisted view with that view (see above). */
  #sendRecordSnapshot(to: string, msg: GroupMessage & { from: number }): void {
    const record = this.#record;
    if (record === null || msg.from >= 0 || msg.cluster !== record.cluster) return;
    if (!record.members.some((m) => m.id === to && m.incarnation === msg.inc)) return;
    this.#send(to, {
      ...this.#base(),
      type: "snapshot",
      era: record.era,
      slot: record.slot,
      seq: record.seq,
      view: { epoch: record.epoch, slot: record.slot, members: record.members },
      pids: [...this.#pids],
      ballot: zeroBallot,
      leader: "",
    });
  }

  #entriesFrom(start: number): EntriesMessage {
    const entries: { slot: number; entry: Entry }[] = [];
    let bytes = 0;
    let slot = start;
    for (; slot <= this.#applied && entries.length < entriesPerReplyMax; slot++) {
      const entry = this.#log.get(slot);
      assert(entry !== undefined, `retained log misses slot ${slot}`);
      const size = entryBytes(entry);
      if (entries.length > 0 && bytes + size > entriesReplyBytesMax) break;
      bytes += size;
      entries.push({ slot, entry });
    }
    return { ...this.#base(), type: "entries", entries, more: slot <= this.#applied };
  }

  #onEntries(from: string, msg: EntriesMessage): void {
    if (!this.#sameLog(msg)) return;
    for (const { slot, entry } of msg.entries) {
      if (slot === this.#applied + 1) this.#applyEntry(slot, entry, "view");
    }
    if (msg.more) {
      this.#lastFetchTick = -Infinity;
      this.#maybeFetch(from, this.#applied + 1);
    }
  }

  #onSnapshot(msg: SnapshotMessage): void {
    const self = this.#self;
    const inView = msg.view.members.some((m) =>
      m.id === self.id && m.incarnation === self.incarnation
    );
    if (!inView || (msg.cluster !== this.#cluster && this.#cluster !== "")) return;
    if (this.#abandoned.has(msg.cluster)) return;
    const newer = msg.era > this.#era || (msg.era === this.#era && msg.slot > this.#applied);
    if (!newer || msg.era === 0) return;
    this.#adoptSnapshot(msg);
    if (msg.leader !== "") this.#adoptLeader(msg.leader, msg.ballot);
  }

  #adoptSnapshot(msg: SnapshotMessage): void {
    if (msg.era !== this.#era) {
      this.#promised = zeroBallot;
      this.#leaderBallot = zeroBallot;
      this.#leader = null;
      this.#accepted = null;
    }
    if (this.#role !== "follower") this.#stepDown();
    this.#cluster = msg.cluster;
    this.#era = msg.era;
    this.#noteRound(msg.ballot.round);
    this.#log.clear();
    this.#logStart = msg.slot + 1;
    this.#applied = msg.slot;
    this.#seq = msg.seq;
    if (this.#accepted !== null && this.#accepted.slot <= msg.slot) this.#accepted = null;
    this.#mergePids(msg.pids);
    this.#dropDelivered();
    this.#leaderHeardTick = this.#now;
    const fresh = this.#config === null && this.#record === null;
    this.#installConfig({ epoch: msg.view.epoch, slot: msg.view.slot, members: msg.view.members });
    // The first view of a brand-new cluster, received whole, is no gap in anybody's history.
    const whole = fresh && msg.view.epoch === 1 && msg.slot === 0 && msg.seq === 0;
    this.#deliverView(whole ? "view" : "resync");
  }

  // -------------------------------------------------------------------------------------------
  // Applying the committed log.

  #applyEntry(slot: number, entry: Entry, viewKind: "view" | "resync"): void {
    assert(slot === this.#applied + 1, `slot ${slot} applied after ${this.#applied}`);
    this.#log.set(slot, entry);
    while (this.#log.size > retainedEntriesMax) this.#log.delete(this.#logStart++);
    this.#applied = slot;
    if (this.#accepted !== null && this.#accepted.slot <= slot) this.#accepted = null;
    if (this.#inflight !== null && this.#inflight.slot <= slot) this.#inflight = null;
    if (entry.kind === "events") {
      this.#applyEvents(entry.events);
      return;
    }
    assert(entry.seq === this.#seq, `view at seq ${entry.seq} after event ${this.#seq}`);
    const previous = this.#config;
    assert(previous === null || entry.epoch === previous.epoch + 1, "epochs grow by one");
    this.#installConfig({ epoch: entry.epoch, slot, members: entry.members });
    for (const member of entry.left) this.#noteDeparted(memberKey(member.id, member.incarnation));
    this.#deliverView(viewKind);
    this.#afterView(previous);
  }

  #installConfig(config: Config): void {
    this.#config = config;
    for (const member of config.members) this.#mention(member.id);
    const record: EpochRecord = {
      cluster: this.#cluster,
      era: this.#era,
      epoch: config.epoch,
      slot: config.slot,
      seq: this.#seq,
      members: config.members,
      pids: [...this.#pids],
    };
    const known = this.#record;
    if (known === null || known.cluster !== record.cluster || known.epoch < record.epoch) {
      // The epoch log is written before anything that depends on this view leaves the node.
      this.#persistQueue.push(record);
      this.#record = record;
    }
    for (const key of this.#leaveRequests) {
      if (!config.members.some((m) => memberKey(m.id, m.incarnation) === key)) {
        this.#leaveRequests.delete(key);
      }
    }
  }

  #afterView(previous: Config | null): void {
    const config = this.#config;
    assert(config !== null, "a view was just installed");
    if (this.#leader !== null && !config.members.some((m) => m.id === this.#leader)) {
      // The master left the view: elect at once rather than after a timeout.
      this.#leaderHeardTick = -Infinity;
    }
    if (!this.#isMemberSelf()) {
      if (this.#role !== "follower") this.#stepDown();
      if (this.#leaving) this.#becomeLeft();
      return;
    }
    if (this.#role !== "leader") return;
    for (const member of config.members) {
      const known = previous?.members.some((m) =>
        m.id === member.id && m.incarnation === member.incarnation
      );
      if (member.id !== this.#self.id && !known && !this.#canReplay(member.id)) {
        this.#sendSnapshot(member.id);
      }
    }
  }

  /** Whether a node (by its last hello) can catch up from our retained log, without a gap. */
  #canReplay(id: string): boolean {
    const hello = this.#peers.get(id)?.hello;
    if (hello === null || hello === undefined) return false;
    return hello.cluster === this.#cluster && hello.era === this.#era &&
      hello.applied + 1 >= this.#logStart;
  }

  #applyEvents(events: readonly SequencedEvent[]): void {
    const epoch = this.#config?.epoch ?? 0;
    for (const event of events) {
      assert(event.seq === this.#seq + 1, `event ${event.seq} after ${this.#seq}`);
      this.#seq = event.seq;
      const key = memberKey(event.origin, event.incarnation);
      if ((this.#pids.get(key) ?? 0) >= event.pid) continue; // a duplicate: deliver once
      this.#pids.delete(key); // re-insert: the table's order is the order of last use
      this.#pids.set(key, event.pid);
      this.#deliverQueue.push({
        kind: "event",
        seq: event.seq,
        epoch,
        origin: event.origin,
        originIncarnation: event.incarnation,
        proposalId: event.pid,
        payload: event.payload,
      });
    }
    this.#prunePids();
    this.#dropDelivered();
  }

  /** Proposal ids only grow: merging keeps anything delivered anywhere from being taken again. */
  #mergePids(pids: readonly (readonly [string, number])[]): void {
    for (const [key, pid] of pids) {
      if ((this.#pids.get(key) ?? 0) < pid) this.#pids.set(key, pid);
    }
    this.#prunePids();
  }

  #noteDeparted(key: string): void {
    this.#departed.add(key);
    for (const old of this.#departed) {
      if (this.#departed.size <= peersMax) break;
      this.#departed.delete(old);
    }
  }

  #prunePids(): void {
    if (this.#pids.size <= pidTableMax) return;
    const members = new Set(this.#config?.members.map((m) => memberKey(m.id, m.incarnation)));
    for (const key of this.#pids.keys()) {
      if (this.#pids.size <= pidTableMax) break;
      if (!members.has(key)) this.#pids.delete(key);
    }
  }

  /** The highest of our own proposal ids delivered (in the history this member knows of). */
  #ownDelivered(): number {
    return this.#pids.get(memberKey(this.#self.id, this.#self.incarnation)) ?? 0;
  }

  #dropDelivered(): void {
    const delivered = this.#ownDelivered();
    while (this.#mine.length > 0 && this.#mine[0]!.pid <= delivered) this.#mine.shift();
  }

  #deliverView(kind: "view" | "resync"): void {
    const config = this.#config;
    assert(config !== null, "no view to deliver");
    const view: View = { epoch: config.epoch, members: config.members, primary: true };
    this.#deliverQueue.push(
      kind === "view" ? { kind, view } : { kind, view, delivered: this.#ownDelivered() },
    );
  }

  // -------------------------------------------------------------------------------------------
  // The master: phase 1 on every new view, recovery of a value possibly chosen, then one entry
  // at a time (the next is proposed only once the previous is chosen).

  #drive(): void {
    if (this.#left) return;
    if (this.#role === "candidate" && this.#phase1Complete()) {
      this.#becomeLeader();
      this.#sendHellos(); // tell everyone at once who sequences now
    }
    if (this.#role === "leader") this.#leaderDrive();
  }

  #leaderDrive(): void {
    this.#checkChosen();
    if (this.#inflight !== null) return;
    if (!this.#phase1Complete()) {
      if (this.#now - this.#lastPrepareTick >= this.#timing.retransmit) this.#sendPrepares();
      return;
    }
    const ahead = this.#mostAppliedPromise();
    if (ahead !== null) {
      this.#maybeFetch(ahead, this.#applied + 1);
      return;
    }
    const slot = this.#applied + 1;
    if (this.#recoveredSlot !== slot) {
      this.#recoveredSlot = slot;
      const recovered = this.#recoveredValue(slot);
      if (recovered !== null) {
        this.#proposeEntry(recovered);
        return;
      }
    }
    this.#submitOwnProposals();
    const entry = this.#nextViewChange() ?? this.#nextEventBatch();
    if (entry !== null) this.#proposeEntry(entry);
  }

  #phase1Complete(): boolean {
    const config = this.#config;
    if (config === null) return false;
    if (this.#phase1Free) return true;
    const promised = config.members.filter((m) => this.#promises.get(m.id)?.inc === m.incarnation);
    return promised.length >= majorityOf(config.members.length);
  }

  /** A promiser that applied more than we did: we must catch up before leading. */
  #mostAppliedPromise(): string | null {
    let best: string | null = null;
    let applied = this.#applied;
    for (const [id, promise] of this.#promises) {
      if (promise.applied > applied && id !== this.#self.id) {
        best = id;
        applied = promise.applied;
      }
    }
    return best;
  }

  /** Paxos phase 1b: the highest-ballot value accepted at `slot` by members that promised. */
  #recoveredValue(slot: number): Entry | null {
    let best: AcceptedValue | null = null;
    for (const [id, promise] of this.#promises) {
      if (!this.#isMember(id, promise.inc) || promise.applied !== slot - 1) continue;
      const accepted = promise.accepted;
      if (accepted === null || accepted.slot !== slot) continue;
      if (best === null || compareBallots(accepted.ballot, best.ballot) > 0) best = accepted;
    }
    return best?.entry ?? null;
  }

  #proposeEntry(entry: Entry): void {
    const slot = this.#applied + 1;
    assert(this.#inflight === null, "one entry in flight at a time");
    assert(compareBallots(this.#promised, this.#ballot) <= 0, "proposing under a stale ballot");
    this.#promised = this.#ballot;
    this.#accepted = { slot, ballot: this.#ballot, entry };
    const self = memberKey(this.#self.id, this.#self.incarnation);
    this.#inflight = { slot, entry, acks: new Set([self]), sentTick: this.#now };
    if (entry.kind === "events") {
      for (const event of entry.events) {
        const key = memberKey(event.origin, event.incarnation);
        this.#queuedPids.set(key, Math.max(this.#queuedPids.get(key) ?? 0, event.pid));
      }
    }
    this.#sendAccepts();
    this.#checkChosen();
  }

  #checkChosen(): void {
    const inflight = this.#inflight;
    const config = this.#config;
    if (inflight === null || config === null) return;
    if (inflight.slot !== this.#applied + 1) {
      this.#inflight = null;
      return;
    }
    const acks = config.members.filter((m) => inflight.acks.has(memberKey(m.id, m.incarnation)));
    if (acks.length < majorityOf(config.members.length)) return;
    this.#inflight = null;
    const recipients = new Set(config.members.map((m) => m.id));
    if (inflight.entry.kind === "view") {
      for (const member of inflight.entry.members) recipients.add(member.id);
    }
    recipients.delete(this.#self.id);
    for (const id of recipients) {
      this.#send(id, {
        ...this.#base(),
        type: "commit",
        ballot: this.#ballot,
        slot: inflight.slot,
      });
    }
    this.#applyEntry(inflight.slot, inflight.entry, "view");
  }

  #nextViewChange(): Entry | null {
    const config = this.#config;
    if (config === null) return null;
    const leaving = config.members.filter((m) => this.#isLeaving(m));
    const keep = config.members.filter((m) =>
      !leaving.includes(m) && (m.id === this.#self.id || this.#heard(m.id, m.incarnation))
    );
    const { ready, maturing } = this.#joiners(keep);
    // A joiner heard moments ago comes with the next view: wait for it rather than change twice.
    if (maturing) return null;
    const joiners = ready.slice(0, Math.max(0, membersMax - keep.length));
    this.#noteLeftOut(ready.slice(joiners.length));
    if (keep.length === config.members.length && joiners.length === 0) return null;
    const members = [...keep, ...joiners];
    if (members.length === 0) return null;
    const left = leaving.map((m) => ({ id: m.id, incarnation: m.incarnation }));
    return { kind: "view", epoch: config.epoch + 1, seq: this.#seq, members, left };
  }

  /** Says (once per change) which joiners a full view leaves out, and what to do instead. */
  #noteLeftOut(leftOut: readonly MemberInfo[]): void {
    const key = leftOut.map((m) => m.id).sort().join(",");
    if (key === this.#leftOutNoted) return;
    this.#leftOutNoted = key;
    if (leftOut.length === 0) return;
    this.#notices.push(
      `the view is full (${membersMax} members, the built-in group's limit): ` +
        `${leftOut.length} node(s) cannot join (${leftOut.map((m) => m.id).join(", ")}); ` +
        "a cluster this large wants the etcd driver (--cluster-driver etcd://...)",
    );
  }

  #isLeaving(member: MemberInfo): boolean {
    if (member.id === this.#self.id) return this.#leaving;
    if (this.#leaveRequests.has(memberKey(member.id, member.incarnation))) return true;
    const peer = this.#peers.get(member.id);
    return peer?.hello?.leaving === true && peer.inc === member.incarnation;
  }

  /**
   * Live nodes asking to be admitted: fresh nodes naming us, and our cluster's outsiders.
   * `maturing`: some were heard for less than a hello period (they join a little later).
   */
  #joiners(keep: readonly MemberInfo[]): { ready: MemberInfo[]; maturing: boolean } {
    const joiners: MemberInfo[] = [];
    let maturing = false;
    for (const [id, peer] of this.#peers) {
      const hello = peer.hello;
      if (hello === null || hello.inc !== peer.inc || !this.#heard(id, peer.inc)) continue;
      if (hello.leaving || hello.state === "left" || keep.some((m) => m.id === id)) continue;
      if (this.#departed.has(memberKey(id, peer.inc))) continue;
      const ours = hello.cluster === this.#cluster
        ? hello.era <= this.#era
        : hello.cluster === "" && hello.joinCluster === this.#cluster;
      if (!ours) continue;
      // Admit after a full hello period: joiners arriving together share one view change.
      if (this.#now - peer.firstHeard < this.#timing.heartbeat) {
        maturing = true;
        continue;
      }
      joiners.push({ id, incarnation: peer.inc, witness: hello.witness, info: hello.info });
    }
    joiners.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return { ready: joiners, maturing };
  }

  #nextEventBatch(): Entry | null {
    // Recovery may have delivered some queued proposals meanwhile: never sequence them twice.
    this.#queue = this.#queue.filter((q) =>
      q.pid > (this.#pids.get(memberKey(q.origin, q.incarnation)) ?? 0)
    );
    const events: SequencedEvent[] = [];
    let bytes = 0;
    while (this.#queue.length > 0 && events.length < entryEventsMax) {
      const next = this.#queue[0]!;
      const size = next.payload.length + eventOverheadBytes;
      if (events.length > 0 && bytes + size > entryBytesMax) break;
      this.#queue.shift();
      bytes += size;
      events.push({
        seq: this.#seq + events.length + 1,
        origin: next.origin,
        incarnation: next.incarnation,
        pid: next.pid,
        payload: next.payload,
      });
    }
    return events.length === 0 ? null : { kind: "events", events };
  }

  #submitOwnProposals(): void {
    const after = this.#proposalFloor();
    const self = this.#self;
    for (const { pid, payload } of this.#mine) {
      const proposal = { origin: self.id, incarnation: self.incarnation, pid, payload };
      if (this.#acceptProposal(proposal, after) === "refused") break;
    }
  }

  /** Our proposals up to this id are delivered (those pending start after it). */
  #proposalFloor(): number {
    return (this.#mine[0]?.pid ?? this.#nextPid) - 1;
  }

  /**
   * Queues a member's proposal in its own order, once. `after` is the proposer's word that
   * everything up to it is delivered: our table may miss part of its history (a snapshot).
   */
  #acceptProposal(proposal: Queued, after: number): "queued" | "duplicate" | "refused" {
    const { origin, incarnation, pid } = proposal;
    if (this.#role !== "leader" || !this.#isMember(origin, incarnation)) return "refused";
    // Until recovery of the next slot is done our table may lag the log: the proposer resends.
    if (this.#recoveredSlot <= this.#applied) return "refused";
    const key = memberKey(origin, incarnation);
    const known = Math.max(this.#pids.get(key) ?? 0, this.#queuedPids.get(key) ?? 0);
    const last = Math.max(known, after);
    if (pid <= last) return "duplicate";
    if (pid !== last + 1 || this.#queue.length >= pendingProposalsMax) return "refused";
    this.#queue.push(proposal);
    this.#queuedPids.set(key, pid);
    return "queued";
  }

  // -------------------------------------------------------------------------------------------
  // Roles.

  #maybeElect(): void {
    const config = this.#config;
    if (this.#role !== "follower" || config === null || this.#leaving) return;
    if (!this.#isMemberSelf() || this.#leaderAlive()) return;
    // The longest-lived member that we do not suspect stands; everyone else waits for it.
    const first = config.members.find((m) =>
      m.id === this.#self.id || this.#heard(m.id, m.incarnation)
    );
    if (first?.id !== this.#self.id) return;
    if (this.#now - this.#roleTick < this.#timing.retransmit) return;
    this.#ballot = { round: this.#maxRound + 1, id: this.#self.id };
    this.#maxRound = this.#ballot.round;
    this.#promised = this.#ballot;
    this.#role = "candidate";
    this.#roleTick = this.#now;
    this.#phase1Free = false;
    this.#promises.clear();
    const accepted = this.#accepted !== null && this.#accepted.slot > this.#applied
      ? this.#accepted
      : null;
    this.#promises.set(this.#self.id, {
      inc: this.#self.incarnation,
      applied: this.#applied,
      accepted,
    });
    this.#sendPrepares();
  }

  #becomeLeader(): void {
    this.#role = "leader";
    this.#roleTick = this.#now;
    this.#leader = this.#self.id;
    this.#leaderBallot = this.#ballot;
    this.#leaderHeardTick = this.#now;
    this.#inflight = null;
    this.#recoveredSlot = -1;
    this.#queue = [];
    this.#queuedPids.clear();
  }

  #stepDown(): void {
    this.#role = "follower";
    this.#roleTick = this.#now;
    this.#phase1Free = false;
    this.#promises.clear();
    this.#inflight = null;
    this.#queue = [];
    this.#queuedPids.clear();
    if (this.#leader === this.#self.id) this.#leader = null;
  }

  #becomeLeft(): void {
    if (this.#role !== "follower") this.#stepDown();
    this.#left = true;
    this.#leaving = false;
    this.#mine = [];
    this.#refreshStatus();
  }

  #adoptLeader(from: string, ballot: Ballot): void {
    this.#noteRound(ballot.round);
    if (compareBallots(ballot, this.#leaderBallot) < 0) return;
    if (this.#role !== "follower" && compareBallots(ballot, this.#ballot) > 0) this.#stepDown();
    if (this.#role !== "follower" && from !== this.#self.id) return;
    this.#leaderBallot = ballot;
    this.#leader = from;
    this.#leaderHeardTick = this.#now;
  }

  #leaderAlive(): boolean {
    const leader = this.#leader;
    if (leader === null) return false;
    if (leader === this.#self.id) return this.#role === "leader";
    if (this.#now - this.#leaderHeardTick >= this.#timing.failure) return false;
    return this.#config?.members.some((m) => m.id === leader) ?? false;
  }

  // -------------------------------------------------------------------------------------------
  // Forming the first view, and restarting a stopped cluster.

  #maybeForm(): void {
    if (this.#now < this.#timing.settle || this.#leaving) return;
    if (this.#joinClusterNow() !== "" || this.#formerNow() !== this.#self.id) return;
    const namers: MemberInfo[] = [];
    for (const [id, peer] of this.#freshPeers()) {
      const hello = peer.hello!;
      if (hello.former !== this.#self.id) continue;
      namers.push({ id, incarnation: peer.inc, witness: hello.witness, info: hello.info });
    }
    if (namers.length + 1 < this.#timing.bootstrapMinMembers) return;
    namers.sort((a, b) => (a.id < b.id ? -1 : 1));
    const members = [this.#self, ...namers].slice(0, membersMax);
    this.#cluster = `${this.#self.id}/${this.#self.incarnation}`;
    this.#startEra(1, 0, members, "view");
  }

  /**
   * After a full stop: once every member of the latest epoch anyone present knows is back, and
   * too few of its old incarnations survive to ever form a majority again, the member with the
   * smallest id starts a new era with them.
   */
  #maybeRegroup(): void {
    const state = this.#computeState();
    if (state !== "waiting-for-nodes" && state !== "minority") return;
    if (this.#leaving || this.#primaryPeerPresent()) return;
    const present = this.#presentNonPrimary();
    const latest = latestRecord(present);
    if (latest === null || latest.members.some((m) => !present.has(m.id))) return;
    const survivors = latest.members.filter((m) => present.get(m.id)?.inc === m.incarnation);
    if (survivors.length >= majorityOf(latest.members.length)) return;
    const smallest = latest.members.reduce((a, m) => (m.id < a ? m.id : a), latest.members[0]!.id);
    if (smallest !== this.#self.id) return;
    const members = latest.members.map((m) => present.get(m.id)!.info);
    for (const node of present.values()) this.#mergePids(node.pids);
    this.#startEra(latest.epoch + 1, maxSeq(present), members, "resync");
  }

  /** Installs the first view of a new era, unilaterally, as its master with the lowest ballot. */
  #startEra(epoch: number, seq: number, members: MemberInfo[], kind: "view" | "resync"): void {
    assert(members.some((m) => m.id === this.#self.id), "the former belongs to its view");
    if (this.#role !== "follower") this.#stepDown();
    this.#era = epoch;
    this.#log.clear();
    this.#logStart = 0;
    this.#applied = -1;
    this.#seq = seq;
    this.#config = null;
    this.#accepted = null;
    // Ballot round 1 is the lowest of the era, so phase 1 is vacuous for its holder.
    this.#ballot = { round: 1, id: this.#self.id };
    this.#promised = this.#ballot;
    this.#maxRound = Math.max(this.#maxRound, 1);
    this.#becomeLeader();
    this.#phase1Free = true;
    this.#applyEntry(0, { kind: "view", epoch, seq, members, left: [] }, kind);
    this.#sendHellos();
  }

  #freshPeers(): [string, Peer][] {
    return [...this.#peers].filter(([id, peer]) =>
      peer.hello !== null && peer.hello.inc === peer.inc && this.#heard(id, peer.inc) &&
      peer.hello.cluster === "" && peer.hello.state === "forming"
    );
  }

  #formerNow(): string {
    let former = this.#self.id;
    for (const [id] of this.#freshPeers()) if (id < former) former = id;
    return former;
  }

  /** The smallest existing cluster heard: a fresh node waits to join it instead of forming. */
  #joinClusterNow(): string {
    if (this.#cluster !== "") return "";
    let join = "";
    for (const [id, peer] of this.#peers) {
      const hello = peer.hello;
      if (hello === null || !this.#heard(id, peer.inc) || hello.cluster === "") continue;
      if (hello.state === "left" || this.#abandoned.has(hello.cluster)) continue;
      if (join === "" || hello.cluster < join) join = hello.cluster;
    }
    return join;
  }

  #primaryPeerPresent(): boolean {
    for (const [id, peer] of this.#peers) {
      const hello = peer.hello;
      if (hello === null || hello.cluster !== this.#cluster) continue;
      if (hello.state === "primary" && this.#heard(id, peer.inc)) return true;
    }
    return false;
  }

  #presentNonPrimary(): Map<string, Present> {
    const present = new Map<string, Present>();
    present.set(this.#self.id, {
      id: this.#self.id,
      inc: this.#self.incarnation,
      info: this.#self,
      seq: this.#seq,
      record: summaryOf(this.#record),
      pids: [],
    });
    for (const [id, peer] of this.#peers) {
      const hello = peer.hello;
      if (hello === null || hello.inc !== peer.inc || !this.#heard(id, peer.inc)) continue;
      if (hello.cluster !== this.#cluster) continue;
      if (hello.state !== "waiting-for-nodes" && hello.state !== "minority") continue;
      const info = { id, incarnation: peer.inc, witness: hello.witness, info: hello.info };
      const node = { id, inc: peer.inc, info, seq: hello.seq, record: hello.record };
      present.set(id, { ...node, pids: hello.pids });
    }
    return present;
  }

  // -------------------------------------------------------------------------------------------
  // Timers and sending.

  #retransmit(): void {
    const every = this.#timing.retransmit;
    if (this.#role === "candidate") {
      if (this.#now - this.#roleTick > this.#timing.failure) this.#stepDown();
      else if (this.#now - this.#lastPrepareTick >= every) this.#sendPrepares();
    }
    const inflight = this.#inflight;
    if (this.#role === "leader" && inflight !== null && this.#now - inflight.sentTick >= every) {
      this.#sendAccepts();
    }
    this.#sendProposals();
    if (this.#leaving) this.#sendLeave();
  }

  #sendHellos(): void {
    const hello = this.#hello();
    this.#outbox.push({ to: "broadcast", msg: hello });
    for (const id of this.#peers.keys()) this.#outbox.push({ to: id, msg: hello });
  }

  #hello(): HelloMessage {
    const fresh = this.#cluster === "";
    // Gossip only peers heard recently: names merely repeated would circulate forever.
    const peers = [...this.#peers].filter(([, peer]) =>
      this.#now - peer.lastHeard < this.#timing.forget
    ).map(([id]) => id);
    const state = this.#computeState();
    return {
      ...this.#base(),
      type: "hello",
      witness: this.#self.witness,
      info: this.#self.info,
      state,
      former: fresh ? this.#formerNow() : "",
      joinCluster: this.#joinClusterNow(),
      epoch: this.#config?.epoch ?? 0,
      applied: this.#applied,
      seq: this.#seq,
      leading: this.#role === "leader",
      ballot: this.#role === "leader" ? this.#ballot : this.#leaderBallot,
      leader: this.#leaderAlive() ? this.#leader ?? "" : "",
      leaving: this.#leaving,
      record: summaryOf(this.#record),
      peers,
      pids: state === "primary" ? [] : [...this.#pids],
    };
  }

  #sendPrepares(): void {
    const config = this.#config;
    if (config === null) return;
    this.#lastPrepareTick = this.#now;
    for (const member of config.members) {
      if (member.id === this.#self.id) continue;
      if (this.#promises.get(member.id)?.inc === member.incarnation) continue;
      this.#send(member.id, { ...this.#base(), type: "prepare", ballot: this.#ballot });
    }
  }

  #sendAccepts(): void {
    const inflight = this.#inflight;
    const config = this.#config;
    if (inflight === null || config === null) return;
    inflight.sentTick = this.#now;
    for (const member of config.members) {
      if (inflight.acks.has(memberKey(member.id, member.incarnation))) continue;
      this.#send(member.id, {
        ...this.#base(),
        type: "accept",
        ballot: this.#ballot,
        slot: inflight.slot,
        entry: inflight.entry,
      });
    }
  }

  #sendSnapshot(to: string): void {
    const config = this.#config;
    assert(config !== null, "a snapshot needs a view");
    this.#send(to, {
      ...this.#base(),
      type: "snapshot",
      slot: this.#applied,
      seq: this.#seq,
      view: { epoch: config.epoch, slot: config.slot, members: config.members },
      pids: [...this.#pids],
      ballot: this.#leaderAlive() ? this.#leaderBallot : zeroBallot,
      leader: this.#leaderAlive() ? this.#leader ?? "" : "",
    });
  }

  /** Resends the oldest pending proposals to the master (the master takes them in order). */
  #sendProposals(): void {
    const leader = this.#leader;
    if (this.#mine.length === 0 || leader === null || leader === this.#self.id) return;
    if (!this.#leaderAlive() || !this.#isMemberSelf()) return;
    if (this.#now - this.#lastProposeTick < this.#timing.retransmit) return;
    this.#lastProposeTick = this.#now;
    const after = this.#proposalFloor();
    for (const { pid, payload } of this.#mine.slice(0, proposalsInFlightMax)) {
      this.#send(leader, { ...this.#base(), type: "propose", pid, after, payload });
    }
  }

  #sendLeave(): void {
    const leader = this.#leader;
    if (leader === null || leader === this.#self.id || !this.#leaderAlive()) return;
    if (this.#now - this.#lastLeaveTick < this.#timing.retransmit) return;
    this.#lastLeaveTick = this.#now;
    this.#send(leader, { ...this.#base(), type: "leave" });
  }

  #maybeFetch(from: string, slot: number): void {
    if (this.#now - this.#lastFetchTick < this.#timing.retransmit) return;
    this.#lastFetchTick = this.#now;
    this.#send(from, { ...this.#base(), type: "fetch", from: this.#era === 0 ? -1 : slot });
  }

  #send(to: string, msg: GroupMessage): void {
    assert(to !== this.#self.id, "a member never messages itself");
    this.#outbox.push({ to, msg });
  }

  #base(): { inc: number; cluster: string; era: number } {
    return { inc: this.#self.incarnation, cluster: this.#cluster, era: this.#era };
  }

  // -------------------------------------------------------------------------------------------
  // Small queries and bookkeeping.

  #sameLog(msg: GroupMessage): boolean {
    return this.#era > 0 && msg.cluster === this.#cluster && msg.era === this.#era;
  }

  #isMember(id: string, incarnation: number): boolean {
    return this.#config?.members.some((m) => m.id === id && m.incarnation === incarnation) ?? false;
  }

  #isMemberSelf(): boolean {
    return this.#isMember(this.#self.id, this.#self.incarnation);
  }

  #heard(id: string, incarnation: number): boolean {
    if (id === this.#self.id) return incarnation === this.#self.incarnation;
    const peer = this.#peers.get(id);
    if (peer === undefined || peer.inc !== incarnation) return false;
    return this.#now - peer.lastHeard < this.#timing.failure;
  }

  #noteRound(round: number): void {
    if (round > this.#maxRound) this.#maxRound = round;
  }

  #noteNewest(hello: HelloMessage): void {
    const newest = this.#newest;
    const newer = hello.era > newest.era ||
      (hello.era === newest.era && hello.epoch >= newest.epoch);
    if (newer) this.#newest = { era: hello.era, epoch: hello.epoch, tick: this.#now };
  }

  #behind(): boolean {
    const newest = this.#newest;
    if (this.#now - newest.tick >= this.#timing.failure) return false;
    if (newest.era !== this.#era) return newest.era > this.#era;
    return newest.epoch > (this.#config?.epoch ?? 0);
  }

  #mention(id: string): void {
    if (id === this.#self.id || id.length === 0 || id.length > idLengthMax) return;
    const peer = this.#peers.get(id);
    if (peer !== undefined) {
      peer.mentioned = this.#now;
      return;
    }
    if (this.#peers.size >= peersMax) return;
    this.#peers.set(id, {
      inc: 0,
      lastHeard: -Infinity,
      firstHeard: this.#now,
      mentioned: this.#now,
      hello: null,
    });
  }

  #isContactWorthy(id: string): boolean {
    const peer = this.#peers.get(id);
    if (peer === undefined) return false;
    return this.#now - Math.max(peer.lastHeard, peer.mentioned) < this.#timing.forget;
  }

  /** Forgets peers nobody has heard or named for a long time (seeds and members stay). */
  #prunePeers(): void {
    for (const id of [...this.#peers.keys()]) {
      if (this.#seeds.has(id) || this.#config?.members.some((m) => m.id === id)) continue;
      if (!this.#isContactWorthy(id)) this.#peers.delete(id);
    }
  }

  #computeState(): GroupState {
    if (this.#left) return "left";
    if (this.#cluster === "") return "forming";
    if (this.#era === 0) return "waiting-for-nodes";
    const config = this.#config;
    if (config === null || !this.#isMemberSelf() || this.#behind()) return "minority";
    const heard = config.members.filter((m) => this.#heard(m.id, m.incarnation));
    return heard.length >= majorityOf(config.members.length) ? "primary" : "minority";
  }

  #refreshStatus(): void {
    const key = statusKeyOf(this.status(), this.#era);
    if (key === this.#statusKey) return;
    this.#statusKey = key;
    this.#statusDirty = true;
  }
}
