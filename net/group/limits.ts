/**
 * Every bound of the group protocol, in one place, with the relations between them checked at
 * load. Sizes are bytes, times are ticks (the driver ticks every {@link tickMs} milliseconds).
 *
 * @module
 */

import { assert } from "../../core/assert.ts";

/** How often the driver calls `tick()`. */
export const tickMs = 100;

/** Default hello (heartbeat) period: 500 ms. */
export const heartbeatTicksDefault = 5;
/** Default time after which a silent member is suspected: 5 s. */
export const failureTimeoutTicksDefault = 50;
/** Default time a fresh node listens for others before forming the first view: 3 s. */
export const settleTicksDefault = 30;
/** Default resend period for unacknowledged protocol messages: 200 ms. */
export const retransmitTicksDefault = 2;

/** Longest member id ("host:port") or cluster id. */
export const idLengthMax = 100;
/** Largest UDP payload we send (IPv4 allows 65,507; keep headroom for the envelope). */
export const datagramBytesMax = 65_000;
/** Largest payload `propose()` accepts: a proposal must fit in one datagram. */
export const proposalBytesMax = 60_000;
/** Upper bound of what one event adds to a datagram beyond its payload (JSON, blob length). */
export const eventOverheadBytes = 100 + idLengthMax;
/** Largest batch in one log entry, payloads plus per-event overhead (an accept fits a datagram). */
export const entryBytesMax = 61_500;
/** Largest number of events batched into one log entry. */
export const entryEventsMax = 64;
/** Largest number of members in a view. Bigger clusters belong on ZooKeeper/etcd. */
export const membersMax = 64;
/** Largest JSON encoding of a member's `info` payload. */
export const infoBytesMax = 384;

/** Proposals a member may have queued and not yet delivered. */
export const pendingProposalsMax = 1024;
/** Proposals a member resends to the master per retransmit period. */
export const proposalsInFlightMax = 8;
/** Committed log entries every member keeps for retransmission to lagging members. */
export const retainedEntriesMax = 256;
/** Byte budget of committed entries in one `entries` reply. */
export const entriesReplyBytesMax = 56 * 1024;
/** Known peers (heard, gossiped or seeds) a member keeps. */
export const peersMax = 256;
/** Proposer sequence numbers remembered for de-duplication (one per member incarnation). */
export const pidTableMax = 128;
/** Events in one `entries` reply are bounded by bytes; entries per reply are bounded too. */
export const entriesPerReplyMax = 64;
/** Largest JSON section of one datagram (everything but binary payloads). */
export const jsonBytesMax = datagramBytesMax;
/** Binary payloads in one datagram. */
export const blobsMax = entryEventsMax * entriesPerReplyMax;

// Relations the protocol relies on.
assert(proposalBytesMax + eventOverheadBytes <= entryBytesMax, "a proposal must fit an entry");
assert(entryBytesMax + 2 * 1024 <= datagramBytesMax, "an accept must fit one datagram");
assert(entriesReplyBytesMax + 4 * 1024 <= datagramBytesMax, "an entries reply must fit");
/** Upper bound of the JSON of one member (id, info, field names). */
const memberJsonBytesMax = infoBytesMax + 2 * idLengthMax + 64;
assert(
  membersMax * memberJsonBytesMax + pidTableMax * (idLengthMax + 32) < datagramBytesMax,
  "a snapshot (view plus pid table) must fit one datagram",
);
assert(
  peersMax * (idLengthMax + 3) + membersMax * (idLengthMax + 32) +
      pidTableMax * (idLengthMax + 40) + infoBytesMax + 2048 < datagramBytesMax,
  "a hello must fit one datagram",
);
assert(pidTableMax >= membersMax * 2, "the pid table must cover every member and its successor");
assert(peersMax >= membersMax * 2, "peers must cover members and joiners");
assert(retransmitTicksDefault < heartbeatTicksDefault, "retransmits must be faster than hellos");
assert(heartbeatTicksDefault * 4 <= failureTimeoutTicksDefault, "allow three lost hellos");
