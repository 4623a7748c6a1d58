/**
 * Which copy of an object wins when copies differ: the rule recovery, repairs and purge share.
 * The newer version wins; then a verified copy beats one a crash left unverified; then the bytes
 * most copies hold; then the copy on the earliest target. Every node orders the same listing the same
 * way, so copies converge.
 *
 * @module
 */

import type { ObjectMeta } from "../store/object_store.ts";

/**
 * Orders two copies of one object: the higher version, then verified before crash-suspect.
 * Negative when `a` is the better copy. Version first: a copy that did not crash has every
 * acknowledged write, so its version is at least that of any copy a crash took back to its last
 * sync; a crash-suspect copy with a higher version took acknowledged writes after the crash
 * (its peers were away) and must win.
 */
export function compareCopies(a: ObjectMeta, b: ObjectMeta): number {
  return b.version - a.version || Number(b.verified) - Number(a.verified);
}

/** A copy's place in `targets` for `sortCopies`; a node that is not a target comes after all. */
export function targetRank(targets: readonly { id: string }[]): (id: string) => number {
  return (id) => {
    const index = targets.findIndex((n) => n.id === id);
    return index === -1 ? targets.length : index;
  };
}

/**
 * Copies of one object, best first: newest, verified, then the bytes most copies hold, then the
 * earliest target. Every node orders the same listing the same way, so copies converge even when
 * equal versions differ in bytes (a crash of every holder, rot in a checksum file).
 */
export function sortCopies<T extends { meta: ObjectMeta }>(
  copies: readonly T[],
  idOf: (copy: T) => string,
  rank: (id: string) => number,
): T[] {
  const votes = new Map<string, number>();
  for (const { meta } of copies) votes.set(meta.digest, (votes.get(meta.digest) ?? 0) + 1);
  return [...copies].sort((a, b) =>
    compareCopies(a.meta, b.meta) ||
    votes.get(b.meta.digest)! - votes.get(a.meta.digest)! ||
    rank(idOf(a)) - rank(idOf(b))
  );
}

/**
 * True when two copies hold the same bytes at the same version: the same version and the same
 * digest (copies are canonical, so digests compare across nodes). A version alone is not enough:
 * a write that failed part-way leaves a copy changed at its old version.
 */
export function sameCopy(
  a: { readonly version: number; readonly digest: string },
  b: { readonly version: number; readonly digest: string },
): boolean {
  return a.version === b.version && a.digest === b.digest;
}
