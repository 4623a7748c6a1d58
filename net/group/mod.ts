/**
 * The group (the seed's `dog`): membership, failure detection, a master that sequences
 * cluster events, epochs, and a primary partition.
 *
 * ## Shape
 * {@link Membership} is a pure state machine in the style of etcd raft's `RawNode`: messages go
 * in through `step(from, msg)`, time through `tick()` (one tick = {@link tickMs} ms in the
 * driver), requests through `propose()`, `leave()` and `forceRecover()`; effects come out of
 * `ready()`. {@link GroupDriver} runs it over UDP (multicast plus unicast seeds).
 *
 * ## Order of effects (API)
 * For every `Ready`, in this order:
 * 1. `persist`: append the epoch records to the epoch log **durably**. A view is persisted
 *    before any message that reveals it leaves the node and before it is delivered.
 * 2. `messages`: send them (`to` is a member id, or "broadcast" = multicast group + seeds).
 * 3. `deliver`: apply views, events and resyncs in order.
 * 4. `status`: report it if not null; then call `advance()`.
 *
 * ## Protocol
 * - **Discovery and failure detection.** Every member says hello every `heartbeatTicks` to the
 *   multicast group and to every peer it knows (seeds, gossip, view members). A member silent
 *   for `failureTimeoutTicks` is suspected. An id heard with a higher incarnation is a restart:
 *   the old incarnation is dead.
 * - **First view.** A fresh node listens for `settleTicks`. If it hears an existing cluster it
 *   waits to be admitted; otherwise the smallest id among the fresh nodes forms epoch 1 with
 *   the fresh nodes that name it (and at least `bootstrapMinMembers` of them). Should two
 *   clusters still form (nodes started seconds apart on a lossy network), one that has never
 *   sequenced an event dissolves into the smaller-id cluster it hears; its members persist a
 *   marker (a record with no members) and are admitted there.
 * - **Replicated log.** Views and batches of events are entries of one log, agreed by
 *   multi-Paxos. The master is the ballot holder: the longest-lived member of the view that no
 *   one suspects stands when the master falls silent, and a live master keeps its followers
 *   (they ignore other candidates). An entry is chosen once a majority of the view it is
 *   proposed in accepted it, so a new view needs a majority of the previous view, witnesses
 *   included. The master proposes one entry at a time and runs phase 1 again on every new
 *   view, so each slot's quorum is known and at most one slot is ever in doubt.
 * - **Events.** `propose()` queues a payload; the member resends it to the master until it is
 *   delivered. The master takes each member's proposals in order, once (proposal ids), batches
 *   them, assigns sequence numbers, and every member delivers them in log order.
 * - **Primary partition.** A member is `primary` while it belongs to the current view and
 *   hears a majority of it; otherwise `minority` (the sheep refuses writes). A minority cannot
 *   choose anything. When it hears the primary again it catches up: committed entries are
 *   retransmitted from a retained window, or it gets a snapshot and delivers `resync`; the
 *   master admits evicted or restarted members back with a new view.
 * - **Restart.** A node started from its epoch log waits (`waiting-for-nodes`). If a primary
 *   exists it is admitted. A restarted node also hands its last view to surviving members of
 *   that view who missed it, so that survivors forming a majority of it carry on. After a full
 *   stop, once every member of the latest epoch is back and too few old incarnations survive
 *   to ever form a majority, the smallest id starts a new era (epoch + 1) with them;
 *   `forceRecover()` does so with whoever is present. Epoch records carry the delivered
 *   proposal ids, so a restarted cluster does not take old proposals again.
 *
 * ## Guarantees
 * - One view per epoch in a cluster, the same members everywhere; epochs grow by one.
 * - Every member delivers events and views in the same order; a member may miss a stretch
 *   (then it gets `resync`) but never sees a different order.
 * - A proposal from a member that stays up is delivered, exactly once while the cluster keeps
 *   a majority of some view alive; at least once across a full stop (see Limits).
 *
 * ## Limits
 * - A partition during the very first formation can form two clusters unless
 *   `bootstrapMinMembers` is the intended size; clusters never merge.
 * - The event log is not durable, the epoch log is. A full stop forgets what only the dead
 *   had seen: the new era numbers events from what survivors knew (order events by
 *   (epoch, seq)), and a proposal whose delivery no survivor saw may be delivered again when
 *   its proposer resends it. Appliers that must be exactly-once dedupe on
 *   (origin, originIncarnation, proposalId).
 * - `forceRecover()` trusts the operator: run it on one side only.
 * - A member cut off reports `minority` only after `failureTimeoutTicks`; until then it may
 *   still believe it is primary (requests carry epochs for this reason).
 * - Views hold at most {@link membersMax} members; proposals at most {@link proposalBytesMax}.
 *
 * @module
 */

export { Membership } from "./membership.ts";
export type { MembershipOptions } from "./membership.ts";
export { decodeDatagram, encodeDatagram, groupTagOf } from "./codec.ts";
export type { DecodeResult } from "./codec.ts";
export { GroupDriver, multicastDefault } from "./driver.ts";
export type { GroupDriverOptions, GroupDriverStats, GroupEventDelivery } from "./driver.ts";
export {
  failureTimeoutTicksDefault,
  heartbeatTicksDefault,
  membersMax,
  proposalBytesMax,
  retransmitTicksDefault,
  settleTicksDefault,
  tickMs,
} from "./limits.ts";
export type {
  Delivery,
  EpochRecord,
  GroupMessage,
  GroupState,
  GroupStatus,
  JsonObject,
  JsonValue,
  MemberInfo,
  Outgoing,
  Ready,
  View,
} from "./types.ts";
