/**
 * Invariant checkers of the group protocol, fed every delivery of every node:
 * - one member list per (cluster, epoch), at one position of the event order (no two primary
 *   views for one epoch);
 * - each node delivers views with epochs growing by one and events with sequence numbers
 *   growing by one, except right after a `resync`;
 * - every (cluster, epoch, seq) is the same event on every node (the prefix property), and an
 *   event is delivered at one position only, at most once per node;
 * - a node's own proposal that a `resync` said was in the history it missed is never delivered
 *   to it afterwards (its proposer is answered once, from the state it fetches);
 * - a view is persisted before it is delivered.
 *
 * @module
 */

import type { Delivery, EpochRecord, MemberInfo } from "../../net/group/mod.ts";

/** What the checkers remember per node incarnation. */
export interface NodeHistory {
  readonly id: string;
  readonly incarnation: number;
  /** The cluster of the last delivery (a node of a dissolved cluster moves to another). */
  cluster: string;
  /** The era (log lineage) of the last delivery: a new era may restart event numbering. */
  era: number;
  lastEpoch: number;
  lastSeq: number;
  /** The next event may skip sequence numbers (a resync happened). */
  gapAllowed: boolean;
  /** Proposals delivered, "id#incarnation#pid", in delivery order. */
  readonly delivered: Set<string>;
  /** Its own proposals up to this id were in history it missed (the last resync said so). */
  ownMissed: number;
  /** Views delivered, "view 3" or "resync 3", in order. */
  readonly views: string[];
}

/** A violated invariant. */
export class InvariantError extends Error {
  override name = "InvariantError";
}

function check(condition: boolean, message: () => string): asserts condition {
  if (!condition) throw new InvariantError(message());
}

function membersKey(members: readonly MemberInfo[]): string {
  return members.map((m) => `${m.id}#${m.incarnation}`).join(",");
}

function payloadKey(payload: Uint8Array): string {
  let hash = 0x811c9dc5;
  for (const byte of payload) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return `${payload.length}:${hash.toString(16)}`;
}

/** Global memory of everything delivered anywhere in one simulation. */
export class Checker {
  readonly #views = new Map<string, { members: string; seq: number | null }>();
  readonly #events = new Map<string, string>();
  readonly #positions = new Map<string, { key: string; era: number }>();
  /** Proposals sequenced again in a later era, after a full stop lost all knowledge of them. */
  redeliveredAfterRegroup = 0;
  /** Proposals ("id#inc#pid") delivered by at least one node. */
  readonly deliveredProposals = new Set<string>();
  deliveries = 0;

  /** The views a node incarnation delivered, in order. */
  viewsSeenBy(node: NodeHistory): readonly string[] {
    return node.views;
  }

  newHistory(id: string, incarnation: number): NodeHistory {
    return {
      id,
      incarnation,
      cluster: "",
      era: 0,
      lastEpoch: 0,
      lastSeq: 0,
      gapAllowed: true,
      delivered: new Set(),
      ownMissed: 0,
      views: [],
    };
  }

  /** Checks one delivery of `node` in `cluster`; `disk` is the node's epoch log. */
  onDelivery(
    node: NodeHistory,
    cluster: string,
    delivery: Delivery,
    disk: readonly EpochRecord[],
  ): void {
    this.deliveries++;
    if (node.cluster !== cluster) {
      node.cluster = cluster;
      node.lastEpoch = 0;
      node.lastSeq = 0;
      node.gapAllowed = true;
    }
    const era = disk.at(-1)?.era ?? 0;
    if (node.era !== era) {
      // A full stop lost what only the dead knew: the new era numbers events from what the
      // survivors knew, so (epoch, seq) grows but seq alone may not.
      check(delivery.kind !== "event", () => `${node.id} changed era without a resync`);
      node.era = era;
      node.lastSeq = 0;
    }
    if (delivery.kind === "event") this.#onEvent(node, cluster, era, delivery);
    else this.#onView(node, cluster, delivery, disk);
  }

