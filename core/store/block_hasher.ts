/**
 * Where the checksums of read blocks are computed: a read verifies the checksum of every 4 KiB
 * block it returns (block_checksum.ts, checksum_meta.ts), and for a large read that arithmetic is
 * much of the sheep's main-thread time. A `BlockHasher` takes them to worker threads (checksum_workers.ts), or leaves them
 * to the calling thread (`inlineHasher`, and the reads a pool does not take); the store compares
 * them with its checksum file either way, so what counts as corrupt, and what happens then, does not depend on where the
 * arithmetic ran.
 *
 * @module
 */

/** Bytes with the checksum of each of their checksum blocks. */
export interface Hashed {
  bytes: Uint8Array;
  checksums: Uint32Array;
}

/** Computes the checksum of every checksum block of some buffers elsewhere than here. */
export interface BlockHasher {
  /**
   * Takes `bytes` to compute the checksum of each CHECKSUM_BLOCK_BYTES block (the last may be
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

/** Takes nothing: every checksum on the calling thread (tests and simulations). */
export const inlineHasher: BlockHasher = {
  offload: () => undefined,
  close: () => Promise.resolve(),
};
