/**
 * Pure NBD codecs: every frame of the fixed newstyle handshake and of the transmission phase,
 * both directions (the server uses the parsers for client frames and the encoders for its own;
 * tests and clients use the rest). No I/O, no state. All numbers are big-endian.
 */
import { Buffer } from "node:buffer";
import {
  EXPORT_NAME_REPLY_LENGTH,
  GREETING_LENGTH,
  MAX_STRING_LENGTH,
  NBD_IHAVEOPT,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAGIC,
  NBD_OPT_REPLY_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_MAGIC,
  OPTION_HEADER_LENGTH,
  OPTION_REPLY_HEADER_LENGTH,
  REQUEST_LENGTH,
  SIMPLE_REPLY_LENGTH,
  STRUCTURED_REPLY_HEADER_LENGTH,
} from "./constants.ts";
import type { Extent } from "./export.ts";

/** A frame that violates the protocol (bad magic, wrong length, inconsistent fields). */
export class NbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NbdProtocolError";
  }
}

const EMPTY = Buffer.alloc(0);
const TWO_32 = 2 ** 32;

function need(buf: Uint8Array, length: number, what: string): Buffer {
  if (buf.length < length) {
    throw new NbdProtocolError(`${what}: need ${length} bytes, got ${buf.length}`);
  }
  return asBuffer(buf);
}

/** A Buffer view of `data` (no copy). */
export function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Writes an unsigned 64-bit integer given as a (safe) JS number. */
export function writeU64(buf: Buffer, pos: number, value: number): void {
  const hi = Math.floor(value / TWO_32);
  buf.writeUInt32BE(hi >>> 0, pos);
  buf.writeUInt32BE((value - hi * TWO_32) >>> 0, pos + 4);
}

/** Reads an unsigned 64-bit integer as a JS number (exact below 2^53, which covers any export). */
export function readU64(buf: Buffer, pos: number): number {
  return buf.readUInt32BE(pos) * TWO_32 + buf.readUInt32BE(pos + 4);
}

