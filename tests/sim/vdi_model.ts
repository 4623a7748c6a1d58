/**
 * What a simulated VDI may legitimately hold, byte by byte.
 *
 * Each byte may hold its `latest` value (every acknowledged write applied) or a value from an
 * `alternative` layer: a write that failed (it may have landed on the copies, or not), or, after
 * a crash of every verified holder of an object, any value the byte held since the last
 * successful flush (`history`): acknowledged writes that were never flushed may be lost, in any
 * mixture, since a crash keeps a random subset of the unsynced writes and tears one. Bytes are
 * independent, which is looser than the truth but sound. A flush empties the history: what was
 * acknowledged before it can never come back.
 *
 * @module
 */

import { Buffer } from "node:buffer";

/** Bytes of a VDI that a write (or its loss) may have put there. */
interface Layer {
  offset: number;
  data: Uint8Array;
}

/** A byte a read returned that the model does not allow. */
export interface Mismatch {
  /** Byte offset in the VDI. */
  offset: number;
  got: number;
  latest: number;
  /** Every value the byte may hold. */
  allowed: number[];
  /** The last acknowledged write over this byte's 4 KiB block was made durable by a flush. */
  flushed: boolean;
  /** `got` is a value the byte held before (zero, or one an acknowledged write overwrote). */
  stale: boolean;
}

const BLOCK_BYTES = 4096;
/** A bound on layers, so that a run piling them up fails loudly instead of slowing down. */
const LAYERS_MAX = 4096;

export class VdiModel {
  readonly size: number;
  readonly objectBytes: number;
  readonly latest: Uint8Array;
  #alternatives: Layer[] = [];
  #history: Layer[] = [];
  /** Every value acknowledged writes overwrote, flushed or not (to classify mismatches). */
  #past: Layer[] = [];
  /** Per 4 KiB block: the sequence number of the last acknowledged write touching it. */
  #blockWrite: Uint32Array;
  #flushedWrite = 0;
  #writes = 0;
  /** Objects any write has tried to allocate, and those allocated as of the last flush. */
  #allocated = new Set<number>();
  #allocatedAtFlush = new Set<number>();
  /**
   * 4 KiB blocks nobody can vouch for any more: a crash took every clean copy of their newest,
   * unflushed write (the copies left had rotted there). Each may read as an I/O error, until an
   * acknowledged write covers it whole.
   */
  #unvouched = new Set<number>();
  /**
   * Objects a snapshot holds that the working VDI has not written since: its table names the
   * snapshot's object, and a write there copies it into one of the VDI's own first.
   */
  #shared = new Set<number>();
  /**
   * Objects copied out of a snapshot's since the last flush: until a flush, a crash of every
   * holder of the inode may take the entry naming the copy, and the object reads as the
   * snapshot's again (what it held at the last flush, the snapshot's).
   */
  #copiedSinceFlush = new Set<number>();
  crashesSinceFlush = 0;

  constructor(size: number, objectBytes: number) {
    if (size % objectBytes !== 0) throw new RangeError("the VDI is a whole number of objects");
    this.size = size;
    this.objectBytes = objectBytes;
    this.latest = new Uint8Array(size);
    this.#blockWrite = new Uint32Array(Math.ceil(size / BLOCK_BYTES));
  }

  get layers(): number {
    return this.#alternatives.length + this.#history.length;
  }

  /** Object indexes a write has touched. */
  get allocated(): ReadonlySet<number> {
    return this.#allocated;
  }

  /** An acknowledged write: every copy has it (until a crash of its holders before a flush). */
  acknowledged(offset: number, data: Uint8Array): void {
    this.#check(offset, data.length);
    const end = offset + data.length;
    const before = { offset, data: this.latest.slice(offset, end) };
    this.#push(this.#history, before);
    this.#push(this.#past, before);
    // Values a failed write may have left are overwritten now, but they were possible since the
    // last flush: a crash may bring them back.
    const kept: Layer[] = [];
    for (const layer of this.#alternatives) {
      for (const part of cut(layer, offset, end)) kept.push(part);
      const inside = clip(layer, offset, end);
      if (inside) this.#push(this.#history, inside);
    }
    this.#alternatives = kept;
    this.latest.set(data, offset);
    this.#writes++;
    for (let b = Math.floor(offset / BLOCK_BYTES); b * BLOCK_BYTES < end; b++) {
      this.#blockWrite[b] = this.#writes;
      if (b * BLOCK_BYTES >= offset && (b + 1) * BLOCK_BYTES <= end) this.#unvouched.delete(b);
    }
    this.#touch(offset, end);
  }

