/**
 * Ceph's RBD incremental diff format, v1 (Ceph's `doc/dev/rbd-diff.rst`): the banner
 * "rbd diff v1\n", metadata records ('f' from-snapshot and 't' to-snapshot names as le32 length
 * + bytes, 's' le64 image size), then data records ('w' le64 offset, le64 length, the bytes;
 * 'z' le64 offset, le64 length: reads as zeros), then 'e'. Everything little-endian.
 *
 * The encoder is a handful of pure functions. The reader is a streaming parser that checks as
 * it goes (banner, known tags, metadata before data, records in ascending order, not
 * overlapping, inside the image size, nothing after the end), so `validateDiff` can refuse a
 * bad file whole before anything is applied, with one line naming the byte where it went wrong.
 *
 * @module
 */

import { concatBytes } from "../bytes.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import { RBD_DIFF_NAME_BYTES_MAX } from "../limits.ts";

export const RBD_DIFF_BANNER = "rbd diff v1\n";
const BANNER_BYTES = new TextEncoder().encode(RBD_DIFF_BANNER);
/** Bytes of a 'w' or 'z' record before its data: tag, offset, length. */
export const DATA_RECORD_HEAD_BYTES = 17;

const TAG = { from: 0x66, to: 0x74, size: 0x73, write: 0x77, zero: 0x7a, end: 0x65 } as const;

/** The metadata of a diff. A diff made since creation has no `from`; of a live image, no `to`. */
export interface DiffHeader {
  from?: string | undefined;
  to?: string | undefined;
  /** The image size after the diff; absent in a diff without an 's' record. */
  size?: number | undefined;
}

/** A data record: 'w' (its `length` bytes follow) or 'z' (the range reads as zeros). */
export interface DiffRecord {
  kind: "w" | "z";
  offset: number;
  length: number;
}

function nameRecord(tag: number, name: string): Uint8Array {
  const bytes = new TextEncoder().encode(name);
  const record = new Uint8Array(5 + bytes.length);
  record[0] = tag;
  new DataView(record.buffer).setUint32(1, bytes.length, true);
  record.set(bytes, 5);
  return record;
}

/** The banner and metadata records: what a diff starts with. */
export function encodeDiffHeader(header: DiffHeader): Uint8Array {
  const parts: Uint8Array[] = [BANNER_BYTES];
  if (header.from !== undefined) parts.push(nameRecord(TAG.from, header.from));
  if (header.to !== undefined) parts.push(nameRecord(TAG.to, header.to));
  if (header.size !== undefined) {
    const size = new Uint8Array(9);
    size[0] = TAG.size;
    new DataView(size.buffer).setBigUint64(1, BigInt(header.size), true);
    parts.push(size);
  }
  return concatBytes(parts);
}

/** The head of a 'w' record (its data follows it) or a whole 'z' record. */
export function encodeDataRecordHead(record: DiffRecord): Uint8Array {
  const bytes = new Uint8Array(DATA_RECORD_HEAD_BYTES);
  bytes[0] = record.kind === "w" ? TAG.write : TAG.zero;
  const view = new DataView(bytes.buffer);
  view.setBigUint64(1, BigInt(record.offset), true);
  view.setBigUint64(9, BigInt(record.length), true);
  return bytes;
}

/** The end record. */
export function encodeDiffEnd(): Uint8Array {
  return Uint8Array.of(TAG.end);
}

/** Where a parser reads a diff from: sequential reads, and skips over data it does not need. */
export interface DiffSource {
  /** Up to `length` bytes from the current position; fewer only at the end of the input. */
  read(length: number): Promise<Uint8Array>;
  /** Moves `length` bytes on; resolves with how many there were (fewer at the end). */
  skip(length: number): Promise<number>;
}

/** A DiffSource over bytes in memory (tests, small diffs). */
export function memorySource(bytes: Uint8Array): DiffSource {
  let position = 0;
  return {
    read(length) {
      const part = bytes.subarray(position, Math.min(bytes.length, position + length));
      position += part.length;
      return Promise.resolve(part);
    },
    skip(length) {
      const moved = Math.min(length, bytes.length - position);
      position += moved;
      return Promise.resolve(moved);
    },
  };
}