/** UTF-8 bytes of `text`, cut (on a character boundary) to the protocol's 4096-byte limit. */
export function encodeString(text: string, max = MAX_STRING_LENGTH): Buffer {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

function decodeString(buf: Buffer, start: number, end: number): string {
  return buf.toString("utf8", start, end);
}

// ================================ Handshake ===================================================

/** S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(GREETING_LENGTH);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(NBD_IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export function parseGreeting(data: Uint8Array): { handshakeFlags: number } {
  const b = need(data, GREETING_LENGTH, "greeting");
  if (b.readBigUInt64BE(0) !== NBD_MAGIC) throw new NbdProtocolError("greeting: bad NBDMAGIC");
  if (b.readBigUInt64BE(8) !== NBD_IHAVEOPT) {
    throw new NbdProtocolError("greeting: not a newstyle server (no IHAVEOPT)");
  }
  return { handshakeFlags: b.readUInt16BE(16) };
}

/** C: 32-bit client flags. */
export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

export function parseClientFlags(data: Uint8Array): number {
  return need(data, 4, "client flags").readUInt32BE(0);
}

// ---- option requests (C → S) -----------------------------------------------------------------

export interface OptionHeader {
  option: number;
  /** Length of the option data that follows. */
  length: number;
}

/** C: IHAVEOPT, option, length, data. */
export function encodeOptionRequest(option: number, data: Uint8Array = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(OPTION_HEADER_LENGTH + data.length);
  b.writeBigUInt64BE(NBD_IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  b.set(data, OPTION_HEADER_LENGTH);
  return b;
}

export function parseOptionHeader(data: Uint8Array): OptionHeader {
  const b = need(data, OPTION_HEADER_LENGTH, "option header");
  if (b.readBigUInt64BE(0) !== NBD_IHAVEOPT) {
    throw new NbdProtocolError("option header: bad IHAVEOPT magic");
  }
  return { option: b.readUInt32BE(8), length: b.readUInt32BE(12) };
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO. */
export interface InfoRequest {
  name: string;
  /** Requested NBD_INFO_* types. */
  infos: number[];
}

export function encodeInfoRequest(name: string, infos: readonly number[] = []): Buffer {
  const n = Buffer.from(name, "utf8");
  const b = Buffer.allocUnsafe(4 + n.length + 2 + infos.length * 2);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((info, i) => b.writeUInt16BE(info, 6 + n.length + i * 2));
  return b;
}

export function parseInfoRequest(data: Uint8Array): InfoRequest {
  const b = need(data, 6, "INFO/GO request");
  const nameLength = b.readUInt32BE(0);
  if (nameLength > b.length - 6) throw new NbdProtocolError("INFO/GO request: name too long");
  if (nameLength > MAX_STRING_LENGTH) throw new NbdProtocolError("INFO/GO request: name > 4096");
  const name = decodeString(b, 4, 4 + nameLength);
  const count = b.readUInt16BE(4 + nameLength);
  if (b.length !== 6 + nameLength + count * 2) {
    throw new NbdProtocolError("INFO/GO request: information request count does not match length");
  }
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(b.readUInt16BE(6 + nameLength + i * 2));
  return { name, infos };
}

/** Data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

export function encodeMetaContextRequest(exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(exportName, "utf8");
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(n.length, 0);
  parts.push(head, n);
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const q of queries) {
    const qb = Buffer.from(q, "utf8");
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(qb.length, 0);
    parts.push(len, qb);
  }
  return Buffer.concat(parts);
}

export function parseMetaContextRequest(data: Uint8Array): MetaContextRequest {
  const b = need(data, 8, "meta context request");
  const nameLength = b.readUInt32BE(0);
  if (nameLength > b.length - 8 || nameLength > MAX_STRING_LENGTH) {
    throw new NbdProtocolError("meta context request: bad export name length");
  }
  const exportName = decodeString(b, 4, 4 + nameLength);
  let pos = 4 + nameLength;
  const count = b.readUInt32BE(pos);
  pos += 4;
  // Each query takes at least 4 bytes: reject absurd counts before looping.
  if (count > (b.length - pos) / 4) {
    throw new NbdProtocolError("meta context request: query count exceeds data");
  }
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (pos + 4 > b.length) throw new NbdProtocolError("meta context request: truncated query");
    const len = b.readUInt32BE(pos);
    pos += 4;
    if (len > b.length - pos || len > MAX_STRING_LENGTH) {
      throw new NbdProtocolError("meta context request: bad query length");
    }
    queries.push(decodeString(b, pos, pos + len));
    pos += len;
  }
  if (pos !== b.length) throw new NbdProtocolError("meta context request: trailing bytes");
  return { exportName, queries };
}

// ---- option replies (S → C) ------------------------------------------------------------------

export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

/** S: reply magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, type: number, data: Uint8Array = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_LENGTH + data.length);
  b.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  b.set(data, OPTION_REPLY_HEADER_LENGTH);
  return b;
}

export function parseOptionReplyHeader(data: Uint8Array): OptionReplyHeader {
  const b = need(data, OPTION_REPLY_HEADER_LENGTH, "option reply");
  if (b.readBigUInt64BE(0) !== NBD_OPT_REPLY_MAGIC) {
    throw new NbdProtocolError("option reply: bad magic");
  }
  return { option: b.readUInt32BE(8), type: b.readUInt32BE(12), length: b.readUInt32BE(16) };
}

/** Data of NBD_REP_SERVER: name length, name, description. */
export function encodeRepServer(name: string, description = ""): Buffer {
  const n = encodeString(name);
  const d = encodeString(description);
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function parseRepServer(data: Uint8Array): { name: string; description: string } {
  const b = need(data, 4, "NBD_REP_SERVER");
  const len = b.readUInt32BE(0);
  if (len > b.length - 4) throw new NbdProtocolError("NBD_REP_SERVER: name too long");
  return {
    name: decodeString(b, 4, 4 + len),
    description: decodeString(b, 4 + len, b.length),
  };
}

/** Data of NBD_REP_INFO / NBD_INFO_EXPORT. */
export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  writeU64(b, 2, sizeBytes);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

function encodeInfoString(type: number, text: string): Buffer {
  const s = encodeString(text);
  const b = Buffer.allocUnsafe(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

/** Data of NBD_REP_INFO / NBD_INFO_NAME. */
export function encodeInfoName(name: string): Buffer {
  return encodeInfoString(NBD_INFO_NAME, name);
}

/** Data of NBD_REP_INFO / NBD_INFO_DESCRIPTION. */
export function encodeInfoDescription(description: string): Buffer {
  return encodeInfoString(NBD_INFO_DESCRIPTION, description);
}

/** Data of NBD_REP_INFO / NBD_INFO_BLOCK_SIZE. */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

export type InfoReply =
  | { type: typeof NBD_INFO_EXPORT; sizeBytes: number; transmissionFlags: number }
  | { type: typeof NBD_INFO_NAME; name: string }
  | { type: typeof NBD_INFO_DESCRIPTION; description: string }
  | { type: typeof NBD_INFO_BLOCK_SIZE; minimum: number; preferred: number; maximum: number }
  | { type: number; raw: Buffer };

export function parseInfoReply(data: Uint8Array): InfoReply {
  const b = need(data, 2, "NBD_REP_INFO");
  const type = b.readUInt16BE(0);
  switch (type) {
    case NBD_INFO_EXPORT:
      if (b.length !== 12) throw new NbdProtocolError("NBD_INFO_EXPORT: length must be 12");
      return { type, sizeBytes: readU64(b, 2), transmissionFlags: b.readUInt16BE(10) };
    case NBD_INFO_NAME:
      return { type, name: decodeString(b, 2, b.length) };
    case NBD_INFO_DESCRIPTION:
      return { type, description: decodeString(b, 2, b.length) };
    case NBD_INFO_BLOCK_SIZE:
      if (b.length !== 14) throw new NbdProtocolError("NBD_INFO_BLOCK_SIZE: length must be 14");
      return {
        type,
        minimum: b.readUInt32BE(2),
        preferred: b.readUInt32BE(6),
        maximum: b.readUInt32BE(10),
      };
    default:
      return { type, raw: b.subarray(2) };
  }
}

/** Data of NBD_REP_META_CONTEXT: context id, name. */
export function encodeMetaContextReply(contextId: number, name: string): Buffer {
  const n = encodeString(name);
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(contextId >>> 0, 0);
  n.copy(b, 4);
  return b;
}

export function parseMetaContextReply(data: Uint8Array): { contextId: number; name: string } {
  const b = need(data, 4, "NBD_REP_META_CONTEXT");
  return { contextId: b.readUInt32BE(0), name: decodeString(b, 4, b.length) };
}

/** S: reply to NBD_OPT_EXPORT_NAME: size, transmission flags, 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(
  sizeBytes: number,
  transmissionFlags: number,
  noZeroes: boolean,
): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : EXPORT_NAME_REPLY_LENGTH);
  writeU64(b, 0, sizeBytes);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

export function parseExportNameReply(
  data: Uint8Array,
): { sizeBytes: number; transmissionFlags: number } {
  const b = need(data, 10, "export name reply");
  return { sizeBytes: readU64(b, 0), transmissionFlags: b.readUInt16BE(8) };
}

// ================================ Transmission =================================================

export interface NbdRequest {
  /** NBD_CMD_FLAG_* bits. */
  flags: number;
  /** NBD_CMD_* */
  type: number;
  /** Opaque 64-bit cookie echoed in the reply. */
  handle: bigint;
  /** Byte offset (a JS number; values ≥ 2^53 lose precision but are far beyond any export). */
  offset: number;
  length: number;
}

/** C: request header (28 bytes); a WRITE's payload follows separately. */
export function encodeRequest(req: NbdRequest): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_LENGTH);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(req.flags, 4);
  b.writeUInt16BE(req.type, 6);
  b.writeBigUInt64BE(req.handle, 8);
  writeU64(b, 16, req.offset);
  b.writeUInt32BE(req.length >>> 0, 24);
  return b;
}

/** Parses the 28-byte request header at `pos`; throws NbdProtocolError on a bad magic. */
export function parseRequest(data: Uint8Array, pos = 0): NbdRequest {
  const b = asBuffer(data);
  if (b.length - pos < REQUEST_LENGTH) {
    throw new NbdProtocolError(`request: need ${REQUEST_LENGTH} bytes, got ${b.length - pos}`);
  }
  const magic = b.readUInt32BE(pos);
  if (magic !== NBD_REQUEST_MAGIC) {
    throw new NbdProtocolError(`request: bad magic 0x${magic.toString(16)}`);
  }
  return {
    flags: b.readUInt16BE(pos + 4),
    type: b.readUInt16BE(pos + 6),
    handle: b.readBigUInt64BE(pos + 8),
    offset: readU64(b, pos + 16),
    length: b.readUInt32BE(pos + 24),
  };
}

/** S: simple reply header (16 bytes); a successful READ's data follows. */
export function encodeSimpleReply(errno: number, handle: bigint): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(errno >>> 0, 4);
  b.writeBigUInt64BE(handle, 8);
  return b;
}

export function parseSimpleReply(data: Uint8Array): { errno: number; handle: bigint } {
  const b = need(data, SIMPLE_REPLY_LENGTH, "simple reply");
  if (b.readUInt32BE(0) !== NBD_SIMPLE_REPLY_MAGIC) {
    throw new NbdProtocolError("simple reply: bad magic");
  }
  return { errno: b.readUInt32BE(4), handle: b.readBigUInt64BE(8) };
}

export interface StructuredReplyHeader {
  flags: number;
  type: number;
  handle: bigint;
  /** Payload length. */
  length: number;
}

function writeStructuredHeader(
  b: Buffer,
  flags: number,
  type: number,
  handle: bigint,
  length: number,
): void {
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeUInt32BE(length >>> 0, 16);
}

/** S: structured reply chunk header (20 bytes); `length` payload bytes follow. */
export function encodeStructuredHeader(h: StructuredReplyHeader): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH);
  writeStructuredHeader(b, h.flags, h.type, h.handle, h.length);
  return b;
}

