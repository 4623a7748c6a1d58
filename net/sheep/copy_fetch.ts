/**
 * Fetching the copy a repair or a recovery pull copies from. Candidates come best first (see
 * `sortCopies`); the copies equal to the best (the same verified flag, version and digest) are
 * tried with a checked read, any of them will do. When none of them reads clean, the best copy is
 * *salvaged* rather than passed over: its good blocks are kept (they hold the newest
 * acknowledged writes), a block bad in one copy is taken from an equal copy where it is good, and
 * a block bad in all of them is taken from any other copy whose block has exactly the checksum
 * it should have, else stays bad (it reads as an I/O error wherever it is copied). An older copy
 * never serves whole: it would lose acknowledged writes.
 *
 * A copy of the same rank with other bytes (a write that failed part-way on one copy leaves it
 * changed at its old version, see `ObjectStore.write`) serves whole only when the best copy
 * cannot be had without a hole: every node picks the same best copy (`sortCopies`) and a node
 * whose own copy is the best keeps it, so a pull that took another one left the copies apart
 * for good (sim seed 27208: the best copy's block had rotted, a leftover of the same version
 * without the failed write's bytes read clean and was pulled, and the targets stayed apart).
 *
 * @module
 */

import { CHECKSUM_BLOCK_BYTES } from "../../core/limits.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import type { ObjectMeta, SalvagedCopy, SalvageOptions } from "../../core/store/object_store.ts";
import { blockChecksum } from "../../core/store/block_checksum.ts";
import { isResult } from "../../core/errors.ts";
import { RETRYABLE } from "./retry_policy.ts";
import type { Oid } from "../../core/vdi/oid.ts";

/** How to read one node's copy: checked (throws on a bad block), salvaged, or one block. */
export interface CopyReader {
  whole(node: RingNode, oid: Oid, size: number): Promise<{ data: Uint8Array; version: number }>;
  salvage(
    node: RingNode,
    oid: Oid,
    options?: SalvageOptions,
  ): Promise<SalvagedCopy & { version: number }>;
  /** Bytes [offset, offset+length) of the node's copy, checked there. */
  range(node: RingNode, oid: Oid, offset: number, length: number): Promise<Uint8Array>;
}

/** The copy to copy from, and which of its blocks are bad. */
export interface FetchedCopy extends SalvagedCopy {
  node: RingNode;
  meta: ObjectMeta;
  version: number;
  /**
   * Built by salvaging: no holder of the best copy read clean, so `data` is not what `node`
   * holds (bad blocks there were taken from other copies, or stay bad): every holder, `node`
   * included, needs it, even when no block is left bad.
   */
  salvaged?: boolean;
}

/**
 * The best copy that can be read, from `candidates` ordered best first; undefined if none.
 * `fillers` are further copies only holes may be filled from (the copy the fetched one will
 * replace: recovery never lists its own node's copy as a candidate, but a block there may be the
 * only good version of one the best copy lost).
 */
export async function fetchBestCopy(
  oid: Oid,
  candidates: readonly { node: RingNode; meta: ObjectMeta }[],
  reader: CopyReader,
  fillers: readonly { node: RingNode }[] = [],
): Promise<FetchedCopy | undefined> {
  // Only the best rank is ever copied from: an older copy would lose acknowledged writes, so a
  // best copy that cannot be read now is an error (retried later), never a reason to go back.
  const group = rankGroups(candidates)[0];
  if (!group) return undefined;
  const digest = group[0]!.meta.digest;
  const best = group.filter((c) => c.meta.digest === digest);
  const others = group.filter((c) => c.meta.digest !== digest);
  let unreachable: unknown;
  let lastError: unknown;
  const whole = async (from: readonly { node: RingNode; meta: ObjectMeta }[]) => {
    for (const candidate of from) {
      const copy = await reader.whole(candidate.node, oid, candidate.meta.size).catch((error) => {
        if (isResult(error, ...RETRYABLE)) unreachable = error;
        lastError = error;
        return undefined;
      });
      if (copy) return { ...candidate, ...copy, badBlocks: [], expected: [] };
    }
    return undefined;
  };
  const equal = await whole(best);
  if (equal) return equal;
  // An equal copy that could not be asked may be whole: try again later rather than salvage.
  if (unreachable !== undefined) throw unreachable;
  const salvaged: FetchedCopy[] = [];
  for (const candidate of best) {
    const copy = await reader.salvage(candidate.node, oid).catch((error) => {
      lastError = error;
      return undefined;
    });
    if (copy && copy.data.length === candidate.meta.size) {
      salvaged.push({ ...candidate, ...copy, salvaged: true });
    }
  }
  const filled = salvaged.length === 0
    ? undefined
    : await fillHoles(oid, mergeSalvaged(salvaged), [...candidates, ...fillers], reader);
  if (filled && filled.badBlocks.length === 0) return filled;
  // The best copy has holes (or cannot be read at all): a copy as new with other bytes that
  // reads clean loses no acknowledged write and no block.
  const other = await whole(others);
  if (other) return other;
  // One that could not be asked may: try again later rather than keep the holes.
  if (unreachable !== undefined) throw unreachable;
  if (filled) return filled;
  throw lastError;
}

