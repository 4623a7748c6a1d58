/**
 * When the etcd driver installs a new epoch, and with whom: pure rules over the current `epoch`
 * key and the live member keys (a member key lives as long as its sheep's lease).
 *
 * - The live members differ from the view's (a lease lapsed, a sheep joined or restarted):
 *   the next epoch has the live members, as long as one member of the current view is still
 *   alive as the same process. etcd's quorum stands in for the group's majority rule: a sheep
 *   that is cut off from etcd loses its lease and stops writes itself (etcd_lease.ts).
 * - No member of the current view is alive any more (a full stop): wait until every one of its
 *   nodes is back, as the built-in group does, or until an operator forces recovery.
 * - The change is written by one sheep, the longest-lived live member of the current view (or,
 *   after a full stop, the longest-lived live sheep), in a transaction on the epoch key's
 *   revision: if two write at once, one wins and the other sees its epoch.
 *
 * @module
 */

import { type EpochValue, memberKey, type MemberRecord } from "./etcd_layout.ts";

/** A live member key: the sheep it describes, and the revision it was created at. */
export interface LiveMember {
  readonly record: MemberRecord;
  readonly createRevision: number;
}

export type EpochDecision =
  /** The view is the live membership: nothing to do. */
  | { readonly kind: "keep" }
  /** A full stop: the last view's nodes not back yet. */
  | { readonly kind: "wait"; readonly missing: readonly string[] }
  | { readonly kind: "propose"; readonly value: EpochValue };

export function nextEpoch(
  current: EpochValue | null,
  live: readonly LiveMember[],
  forced: boolean,
): EpochDecision {
  if (live.length === 0) return { kind: "keep" };
  const members = live.map((m) => m.record).sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  if (current === null) return { kind: "propose", value: { epoch: 1, members } };
  const liveKeys = new Set(members.map(memberKey));
  const viewKeys = new Set(current.members.map(memberKey));
  const same = liveKeys.size === viewKeys.size && [...liveKeys].every((k) => viewKeys.has(k));
  if (same) return { kind: "keep" };
  const next = { kind: "propose", value: { epoch: current.epoch + 1, members } } as const;
  if (current.members.some((m) => liveKeys.has(memberKey(m)))) return next;
  const liveIds = new Set(members.map((m) => m.id));
  const missing = current.members.map((m) => m.id).filter((id) => !liveIds.has(id));
  return missing.length === 0 || forced ? next : { kind: "wait", missing };
}

/**
 * Who writes the next epoch: the live member of the current view that registered first, or
 * with none alive (a first start, a full stop) the live sheep that registered first.
 */
export function epochWriter(
  current: EpochValue | null,
  live: readonly LiveMember[],
): string | null {
  const byAge = [...live].sort((a, b) => a.createRevision - b.createRevision);
  const viewKeys = new Set(current?.members.map(memberKey) ?? []);
  const ofView = byAge.find((m) => viewKeys.has(memberKey(m.record)));
  return (ofView ?? byAge[0])?.record.id ?? null;
}