export function parseStructuredHeader(data: Uint8Array): StructuredReplyHeader {
  const b = need(data, STRUCTURED_REPLY_HEADER_LENGTH, "structured reply");
  if (b.readUInt32BE(0) !== NBD_STRUCTURED_REPLY_MAGIC) {
    throw new NbdProtocolError("structured reply: bad magic");
  }
  return {
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    handle: b.readBigUInt64BE(8),
    length: b.readUInt32BE(16),
  };
}

/**
 * Header of an NBD_REPLY_TYPE_OFFSET_DATA chunk (20-byte chunk header + 8-byte offset, 28
 * bytes); the `dataLength` bytes of data are written right after it, without copying.
 */
export function encodeOffsetDataHeader(
  handle: bigint,
  offset: number,
  dataLength: number,
  flags = NBD_REPLY_FLAG_DONE,
): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH + 8);
  writeStructuredHeader(b, flags, NBD_REPLY_TYPE_OFFSET_DATA, handle, 8 + dataLength);
  writeU64(b, 20, offset);
  return b;
}

/** A whole NBD_REPLY_TYPE_OFFSET_HOLE chunk. */
export function encodeOffsetHoleChunk(
  handle: bigint,
  offset: number,
  holeSize: number,
  flags = NBD_REPLY_FLAG_DONE,
): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH + 12);
  writeStructuredHeader(b, flags, NBD_REPLY_TYPE_OFFSET_HOLE, handle, 12);
  writeU64(b, 20, offset);
  b.writeUInt32BE(holeSize, 28);
  return b;
}

