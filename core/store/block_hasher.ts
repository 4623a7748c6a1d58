/**
 * Where the checksums of read blocks are computed: a read verifies the CRC-32 of every 4 KiB
 * block it returns (checksum_meta.ts), and for a large read that CRC is most of the sheep's
 * main-thread time. A `BlockHasher` computes them on the calling thread (`inlineHasher`) or in
 * worker threads (checksum_workers.ts); the store compares them with its checksum file
 * either way, so what counts as corrupt, and what happens then, does not depend on where the
 * arithmetic ran.
 *
 * @module
 */

import { CHECKSUM_BLOCK_BYTES } from "../limits.ts";
import { blockCrc } from "./checksum_meta.ts";

/** Computes the CRC-32 of every checksum block of a buffer. */
export interface BlockHasher {
  /**
   * A buffer of `length` zero bytes to read into: one `blockCrcs` can hand to another thread
   * without a copy when it is large enough to be worth it (shared memory), else a plain one.
   */
  allocate(length: number): Uint8Array;
  /**
   * The CRC of each CHECKSUM_BLOCK_BYTES block of `bytes` (the last block may be shorter).
   * Never rejects: if the thread computing it fails, the answer is computed here instead.
   */
  blockCrcs(bytes: Uint8Array): Promise<Uint32Array>;
  /** Stops any threads; later calls compute on the calling thread. */
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

/** Every checksum on the calling thread (stores in tests and simulations, and small reads). */
export const inlineHasher: BlockHasher = {
  allocate: (length) => new Uint8Array(length),
  blockCrcs: (bytes) => Promise.resolve(blockCrcsInline(bytes)),
  close: () => Promise.resolve(),
};
