/**
 * Converts an object's checksum file of an older build (checksum format 1: CRC-32 entries) to
 * the current format (block_checksum.ts), once, when a store of that build is first opened
 * (FsObjectStore.open; the store's `.format` marker says which it is).
 *
 * A conversion must not bless rot: each block's CRC-32 is checked against its old entry before
 * the block's new checksum is taken from its bytes. A block that fails becomes a bad block (it
 * reads as corrupt, and a read, the scrub or recovery replaces it from another copy), except in
 * an object a crash left with unsynced writes (`suspect`): there a mismatch is as likely a write
 * that landed as rot, so it joins the object's changed blocks, as a crash rebuild would do
 * (FsObjectStore.#rebuildChecksums), for recovery to settle against the other copies.
 *
 * What cannot be converted is dropped, on the safe side: the checksum a bad block *should* have
 * (recorded as a CRC-32; its entry becomes one that matches no bytes it holds) and the checksums
 * changed blocks had at their last sync (the bytes they described are gone, so recovery's merge
 * takes those blocks as it does blocks with no record: from the first copy).
 *
 * @module
 */

import { crc32 } from "node:zlib";
import { CHECKSUM_BLOCK_BYTES as B, STORE_SCAN_BYTES } from "../limits.ts";
import { blockChecksums } from "./block_checksum.ts";
import { CHECKSUM_FORMAT_CRC32, ChecksumMeta, FLAG_UNVERIFIED } from "./checksum_meta.ts";
import { type DiskFile, fileChunks } from "./disk.ts";

export interface ConvertedChecksums {
  /** The new checksum file (its bad blocks include the blocks that failed). */
  meta: ChecksumMeta;
  /** Blocks whose bytes failed their CRC-32, in order. */
  failed: number[];
}

/**
 * The current-format checksum file for `data`, whose checksum file is `old` (format 1, of the
 * same size as `data`).
 */
export async function convertChecksums(
  old: ChecksumMeta,
  data: DiskFile,
  suspect: boolean,
): Promise<ConvertedChecksums> {
  if (old.format !== CHECKSUM_FORMAT_CRC32) {
    throw new Error(`format ${old.format} is not converted`);
  }
  const sums = new Uint32Array(old.blockCount);
  const failed: number[] = [];
  for await (const { start, chunk } of fileChunks(data, old.size, STORE_SCAN_BYTES)) {
    sums.set(blockChecksums(chunk), start / B);
    for (let at = 0; at < chunk.length; at += B) {
      const index = (start + at) / B;
      if (old.isBad(index)) continue;
      if (crc32(chunk.subarray(at, at + B)) !== old.checksum(index)) failed.push(index);
    }
  }
  const bad = suspect ? old.badBlocks : [...old.badBlocks, ...failed];
  const flags = old.unverified || (suspect && failed.length > 0) ? FLAG_UNVERIFIED : 0;
  const meta = ChecksumMeta.create(old.size, old.version, flags, bad);
  sums.forEach((sum, index) => meta.setChecksum(index, sum));
  // A bad block's entry vouches for nothing it holds.
  for (const index of meta.badBlocks) meta.setChecksum(index, ~sums[index]! >>> 0);
  return { meta, failed };
}