/** A whole NBD_REPLY_TYPE_NONE chunk (always final). */
export function encodeNoneChunk(handle: bigint): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH);
  writeStructuredHeader(b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, 0);
  return b;
}

/** A whole NBD_REPLY_TYPE_ERROR chunk with a human-readable message. */
export function encodeErrorChunk(
  handle: bigint,
  errno: number,
  message: string,
  flags = NBD_REPLY_FLAG_DONE,
): Buffer {
  const m = encodeString(message);
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH + 6 + m.length);
  writeStructuredHeader(b, flags, NBD_REPLY_TYPE_ERROR, handle, 6 + m.length);
  b.writeUInt32BE(errno >>> 0, 20);
  b.writeUInt16BE(m.length, 24);
  m.copy(b, 26);
  return b;
}

/** Payload of an error chunk (NBD_REPLY_TYPE_ERROR or _ERROR_OFFSET). */
export function parseErrorPayload(
  type: number,
  data: Uint8Array,
): { errno: number; message: string; offset?: number } {
  if ((type & NBD_REPLY_TYPE_ERROR_BIT) === 0) throw new NbdProtocolError("not an error chunk");
  const b = need(data, 6, "error chunk");
  const errno = b.readUInt32BE(0);
  const len = b.readUInt16BE(4);
  if (6 + len > b.length) throw new NbdProtocolError("error chunk: message exceeds payload");
  const message = decodeString(b, 6, 6 + len);
  if (type === NBD_REPLY_TYPE_ERROR) return { errno, message };
  if (b.length < 6 + len + 8) return { errno, message };
  return { errno, message, offset: readU64(b, 6 + len) };
}

