/**
 * What a cluster keeps in etcd, all under one prefix (default `/sheepdog/`):
 *
 * | key | value | written |
 * |---|---|---|
 * | `id` | the cluster id (a fingerprint of the cluster key) | once, by the first sheep |
 * | `members/<host:port>` | the sheep's ring node and incarnation; bound to its lease | at start, and again after its lease lapsed |
 * | `epoch` | the current view: epoch number and members | by the longest-lived member, in a transaction on its revision |
 * | `events/<host:port>/<incarnation>/<n>` | one cluster event and who proposed it | once, in a transaction on the proposer's membership |
 * | `floor` | the revision below which events were deleted | when events are trimmed |
 *
 * Every sheep watches the whole prefix and handles changes in revision order, so membership,
 * views and events reach every node in one order.
 *
 * @module
 */

import { type ClusterEvent, decodeEvent } from "../../core/cluster/cluster_events.ts";

/** A sheep as its member key describes it: a ring node plus its process incarnation. */
export interface MemberRecord {
  readonly id: string;
  readonly incarnation: number;
  readonly host: string;
  readonly port: number;
  readonly zone: number;
  readonly vnodes: number;
  /** Capacity in bytes when the sheep's vnodes follow it (RingNode.space). */
  readonly space?: number;
}

/** The `epoch` key: the view every sheep installs. */
export interface EpochValue {
  readonly epoch: number;
  readonly members: readonly MemberRecord[];
}

/** An event key's value: the event and the proposal it answers. */
export interface EventEnvelope {
  readonly origin: string;
  readonly incarnation: number;
  readonly proposalId: number;
  readonly event: ClusterEvent;
}

export type KeyKind =
  | { kind: "id" }
  | { kind: "member"; id: string }
  | { kind: "epoch" }
  | { kind: "event" }
  | { kind: "floor" }
  | { kind: "other" };

export class EtcdLayout {
  /** Ends in "/". */
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix.endsWith("/") ? prefix : `${prefix}/`;
  }

  get id(): string {
    return `${this.prefix}id`;
  }
  get members(): string {
    return `${this.prefix}members/`;
  }
  member(id: string): string {
    return `${this.members}${id}`;
  }
  get epoch(): string {
    return `${this.prefix}epoch`;
  }
  get events(): string {
    return `${this.prefix}events/`;
  }
  event(origin: string, incarnation: number, proposalId: number): string {
    return `${this.events}${origin}/${incarnation}/${proposalId}`;
  }
  get floor(): string {
    return `${this.prefix}floor`;
  }

  kindOf(key: string): KeyKind {
    if (key === this.id) return { kind: "id" };
    if (key === this.epoch) return { kind: "epoch" };
    if (key === this.floor) return { kind: "floor" };
    if (key.startsWith(this.members)) return { kind: "member", id: key.slice(this.members.length) };
    if (key.startsWith(this.events)) return { kind: "event" };
    return { kind: "other" };
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function parse(bytes: Uint8Array): Record<string, unknown> {
  const value = JSON.parse(decoder.decode(bytes)) as unknown;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("not a JSON object");
  }
  return value as Record<string, unknown>;
}

function memberOf(value: unknown): MemberRecord {
  const m = value as Record<string, unknown>;
  const ok = typeof m === "object" && m !== null && typeof m.id === "string" &&
    typeof m.host === "string" && Number.isSafeInteger(m.incarnation) &&
    Number.isInteger(m.port) && Number.isInteger(m.zone) && Number.isInteger(m.vnodes);
  if (!ok) throw new Error(`not a member: ${JSON.stringify(value)?.slice(0, 200)}`);
  return {
    id: m.id as string,
    incarnation: m.incarnation as number,
    host: m.host as string,
    port: m.port as number,
    zone: m.zone as number,
    vnodes: m.vnodes as number,
    ...(typeof m.space === "number" && Number.isFinite(m.space) && m.space >= 0
      ? { space: m.space }
      : {}),
  };
}

export function decodeMember(bytes: Uint8Array): MemberRecord {
  return memberOf(parse(bytes));
}

export function decodeEpoch(bytes: Uint8Array): EpochValue {
  const value = parse(bytes);
  if (!Number.isSafeInteger(value.epoch) || (value.epoch as number) < 1) {
    throw new Error("no epoch number");
  }
  if (!Array.isArray(value.members)) throw new Error("no members");
  return { epoch: value.epoch as number, members: value.members.map(memberOf) };
}

/** An event key's value, whole and well-formed, or an Error saying what is wrong. */
export function decodeEnvelope(bytes: Uint8Array): EventEnvelope {
  const value = parse(bytes);
  if (
    typeof value.origin !== "string" || !Number.isSafeInteger(value.incarnation) ||
    !Number.isSafeInteger(value.proposalId)
  ) {
    throw new Error("no origin, incarnation or proposal id");
  }
  return {
    origin: value.origin,
    incarnation: value.incarnation as number,
    proposalId: value.proposalId as number,
    event: decodeEvent(encoder.encode(JSON.stringify(value.event ?? null))),
  };
}

/** A sheep's identity in a view: the same id restarted is another member. */
export function memberKey(member: Pick<MemberRecord, "id" | "incarnation">): string {
  return `${member.id}#${member.incarnation}`;
}
