/**
 * Types of the group protocol: what the state machine takes in, what it hands out, and every
 * message that travels between members.
 *
 * @module
 */

/** Any JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | {
  [key: string]: JsonValue;
};
/** A JSON object: the opaque `info` a member advertises (zone, vnodes, space...). */
export type JsonObject = { [key: string]: JsonValue };

/** One member of a view. A restarted process is a new incarnation, hence a new member. */
export interface MemberInfo {
  /** The member's unicast address, "host:port". */
  readonly id: string;
  /** Grows with every start of the process at `id`. */
  readonly incarnation: number;
  /** A dog daemon: counts toward quorum, stores nothing. */
  readonly witness: boolean;
  /** Opaque, JSON-serialisable payload (zone, vnodes, space...). */
  readonly info: JsonObject;
}

/** An installed membership view. */
export interface View {
  /** Grows by one with every membership change. */
  readonly epoch: number;
  /** In join order; the master (sequencer) normally comes first. */
  readonly members: readonly MemberInfo[];
  /** Whether this member currently belongs to the primary partition in this view. */
  readonly primary: boolean;
}

/**
 * One installed view as written to the epoch log. The driver must write it durably before
 * acting on anything else in the same {@link Ready}; on restart the last record goes back to
 * the constructor.
 */
export interface EpochRecord {
  /** The cluster's identity, fixed when it first formed. */
  readonly cluster: string;
  /** The log lineage: a new one starts at the first view and after a restart of the cluster. */
  readonly era: number;
  readonly epoch: number;
  /** The log position of the view. */
  readonly slot: number;
  /** The sequence number of the last event before this view. */
  readonly seq: number;
  /** Empty only in the marker of a cluster this node abandoned before any event (see mod.ts). */
  readonly members: readonly MemberInfo[];
  /**
   * Highest delivered proposal id per "id#incarnation" at this view, so that a cluster
   * restarted from its epoch logs does not sequence an old proposal again.
   */
  readonly pids: readonly (readonly [string, number])[];
}

/** What a member delivers, in the same order on every member. */
export type Delivery =
  | { readonly kind: "view"; readonly view: View }
  | {
    readonly kind: "event";
    /**
     * Position in the total order of events. It grows by one per event, except after a
     * `resync` that follows a restart of the whole cluster, where numbering continues from what
     * the survivors knew: order events by (epoch, seq), which always grows.
     */
    readonly seq: number;
    /** The epoch of the view the event was delivered in. */
    readonly epoch: number;
    /** The proposer's id, incarnation and its own number for the proposal (see `propose`). */
    readonly origin: string;
    readonly originIncarnation: number;
    readonly proposalId: number;
    readonly payload: Uint8Array;
  }
  /**
   * This member missed part of the history (it joined, restarted, or was away longer than
   * the retained log): state built from earlier deliveries must be fetched from peers.
   * `view` is the current view. `delivered` is the highest of this member's own proposal ids
   * the history up to here delivered: its proposals up to it are in that history (the state
   * it fetches holds them) and are never delivered to it as events; later ones still come.
   */
  | { readonly kind: "resync"; readonly view: View; readonly delivered: number };

/** Where a member stands. */
export type GroupState =
  /** No cluster yet: discovering peers before the first view forms. */
  | "forming"
  /** Restarted from an epoch log: waiting for the last epoch's members, or to be admitted. */
  | "waiting-for-nodes"
  /** A member of the current view, in contact with a majority of it. */
  | "primary"
  /** Cut off from the majority, behind, or evicted: refuse writes until merged back. */
  | "minority"
  /** Left the group for good (after `leave()`). */
  | "left";

/** A snapshot of the member's standing. */
export interface GroupStatus {
  readonly state: GroupState;
  readonly cluster: string;
  /** The current view, `primary` as in `state`; null before the first view. */
  readonly view: View | null;
  /** The current sequencer, if one is known and alive. */
  readonly master: string | null;
}

/** A message to send: to one member id, or to every node that listens (multicast + seeds). */
export interface Outgoing {
  readonly to: string;
  readonly msg: GroupMessage;
}

/**
 * The effects of everything stepped in since the last `advance()`. Their order is API:
 * 1. write `persist` durably (the epoch log);
 * 2. send `messages`;
 * 3. apply `deliver` in order;
 * 4. report `status` if not null; then call `advance()`.
 */
export interface Ready {
  readonly persist: readonly EpochRecord[];
  readonly messages: readonly Outgoing[];
  readonly deliver: readonly Delivery[];
  readonly status: GroupStatus | null;
  /** Things an operator should hear of (logged by the driver), e.g. nodes a full view left out. */
  readonly notices: readonly string[];
}

// ---------------------------------------------------------------------------------------------
// Wire messages. Every message carries the sender's incarnation and cluster/era so that stale
// incarnations and other lineages are recognised and ignored.

/** Orders proposers: higher round wins; ties broken by id. */
export interface Ballot {
  readonly round: number;
  readonly id: string;
}

/** An event as sequenced by the master. */
export interface SequencedEvent {
  readonly seq: number;
  readonly origin: string;
  readonly incarnation: number;
  readonly pid: number;
  readonly payload: Uint8Array;
}