/** One base:allocation descriptor on the wire. */
export interface BlockDescriptor {
  length: number;
  /** NBD_STATE_HOLE | NBD_STATE_ZERO bits. */
  flags: number;
}

/** A whole NBD_REPLY_TYPE_BLOCK_STATUS chunk. */
export function encodeBlockStatusChunk(
  handle: bigint,
  contextId: number,
  descriptors: readonly BlockDescriptor[],
  flags = NBD_REPLY_FLAG_DONE,
): Buffer {
  if (descriptors.length === 0) throw new RangeError("block status needs at least one descriptor");
  const payload = 4 + descriptors.length * 8;
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH + payload);
  writeStructuredHeader(b, flags, NBD_REPLY_TYPE_BLOCK_STATUS, handle, payload);
  b.writeUInt32BE(contextId >>> 0, 20);
  let pos = 24;
  for (const d of descriptors) {
    b.writeUInt32BE(d.length >>> 0, pos);
    b.writeUInt32BE(d.flags >>> 0, pos + 4);
    pos += 8;
  }
  return b;
}

export function parseBlockStatusPayload(
  data: Uint8Array,
): { contextId: number; descriptors: BlockDescriptor[] } {
  const b = need(data, 12, "block status chunk");
  if ((b.length - 4) % 8 !== 0) throw new NbdProtocolError("block status chunk: bad length");
  const descriptors: BlockDescriptor[] = [];
  for (let pos = 4; pos < b.length; pos += 8) {
    descriptors.push({ length: b.readUInt32BE(pos), flags: b.readUInt32BE(pos + 4) });
  }
  return { contextId: b.readUInt32BE(0), descriptors };
}

/**
 * Turns an export's extents into wire descriptors for a query of `length` bytes: drops empty
 * and malformed extents, clips at `length`, merges equal neighbours, keeps one if `reqOne`.
 * Never empty: if the export said nothing usable, one descriptor of status 0 ("allocated, not
 * known to be zero", always safe) covers the whole query.
 */
export function extentsToDescriptors(
  extents: readonly Extent[],
  length: number,
  reqOne: boolean,
): BlockDescriptor[] {
  const out: BlockDescriptor[] = [];
  let covered = 0;
  for (const e of extents) {
    if (covered >= length) break;
    if (!Number.isSafeInteger(e.length) || e.length <= 0) break;
    const len = Math.min(e.length, length - covered);
    const flags = (e.hole ? NBD_STATE_HOLE : 0) | (e.zero ? NBD_STATE_ZERO : 0);
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === flags) last.length += len;
    else out.push({ length: len, flags });
    covered += len;
  }
  const first = out[0];
  if (first === undefined) return [{ length, flags: 0 }];
  return reqOne ? [first] : out;
}
