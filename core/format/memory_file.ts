/**
 * A file in memory with positional reads and writes, for the format tests (the qcow2 reader
 * reads it, the writer writes it).
 *
 * @module
 */

import type { RandomAccessSource } from "./qcow2_reader.ts";
import type { RandomAccessSink } from "./qcow2_writer.ts";

export class MemoryFile implements RandomAccessSource, RandomAccessSink {
  bytes: Uint8Array;

  constructor(bytes: Uint8Array = new Uint8Array(0)) {
    this.bytes = bytes;
  }

  get size(): number {
    return this.bytes.length;
  }

  readInto(target: Uint8Array, position: number): Promise<number> {
    const available = this.bytes.subarray(position, position + target.length);
    target.set(available);
    return Promise.resolve(available.length);
  }

  write(data: Uint8Array, position: number): Promise<void> {
    if (position + data.length > this.bytes.length) this.#grow(position + data.length);
    this.bytes.set(data, position);
    return Promise.resolve();
  }

  truncate(size: number): Promise<void> {
    if (size > this.bytes.length) this.#grow(size);
    else this.bytes = this.bytes.slice(0, size);
    return Promise.resolve();
  }

  #grow(size: number): void {
    const grown = new Uint8Array(size);
    grown.set(this.bytes);
    this.bytes = grown;
  }
}
