/**
 * How many data objects each VDI owns and shares (`countEntries`), kept per sheep for the inode
 * copies it stores, so a listing (`info -t vdi`, `info -t vm`, `img du`, the dashboard's poll
 * every 2 s) costs a request per node answered from memory, not a read of every live inode
 * (4 MiB each).
 *
 * Where the counts live: in memory, beside the copies they describe. Every write into an
 * inode's `data_vdi_id` table lands on each node that stores a copy (the gateway writes every
 * replica), so each such node sees every change of its copy; it reads the entries the write
 * replaces (a few bytes) and moves its count by the difference. Nothing is persisted, so a
 * crash cannot leave a wrong count behind: a restarted sheep counts each copy again from the
 * copy itself (in the background after start, else at the first listing).
 *
 * Why a count is never trusted over its inode: every change of a local copy, by any path (a
 * client's write, a recovery pull, a repair, a purge), ends with the store's `onChange`, which
 * bumps the copy's generation here. A count records the generation of the copy it describes and
 * is used only while that is still the copy's generation; a write that this module moved the
 * count through must be the only change in between (generation + 1), else the count is dropped
 * and the next listing reads the copy again. Writes and recounts of one inode are serialised
 * here, so the entries read before a write are the ones it replaces.
 *
 * Which node's count a listing uses: the holders of the inode under the current view, this node
 * first (`vdi_summary.ts`); a node in recovery answers nothing (its copy may be behind), and an
 * inode no holder counts is read through the gateway, as before.
 *
 * @module
 */

