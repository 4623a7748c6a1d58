/**
 * The checksum of a block: the low 32 bits of XXH64 (seed 0) of its bytes, computed in
 * WebAssembly (block_checksum.wat, assembled into block_checksum_wasm.ts). Every checksum the
 * store keeps and compares (a meta file's entries, a changed block's checksum at its last sync,
 * the checksums a read or a recovery compares) is this one; checksum format 2 of the meta file.
 *
 * Why not CRC-32 (format 1): Node's `zlib.crc32` is table-driven, 270-400 µs per MiB of 4 KiB
 * blocks on this machine's EPYC, which made a verified 1 MiB read cost a third more CPU than an
 * unverified one. XXH64 in WebAssembly takes about 100 µs per MiB, plus about 25 µs to copy the
 * bytes into the module's memory (BENCHMARKS.md, "Block checksums"). WebAssembly has no
 * carry-less multiply, so a hardware CRC is out of reach; XXH64's 64-bit multiplies are native
 * there. A 32-bit slice of a 64-bit hash misses a random corruption with the same odds as a
 * CRC-32 (2^-32); it loses the CRC's guarantee for bursts of 32 bits or fewer, which rot on a
 * disk (whole sectors) does not produce anyway.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { AssertionError } from "../assert.ts";
import { CHECKSUM_BLOCK_BYTES } from "../limits.ts";
import { BLOCK_CHECKSUM_WASM } from "./block_checksum_wasm.ts";

/** The module's bytes. */
export function blockChecksumWasm(): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(BLOCK_CHECKSUM_WASM, "base64"));
}

/** Checksums with one instance of the module. */
export interface Checksummer {
  /** The checksum of `bytes` (at most a MiB: one block, in practice). */
  one(bytes: Uint8Array): number;
  /** The checksum of each `blockBytes` block of `bytes` (the last may be shorter). */
  each(bytes: Uint8Array): Uint32Array;
}

/**
 * An instance of the module for blocks of `blockBytes`. Self-contained (it names nothing
 * outside itself) because the checksum workers run its source text: one implementation on
 * both sides of the thread boundary.
 */
export function checksummer(wasm: Uint8Array<ArrayBuffer>, blockBytes: number): Checksummer {
  // The .wat's memory layout: checksums out from 0, bytes in from 64 KiB, one MiB of them.
  const scratchAt = 65536;
  const scratchBytes = 1048576;
  const instance = new WebAssembly.Instance(new WebAssembly.Module(wasm));
  const exports = instance.exports as unknown as {
    memory: WebAssembly.Memory;
    checksum(at: number, length: number): number;
    checksums(at: number, length: number, block: number, out: number): void;
  };
  const heap = new Uint8Array(exports.memory.buffer);
  const out = new Uint32Array(exports.memory.buffer, 0, scratchBytes / blockBytes);
  return {
    one(bytes) {
      if (bytes.length > scratchBytes) {
        throw new RangeError(`${bytes.length} bytes for one checksum`);
      }
      heap.set(bytes, scratchAt);
      return exports.checksum(scratchAt, bytes.length) >>> 0;
    },
    each(bytes) {
      const result = new Uint32Array(Math.ceil(bytes.length / blockBytes));
      for (let at = 0; at < bytes.length; at += scratchBytes) {
        const chunk = bytes.subarray(at, at + scratchBytes);
        heap.set(chunk, scratchAt);
        exports.checksums(scratchAt, chunk.length, blockBytes, 0);
        result.set(out.subarray(0, Math.ceil(chunk.length / blockBytes)), at / blockBytes);
      }
      return result;
    },
  };
}

// One instance per thread, made on first use. It keeps nothing between calls (each copies its
// bytes in and its answer out), so sharing it is sharing a lookup table, not state.
let shared: Checksummer | undefined;

function local(): Checksummer {
  return shared ??= checksummer(blockChecksumWasm(), CHECKSUM_BLOCK_BYTES);
}

/** The checksum of one block's bytes (the last block of an object may be shorter). */
export function blockChecksum(bytes: Uint8Array): number {
  // (Not `assert`: its message would be built on every call, once per block written.)
  if (bytes.length > CHECKSUM_BLOCK_BYTES) {
    throw new AssertionError(`a block of ${bytes.length} bytes`);
  }
  return local().one(bytes);
}

/** The checksum of each checksum block of `bytes`, computed on the calling thread. */
export function blockChecksums(bytes: Uint8Array): Uint32Array {
  return local().each(bytes);
}

const zeroChecksums = new Map<number, number>();

/**
 * The checksum of `length` zero bytes, cached: a sparse object's untouched blocks get it without
 * hashing megabytes of zeros.
 */
export function zeroChecksum(length: number): number {
  let sum = zeroChecksums.get(length);
  if (sum === undefined) zeroChecksums.set(length, sum = blockChecksum(new Uint8Array(length)));
  return sum;
}