  /** A write that failed: its bytes may or may not be there, on every copy alike. */
  failed(offset: number, data: Uint8Array): void {
    this.#check(offset, data.length);
    this.#push(this.#alternatives, { offset, data: data.slice() });
    this.#touch(offset, offset + data.length);
  }

  /** A flush succeeded: everything acknowledged before it is durable on every copy. */
  flushed(): void {
    this.#history = [];
    this.#flushedWrite = this.#writes;
    this.#allocatedAtFlush = new Set(this.#allocated);
    this.#copiedSinceFlush.clear();
    this.crashesSinceFlush = 0;
  }

  /**
   * A snapshot of the VDI was taken (call `flushed` first when it is `durable`: a snapshot makes
   * the VDI's writes durable before it is taken). Returns what may be read from the snapshot, for good; every
   * object written so far is the snapshot's until the VDI writes it again.
   */
  snapshotted(options: { durable: boolean } = { durable: true }): VdiModel {
    for (const index of this.#allocated) this.#shared.add(index);
    return this.#frozen(options.durable);
  }

  /**
   * A copy of what may be read now, which nothing changes any more (a snapshot's). Not `durable`
   * (a snapshot whose flush is not known to have succeeded): what a crash may still take back
   * stays possible in it for good.
   */
  #frozen(durable: boolean): VdiModel {
    const copy = new VdiModel(this.size, this.objectBytes);
    copy.latest.set(this.latest);
    copy.#alternatives = durable
      ? [...this.#alternatives]
      : [...this.#alternatives, ...this.#history];
    copy.#past = [...this.#past];
    copy.#unvouched = new Set(this.#unvouched);
    copy.#blockWrite = this.#blockWrite.slice();
    copy.#writes = copy.#flushedWrite = this.#writes;
    copy.#allocated = new Set(this.#allocated);
    copy.#allocatedAtFlush = new Set(this.#allocated);
    return copy;
  }

  /**
   * A crash took every verified copy of object `index` at its newest version (`data`): each of
   * its bytes may be back at any value it held since the last flush. With `inode`, the inode's
   * copies went: an object allocated since the last flush may have lost its table entry, and
   * read as zeros.
   */
  lost(index: number, options: { data: boolean; inode: boolean }): void {
    const start = index * this.objectBytes;
    const end = start + this.objectBytes;
    if (options.data) {
      for (const layer of this.#history) {
        const inside = clip(layer, start, end);
        if (inside) this.#push(this.#alternatives, inside);
      }
    }
    if (options.inode && !this.#allocatedAtFlush.has(index) && this.#allocated.has(index)) {
      this.#push(this.#alternatives, { offset: start, data: new Uint8Array(this.objectBytes) });
    }
    if (options.inode && this.#copiedSinceFlush.has(index)) {
      for (const layer of this.#history) {
        const inside = clip(layer, start, end);
        if (inside) this.#push(this.#alternatives, inside);
      }
    }
  }

  /** The sequence number of the last acknowledged write (1 for the first; 0 before any). */
  get writes(): number {
    return this.#writes;
  }

  /** The sequence number of the last acknowledged write over 4 KiB block `block` (0: none). */
  lastWrite(block: number): number {
    return this.#blockWrite[block]!;
  }

  /**
   * A crash took every copy of these 4 KiB blocks (VDI block numbers) that held their newest
   * bytes clean, and none of those copies had synced them (the caller checks both: the other
   * copies had rotted there, or recorded the block lost, and no flush since the block's last
   * acknowledged write reached the crashed ones). Each may now read as an I/O error, or as any
   * value it held since the last flush, until an acknowledged write covers it whole.
   */
  unvouched(blocks: readonly number[]): void {
    for (const b of blocks) {
      this.#unvouched.add(b);
      const start = b * BLOCK_BYTES;
      for (const layer of this.#history) {
        const inside = clip(layer, start, start + BLOCK_BYTES);
        if (inside) this.#push(this.#alternatives, inside);
      }
    }
  }

  /** The 4 KiB block holding byte `at` may read as an I/O error (`unvouched`). */
  mayFail(at: number): boolean {
    return this.#unvouched.has(Math.floor(at / BLOCK_BYTES));
  }

  /** Notes a crash (for classifying later mismatches). */
  crashed(): void {
    this.crashesSinceFlush++;
  }

  /** The first byte of `data` (read at `offset`) that the model does not allow, if any. */
  check(offset: number, data: Uint8Array): Mismatch | undefined {
    this.#check(offset, data.length);
    const latest = this.latest;
    // Most bytes are their latest value: compare 4 KiB at a time natively, bytes only where not.
    for (let start = 0; start < data.length; start += BLOCK_BYTES) {
      const end = Math.min(start + BLOCK_BYTES, data.length);
      const got = Buffer.from(data.buffer, data.byteOffset + start, end - start);
      const want = Buffer.from(latest.buffer, latest.byteOffset + offset + start, end - start);
      if (got.equals(want)) continue;
      for (let i = start; i < end; i++) {
        const at = offset + i;
        const byte = data[i]!;
        if (byte === latest[at] || this.#alternative(at, byte)) continue;
        return this.#mismatch(at, byte);
      }
    }
    return undefined;
  }

  #alternative(at: number, byte: number): boolean {
    return this.#alternatives.some((layer) =>
      at >= layer.offset && at < layer.offset + layer.data.length &&
      layer.data[at - layer.offset] === byte
    );
  }

  #mismatch(at: number, got: number): Mismatch {
    const allowed = new Set<number>([this.latest[at]!]);
    for (const layer of this.#alternatives) {
      if (at >= layer.offset && at < layer.offset + layer.data.length) {
        allowed.add(layer.data[at - layer.offset]!);
      }
    }
    const write = this.#blockWrite[Math.floor(at / BLOCK_BYTES)]!;
    const stale = got === 0 ||
      this.#past.some((l) =>
        at >= l.offset && at < l.offset + l.data.length && l.data[at - l.offset] === got
      );
    return {
      stale,
      offset: at,
      got,
      latest: this.latest[at]!,
      allowed: [...allowed],
      flushed: write > 0 && write <= this.#flushedWrite,
    };
  }

  #touch(start: number, end: number): void {
    for (let i = Math.floor(start / this.objectBytes); i * this.objectBytes < end; i++) {
      this.#allocated.add(i);
      if (this.#shared.delete(i)) this.#copiedSinceFlush.add(i);
    }
  }

  #push(list: Layer[], layer: Layer): void {
    if (layer.data.length === 0) return;
    if (list.length >= LAYERS_MAX * (list === this.#past ? 4 : 1)) {
      throw new Error(`the model holds over ${LAYERS_MAX} layers`);
    }
    list.push(layer);
  }

  #check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`model range ${offset}+${length} is outside ${this.size} bytes`);
    }
  }
}

/** The part of `layer` inside [start, end), if any. */
function clip(layer: Layer, start: number, end: number): Layer | undefined {
  const from = Math.max(start, layer.offset);
  const to = Math.min(end, layer.offset + layer.data.length);
  if (from >= to) return undefined;
  return { offset: from, data: layer.data.subarray(from - layer.offset, to - layer.offset) };
}

/** The parts of `layer` outside [start, end). */
function cut(layer: Layer, start: number, end: number): Layer[] {
  const layerEnd = layer.offset + layer.data.length;
  if (end <= layer.offset || start >= layerEnd) return [layer];
  const parts: Layer[] = [];
  if (layer.offset < start) {
    parts.push({ offset: layer.offset, data: layer.data.subarray(0, start - layer.offset) });
  }
  if (layerEnd > end) {
    parts.push({ offset: end, data: layer.data.subarray(end - layer.offset) });
  }
  return parts;
}
