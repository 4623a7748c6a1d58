/**
 * What an inode rebuilt from copies a crash left suspect keeps of their allocation tables.
 *
 * Recovery rebuilds such an object block by block (net/sheep/recovery.ts `mergeCopies`), which
 * may take a table block from a copy whose crash dropped an unsynced entry that another copy
 * kept. For a data object that is right (an unflushed write may be lost), for the table it is
 * not: a client that saw the entry before the crash (the VDI's writer, QEMU or an export whose
 * inode is cached) goes on writing into that object in place, and those writes, acknowledged
 * after the crash, would vanish behind an entry that says "unallocated" (found by the data-path
 * simulation, seed 12797). Keeping the entry is safe: an entry is written only after its object
 * was created, durably (`VdiIo`), and a discard removes an object only once the entry's removal
 * is durable on every target's copy (`VdiIo.discard`), so an entry a copy at the newest version
 * holds names an object that exists, and what it holds is what its own copies say.
 *
 * Only copies at the newest version count, as for any block the merge takes (an older copy's
 * block is never taken on its own). A copy's version after a crash is that of its last sync, and
 * a discard's flush gives every target's copy a version above any copy the discard did not
 * write: a leftover on a node that is no longer a target (the purge keeps one whose holders it
 * could not confirm, until the next view) still records the entries and the objects are gone.
 * Taking them from it named objects no node holds: reads failed (simulation seed 9132).
 *
 * @module
 */

import { CHECKSUM_BLOCK_BYTES } from "../limits.ts";
import { compareHeaders, decodeInodeHeader, INODE_HEADER_SIZE, type InodeHeader } from "./inode.ts";

/** One copy as the merge had it: its bytes, its version, and the blocks it cannot vouch for. */
export interface InodeCopy {
  data: Uint8Array;
  /** That of its last sync (a crash-suspect copy's). */
  version: number;
  bad?: readonly number[];
}

/**
 * Sets each table entry of `merged` to the newest allocation any copy at the newest version
 * records (outside the copies' bad blocks and the merge's `lost` ones): the VDI's own object
 * first, else another VDI's (a clone's parent), else what the merge chose. Returns how many
 * entries it changed.
 */
export function keepAllocations(
  merged: Uint8Array,
  copies: readonly InodeCopy[],
  lost: ReadonlySet<number>,
): number {
  if (merged.length < INODE_HEADER_SIZE) return 0;
  const own = decodeInodeHeader(merged).vdiId;
  if (own === 0) return 0; // the header itself was lost: nothing to tell the VDI's own objects by
  const out = new DataView(merged.buffer, merged.byteOffset, merged.byteLength);
  const newest = Math.max(...copies.map((copy) => copy.version));
  const sources = copies.filter((copy) => copy.version === newest).map((copy) => ({
    view: new DataView(copy.data.buffer, copy.data.byteOffset, copy.data.byteLength),
    bad: new Set(copy.bad ?? []),
  }));
  let changed = 0;
  // Entries are 4 bytes from a multiple of 4: none straddles two checksum blocks.
  for (let at = INODE_HEADER_SIZE; at + 4 <= merged.length; at += 4) {
    const block = Math.floor(at / CHECKSUM_BLOCK_BYTES);
    const chosen = out.getUint32(at, true);
    if (chosen === own || lost.has(block)) continue;
    let best = chosen;
    for (const { view, bad } of sources) {
      if (bad.has(block) || at + 4 > view.byteLength) continue;
      const entry = view.getUint32(at, true);
      if (entry === own) {
        best = own;
        break;
      }
      if (best === 0) best = entry;
    }
    if (best !== chosen) {
      out.setUint32(at, best, true);
      changed++;
    }
  }
  return changed;
}

/**
 * Gives `merged` the newest header (`compareHeaders`) any copy at the newest version holds whole
 * (none of its blocks bad or lost), as one piece. A VDI change that failed part-way (a snapshot
 * whose header write reached one copy and was rolled back on the others) and a crash of every
 * holder leave the copies with two headers, and a block-by-block merge took either: each start of
 * every node builds its VDI table from its own copies, keeping the newest header any node loaded,
 * so a merge that took the older one left the disk saying the snapshot was never taken while
 * every table said it was, until the next restart of every node took it back again, with the
 * working VDI the client had moved to (simulation, snapshot seed 1813). The newest header is what
 * the tables hold. Returns whether it changed `merged`.
 */
export function keepNewestHeader(
  merged: Uint8Array,
  copies: readonly InodeCopy[],
  lost: ReadonlySet<number>,
): boolean {
  if (merged.length < INODE_HEADER_SIZE) return false;
  const blocks = Math.ceil(INODE_HEADER_SIZE / CHECKSUM_BLOCK_BYTES);
  const newest = Math.max(...copies.map((copy) => copy.version));
  let best: { header: InodeHeader; bytes: Uint8Array } | undefined;
  for (const copy of copies) {
    if (copy.version !== newest || copy.data.length < INODE_HEADER_SIZE) continue;
    const bad = new Set(copy.bad ?? []);
    if (Array.from({ length: blocks }, (_, b) => b).some((b) => bad.has(b) || lost.has(b))) {
      continue;
    }
    const bytes = copy.data.subarray(0, INODE_HEADER_SIZE);
    const header = decodeInodeHeader(bytes);
    if (header.vdiId === 0) continue;
    if (!best || compareHeaders(header, best.header) > 0) best = { header, bytes };
  }
  if (!best) return false;
  const current = merged.subarray(0, INODE_HEADER_SIZE);
  if (compareHeaders(decodeInodeHeader(current), best.header) >= 0) return false;
  current.set(best.bytes);
  return true;
}
