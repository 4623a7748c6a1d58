/**
 * The datagram format of the group protocol.
 *
 * ```
 * offset  size  field
 *      0     4  magic "SDGM"
 *      4     1  version (1)
 *      5     1  flags (0)
 *      6     2  blob count B (u16, little-endian like the rest)
 *      8     4  group tag: FNV-1a 32 of the group name, so two clusters can share a port
 *     12     4  JSON length J
 *     16     4  CRC-32 of bytes 0..15 and 20..end (everything but itself)
 *     20     J  JSON {"from": id, "msg": message}; every Uint8Array is {"$blob": index}
 *   20+J   ...  B times: u32 length, bytes
 * ```
 * Payloads travel as raw bytes, everything else as JSON. The CRC matters: the protocol trusts
 * its peers, so a corrupted datagram must be rejected, never misread. Decoding never throws:
 * garbage, a wrong checksum, a bad length or a malformed message is an `{ ok: false, error }`.
 *
 * @module
 */

import {
  blobsMax,
  datagramBytesMax,
  entriesPerReplyMax,
  entryEventsMax,
  idLengthMax,
  infoBytesMax,
  jsonBytesMax,
  membersMax,
  peersMax,
  pidTableMax,
  proposalBytesMax,
} from "./limits.ts";
import type { GroupMessage } from "./types.ts";

const magic = 0x5344474d; // "SDGM"
const version = 1;
const headerBytes = 20;
const blobKey = "$blob";

/** The result of {@link decodeDatagram}. */
export type DecodeResult =
  | {
    readonly ok: true;
    readonly from: string;
    readonly groupTag: number;
    readonly msg: GroupMessage;
  }
  | { readonly ok: false; readonly error: string };

