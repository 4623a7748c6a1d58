/**
 * Small byte helpers shared by the store, the gateway, recovery and `img convert`.
 *
 * @module
 */

import { Buffer } from "node:buffer";

/**
 * A buffer whose caller fills every byte before any is read or handed out: not zeroed first.
 * Zeroing a MiB that a read or a copy overwrites anyway cost 25-50 µs, a 4 KiB one 0.2-0.4 µs
 * (Node 20, this repo's 2-core VM). Its own memory (`allocUnsafeSlow` never hands out a slice of
 * Node's shared pool), so it can be moved to a worker, and a plain Uint8Array (a Buffer's `slice`
 * would share bytes where callers expect a copy).
 */
export function unfilledBytes(length: number): Uint8Array {
  return new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
}

/**
 * Small unfilled buffers cut from a shared slab, for bytes that live briefly (a 4 KiB read on its
 * way to a socket). A fresh `ArrayBuffer` per 4 KiB read cost 1.4 µs more than reusing one
 * (allocation, its backing store's bookkeeping, garbage collection; Node 20, this repo's 2-core
 * VM), a slab piece 0.5 µs. A view keeps its whole slab alive, so not for bytes kept long; and it
 * cannot be moved to a worker (checksum_workers.ts moves only buffers a view spans whole).
 */
export class ByteSlab {
  /** Longest piece cut from a slab; longer requests get their own buffer. */
  static readonly PIECE_MAX = 16 * 1024;
  static readonly SLAB_BYTES = 256 * 1024;
  #slab: Uint8Array = new Uint8Array(0);
  #used = 0;

  /** `length` unfilled bytes: a slab piece when short, else `unfilledBytes`. */
  take(length: number): Uint8Array {
    if (length > ByteSlab.PIECE_MAX) return unfilledBytes(length);
    if (this.#used + length > this.#slab.length) {
      this.#slab = unfilledBytes(ByteSlab.SLAB_BYTES);
      this.#used = 0;
    }
    // Pieces start 8-byte aligned: checksum and header code reads them with DataViews.
    const piece = this.#slab.subarray(this.#used, this.#used + length);
    this.#used += (length + 7) & ~7;
    return piece;
  }
}

/**
 * Zeros to compare with, natively (`Buffer.equals`: a MiB of zeros in ~9 µs on this repo's 2-core
 * VM, where a JS loop over 64-bit words took ~130 µs). Never written.
 */
const ZEROS = Buffer.alloc(64 * 1024);

/** `bytes` as a Buffer over the same memory (no copy). */
function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** True when every byte is zero. */
export function isZero(bytes: Uint8Array): boolean {
  const view = bufferView(bytes);
  for (let at = 0; at < view.length; at += ZEROS.length) {
    const part = view.subarray(at, at + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

/** `bytes` without its zero tail: sparse objects need not store it, it reads as zeros anyway. */
export function trimTrailingZeros(bytes: Uint8Array): Uint8Array {
  // Whole zero pieces from the end compared natively, then the last piece with data byte by byte.
  let end = bytes.length;
  while (end > 0) {
    const start = Math.max(0, end - ZEROS.length);
    if (!isZero(bytes.subarray(start, end))) break;
    end = start;
  }
  while (end > 0 && bytes[end - 1] === 0) end--;
  return bytes.subarray(0, end);
}

/** A range of a byte array, [start, end). */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * The parts of `bytes`, to be written at `position` of a new (sparse) file, that hold anything
 * but zeros, in whole `blockBytes` blocks of the file, neighbours joined; as ranges of `bytes`. A
 * new file reads zeros wherever nothing was written, so the zero blocks need no write and no
 * space (`isZero`: a 4 MiB object in ~0.1 ms).
 */
export function nonZeroRanges(
  bytes: Uint8Array,
  position: number,
  blockBytes: number,
): ByteRange[] {
  const ranges: ByteRange[] = [];
  // The first block may start before `bytes` does (`position` inside a block).
  let start = 0;
  while (start < bytes.length) {
    const end = Math.min(bytes.length, start + blockBytes - ((position + start) % blockBytes));
    if (!isZero(bytes.subarray(start, end))) {
      const last = ranges[ranges.length - 1];
      if (last !== undefined && last.end === start) last.end = end;
      else ranges.push({ start, end });
    }
    start = end;
  }
  return ranges;
}

/** Byte-wise equality (compared natively, as `isZero`). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && bufferView(a).equals(bufferView(b));
}

/** `parts` one after the other, in one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const bytes = unfilledBytes(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}
