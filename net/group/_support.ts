/**
 * Helpers of the membership state machine that need none of its state: ballot order,
 * validation of the construction options, and summaries used by the restart logic.
 *
 * @module
 */

import {
  eventOverheadBytes,
  failureTimeoutTicksDefault,
  heartbeatTicksDefault,
  idLengthMax,
  infoBytesMax,
  membersMax,
  retransmitTicksDefault,
  settleTicksDefault,
} from "./limits.ts";
import type {
  Ballot,
  Entry,
  EpochRecord,
  GroupStatus,
  JsonObject,
  MemberInfo,
  MemberRef,
  RecordSummary,
} from "./types.ts";

/** Options that shape validation (a subset of `MembershipOptions`). */
export interface TimingOptions {
  readonly heartbeatTicks?: number;
  readonly failureTimeoutTicks?: number;
  readonly settleTicks?: number;
  readonly retransmitTicks?: number;
  readonly bootstrapMinMembers?: number;
}

/** Validated protocol timing, in ticks. */
export interface Timing {
  readonly heartbeat: number;
  readonly failure: number;
  readonly settle: number;
  readonly retransmit: number;
  readonly forget: number;
  readonly bootstrapMinMembers: number;
}

/** Lower than every real ballot. */
export const zeroBallot: Ballot = { round: 0, id: "" };

/** Orders ballots: by round, then id. */
export function compareBallots(a: Ballot, b: Ballot): number {
  if (a.round !== b.round) return a.round - b.round;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** "id#incarnation": one member incarnation. */
export function memberKey(id: string, incarnation: number): string {
  return `${id}#${incarnation}`;
}

/** The smallest majority of `count` members. */
export function majorityOf(count: number): number {
  return Math.floor(count / 2) + 1;
}

/** A node present now (heard recently), as the restart logic sees it. */
export interface Present {
  readonly id: string;
  readonly inc: number;
  readonly info: MemberInfo;
  readonly seq: number;
  readonly record: RecordSummary | null;
  readonly pids: readonly (readonly [string, number])[];
}

export function latestRecord(present: Map<string, Present>): RecordSummary | null {
  let latest: RecordSummary | null = null;
  for (const node of present.values()) {
    const record = node.record;
    if (record !== null && (latest === null || record.epoch > latest.epoch)) latest = record;
  }
  return latest;
}

export function maxSeq(present: Map<string, Present>): number {
  let seq = 0;
  for (const node of present.values()) seq = Math.max(seq, node.seq, node.record?.seq ?? 0);
  return seq;
}

export function summaryOf(record: EpochRecord | null): RecordSummary | null {
  if (record === null) return null;
  const members: MemberRef[] = record.members.map((m) => ({
    id: m.id,
    incarnation: m.incarnation,
  }));
  return { era: record.era, epoch: record.epoch, seq: record.seq, members };
}

export function statusKeyOf(status: GroupStatus, era: number): string {
  // A view is identified by its epoch (epochs grow across eras too); no member list needed.
  return `${status.state}|${status.cluster}|${era}|${status.view?.epoch ?? 0}|${status.master}`;
}

export function entryBytes(entry: Entry): number {
  if (entry.kind === "view") return 256 + entry.members.length * 600;
  return entry.events.reduce((sum, event) => sum + event.payload.length + eventOverheadBytes, 64);
}

export function validateSelf(self: {
  readonly id: string;
  readonly incarnation: number;
  readonly witness?: boolean;
  readonly info?: JsonObject;
}): MemberInfo {
  if (typeof self.id !== "string" || self.id.length === 0 || self.id.length > idLengthMax) {
    throw new TypeError(`Cannot create a member: id "${self.id}" must be 1..${idLengthMax} chars`);
  }
  if (!Number.isSafeInteger(self.incarnation) || self.incarnation < 0) {
    throw new RangeError(`Cannot create a member: incarnation ${self.incarnation} is invalid`);
  }
  const info = self.info ?? {};
  const json = JSON.stringify(info);
  if (json.length > infoBytesMax) {
    throw new RangeError(
      `Cannot create a member: info is ${json.length} bytes (max ${infoBytesMax})`,
    );
  }
  if (json.includes('"$blob"')) {
    throw new TypeError('Cannot create a member: info must not use the key "$blob"');
  }
  return Object.freeze({
    id: self.id,
    incarnation: self.incarnation,
    witness: self.witness ?? false,
    info: JSON.parse(json) as JsonObject,
  });
}

export function validateTiming(options: TimingOptions): Timing {
  const heartbeat = options.heartbeatTicks ?? heartbeatTicksDefault;
  const failure = options.failureTimeoutTicks ?? failureTimeoutTicksDefault;
  const settle = options.settleTicks ?? settleTicksDefault;
  const retransmit = options.retransmitTicks ?? retransmitTicksDefault;
  const bootstrapMinMembers = options.bootstrapMinMembers ?? 1;
  for (const [name, value] of Object.entries({ heartbeat, failure, settle, retransmit })) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`Cannot create a member: ${name} ticks must be a positive integer`);
    }
  }
  if (failure < heartbeat * 2) {
    throw new RangeError("Cannot create a member: the failure timeout must span two hellos");
  }
  if (!Number.isSafeInteger(bootstrapMinMembers) || bootstrapMinMembers < 1) {
    throw new RangeError("Cannot create a member: bootstrapMinMembers must be at least 1");
  }
  if (bootstrapMinMembers > membersMax) {
    throw new RangeError(`Cannot create a member: bootstrapMinMembers exceeds ${membersMax}`);
  }
  return { heartbeat, failure, settle, retransmit, forget: failure * 10, bootstrapMinMembers };
}

export function validateRecord(record: EpochRecord): void {
  const ok = typeof record.cluster === "string" && record.cluster.length > 0 &&
    Number.isSafeInteger(record.epoch) && record.epoch > 0 && Array.isArray(record.members) &&
    record.members.length <= membersMax;
  if (!ok) throw new TypeError("Cannot restart a member: the persisted epoch record is invalid");
}
