/**
 * The unparsed input of one connection, as the byte-stream readers (the NBD session's
 * `ByteQueue`, the object protocol's `FrameReader`) hold it: chunks in arrival order, taken from
 * the front as views when one chunk holds what is asked, joined otherwise.
 *
 * A message announced with `gather(n)` before all of it is here is collected into one buffer of
 * its length as its bytes arrive, instead of being joined from the chunks when taken (the same
 * one copy, and the chunks it came in are not kept until then).
 *
 * @module
 */

import { Buffer } from "node:buffer";

export class ReceivedBytes {
  #chunks: Buffer[] = [];
  /** Read position inside #chunks[0]. */
  #head = 0;
  /** Bytes in #chunks (after #head). */
  #chunked = 0;
  /** The buffer the next bytes are collected in (`gather`), and how much of it is filled. */
  #gathering: { bytes: Buffer; filled: number } | undefined;

  /** Bytes received and not yet taken. */
  get length(): number {
    return this.#chunked + (this.#gathering?.filled ?? 0);
  }

  /** Adds a chunk as it arrived (kept as it is, not copied). */
  add(chunk: Uint8Array): void {
    let rest = chunk;
    const gathering = this.#gathering;
    if (gathering !== undefined && gathering.filled < gathering.bytes.length) {
      const part = Math.min(rest.length, gathering.bytes.length - gathering.filled);
      gathering.bytes.set(rest.subarray(0, part), gathering.filled);
      gathering.filled += part;
      rest = rest.subarray(part);
    }
    if (rest.length === 0) return;
    this.#chunks.push(Buffer.from(rest.buffer, rest.byteOffset, rest.length));
    this.#chunked += rest.length;
  }

  /**
   * The next `n` bytes will be taken at once: unless they are all here already, they are
   * collected into one buffer of `n` from now on (what is here copied in). Nothing is gathered
   * while nothing is here: the next chunk may bring all `n`, taken as a view.
   */
  gather(n: number): void {
    if (this.#gathering !== undefined || n <= this.length || this.#chunked === 0) return;
    const bytes = Buffer.allocUnsafeSlow(n); // its own memory (a worker may take it); filled below, then by add()
    const filled = this.#chunked;
    this.#copyOut(bytes, filled);
    this.#gathering = { bytes, filled };
  }

  /** The next `n` bytes (`length` must be at least `n`): a view when one chunk holds them. */
  take(n: number): Buffer {
    if (n > this.length) throw new Error(`ReceivedBytes: ${n} bytes asked, ${this.length} here`);
    const gathering = this.#gathering;
    if (gathering !== undefined) {
      if (n !== gathering.bytes.length) {
        throw new Error(`ReceivedBytes: ${n} bytes asked, ${gathering.bytes.length} gathered`);
      }
      this.#gathering = undefined;
      return gathering.bytes;
    }
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    if (first.length - this.#head >= n) {
      const view = first.subarray(this.#head, this.#head + n);
      this.#advance(n);
      return view;
    }
    const joined = Buffer.allocUnsafeSlow(n); // own memory, as above; every byte set by #copyOut
    this.#copyOut(joined, n);
    return joined;
  }

  /** Drops the next `n` bytes (at most `length`; not while gathering). */
  drop(n: number): void {
    if (this.#gathering !== undefined) throw new Error("ReceivedBytes: drop while gathering");
    let left = Math.min(n, this.#chunked);
    while (left > 0) {
      const count = Math.min(this.#chunks[0]!.length - this.#head, left);
      this.#advance(count);
      left -= count;
    }
  }

  /** Moves the first `n` chunked bytes into `out`. */
  #copyOut(out: Buffer, n: number): void {
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(chunk.length - this.#head, n - filled);
      chunk.copy(out, filled, this.#head, this.#head + count);
      filled += count;
      this.#advance(count);
    }
  }

  /** Consumes `count` bytes of the first chunk. */
  #advance(count: number): void {
    this.#head += count;
    this.#chunked -= count;
    if (this.#head === this.#chunks[0]!.length) {
      this.#chunks.shift();
      this.#head = 0;
    }
  }
}
