/**
 * Orphaned data objects: objects of a deleted VDI that no live VDI reads. A VDI's delete removes
 * the objects its table lists (VdiService's sweep), but an object can exist without a table
 * entry: a create that stored some copies and then failed (a full disk on one target: the client
 * was told its write failed, so the entry was never written), or one left by a crash in between.
 * Once the VDI is deleted nothing can ever read such an object, yet it takes space on every
 * holder, and a scrub that found a copy missing would even restore it. The scrub removes them
 * (scrub.ts, phase 2).
 *
 * Safe because a deleted VDI's id is never given out again (its tombstone keeps its bit in the
 * VDI bitmap), and references to its objects only ever go away: a live VDI of its family reads
 * object (vid, i) only through entry i of its table, which writes (copy-on-write), trims and
 * flattens replace and snapshots and clones copy from a VDI that already has it. So one look at
 * the live family's tables per scrub pass stays true for the whole pass. An unknown VDI id (one
 * whose creation this node has not applied yet) is never taken for deleted.
 *
 * @module
 */

import { isDeleted } from "../../core/vdi/inode.ts";
import type { Inode, InodeHeader } from "../../core/vdi/inode.ts";
import { isDataOid, type Oid, oidToIndex, oidToVid, type Vid } from "../../core/vdi/oid.ts";

/** What the check reads: the VDI table, and live inodes. */
export interface OrphanSource {
  /** A VDI's header, tombstone or not; undefined when unknown. */
  header(vid: Vid): InodeHeader | undefined;
  /** The live (not deleted) VDIs of `vid`'s family: its ancestors, descendants and theirs. */
  liveFamily(vid: Vid): InodeHeader[];
  readInode(vid: Vid): Promise<Inode>;
}

/** Answers "is this object an orphan?" for one scrub pass (it caches what it reads). */
export class OrphanCheck {
  readonly #source: OrphanSource;
  /** Per deleted VDI: the entries of it that live VDIs of its family still read. */
  readonly #stillRead = new Map<Vid, Promise<Set<number>>>();

  constructor(source: OrphanSource) {
    this.#source = source;
  }

  /** True when `oid` is a data object of a deleted VDI that no live VDI reads. */
  async isOrphan(oid: Oid): Promise<boolean> {
    if (!isDataOid(oid)) return false;
    const vid = oidToVid(oid);
    const header = this.#source.header(vid);
    if (header === undefined || !isDeleted(header)) return false;
    let read = this.#stillRead.get(vid);
    if (read === undefined) {
      read = this.#entriesStillRead(vid);
      this.#stillRead.set(vid, read);
    }
    return !(await read).has(oidToIndex(oid));
  }

  async #entriesStillRead(vid: Vid): Promise<Set<number>> {
    const indexes = new Set<number>();
    for (const member of this.#source.liveFamily(vid)) {
      const table = (await this.#source.readInode(member.vdiId)).dataVdiId;
      for (let index = 0; index < table.length; index++) {
        if (table[index] === vid) indexes.add(index);
      }
    }
    return indexes;
  }
}