import { isResult, ResultCode } from "../../core/errors.ts";
import { type AllocationCount, countEntries } from "../../core/vdi/cow.ts";
import { decodeEntries, INODE_HEADER_SIZE, INODE_SIZE } from "../../core/vdi/inode.ts";
import { isVdiOid, type Oid, oidToVid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import type { ObjectStore } from "../../core/store/object_store.ts";
import { ObjectLocks } from "./object_locks.ts";

export type { AllocationCount };

/** What the counts read: this sheep's own copies. */
export type CountedStore = Pick<ObjectStore, "read" | "meta">;

interface Known {
  /** Null: this node has no copy. */
  count: AllocationCount | null;
  /** The generation of the copy the count describes. */
  generation: number;
}

/** The `data_vdi_id` entries [first, last] that the byte range [offset, offset+length) touches. */
function touchedEntries(offset: number, length: number): { first: number; last: number } | null {
  const end = offset + length;
  if (end <= INODE_HEADER_SIZE || length === 0) return null;
  const first = Math.floor((Math.max(offset, INODE_HEADER_SIZE) - INODE_HEADER_SIZE) / 4);
  const last = Math.floor((end - 1 - INODE_HEADER_SIZE) / 4);
  return { first, last };
}

/** The counts of an inode copy whose bytes from offset 0 are `bytes` (zeros after them). */
export function countCopy(vid: Vid, bytes: Uint8Array): AllocationCount {
  if (bytes.length <= INODE_HEADER_SIZE) return { allocated: 0, shared: 0 };
  const stored = bytes.subarray(INODE_HEADER_SIZE, Math.min(bytes.length, INODE_SIZE));
  // The table read in place where it can be (a whole 4 MiB table is counted at every start):
  // whole entries, aligned, on a little-endian host (the table's byte order).
  if (stored.byteOffset % 4 === 0 && LITTLE_ENDIAN) {
    const whole = new Uint32Array(stored.buffer, stored.byteOffset, stored.length >>> 2);
    const count = countEntries(vid, whole);
    if (stored.length % 4 === 0) return count;
    const last = countEntries(vid, decodeEntries(padded(stored.subarray(whole.length * 4))));
    return { allocated: count.allocated + last.allocated, shared: count.shared + last.shared };
  }
  return countEntries(vid, decodeEntries(padded(stored)));
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** `bytes` with zeros up to whole entries: a copy written sparse may end inside an entry. */
function padded(bytes: Uint8Array): Uint8Array {
  if (bytes.length % 4 === 0) return bytes;
  const table = new Uint8Array((bytes.length + 3) & ~3);
  table.set(bytes);
  return table;
}

export class AllocationCounts {
  readonly #store: CountedStore;
  /** Bumped by every change of a local inode copy (`changed`, the store's onChange). */
  readonly #generations = new Map<Vid, number>();
  readonly #known = new Map<Vid, Known>();
  readonly #locks = new ObjectLocks<Vid>();
  /** Inode copies read whole to count them, since start (tests and the log read it). */
  recounts = 0;

  constructor(store: CountedStore) {
    this.#store = store;
  }

  #generation(vid: Vid): number {
    return this.#generations.get(vid) ?? 0;
  }

  /** The store changed `oid` (or tried to): a count of it is stale from now on. */
  changed(oid: Oid): void {
    if (!isVdiOid(oid)) return;
    const vid = oidToVid(oid);
    this.#generations.set(vid, this.#generation(vid) + 1);
  }

  /** The count of the copy as it is now, if known without reading it. */
  #current(vid: Vid): Known | undefined {
    const known = this.#known.get(vid);
    return known && known.generation === this.#generation(vid) ? known : undefined;
  }

  /**
   * Runs `write` (a write of `data` at `offset` into the local copy of `oid`) and moves the
   * copy's count by what it changed. Resolves with what `write` resolves with.
   */
  write<T>(oid: Oid, data: Uint8Array, offset: number, write: () => Promise<T>): Promise<T> {
    if (!isVdiOid(oid)) return write();
    const vid = oidToVid(oid);
    return this.#locks.exclusive(vid, async () => {
      const before = this.#generation(vid);
      const known = this.#current(vid);
      const touched = touchedEntries(offset, data.length);
      const at = touched ? INODE_HEADER_SIZE + 4 * touched.first : 0;
      let replaced: Uint8Array | undefined;
      if (known?.count && touched) {
        const length = 4 * (touched.last - touched.first + 1);
        replaced = await this.#store.read(oid, at, length).catch(() => undefined);
      }
      const result = await write();
      if (!known?.count || this.#generation(vid) !== before + 1) return result;
      if (!touched) {
        this.#known.set(vid, { count: known.count, generation: before + 1 });
      } else if (replaced) {
        // The touched entries as they are now: the replaced bytes with the written ones on top.
        const now = replaced.slice();
        const from = Math.max(at, offset);
        const to = Math.min(at + now.length, offset + data.length);
        now.set(data.subarray(from - offset, to - offset), from - at);
        const gone = countEntries(vid, decodeEntries(replaced));
        const come = countEntries(vid, decodeEntries(now));
        this.#known.set(vid, {
          count: {
            allocated: known.count.allocated - gone.allocated + come.allocated,
            shared: known.count.shared - gone.shared + come.shared,
          },
          generation: before + 1,
        });
      }
      return result;
    });
  }

  /**
   * Runs `create` (the local copy of `oid` made anew: `data` at `offset`, zeros elsewhere) and
   * counts the new copy from `data`.
   */
  create<T>(oid: Oid, data: Uint8Array, offset: number, create: () => Promise<T>): Promise<T> {
    if (!isVdiOid(oid)) return create();
    const vid = oidToVid(oid);
    return this.#locks.exclusive(vid, async () => {
      const before = this.#generation(vid);
      const result = await create();
      if (offset === 0 && this.#generation(vid) === before + 1) {
        this.#known.set(vid, { count: countCopy(vid, data), generation: before + 1 });
      }
      return result;
    });
  }

  /**
   * The counts of this node's copies of the inodes of `vids`, read from a copy only where no
   * current count is known; vids this node has no copy of are left out.
   */
  async counts(vids: Iterable<Vid>): Promise<Map<Vid, AllocationCount>> {
    const counts = new Map<Vid, AllocationCount>();
    for (const vid of vids) {
      const known = this.#current(vid);
      const count = known
        ? known.count
        : await this.#locks.exclusive(vid, () => this.#recount(vid));
      if (count) counts.set(vid, count);
    }
    return counts;
  }

  /** Counts the local copy of `vid`'s inode from the copy itself (null: there is none). */
  async #recount(vid: Vid): Promise<AllocationCount | null> {
    const known = this.#current(vid);
    if (known) return known.count; // counted while this waited for the lock
    const generation = this.#generation(vid);
    const oid = vdiOid(vid);
    let count: AllocationCount | null;
    try {
      const meta = await this.#store.meta(oid);
      if (meta === undefined) count = null;
      else {
        this.recounts++;
        count = countCopy(vid, await this.#store.read(oid, 0, Math.min(meta.size, INODE_SIZE)));
      }
    } catch (error) {
      if (!isResult(error, ResultCode.NO_OBJ)) return null; // unreadable: not counted here
      count = null;
    }
    if (this.#generation(vid) === generation) this.#known.set(vid, { count, generation });
    return count;
  }
}
