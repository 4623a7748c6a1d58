/**
 * The checksum file kept beside each object (`<16 hex oid>.meta`): the object's version, size and
 * flags, and a checksum of every 4 KiB block (block_checksum.ts), so reads can verify what they return and replicas can
 * compare digests without reading data.
 *
 * Layout, little-endian:
 *
 * | offset | bytes | field                                                          |
 * |-------:|------:|----------------------------------------------------------------|
 * |      0 |     4 | magic, "SDCK"                                                  |
 * |      4 |     2 | checksum format, 2 (1: entries are CRC-32s, from older builds) |
 * |      6 |     2 | flags: bit 0 UNVERIFIED (crash-suspect, see ObjectMeta)        |
 * |      8 |     8 | object version (a safe integer, < 2^53)                        |
 * |     16 |     8 | object size in bytes                                           |
 * |     24 |     4 | checksum block size, 4096                                      |
 * |     28 |     4 | block count, ceil(size / block size)                           |
 * |     32 |     4 | m, the number of bad-block slots (0 in files of older builds)  |
 * |     36 |     4 | CRC-32 of bytes 0..36                                          |
 * |     40 | 4 × n | checksum of each block's bytes (the last block may be shorter) |
 * | 40+4n  | 4 × m | bad blocks: an index each, or 0xffffffff for a cleared slot    |
 *
 * The header has its own CRC so a torn or rotten header is noticed rather than trusted; the
 * entries need none: a wrong entry fails against its block, which is what a read reports anyway.
 * The file's length must be exactly 40 + 4 × block count + 4 × m.
 *
 * Bad blocks are those of a salvaged copy that no copy could vouch for: their bytes are unknown
 * (zeros on disk) and their entry holds the checksum they *should* have, so a later repair can
 * recognise the right bytes elsewhere. They read as corrupt whatever their bytes and entry are
 * (zeros may well match the checksum they should have), until a write covers them whole (the
 * slot is then cleared in place; the list shrinks when the object is next created).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import { assert, AssertionError } from "../assert.ts";
import { CHECKSUM_BLOCK_BYTES } from "../limits.ts";
import { zeroChecksum } from "./block_checksum.ts";

const MAGIC = 0x4b434453; // "SDCK" read as a little-endian u32
/** The checksum format written: entries are block_checksum.ts's (XXH64's low 32 bits). */
export const CHECKSUM_FORMAT = 2;
/** The format of older builds: entries are CRC-32s (`zlib.crc32`); read only to convert. */
export const CHECKSUM_FORMAT_CRC32 = 1;
export const FLAG_UNVERIFIED = 1;
export const META_HEADER_BYTES = 40;
const HEADER_CRC_AT = 36;
const ENTRY_BYTES = 4;
const BAD_COUNT_AT = 32;
/** A bad-block slot that no longer names a block (its block was written whole since). */
const CLEARED = 0xffffffff;

/** The number of checksum blocks of an object of `size` bytes. */
export function blockCount(size: number): number {
  return Math.ceil(size / CHECKSUM_BLOCK_BYTES);
}

/** One object's checksum file, parsed, kept as the bytes written to disk. */
export class ChecksumMeta {
  readonly bytes: Uint8Array;
  readonly #view: DataView;
  /** The blocks the bad-block slots name (see the module doc). */
  readonly #bad = new Set<number>();
  /**
   * The size field, read once: it never changes after `create` writes it, and reading a u64
   * makes a BigInt (every read checks its range against it: 0.8% of a 4 KiB read's main-thread
   * time in a profile).
   */
  #size = -1;