/** One position of the replicated log: a membership change or a batch of events. */
export type Entry =
  | {
    readonly kind: "view";
    readonly epoch: number;
    /** The last event sequence number before this view. */
    readonly seq: number;
    readonly members: readonly MemberInfo[];
    /** Members removed because they left: those incarnations are never admitted again. */
    readonly left: readonly MemberRef[];
  }
  | { readonly kind: "events"; readonly events: readonly SequencedEvent[] };

/** A value an acceptor accepted at a slot, in a ballot. */
export interface AcceptedValue {
  readonly slot: number;
  readonly ballot: Ballot;
  readonly entry: Entry;
}

/** A member of an epoch record as summarised in hellos. */
export interface MemberRef {
  readonly id: string;
  readonly incarnation: number;
}

/** The last persisted epoch record, as a hello summarises it. */
export interface RecordSummary {
  readonly era: number;
  readonly epoch: number;
  readonly seq: number;
  readonly members: readonly MemberRef[];
}

interface MessageBase {
  /** The sender's incarnation. */
  readonly inc: number;
  /** The sender's cluster ("" before it has one). */
  readonly cluster: string;
  /** The sender's log lineage (0 when it has no log in this incarnation). */
  readonly era: number;
}

/** Discovery and heartbeat, sent to every known peer and broadcast. */
export interface HelloMessage extends MessageBase {
  readonly type: "hello";
  readonly witness: boolean;
  readonly info: JsonObject;
  readonly state: GroupState;
  /** For a fresh node: the smallest id of the fresh nodes it hears (the initial former). */
  readonly former: string;
  /** For a fresh node: the existing cluster it waits to be admitted to, or "". */
  readonly joinCluster: string;
  readonly epoch: number;
  readonly applied: number;
  readonly seq: number;
  readonly leading: boolean;
  readonly ballot: Ballot;
  readonly leader: string;
  readonly leaving: boolean;
  readonly record: RecordSummary | null;
  /** Ids the sender knows, for discovery through seeds. */
  readonly peers: readonly string[];
  /** Off the primary only: the sender's delivered proposal ids, merged by a restarting master. */
  readonly pids: readonly (readonly [string, number])[];
}

/** Phase 1: a candidate asks config members not to accept lower ballots. */
export interface PrepareMessage extends MessageBase {
  readonly type: "prepare";
  readonly ballot: Ballot;
}

/** Phase 1 answer: the acceptor's applied position and its accepted value beyond it. */
export interface PromiseMessage extends MessageBase {
  readonly type: "promise";
  readonly ballot: Ballot;
  readonly applied: number;
  readonly accepted: AcceptedValue | null;
}

/** A refusal naming the higher ballot the acceptor promised. */
export interface NackMessage extends MessageBase {
  readonly type: "nack";
  readonly ballot: Ballot;
}

/** Phase 2: the master asks config members to accept `entry` at `slot`. */
export interface AcceptMessage extends MessageBase {
  readonly type: "accept";
  readonly ballot: Ballot;
  readonly slot: number;
  readonly entry: Entry;
}

/** Phase 2 answer. */
export interface AcceptedMessage extends MessageBase {
  readonly type: "accepted";
  readonly ballot: Ballot;
  readonly slot: number;
}

/** The value accepted at `slot` in `ballot` is chosen. */
export interface CommitMessage extends MessageBase {
  readonly type: "commit";
  readonly ballot: Ballot;
  readonly slot: number;
}

/** A request for committed entries from `from`, or (from = -1) for a snapshot. */
export interface FetchMessage extends MessageBase {
  readonly type: "fetch";
  readonly from: number;
}

/** Committed entries, contiguous. */
export interface EntriesMessage extends MessageBase {
  readonly type: "entries";
  readonly entries: readonly { readonly slot: number; readonly entry: Entry }[];
  /** More entries follow: fetch again at once. */
  readonly more: boolean;
}

/** The state at a committed position, for members that cannot replay the log. */
export interface SnapshotMessage extends MessageBase {
  readonly type: "snapshot";
  readonly slot: number;
  readonly seq: number;
  readonly view: {
    readonly epoch: number;
    readonly slot: number;
    readonly members: readonly MemberInfo[];
  };
  /** Highest delivered proposal id per "id#incarnation". */
  readonly pids: readonly (readonly [string, number])[];
  readonly ballot: Ballot;
  readonly leader: string;
}

/** A proposal from a member to the master. */
export interface ProposeMessage extends MessageBase {
  readonly type: "propose";
  readonly pid: number;
  /** Every proposal of the sender up to this id is delivered (so the master may skip them). */
  readonly after: number;
  readonly payload: Uint8Array;
}

/** A member asks the master to remove it. */
export interface LeaveMessage extends MessageBase {
  readonly type: "leave";
}

/** Every message of the group protocol. */
export type GroupMessage =
  | HelloMessage
  | PrepareMessage
  | PromiseMessage
  | NackMessage
  | AcceptMessage
  | AcceptedMessage
  | CommitMessage
  | FetchMessage
  | EntriesMessage
  | SnapshotMessage
  | ProposeMessage
  | LeaveMessage;
