/**
 * Where the checksums of read blocks are computed: a read verifies the CRC-32 of every 4 KiB
 * block it returns (checksum_meta.ts), and for a large read that CRC is most of the sheep's
 * main-thread time. A `BlockHasher` takes them to worker threads (checksum_workers.ts), or leaves them
 * to the calling thread (`inlineHasher`, and the reads a pool does not take); the store compares
 * them with its checksum file either way, so what counts as corrupt, and what happens then, does not depend on where the
 * arithmetic ran.
 *
 * @module
 */

import { CHECKSUM_BLOCK_BYTES } from "../limits.ts";
import { blockCrc } from "./checksum_meta.ts";

/** Bytes with the CRC of each of their checksum blocks. */
export interface Hashed {
  bytes: Uint8Array;
  crcs: Uint32Array;
}

/** Computes the CRC-32 of every checksum block of some buffers elsewhere than here. */
export interface BlockHasher {
  /**
   * Takes `bytes` to compute the CRC of each CHECKSUM_BLOCK_BYTES block (the last may be
   * shorter), or returns undefined: then the caller hashes them itself (small reads, no thread
   * free). A taken buffer may be moved to another thread and back: the view passed in is then
   * left empty (detached), and the bytes are in the one answered. The answer is undefined when
   * they were lost on the way (the thread died holding them): the caller reads them again and
   * hashes them itself. Never rejects.
   */
  offload(bytes: Uint8Array): Promise<Hashed | undefined> | undefined;
  /** Stops any threads; later calls take nothing. */
  close(): Promise<void>;
}

/** The CRC of each checksum block of `bytes`, computed on the calling thread. */
export function blockCrcsInline(bytes: Uint8Array): Uint32Array {
  const crcs = new Uint32Array(Math.ceil(bytes.length / CHECKSUM_BLOCK_BYTES));
  for (let at = 0, i = 0; at < bytes.length; at += CHECKSUM_BLOCK_BYTES, i++) {
    crcs[i] = blockCrc(bytes.subarray(at, at + CHECKSUM_BLOCK_BYTES));
  }
  return crcs;
}

/** Takes nothing: every checksum on the calling thread (tests and simulations). */
export const inlineHasher: BlockHasher = {
  offload: () => undefined,
  close: () => Promise.resolve(),
};