/**
 * Fills the bad blocks of a salvaged copy from any other copy, of any version, whose block holds
 * exactly the bytes that were written there: its checksum equals the one the block should have.
 * A copy that cannot be read there (another block of the range fails, or a crash left its
 * checksums unrebuilt on a full disk) is salvaged and its block taken if it has that checksum:
 * such a copy may be the last to hold it (found by the simulation, seed 2970: a leftover with
 * unrebuilt checksums, purged once the epoch was done).
 */
async function fillHoles(
  oid: Oid,
  copy: FetchedCopy,
  candidates: readonly { node: RingNode }[],
  reader: CopyReader,
): Promise<FetchedCopy> {
  const badBlocks: number[] = [];
  const expected: (number | undefined)[] = [];
  // Each copy salvaged at most once (a whole object), and only when a block is wanted from it.
  const salvages = new Map<string, Promise<Uint8Array | undefined>>();
  const salvaged = (node: RingNode) => {
    let bytes = salvages.get(node.id);
    if (!bytes) {
      bytes = reader.salvage(node, oid).then((c) => c.data, () => undefined);
      salvages.set(node.id, bytes);
    }
    return bytes;
  };
  for (const [i, index] of copy.badBlocks.entries()) {
    const want = copy.expected[i];
    const start = index * CHECKSUM_BLOCK_BYTES;
    const length = Math.min(CHECKSUM_BLOCK_BYTES, copy.data.length - start);
    let filled = false;
    for (const { node } of want === undefined ? [] : candidates) {
      if (node.id === copy.node.id) continue;
      const bytes = await reader.range(node, oid, start, length).catch(async (error) =>
        isResult(error, ...RETRYABLE)
          ? undefined
          : (await salvaged(node))?.subarray(start, start + length)
      );
      if (bytes && bytes.length === length && blockChecksum(bytes) === want) {
        copy.data.set(bytes, start);
        filled = true;
        break;
      }
    }
    if (!filled) {
      badBlocks.push(index);
      expected.push(want);
    }
  }
  return { ...copy, badBlocks, expected };
}

/** Consecutive candidates of equal rank (verified flag and version), in order. */
function rankGroups<T extends { meta: ObjectMeta }>(candidates: readonly T[]): T[][] {
  const groups: T[][] = [];
  for (const candidate of candidates) {
    const last = groups[groups.length - 1];
    const head = last?.[0];
    if (
      head && head.meta.verified === candidate.meta.verified &&
      head.meta.version === candidate.meta.version
    ) last!.push(candidate);
    else groups.push([candidate]);
  }
  return groups;
}

/** One copy from salvaged copies of the same bytes: each block from a copy where it is good. */
function mergeSalvaged(copies: FetchedCopy[]): FetchedCopy {
  const first = copies[0]!;
  if (copies.length === 1) return first;
  const data = new Uint8Array(first.data);
  const bad: number[] = [];
  const expected: (number | undefined)[] = [];
  for (const [i, index] of first.badBlocks.entries()) {
    const good = copies.find((c) => !c.badBlocks.includes(index));
    if (!good) {
      bad.push(index);
      expected.push(first.expected[i]);
      continue;
    }
    const start = index * CHECKSUM_BLOCK_BYTES;
    const end = Math.min(data.length, start + CHECKSUM_BLOCK_BYTES);
    data.set(good.data.subarray(start, end), start);
  }
  return { ...first, data, badBlocks: bad, expected };
}