  private constructor(bytes: Uint8Array) {
    this.bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /**
   * A meta for a `size`-byte object of zeros (every entry the checksum of a zero block), with `bad`
   * (indexes inside the object) recorded as bad blocks.
   */
  static create(
    size: number,
    version: number,
    flags = 0,
    bad: readonly number[] = [],
  ): ChecksumMeta {
    assert(Number.isSafeInteger(version) && version >= 0, `bad version ${version}`);
    const count = blockCount(size);
    const slots = [...new Set(bad)].filter((i) => Number.isSafeInteger(i) && i >= 0 && i < count)
      .sort((a, b) => a - b);
    const meta = new ChecksumMeta(
      new Uint8Array(META_HEADER_BYTES + ENTRY_BYTES * (count + slots.length)),
    );
    const view = meta.#view;
    view.setUint32(0, MAGIC, true);
    view.setUint16(4, CHECKSUM_FORMAT, true);
    view.setUint16(6, flags, true);
    view.setBigUint64(8, BigInt(version), true);
    view.setBigUint64(16, BigInt(size), true);
    view.setUint32(24, CHECKSUM_BLOCK_BYTES, true);
    view.setUint32(28, count, true);
    view.setUint32(BAD_COUNT_AT, slots.length, true);
    slots.forEach((index, i) => {
      view.setUint32(META_HEADER_BYTES + ENTRY_BYTES * (count + i), index, true);
      meta.#bad.add(index);
    });
    const fullChecksum = zeroChecksum(CHECKSUM_BLOCK_BYTES);
    for (let index = 0; index < count; index++) {
      view.setUint32(meta.entryOffset(index), fullChecksum, true);
    }
    if (count > 0) meta.setChecksum(count - 1, zeroChecksum(meta.blockLength(count - 1)));
    meta.sealHeader();
    return meta;
  }

  /** Parses a checksum file; a string says why it is not a valid one. */
  static parse(bytes: Uint8Array): ChecksumMeta | string {
    if (bytes.length < META_HEADER_BYTES) {
      return `it is ${bytes.length} bytes, shorter than its header`;
    }
    const meta = new ChecksumMeta(bytes);
    const view = meta.#view;
    if (view.getUint32(0, true) !== MAGIC) return "it has a bad magic number";
    if (view.getUint32(HEADER_CRC_AT, true) !== crc32(bytes.subarray(0, HEADER_CRC_AT))) {
      return "its header fails its checksum";
    }
    const format = view.getUint16(4, true);
    if (format !== CHECKSUM_FORMAT && format !== CHECKSUM_FORMAT_CRC32) {
      return `format ${format} is unknown`;
    }
    if (view.getUint32(24, true) !== CHECKSUM_BLOCK_BYTES) return "its block size is not 4096";
    const version = view.getBigUint64(8, true);
    const size = view.getBigUint64(16, true);
    if (version > BigInt(Number.MAX_SAFE_INTEGER) || size > BigInt(Number.MAX_SAFE_INTEGER)) {
      return "its version or size is out of range";
    }
    const count = view.getUint32(28, true);
    if (count !== blockCount(meta.size)) return "its block count does not match its size";
    const slots = view.getUint32(BAD_COUNT_AT, true);
    const length = META_HEADER_BYTES + ENTRY_BYTES * (count + slots);
    if (bytes.length !== length) return `it is ${bytes.length} bytes, not ${length}`;
    for (let i = 0; i < slots; i++) {
      const index = view.getUint32(META_HEADER_BYTES + ENTRY_BYTES * (count + i), true);
      if (index === CLEARED) continue;
      if (index >= count) return `its bad block ${index} is outside the object`;
      meta.#bad.add(index);
    }
    return meta;
  }

  /**
   * CHECKSUM_FORMAT, or CHECKSUM_FORMAT_CRC32 for a file of an older build, whose entries are
   * another function's: FsObjectStore.open converts those, nothing else reads them.
   */
  get format(): number {
    return this.#view.getUint16(4, true);
  }

  get version(): number {
    return Number(this.#view.getBigUint64(8, true));
  }

  get size(): number {
    if (this.#size < 0) this.#size = Number(this.#view.getBigUint64(16, true));
    return this.#size;
  }

  get blockCount(): number {
    return this.#view.getUint32(28, true);
  }

  get unverified(): boolean {
    return (this.#view.getUint16(6, true) & FLAG_UNVERIFIED) !== 0;
  }

  /** Raises the version to `version` if higher; true when the header changed. */
  raiseVersion(version: number): boolean {
    if (version <= this.version) return false;
    this.#view.setBigUint64(8, BigInt(version), true);
    this.sealHeader();
    return true;
  }

  /** Sets or clears UNVERIFIED; true when the header changed. */
  setUnverified(on: boolean): boolean {
    if (on === this.unverified) return false;
    const flags = this.#view.getUint16(6, true);
    this.#view.setUint16(6, on ? flags | FLAG_UNVERIFIED : flags & ~FLAG_UNVERIFIED, true);
    this.sealHeader();
    return true;
  }

  /** The recorded bad blocks, in order: they read as corrupt whatever they hold. */
  get badBlocks(): number[] {
    return [...this.#bad].sort((a, b) => a - b);
  }

  isBad(index: number): boolean {
    return this.#bad.size > 0 && this.#bad.has(index);
  }

  /** Clears block `index`'s bad-block slot (it was written whole); true when it had one. */
  clearBad(index: number): boolean {
    if (!this.#bad.delete(index)) return false;
    const slots = this.#view.getUint32(BAD_COUNT_AT, true);
    for (let i = 0; i < slots; i++) {
      const at = META_HEADER_BYTES + ENTRY_BYTES * (this.blockCount + i);
      if (this.#view.getUint32(at, true) === index) this.#view.setUint32(at, CLEARED, true);
    }
    return true;
  }

  /** Where the bad-block slots live in the file: [start, end). */
  badSlotsRange(): [number, number] {
    const start = META_HEADER_BYTES + ENTRY_BYTES * this.blockCount;
    return [start, this.bytes.length];
  }

  /** Bytes in block `index` (the last may be short). */
  blockLength(index: number): number {
    return Math.min(CHECKSUM_BLOCK_BYTES, this.size - index * CHECKSUM_BLOCK_BYTES);
  }

  checksum(index: number): number {
    return this.#view.getUint32(this.entryOffset(index), true);
  }

  setChecksum(index: number, checksum: number): void {
    this.#view.setUint32(this.entryOffset(index), checksum, true);
  }

  /** Where block `index`'s entry lives in the file. */
  entryOffset(index: number): number {
    // (Not `assert`: its message would be built on every call, and this runs per block read.)
    if (!(index >= 0 && index < this.blockCount)) {
      throw new AssertionError(`block ${index} is outside the object`);
    }
    return META_HEADER_BYTES + ENTRY_BYTES * index;
  }

  /** Recomputes the header CRC after a header field changed. */
  sealHeader(): void {
    this.#view.setUint32(HEADER_CRC_AT, crc32(this.bytes.subarray(0, HEADER_CRC_AT)), true);
  }

  /**
   * SHA-1 of (size as u64, every entry): equal on replicas with equal content, whatever their
   * version or flags, and computed without reading the data.
   */
  digest(): string {
    // Entries only, not the bad-block slots: a copy salvaged from a copy equals it (recovery
    // compares a pulled copy with its source by digest); bad blocks are found by reading.
    return createHash("sha1")
      .update(this.bytes.subarray(16, 24))
      .update(
        this.bytes.subarray(META_HEADER_BYTES, META_HEADER_BYTES + ENTRY_BYTES * this.blockCount),
      )
      .digest("hex");
  }
}