  #onView(
    node: NodeHistory,
    cluster: string,
    delivery: Extract<Delivery, { kind: "view" | "resync" }>,
    disk: readonly EpochRecord[],
  ): void {
    const { epoch, members } = delivery.view;
    const who = `${node.id}#${node.incarnation}`;
    // A resync may repeat the current epoch: it then only announces a gap in the events.
    const grows = delivery.kind === "resync" ? epoch >= node.lastEpoch : epoch > node.lastEpoch;
    check(grows, () => `${who} delivered epoch ${epoch} after ${node.lastEpoch}`);
    if (delivery.kind === "view" && node.lastEpoch > 0) {
      check(
        epoch === node.lastEpoch + 1,
        () => `${who} skipped from ${node.lastEpoch} to ${epoch}`,
      );
    }
    const persisted = disk.some((r) => r.cluster === cluster && r.epoch === epoch);
    check(persisted, () => `${who} delivered epoch ${epoch} before persisting it`);
    const key = `${cluster}|${epoch}`;
    const members_ = membersKey(members);
    const seq = delivery.kind === "view" && !node.gapAllowed ? node.lastSeq : null;
    const known = this.#views.get(key);
    if (known === undefined) {
      this.#views.set(key, { members: members_, seq });
    } else {
      check(
        known.members === members_,
        () => `two views for epoch ${epoch}: [${known.members}] and [${members_}] (${who})`,
      );
      if (known.seq !== null && seq !== null) {
        check(
          known.seq === seq,
          () => `epoch ${epoch} after event ${seq} at ${who}, not ${known.seq}`,
        );
      }
      if (known.seq === null && seq !== null) known.seq = seq;
    }
    node.lastEpoch = epoch;
    node.views.push(`${delivery.kind} ${epoch}`);
    if (delivery.kind === "resync") {
      node.gapAllowed = true;
      check(
        delivery.delivered >= node.ownMissed,
        () =>
          `${who}: a resync says its proposals up to ${delivery.delivered} were delivered, ` +
          `after one said up to ${node.ownMissed}`,
      );
      node.ownMissed = delivery.delivered;
    }
  }

  #onEvent(
    node: NodeHistory,
    cluster: string,
    era: number,
    event: Extract<Delivery, { kind: "event" }>,
  ): void {
    const who = `${node.id}#${node.incarnation}`;
    if (node.gapAllowed) {
      check(
        event.seq > node.lastSeq,
        () => `${who} delivered seq ${event.seq} after ${node.lastSeq}`,
      );
    } else {
      check(
        event.seq === node.lastSeq + 1,
        () => `${who} delivered seq ${event.seq} after ${node.lastSeq} without a resync`,
      );
    }
    check(
      event.epoch === node.lastEpoch,
      () => `${who}: event of epoch ${event.epoch} in epoch ${node.lastEpoch}`,
    );
    const proposal = `${event.origin}#${event.originIncarnation}#${event.proposalId}`;
    check(!node.delivered.has(proposal), () => `${who} delivered ${proposal} twice`);
    const own = event.origin === node.id && event.originIncarnation === node.incarnation;
    check(
      !own || event.proposalId > node.ownMissed,
      () => `${who} delivered its ${proposal} after a resync said it was in the history missed`,
    );
    node.delivered.add(proposal);
    const signature = `${proposal}|${payloadKey(event.payload)}`;
    const key = `${cluster}|${event.epoch}|${event.seq}`;
    const known = this.#events.get(key);
    if (known === undefined) this.#events.set(key, signature);
    else check(known === signature, () => `seq ${key}: ${known} vs ${signature} at ${who}`);
    const position = this.#positions.get(`${cluster}|${proposal}`);
    if (position === undefined) {
      this.#positions.set(`${cluster}|${proposal}`, { key, era });
    } else if (position.key !== key) {
      // Only a full stop (a new era) may forget a delivery; within an era it is exactly once.
      check(era > position.era, () => `${proposal} delivered at ${position.key} and at ${key}`);
      this.#positions.set(`${cluster}|${proposal}`, { key, era });
      this.redeliveredAfterRegroup++;
    }
    this.deliveredProposals.add(proposal);
    node.lastSeq = event.seq;
    node.gapAllowed = false;
  }
}