/** FNV-1a 32 of a group name: the tag that keeps clusters sharing a port apart. */
export function groupTagOf(name: string): number {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(name)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/**
 * Encodes a message from `from` into one datagram.
 *
 * @throws {RangeError} when the datagram would exceed `datagramBytesMax` (a protocol bug: the
 * state machine bounds every message below it).
 */
export function encodeDatagram(from: string, msg: GroupMessage, groupTag: number): Uint8Array {
  const blobs: Uint8Array[] = [];
  const json = JSON.stringify({ from, msg }, (_key, value) => {
    if (value instanceof Uint8Array) {
      blobs.push(value);
      return { [blobKey]: blobs.length - 1 };
    }
    return value;
  });
  const jsonBytes = new TextEncoder().encode(json);
  let size = headerBytes + jsonBytes.length;
  for (const blob of blobs) size += 4 + blob.length;
  if (size > datagramBytesMax || blobs.length > blobsMax) {
    throw new RangeError(`Cannot encode ${msg.type}: ${size} bytes exceed ${datagramBytesMax}`);
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, magic, true);
  view.setUint8(4, version);
  view.setUint8(5, 0);
  view.setUint16(6, blobs.length, true);
  view.setUint32(8, groupTag >>> 0, true);
  view.setUint32(12, jsonBytes.length, true);
  out.set(jsonBytes, headerBytes);
  let offset = headerBytes + jsonBytes.length;
  for (const blob of blobs) {
    view.setUint32(offset, blob.length, true);
    out.set(blob, offset + 4);
    offset += 4 + blob.length;
  }
  view.setUint32(16, datagramCrc(out), true);
  return out;
}

const crcTable = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3), as zlib computes it; pass a previous result to continue it. */
export function crc32(bytes: Uint8Array, previous = 0): number {
  let crc = (previous ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function datagramCrc(bytes: Uint8Array): number {
  return crc32(bytes.subarray(headerBytes), crc32(bytes.subarray(0, 16)));
}

/** The group tag of what looks like a datagram (sealed or not), or undefined. */
export function peekGroupTag(bytes: Uint8Array): number | undefined {
  if (bytes.length < headerBytes) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, headerBytes);
  return view.getUint32(0, true) === magic ? view.getUint32(8, true) : undefined;
}

/** Decodes one datagram; never throws. */
export function decodeDatagram(bytes: Uint8Array): DecodeResult {
  try {
    return decodeUnsafe(bytes);
  } catch (error) {
    // JSON.parse and friends: garbage is an operating error, reported as a value.
    return { ok: false, error: `malformed datagram: ${(error as Error).message}` };
  }
}

function decodeUnsafe(bytes: Uint8Array): DecodeResult {
  if (bytes.length < headerBytes) return fail(`datagram of ${bytes.length} bytes is too short`);
  if (bytes.length > datagramBytesMax) return fail(`datagram of ${bytes.length} bytes too long`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== magic) return fail("bad magic");
  if (view.getUint8(4) !== version) return fail(`unsupported version ${view.getUint8(4)}`);
  const blobCount = view.getUint16(6, true);
  const groupTag = view.getUint32(8, true);
  const jsonLength = view.getUint32(12, true);
  if (jsonLength > jsonBytesMax || headerBytes + jsonLength > bytes.length) {
    return fail("JSON length out of bounds");
  }
  if (view.getUint32(16, true) !== datagramCrc(bytes)) return fail("bad checksum");
  if (view.getUint8(5) !== 0) return fail("unknown flags");
  const blobs: Uint8Array[] = [];
  let offset = headerBytes + jsonLength;
  for (let index = 0; index < blobCount; index++) {
    if (offset + 4 > bytes.length) return fail("truncated blob length");
    const length = view.getUint32(offset, true);
    if (offset + 4 + length > bytes.length) return fail("truncated blob");
    blobs.push(bytes.slice(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  if (offset !== bytes.length) return fail("trailing bytes after the last blob");
  const used = new Set<number>();
  const text = new TextDecoder("utf-8", { fatal: true }).decode(
    bytes.subarray(headerBytes, headerBytes + jsonLength),
  );
  const parsed: unknown = JSON.parse(text, (_key, value) => reviveBlob(value, blobs, used));
  if (used.size !== blobs.length) return fail("unreferenced or missing blobs");
  if (!isObject(parsed) || !isId(parsed.from)) return fail("bad envelope");
  if (!isMessage(parsed.msg)) return fail("malformed message");
  return { ok: true, from: parsed.from, groupTag, msg: parsed.msg };
}

function reviveBlob(value: unknown, blobs: Uint8Array[], used: Set<number>): unknown {
  if (!isObject(value) || !(blobKey in value)) return value;
  const index = value[blobKey];
  if (Object.keys(value).length !== 1 || typeof index !== "number") throw new Error("bad blob");
  const blob = blobs[index];
  if (blob === undefined || used.has(index)) throw new Error("bad blob reference");
  used.add(index);
  return blob;
}

function fail(error: string): DecodeResult {
  return { ok: false, error };
}

// ---------------------------------------------------------------------------------------------
// Shape checks. Each returns whether an untrusted value has the expected shape.

type Check = (value: unknown) => boolean;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Uint8Array);
}

const isInt: Check = (value) => Number.isSafeInteger(value);
const isCount: Check = (value) => Number.isSafeInteger(value) && (value as number) >= 0;
const isSlot: Check = (value) => Number.isSafeInteger(value) && (value as number) >= -1;
const isBool: Check = (value) => typeof value === "boolean";
const isId = (value: unknown): value is string =>
  typeof value === "string" && value.length <= idLengthMax;
const isBytes: Check = (value) => value instanceof Uint8Array && value.length <= proposalBytesMax;

function arrayOf(item: Check, max: number): Check {
  return (value) => Array.isArray(value) && value.length <= max && value.every(item);
}

function shape(fields: Record<string, Check>): Check {
  return (value) => isObject(value) && Object.entries(fields).every(([k, c]) => c(value[k]));
}

function nullable(check: Check): Check {
  return (value) => value === null || check(value);
}

function isJsonValue(value: unknown, depth: number): boolean {
  if (depth > 16) return false;
  if (value === null || typeof value === "boolean" || typeof value === "string") return true;
  if (typeof value === "number") return Number.isFinite(value);
  if (Array.isArray(value)) return value.every((item) => isJsonValue(item, depth + 1));
  if (!isObject(value)) return false;
  return Object.values(value).every((item) => isJsonValue(item, depth + 1));
}

const isInfo: Check = (value) =>
  isObject(value) && isJsonValue(value, 0) && JSON.stringify(value).length <= infoBytesMax;

const isBallot = shape({ round: isCount, id: isId });
const isMember = shape({ id: isId, incarnation: isInt, witness: isBool, info: isInfo });
const isMemberRef = shape({ id: isId, incarnation: isInt });
const isEvent = shape({
  seq: isCount,
  origin: isId,
  incarnation: isInt,
  pid: isCount,
  payload: isBytes,
});

const isViewEntry = shape({
  kind: (v) => v === "view",
  epoch: isCount,
  seq: isCount,
  members: arrayOf(isMember, membersMax),
  left: arrayOf(isMemberRef, membersMax),
});
const isEventsEntry = shape({
  kind: (v) => v === "events",
  events: arrayOf(isEvent, entryEventsMax),
});
const isEntry: Check = (value) => isViewEntry(value) || isEventsEntry(value);
const isAccepted = shape({ slot: isCount, ballot: isBallot, entry: isEntry });
const isRecord = shape({
  era: isCount,
  epoch: isCount,
  seq: isCount,
  members: arrayOf(isMemberRef, membersMax),
});
const isState: Check = (value) =>
  value === "forming" || value === "waiting-for-nodes" || value === "primary" ||
  value === "minority" || value === "left";
const isPidPair: Check = (value) =>
  Array.isArray(value) && value.length === 2 && isId(value[0]) && isCount(value[1]);

const base = { inc: isInt, cluster: isId, era: isCount };

const messageShapes: Record<GroupMessage["type"], Check> = {
  hello: shape({
    ...base,
    witness: isBool,
    info: isInfo,
    state: isState,
    former: isId,
    joinCluster: isId,
    epoch: isCount,
    applied: isSlot,
    seq: isCount,
    leading: isBool,
    ballot: isBallot,
    leader: isId,
    leaving: isBool,
    record: nullable(isRecord),
    peers: arrayOf(isId, peersMax),
    pids: arrayOf(isPidPair, pidTableMax),
  }),
  prepare: shape({ ...base, ballot: isBallot }),
  promise: shape({ ...base, ballot: isBallot, applied: isSlot, accepted: nullable(isAccepted) }),
  nack: shape({ ...base, ballot: isBallot }),
  accept: shape({ ...base, ballot: isBallot, slot: isCount, entry: isEntry }),
  accepted: shape({ ...base, ballot: isBallot, slot: isCount }),
  commit: shape({ ...base, ballot: isBallot, slot: isCount }),
  fetch: shape({ ...base, from: isSlot }),
  entries: shape({
    ...base,
    entries: arrayOf(shape({ slot: isCount, entry: isEntry }), entriesPerReplyMax),
    more: isBool,
  }),
  snapshot: shape({
    ...base,
    slot: isCount,
    seq: isCount,
    view: shape({ epoch: isCount, slot: isCount, members: arrayOf(isMember, membersMax) }),
    pids: arrayOf(isPidPair, pidTableMax),
    ballot: isBallot,
    leader: isId,
  }),
  propose: shape({ ...base, pid: isCount, after: isCount, payload: isBytes }),
  leave: shape(base),
};

/** Whether an untrusted value is a well-formed {@link GroupMessage}. */
export function isMessage(value: unknown): value is GroupMessage {
  if (!isObject(value) || typeof value.type !== "string") return false;
  if (!Object.hasOwn(messageShapes, value.type)) return false;
  const check = messageShapes[value.type as GroupMessage["type"]];
  return check(value);
}