function describeTag(tag: number): string {
  const printable = tag >= 0x21 && tag <= 0x7e ? ` ('${String.fromCharCode(tag)}')` : "";
  return `0x${tag.toString(16).padStart(2, "0")}${printable}`;
}

/**
 * Reads a diff record by record, checking everything the format and the image promise. Call
 * `readHeader` once, then `next` until it returns undefined (the end record, with nothing after
 * it); `readData` reads the current 'w' record's bytes (what is not read is skipped).
 */
export class DiffParser {
  readonly #source: DiffSource;
  readonly #label: string;
  /** Bytes consumed so far: where the next byte is, for messages. */
  #position = 0;
  /** The first data tag, read while looking for more metadata. */
  #pendingTag: number | undefined;
  #header: DiffHeader | undefined;
  /** Unread data bytes of the current 'w' record. */
  #dataLeft = 0;
  #previous: DiffRecord | undefined;
  #ended = false;

  /** `label` names the input in messages ("'backup.diff'", "standard input"). */
  constructor(source: DiffSource, label: string) {
    this.#source = source;
    this.#label = label;
  }

  #fail(why: string): never {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Invalid rbd diff ${this.#label}: ${why}`);
  }

  async #exact(length: number, what: string): Promise<Uint8Array> {
    const at = this.#position;
    const bytes = await this.#source.read(length);
    this.#position += bytes.length;
    if (bytes.length < length) {
      this.#fail(`truncated at byte ${this.#position} (in ${what} that starts at byte ${at})`);
    }
    return bytes;
  }

  async #tag(what: string): Promise<number> {
    return (await this.#exact(1, what))[0]!;
  }

  async #u64(what: string): Promise<number> {
    const at = this.#position;
    const bytes = await this.#exact(8, what);
    const value = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      this.#fail(`${what} at byte ${at} is ${value}, more than any image holds`);
    }
    return Number(value);
  }

  async #name(what: string): Promise<string> {
    const at = this.#position - 1;
    const head = await this.#exact(4, what);
    const length = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true);
    if (length === 0) this.#fail(`${what} at byte ${at} is empty`);
    if (length > RBD_DIFF_NAME_BYTES_MAX) {
      this.#fail(
        `${what} at byte ${at} is ${length} bytes long (at most ${RBD_DIFF_NAME_BYTES_MAX})`,
      );
    }
    const bytes = await this.#exact(length, what);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      return this.#fail(`${what} at byte ${at} is not UTF-8 text`);
    }
  }

  /** Reads the banner and the metadata records. */
  async readHeader(): Promise<DiffHeader> {
    const banner = await this.#source.read(BANNER_BYTES.length);
    this.#position += banner.length;
    if (banner.length < BANNER_BYTES.length || banner.some((b, i) => b !== BANNER_BYTES[i])) {
      const text = new TextDecoder().decode(banner);
      if (text === "rbd diff v2\n") {
        this.#fail("it is an rbd diff v2 stream (rbd export --export-format 2); only v1 is read");
      }
      const shown = JSON.stringify(text.replace(/[^\x20-\x7e]/g, "?"));
      this.#fail(`it does not start with "rbd diff v1" (it starts with ${shown})`);
    }
    const header: DiffHeader = {};
    for (;;) {
      const at = this.#position;
      const tag = await this.#tag("the metadata records");
      if (tag === TAG.from || tag === TAG.to) {
        const field = tag === TAG.from ? "from" : "to";
        if (header[field] !== undefined) this.#fail(`a second '${field}' record at byte ${at}`);
        header[field] = await this.#name(`the '${String.fromCharCode(tag)}' snapshot name`);
      } else if (tag === TAG.size) {
        if (header.size !== undefined) this.#fail(`a second 's' (size) record at byte ${at}`);
        header.size = await this.#u64("the 's' (size) record");
      } else {
        this.#pendingTag = tag;
        break;
      }
    }
    this.#header = header;
    return header;
  }

  /** The next data record, or undefined at the end record (checked to be the last byte). */
  async next(): Promise<DiffRecord | undefined> {
    if (this.#header === undefined) throw new Error("DiffParser: readHeader first");
    if (this.#ended) return undefined;
    if (this.#dataLeft > 0) {
      const want = this.#dataLeft;
      const skipped = await this.#source.skip(want);
      this.#position += skipped;
      this.#dataLeft = 0;
      if (skipped < want) this.#truncatedData();
    }
    const at = this.#position - (this.#pendingTag === undefined ? 0 : 1);
    const tag = this.#pendingTag ?? await this.#tag("the data records (no end record)");
    this.#pendingTag = undefined;
    if (tag === TAG.end) {
      const trailing = await this.#source.read(1);
      if (trailing.length > 0) this.#fail(`bytes follow the end record at byte ${at}`);
      this.#ended = true;
      return undefined;
    }
    if (tag === TAG.from || tag === TAG.to || tag === TAG.size) {
      this.#fail(`metadata record ${describeTag(tag)} at byte ${at} comes after data records`);
    }
    if (tag !== TAG.write && tag !== TAG.zero) {
      this.#fail(`unknown record tag ${describeTag(tag)} at byte ${at}`);
    }
    const kind = tag === TAG.write ? "w" : "z";
    const offset = await this.#u64(`the '${kind}' record's offset`);
    const length = await this.#u64(`the '${kind}' record's length`);
    const record: DiffRecord = { kind, offset, length };
    this.#check(record, at);
    this.#previous = record;
    if (kind === "w") this.#dataLeft = length;
    return record;
  }

  #check(record: DiffRecord, at: number): void {
    const end = record.offset + record.length;
    const what = `the '${record.kind}' record at byte ${at} (${record.offset}+${record.length})`;
    if (!Number.isSafeInteger(end)) this.#fail(`${what} ends past any image`);
    const size = this.#header!.size;
    if (size !== undefined && end > size) {
      this.#fail(`${what} ends past the image size ${size} of the 's' record`);
    }
    const previous = this.#previous;
    if (previous === undefined) return;
    if (record.offset < previous.offset) {
      this.#fail(`${what} is out of order: it comes after a record at offset ${previous.offset}`);
    }
    if (record.offset < previous.offset + previous.length) {
      this.#fail(
        `${what} overlaps the record before it (${previous.offset}+${previous.length})`,
      );
    }
  }

  #truncatedData(): never {
    const previous = this.#previous!;
    this.#fail(
      `truncated at byte ${this.#position} (in the data of the 'w' record ` +
        `${previous.offset}+${previous.length})`,
    );
  }

  /** Reads up to `length` bytes of the current 'w' record's data (less where it ends). */
  async readData(length: number): Promise<Uint8Array> {
    const want = Math.min(length, this.#dataLeft);
    if (want === 0) return new Uint8Array(0);
    const bytes = await this.#source.read(want);
    this.#position += bytes.length;
    this.#dataLeft -= bytes.length;
    if (bytes.length < want) this.#truncatedData();
    return bytes;
  }
}

/** What a whole, valid diff holds. */
export interface DiffSummary {
  header: DiffHeader;
  records: number;
  /** Bytes of 'w' data. */
  dataBytes: number;
  /** Bytes covered by 'z' records. */
  zeroBytes: number;
  /** Where the last record ends (0 when there is none). */
  end: number;
}

/** Reads a diff through to its end record, checking all of it; its data is skipped, not read. */
export async function validateDiff(source: DiffSource, label: string): Promise<DiffSummary> {
  const parser = new DiffParser(source, label);
  const header = await parser.readHeader();
  const summary: DiffSummary = { header, records: 0, dataBytes: 0, zeroBytes: 0, end: 0 };
  for (let record = await parser.next(); record; record = await parser.next()) {
    summary.records++;
    if (record.kind === "w") summary.dataBytes += record.length;
    else summary.zeroBytes += record.length;
    summary.end = record.offset + record.length;
  }
  return summary;
}
