/**
 * `ObjectStore` on a `Disk`: one data file per object under `DIR/obj/`, named by the oid in 16
 * lowercase hex digits (Sheepdog's "plain" store), and beside it `<oid>.meta`, its version, size
 * and a checksum per 4 KiB block (layout in checksum_meta.ts, function in block_checksum.ts).
 *
 * Creates write a temporary data file (ftruncate to the object's size, so it is sparse and
 * exactly `size` bytes, then the data) and a temporary checksum file, sync both, rename them into
 * place and sync the directory. Writes are positional: the data, then the checksums of the blocks
 * they touched; a write that covers part of a block reads the block back to hash it.
 *
 * Durability. Objects with writes not yet synced are tracked apart from the file handle cache, so
 * evicting a handle (which syncs first) or a flush never forgets one. A failed sync is sticky:
 * Linux may have dropped the unsynced pages and reports the failure once, so a later sync that
 * "succeeds" proves nothing; the store fails every later flush and refuses writes until restart.
 *
 * Crash detection. Data and checksums are two files, and after a crash either may hold writes the
 * other lacks; an object's checksums then fail against its data although nothing rotted. Instead of
 * ordering the two writes with a sync between them (a sync per write) or versioning each block
 * (more metadata per write and still a window), the store keeps a journal (`.dirty`) of objects
 * that may hold unsynced writes: an object's entry is made durable (one shared sync per burst,
 * see dirty_journal.ts) before its first unsynced write. After a crash, `open` recomputes the
 * checksums of every listed object from its data and marks it UNVERIFIED, keeping its version: it
 * is self-consistent but may lack some of its last writes, so recovery compares it with its
 * replicas before trusting it. The write path stays at two pwrites, the common crash case
 * (unsynced writes) never looks like rot, and real rot in objects that were synced is still
 * caught, because their checksums are never recomputed.
 *
 * Older data directories: data files without a checksum file are adopted on first access (version
 * 0, UNVERIFIED, size rounded up to 4 KiB) while the directory's `.format` file says it is being
 * adopted; once every object has one, a missing checksum file is corruption.
 *
 * @module
 */

import * as path from "node:path";
import process from "node:process";
import { type ByteRange, ByteSlab, nonZeroRanges, unfilledBytes } from "../bytes.ts";
import { assert } from "../assert.ts";
import { formatSize } from "../size.ts";
import { CorruptionError, promiseOf, ResultCode, SheepdogError } from "../errors.ts";
import {
  CHECKSUM_BLOCK_BYTES,
  MESSAGE_BYTES_MAX,
  METADATA_RESERVE_BYTES,
  OBJECT_BYTES_MAX,
  OPEN_FILES_MAX,
  SPACE_RECHECK_MS,
  STORE_SCAN_BYTES,
} from "../limits.ts";
import { type Oid, oidFromHex, oidToHex, oidToVid } from "../vdi/oid.ts";
import { type BlockHasher, inlineHasher } from "./block_hasher.ts";
import { blockChecksum, blockChecksums } from "./block_checksum.ts";
import {
  CHECKSUM_FORMAT,
  CHECKSUM_FORMAT_CRC32,
  ChecksumMeta,
  META_HEADER_BYTES,
} from "./checksum_meta.ts";
import { convertChecksums } from "./checksum_conversion.ts";
import {
  type Disk,
  type DiskFile,
  errorCode,
  fileChunks,
  readFully,
  readFullyNow,
  writeAll,
} from "./disk.ts";
import { DirtyJournal } from "./dirty_journal.ts";
import { fsDisk } from "./fs_disk.ts";
import type {
  BadBlock,
  ChangedBlock,
  CreateOptions,
  HealedBlock,
  ObjectMeta,
  ObjectStore,
  SalvagedCopy,
  SalvageOptions,
  StoreHealth,
  StoreSpace,
} from "./object_store.ts";
import { UNREBUILT_DIGEST_PREFIX } from "./object_store.ts";
import { RangeLock } from "./range_lock.ts";
import { SpaceFloor } from "./space_floor.ts";

export { syncDirectory } from "./fs_disk.ts";

/** Objects whose handles stay cached: each holds two files (data and checksums). */

/** Objects a flush syncs at once. */
const FLUSH_PARALLEL = 16;
/** A checksum update writes header and entries in one pwrite when they are this close. */
const META_COALESCE_BYTES = 16 * 1024;
/** Beside a crash-suspect object: the blocks that changed since its last sync (JSON). */
const CHANGED_SUFFIX = ".changed";
/** Journal entries of clean objects that per-VDI flushes let stay before the journal shrinks. */
const JOURNAL_ENTRIES_KEPT = 1024;
const B = CHECKSUM_BLOCK_BYTES;
const JOURNAL_NAME = ".dirty";
const FORMAT_NAME = ".format";
/**
 * The store's format, in its `.format` marker: 2 since block checksums are block_checksum.ts's
 * (store format 1 kept CRC-32s; open converts them). " adopting": objects of builds before
 * checksum files are still being given one.
 */
const STORE_FORMAT = 2;
const FORMAT_PATTERN = /^sheepdog object store (\d+)( adopting)?\n$/;

/** An object with its files open and its checksums in memory. */
interface OpenObject {
  readonly oid: Oid;
  readonly data: DiskFile;
  readonly metaFile: DiskFile;
  readonly meta: ChecksumMeta;
  readonly locks: RangeLock;
  /** Calls in progress; an object is closed only at zero, so no write loses its handle. */
  users: number;
  idle: (() => void)[];
  /** Out of the cache: new calls open the object afresh (after it has closed). */
  retired: boolean;
  /** Checksum entries [metaFrom, metaTo] and maybe the header changed but are not written. */
  metaFrom: number;
  metaTo: number;
  headerDirty: boolean;
  /** A bad-block slot was cleared in memory but not written. */
  badDirty: boolean;
  metaTail: Promise<void>;
  nextMetaWrite?: Promise<void>;
}

interface Slot {
  opening: Promise<OpenObject>;
  value?: OpenObject;
  /** When it was last used (the store's use counter): the least recent idle one is evicted. */
  lastUse: number;
}

/** The bytes of a copy a write covered. */
export interface ChangedRange {
  offset: number;
  length: number;
}

/** What `onChange` hears of a change of a copy. */
export interface CopyChange {
  /** False when it failed (it may have changed bytes all the same). */
  ok: boolean;
  /** The range a write covered; absent for a create or a remove (the whole copy). */
  written?: ChangedRange;
}

/** Objects as files under `objectDir`. */
export class FsObjectStore implements ObjectStore {
  readonly objectDir: string;
  readonly #disk: Disk;
  readonly #journal: DirtyJournal;
  #slots = new Map<Oid, Slot>();
  /**
   * Counts uses of cached objects. A use stamps its slot instead of moving it to the end of the
   * map: a delete and a set per read or write cost hashing and, as deleted entries pile up, the
   * map's rehashing (measured in a three-copy write profile).
   */
  #uses = 0;
  #closing = new Map<Oid, Promise<void>>();
  /** Objects with writes not known durable, with a count bumped by each write. */
  #dirty = new Map<Oid, number>();
  #adoptLegacy = false;
  #syncError?: SheepdogError;
  #health: StoreHealth = { noSpaceErrors: 0, checksumErrors: 0, syncErrors: 0 };
  #tempCounter = 0;
  readonly #verifyReads: boolean;
  /** Computes the checksums of what reads return (large reads in worker threads, if any). */
  readonly #hasher: BlockHasher;
  readonly #onChange: ((oid: Oid, change: CopyChange) => void) | undefined;
  readonly #log: (line: string) => void;
  /** Objects whose files stay open (each holds two handles: data and checksums). */
  readonly #cachedObjectsMax: number;
  /**
   * Objects a crash left with unsynced writes whose checksums could not be rebuilt at open (the
   * data could not be read, the disk was full): their checksums may not describe their data, so
   * they read as corrupt and list as unverified until a good copy replaces them.
   */
  #unrebuilt = new Set<Oid>();
  readonly #holder: () => string;
  /**
   * Per crash-suspect object: the blocks that changed since its last sync, each with the checksum
   * it had at that sync where known (see `open`).
   */
  #changed = new Map<Oid, readonly ChangedBlock[]>();
  /** Objects whose changed-blocks record in memory is shorter than the one on disk. */
  #changedStale = new Set<Oid>();
  /**
   * Per copy this node's own crash left suspect: the epoch its journal entry carried, a lower
   * bound of the epoch of its first write the crash may have lost (0: unknown). Kept in its
   * changed-blocks record until the copy is verified or replaced (see `crashSuspectSince`).
   */
  #dirtySince = new Map<Oid, number>();
  /** The cluster epoch new journal entries carry. */
  readonly #epoch: () => number;
  /** Buffers of small reads (they leave with the reply: see ByteSlab). */
  readonly #slab = new ByteSlab();
  /** Creates and writes stop short of the space kept free for the sheep's own state. */
  readonly #floor: SpaceFloor;

  /**
   * `verifyReads: false` skips checking checksums on reads (writes still keep them current):
   * only for measuring what verification costs (`npm run bench`), never for data you keep. Such
   * reads take the same paths as verified ones (a short one answered at once, a long one through
   * the pool), less the comparison: what is measured is the checksums' cost alone.
   * `hasher` computes the checksums reads verify (default: on the calling thread, as
   * simulations need); the store closes it when it closes.
   */
  constructor(
    objectDir: string,
    disk: Disk = fsDisk,
    options: {
      verifyReads?: boolean;
      openFiles?: number;
      onChange?: (oid: Oid, change: CopyChange) => void;
      hasher?: BlockHasher;
      /** Where open reports long work (converting an older build's checksums). */
      log?: (line: string) => void;
      /** The cluster's current epoch, recorded with each journal entry (default 0: unknown). */
      epoch?: () => number;
      /**
       * Who holds this store (the node's id): part of an unrebuilt copy's digest (see `meta`).
       * Default: the object directory.
       */
      holder?: () => string;
      /**
       * Free bytes creates and writes leave on the file system (default METADATA_RESERVE_BYTES;
       * 0: none, only the disk itself refuses, as simulations of a disk full part-way want).
       */
      reserveBytes?: number;
      /** The clock of the free-space checks (default Date.now). */
      now?: () => number;
    } = {},
  ) {
    this.objectDir = objectDir;
    this.#onChange = options.onChange;
    this.#disk = disk;
    this.#cachedObjectsMax = Math.max(1, Math.floor((options.openFiles ?? OPEN_FILES_MAX) / 2));
    this.#verifyReads = options.verifyReads ?? true;
    this.#hasher = options.hasher ?? inlineHasher;
    this.#log = options.log ?? (() => {});
    this.#epoch = options.epoch ?? (() => 0);
    this.#holder = options.holder ?? (() => objectDir);
    this.#journal = new DirtyJournal(disk, path.join(objectDir, JOURNAL_NAME));
    this.#floor = new SpaceFloor(() => disk.space(objectDir), {
      reserveBytes: options.reserveBytes ?? METADATA_RESERVE_BYTES,
      recheckMs: SPACE_RECHECK_MS,
      now: options.now ?? Date.now,
    });
  }

  /**
   * Prepares the directory: removes temporary files a crash left, rebuilds the checksums of the
   * objects the journal lists (UNVERIFIED), removes checksum files without data, starts a new
   * journal. Call once, before anything else.
   */
  async open(): Promise<void> {
    await this.#disk.mkdir(this.objectDir);
    for (const name of await this.#disk.readdir(this.objectDir)) {
      if (name.endsWith(".tmp")) await this.#unlinkIfPresent(path.join(this.objectDir, name));
    }
    const suspects = await DirtyJournal.read(this.#disk, path.join(this.objectDir, JOURNAL_NAME));
    const names = await this.#disk.readdir(this.objectDir);
    const found = await this.#readFormat();
    this.#adoptLegacy = (found === undefined || found.adopting) &&
      names.some((name) => oidFromHex(name) !== undefined && !names.includes(`${name}.meta`));
    for (const name of names) {
      if (!name.endsWith(CHANGED_SUFFIX)) continue;
      const oid = oidFromHex(name.slice(0, -CHANGED_SUFFIX.length));
      if (oid === undefined) continue;
      if (!names.includes(oidToHex(oid))) {
        await this.#unlinkIfPresent(path.join(this.objectDir, name));
        continue;
      }
      const record = parseChanged(await this.#readText(path.join(this.objectDir, name)));
      if (!record) continue;
      this.#changed.set(oid, record.blocks);
      if (record.since !== undefined) this.#dirtySince.set(oid, record.since);
    }
    // Before the rebuilds: they compare the checksums they compute with those on file.
    if (found === undefined || found.format < STORE_FORMAT) {
      await this.#convertChecksumFiles(names, new Set(suspects.keys()));
    }
    const unrepaired: Oid[] = [];
    for (const [oid, epoch] of suspects) {
      // The earlier of this crash's entry and an earlier crash's record (not yet resolved).
      this.#dirtySince.set(oid, Math.min(epoch, this.#dirtySince.get(oid) ?? epoch));
      await this.#rebuildChecksums(oid).catch(() => unrepaired.push(oid));
    }
    this.#unrebuilt = new Set(unrepaired);
    for (const name of names) {
      const data = name.endsWith(".meta") ? name.slice(0, -5) : undefined;
      if (data && oidFromHex(data) !== undefined && !names.includes(data)) {
        await this.#unlinkIfPresent(path.join(this.objectDir, name));
      }
    }
    await this.#disk.syncDir(this.objectDir);
    // Last: a start that stops before this converts (and adopts) again where it left off.
    await this.#writeFormat(found);
    // Objects that could not be rebuilt stay listed, so the next start tries again. On a full
    // disk the old journal stays as it is: the sheep still starts, reads, and frees space.
    await this.#journal.rewrite(new Map(unrepaired.map((oid) => [oid, suspects.get(oid)!])))
      .catch(async (error) => {
        if (errorCode(error) !== "ENOSPC") throw error;
        await this.#journal.reopen(suspects);
      });
  }

  #dataPath(oid: Oid): string {
    return path.join(this.objectDir, oidToHex(oid));
  }

  #metaPath(oid: Oid): string {
    return path.join(this.objectDir, oidToHex(oid) + ".meta");
  }

  #tempPath(name: string): string {
    return path.join(this.objectDir, `${name}.${process.pid}.${this.#tempCounter++}.tmp`);
  }

  // ---- Operations ----

  /**
   * Every change of a copy (create, write, remove) ends with `onChange(oid, change)`, whether it
   * succeeded or not (a failed write may have changed bytes): what a caller derives from a copy's
   * content is known stale after it (net/sheep/allocation_counts.ts).
   */
  async #changing<T>(oid: Oid, work: () => Promise<T>, written?: ChangedRange): Promise<T> {
    let ok = false;
    try {
      const result = await work();
      ok = true;
      return result;
    } finally {
      this.#onChange?.(oid, { ok, ...(written ? { written } : {}) });
    }
  }

  create(oid: Oid, data: Uint8Array, offset: number, options: CreateOptions): Promise<number> {
    return this.#changing(oid, () => this.#create(oid, data, offset, options));
  }

  write(oid: Oid, data: Uint8Array, offset: number, version: number): Promise<number> {
    return this.#changing(oid, () => this.#write(oid, data, offset, version), {
      offset,
      length: data.length,
    });
  }

  remove(oid: Oid): Promise<number> {
    return this.#changing(oid, () => this.#remove(oid));
  }

  async #create(
    oid: Oid,
    data: Uint8Array,
    offset: number,
    options: CreateOptions,
  ): Promise<number> {
    const action = `Cannot create object ${oidToHex(oid)}`;
    this.#refuseWrites(action);
    const { size, version } = options;
    if (!Number.isSafeInteger(size) || size < 0 || size > OBJECT_BYTES_MAX) {
      throw new SheepdogError(ResultCode.INVALID_PARMS, `${action}: bad size ${size}`);
    }
    checkVersion(action, version);
    checkRange(action, offset, data.length, size);
    // Blocks the source could not vouch for stay bad here too: corruption travels as corruption
    // (a read of them is an I/O error), never as good-looking bytes. They are recorded as bad in
    // the checksum file, so they fail whatever their bytes (zeros) and checksum are: the checksum
    // kept is the one the block should have (so a later repair can still find its bytes on
    // another copy), which zeros may match; else one its bytes cannot match.
    const meta = ChecksumMeta.create(size, version, 0, options.badBlocks ?? []);
    if (options.unverified) meta.setUnverified(true);
    hashCreated(meta, data, offset);
    (options.badBlocks ?? []).forEach((index, i) => {
      if (index < 0 || index >= meta.blockCount) return;
      meta.setChecksum(index, options.expected?.[i] ?? (~meta.checksum(index) >>> 0));
    });
    // A crash-suspect copy of a crash-suspect copy: the source's changed blocks are this copy's
    // uncertain ones (same bytes). Unknown (every block uncertain) when the source had none.
    const changed = options.unverified && options.changed !== undefined
      ? sortedChanged(changedInRange(options.changed, meta.blockCount))
      : undefined;
    // The data file is sparse: only the blocks of `data` that are not zeros are written (a copy
    // made by recovery, a repair or a clone's first write carries the whole object, mostly zeros
    // in a thin VDI). At most their pages and the checksum file's are charged.
    const written = nonZeroRanges(data, offset, B);
    const charge =
      written.reduce((sum, r) => sum + spannedBytes(offset + r.start, r.end - r.start), 0) +
      spannedBytes(0, meta.bytes.length);
    await this.#admitData(action, charge);
    const dataTemp = this.#tempPath(oidToHex(oid));
    const metaTemp = this.#tempPath(oidToHex(oid) + ".meta");
    try {
      await this.#writeNewFile(objectName(oid), dataTemp, size, data, offset, written);
      await this.#writeNewFile(objectName(oid), metaTemp, meta.bytes.length, meta.bytes, 0);
      // The record goes in with the copy (the install syncs the directory). While an older copy
      // may still be there, it must not look more certain than it is: an existing record is
      // widened to cover both; a copy without one (maybe "unknown") gets the record only after.
      const old = this.#changed.get(oid);
      const before = changed === undefined
        ? undefined
        : old !== undefined
        ? widenChanged(old, changed)
        : await this.exists(oid)
        ? undefined
        : changed;
      if (before !== undefined) await this.#writeChanged(oid, before);
      // The version of the copy replaced, for the gateway: a create under a lower one (its clock
      // behind the one that made that copy) is sent again under a higher one, as a write is.
      const replaced = (await this.meta(oid).catch(() => undefined))?.version ?? 0;
      await this.#install(oid, dataTemp, metaTemp);
      this.#unrebuilt.delete(oid);
      // Whatever it is, the new copy is not one this node's crash left suspect.
      const wasSuspect = this.#dirtySince.delete(oid);
      if (changed === undefined) await this.#dropChanged(oid);
      else if (before?.length !== changed.length || wasSuspect) {
        this.#changedStale.delete(oid);
        // Installed: a record that cannot be written leaves the wider one, or none (unknown).
        await this.#writeChanged(oid, changed)
          .then(() => this.#syncDirectory(`recording ${objectName(oid)}'s changed blocks`))
          .catch(() => undefined);
      }
      this.#stored();
      return replaced;
    } catch (error) {
      await this.#unlinkIfPresent(dataTemp);
      await this.#unlinkIfPresent(metaTemp);
      throw this.#failure(error, action);
    } finally {
      this.#floor.done(charge);
    }
  }

  /**
   * Renames a created object's files into place. A new object gets its checksums first, so a
   * crash between the renames leaves none (open removes checksums without data). A replaced one
   * gets its data first, so a crash leaves the new data under the old version, never old data
   * under a new one; it is journaled first, so open rebuilds its checksums either way.
   */
  async #install(oid: Oid, dataTemp: string, metaTemp: string): Promise<void> {
    const replacing = await this.exists(oid);
    if (replacing) await this.#journaled(oid);
    await this.#whileClosed(oid, async () => {
      if (replacing) {
        await this.#disk.rename(dataTemp, this.#dataPath(oid));
        await this.#disk.rename(metaTemp, this.#metaPath(oid));
      } else {
        await this.#disk.rename(metaTemp, this.#metaPath(oid));
        await this.#disk.rename(dataTemp, this.#dataPath(oid));
      }
    });
    await this.#syncDirectory(`creating ${objectName(oid)}`);
  }

  /**
   * Writes a new file of `size` bytes holding `data` at `offset` (only the `ranges` of it given:
   * the rest of a new file reads as zeros), synced.
   */
  async #writeNewFile(
    what: string,
    file: string,
    size: number,
    data: Uint8Array,
    offset: number,
    ranges: readonly ByteRange[] = [{ start: 0, end: data.length }],
  ): Promise<void> {
    const handle = await this.#disk.open(file, "wx+");
    try {
      await handle.truncate(size);
      for (const { start, end } of ranges) {
        await writeAll(handle, data.subarray(start, end), offset + start);
      }
      await this.#sync(what, handle);
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  async #write(oid: Oid, data: Uint8Array, offset: number, version: number): Promise<number> {
    const action = () => `Cannot write object ${oidToHex(oid)}`;
    this.#refuseWrites(action);
    checkVersion(action, version);
    checkRange(action, offset, data.length, OBJECT_BYTES_MAX);
    // At most the pages the write touches (holes of the sparse file).
    const charge = spannedBytes(offset, data.length);
    const admitted = this.#floor.admit(charge);
    // (Far from the reserve the answer is at once: no turn of the microtask queue on the hot path.)
    if (admitted === true || (admitted !== false && await admitted)) {
      try {
        return await this.#writeAdmitted(oid, data, offset, version, action);
      } finally {
        this.#floor.done(charge);
      }
    }
    // At the reserve, an overwrite allocates nothing when the object's data file has every page
    // (written whole: a copy-on-write, a recovery, a guest that wrote it all), so a VM that
    // rewrites its own blocks goes on; a write that may fill a hole is refused. (On a file
    // system that copies on write, btrfs, an overwrite takes space all the same.)
    if (!(await this.#allocatedWhole(oid))) throw this.#beyondFloor(action);
    return await this.#writeAdmitted(oid, data, offset, version, action);
  }

  /** True when `oid`'s data file has space for every byte of it (no hole a write could fill). */
  async #allocatedWhole(oid: Oid): Promise<boolean> {
    const stat = await this.#disk.stat(this.#dataPath(oid)).catch(() => undefined);
    return stat !== undefined && stat.size > 0 && stat.allocatedBytes >= stat.size;
  }

  #writeAdmitted(
    oid: Oid,
    data: Uint8Array,
    offset: number,
    version: number,
    action: Action,
  ): Promise<number> {
    return this.#use(oid, action, async (object) => {
      checkRange(action, offset, data.length, object.meta.size);
      const before = object.meta.version;
      this.#markDirty(oid);
      await this.#journaled(oid).catch((error) => {
        throw this.#failure(error, action);
      });
      const failure = await this.#writeBlocks(object, data, offset, version);
      // The checksums reach the meta file when the object is synced (or evicted), not with every
      // write: until then the object is in the journal, so a crash rebuilds them from the data.
      // One pwrite per client write instead of two.
      this.#markDirty(oid);
      if (failure !== undefined) throw this.#failure(failure, action);
      this.#settleChanged(oid, offset, data.length);
      this.#stored();
      return before;
    });
  }

  /**
   * Writes the data and updates the checksums of the blocks it touched, under their lock, without
   * ever taking a checksum from what is on disk: a block the write covers only in part is read
   * first and must match its checksum (else the write fails as corruption before anything is
   * written: rot is never blessed by a small write next to it), and the new checksums are
   * computed from the bytes meant to be there. On a failed write (ENOSPC part-way, EIO) each
   * touched block keeps its old checksum if it still holds its old bytes, takes the new one if it
   * holds the new bytes, and otherwise keeps the old one, so it reads as an I/O error rather than
   * as anything; the version is kept and the failure returned.
   */
  async #writeBlocks(
    object: OpenObject,
    data: Uint8Array,
    offset: number,
    version: number,
  ): Promise<unknown> {
    const [first, last] = blockSpan(offset, data.length);
    const release = object.locks.tryLock(first, last, true) ??
      await object.locks.lock(first, last, true);
    let failure: unknown;
    try {
      const intended = wholeBlockChecksums(object.meta, data, offset, first, last) ??
        await this.#intendedChecksums(object, data, offset, first, last);
      await writeAll(object.data, data, offset).catch((error) => failure = error);
      if (failure === undefined) {
        for (const [index, checksum] of intended) {
          object.meta.setChecksum(index, checksum);
          // A bad block written whole holds known bytes now (a partial write into one fails
          // before anything is written, see #intendedChecksums).
          if (object.meta.clearBad(index)) object.badDirty = true;
        }
        if (object.meta.raiseVersion(version)) object.headerDirty = true;
      } else {
        await this.#settleFailedBlocks(object, intended);
      }
      object.metaFrom = Math.min(object.metaFrom, first);
      object.metaTo = Math.max(object.metaTo, last);
    } catch (error) {
      if (error instanceof CorruptionError) {
        failure = error;
        return failure;
      }
      // The checksums in memory no longer describe the blocks just written: write out what is
      // known (earlier writes' checksums are only in memory until a sync), then forget them and
      // let the next access find the mismatch (or the restart rebuild them: it is journaled).
      void this.#persistMeta(object, 0, -1).catch(() => undefined)
        .finally(() => this.#retire(object.oid, false));
      failure ??= error;
    } finally {
      release();
    }
    return failure;
  }

  /**
   * The checksum each block in [first, last] will have once `data` is written at `offset`. A
   * block the write covers only in part is read and checked first (CorruptionError if bad).
   */
  async #intendedChecksums(
    object: OpenObject,
    data: Uint8Array,
    offset: number,
    first: number,
    last: number,
  ): Promise<Map<number, number>> {
    const { meta } = object;
    const checksums = new Map<number, number>();
    // The blocks the write covers whole, hashed in one call (a call per block costs more).
    const wholeFirst = Math.ceil(offset / B);
    const wholeEnd = Math.min(meta.size, offset + data.length);
    const whole = wholeFirst * B < wholeEnd
      ? blockChecksums(data.subarray(wholeFirst * B - offset, wholeEnd - offset))
      : new Uint32Array(0);
    for (let index = first; index <= last; index++) {
      const start = index * B;
      const length = meta.blockLength(index);
      if (offset <= start && start + length <= offset + data.length) {
        checksums.set(index, whole[index - wholeFirst]!);
        continue;
      }
      const block = unfilledBytes(length);
      const read = await readFully(object.data, block, start);
      if (read < length || meta.isBad(index) || blockChecksum(block) !== meta.checksum(index)) {
        this.#health.checksumErrors++;
        throw new CorruptionError(
          object.oid,
          [index],
          `Object ${
            oidToHex(object.oid)
          }: block ${index} fails its checksum (found before a write into it)`,
        );
      }
      const from = Math.max(offset, start);
      const to = Math.min(offset + data.length, start + length);
      block.set(data.subarray(from - offset, to - offset), from - start);
      checksums.set(index, blockChecksum(block));
    }
    return checksums;
  }

  /** After a failed write: each touched block gets the checksum of what it holds, if known. */
  async #settleFailedBlocks(object: OpenObject, intended: Map<number, number>): Promise<void> {
    const { meta } = object;
    for (const [index, checksum] of intended) {
      const length = meta.blockLength(index);
      const block = new Uint8Array(length);
      const read = await readFully(object.data, block, index * B).catch(() => 0);
      if (read === length && blockChecksum(block) === checksum) meta.setChecksum(index, checksum);
      // Else it holds the old bytes (its checksum stays right) or something else (its old
      // checksum makes it read as an I/O error, to be repaired from another copy).
    }
  }

  read(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    // No async frames of its own: the hot path of every client read (see `#readBlocksNow`).
    return promiseOf(() => {
      const action = () => `Cannot read object ${oidToHex(oid)}`;
      checkRange(action, offset, length, OBJECT_BYTES_MAX);
      if (length > MESSAGE_BYTES_MAX) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          `${action()}: ${length} bytes is too long`,
        );
      }
      this.#refuseUnrebuilt(oid);
      return this.#use(oid, action, (object) => this.#readVerified(object, offset, length));
    });
  }

  /**
   * `read` answered on the calling thread (`ObjectStore.readNow`): an object open in the cache,
   * a short read of blocks not locked, read and verified at once. Undefined when it cannot be, or
   * when a block fails its checksum: nothing was done, `read` takes it (and counts and reports
   * the failure).
   */
  readNow(oid: Oid, offset: number, length: number): Uint8Array | undefined {
    if (this.#unrebuilt.has(oid) || this.#closing.has(oid)) return undefined;
    const slot = this.#slots.get(oid);
    const object = slot?.value;
    if (object === undefined || object.retired) return undefined;
    if (length <= 0 || offset < 0 || offset + length > object.meta.size) return undefined;
    slot!.lastUse = ++this.#uses;
    // No users++: nothing can close the object before this returns.
    const span = readSpan(object, offset, length);
    const now = this.#readBlocksNow(object, span.length, span.first);
    if (now === undefined || now.bad.length > 0) return undefined;
    return inSpan(now.bytes, span, offset, length);
  }

  /** `read` of an acquired object. */
  #readVerified(object: OpenObject, offset: number, length: number): Promise<Uint8Array> {
    checkRange(
      () => `Cannot read object ${oidToHex(object.oid)}`,
      offset,
      length,
      object.meta.size,
    );
    if (length === 0) return Promise.resolve(new Uint8Array(0));
    const span = readSpan(object, offset, length);
    const verified = ({ bytes, bad }: { bytes: Uint8Array; bad: BadBlock[] }) => {
      if (bad.length > 0) {
        this.#health.checksumErrors++;
        throw new CorruptionError(object.oid, bad.map((block) => block.index), bad[0]!.reason);
      }
      return inSpan(bytes, span, offset, length);
    };
    const now = this.#readBlocksNow(object, span.length, span.first);
    if (now !== undefined) return Promise.resolve(verified(now));
    if (!this.#verifyReads) {
      const buffer = unfilledBytes(length);
      return readFully(object.data, buffer, offset).then(() => buffer);
    }
    return this.#readBlocks(object, span.length, span.first).then(verified);
  }

  /**
   * `#readBlocks` on the calling thread, when it can be: a short read (a slab piece, never moved
   * to a worker), its blocks not locked, the disk reading on the calling thread now. Undefined
   * when it cannot (nothing was read then).
   */
  #readBlocksNow(
    object: OpenObject,
    length: number,
    first: number,
  ): { bytes: Uint8Array; bad: BadBlock[] } | undefined {
    if (length > ByteSlab.PIECE_MAX || object.data.readNow === undefined) return undefined;
    const last = first + Math.ceil(length / B) - 1;
    const release = object.locks.tryLock(first, last, false);
    if (release === undefined) return undefined;
    try {
      const buffer = this.#slab.take(length);
      const read = readFullyNow(object.data, buffer, first * B);
      if (read === undefined) return undefined;
      return {
        bytes: buffer,
        bad: this.#verifyReads ? checkBlocks(object, buffer, first, read) : [],
      };
    } finally {
      release();
    }
  }

  /**
   * Reads `length` bytes of whole blocks from block `first`, and the blocks that fail. The
   * blocks stay locked until their checksums are compared: a write in between would change the
   * checksums the bytes read must match. Bytes lost with a checksum worker are read again and
   * hashed here.
   */
  async #readBlocks(
    object: OpenObject,
    length: number,
    first: number,
  ): Promise<{ bytes: Uint8Array; bad: BadBlock[] }> {
    const last = first + Math.ceil(length / B) - 1;
    const release = object.locks.tryLock(first, last, false) ??
      await object.locks.lock(first, last, false);
    try {
      let buffer = this.#slab.take(length);
      let read = await readFully(object.data, buffer, first * B);
      const offloaded = this.#hasher.offload(buffer);
      if (offloaded) {
        const hashed = await offloaded;
        if (hashed) {
          const bad = checkBlocks(object, hashed.bytes, first, read, hashed.checksums);
          return { bytes: hashed.bytes, bad };
        }
        buffer = unfilledBytes(length); // lost with a worker: read again, hashed here
        read = await readFully(object.data, buffer, first * B);
      }
      return { bytes: buffer, bad: checkBlocks(object, buffer, first, read) };
    } finally {
      release();
    }
  }

  async meta(oid: Oid): Promise<ObjectMeta | undefined> {
    const action = `Cannot read the metadata of object ${oidToHex(oid)}`;
    try {
      return await this.#use(oid, action, (object) => {
        const { meta } = object;
        const unrebuilt = this.#unrebuilt.has(oid);
        return Promise.resolve({
          // Checksums a crash left unrebuilt describe nothing: such a copy ranks below every
          // other (version 0) and equals none, not even another node's unrebuilt copy with the
          // same checksums on file (their data may differ: an unsynced write landed on one), so
          // that recovery merges them rather than pulling one over the other.
          version: unrebuilt ? 0 : meta.version,
          size: meta.size,
          digest: unrebuilt
            ? `${UNREBUILT_DIGEST_PREFIX}${this.#holder()}:${meta.digest()}`
            : meta.digest(),
          verified: !meta.unverified && !this.#unrebuilt.has(oid),
          ...(meta.unverified && this.#changed.has(oid) ? { changed: this.#changed.get(oid) } : {}),
          ...lostBlocksOf(meta),
        });
      });
    } catch (error) {
      if (error instanceof SheepdogError && error.code === ResultCode.NO_OBJ) return undefined;
      throw error;
    }
  }

  /**
   * For a copy this node's own crash left suspect (unverified, not yet checked against its
   * replicas or replaced): the epoch of the journal entry that made it one, a lower bound of the
   * epoch of its first write the crash may have lost (0: unknown). Undefined for any other copy.
   */
  crashSuspectSince(oid: Oid): number | undefined {
    return this.#dirtySince.get(oid);
  }

  /** How many copies `crashSuspectSince` knows of. */
  get crashSuspects(): number {
    return this.#dirtySince.size;
  }

  async markVerified(oid: Oid): Promise<void> {
    const action = `Cannot mark object ${oidToHex(oid)} verified`;
    this.#refuseWrites(action);
    this.#refuseUnrebuilt(oid);
    await this.#use(oid, action, async (object) => {
      await this.#dropChanged(oid);
      if (!object.meta.setUnverified(false)) return;
      object.headerDirty = true;
      try {
        await this.#persistMeta(object, 0, -1);
        await this.#sync(objectName(oid), object.metaFile);
      } catch (error) {
        throw this.#failure(error, action);
      }
    });
  }

  async healBlocks(
    oid: Oid,
    blocks: readonly HealedBlock[],
  ): Promise<number[]> {
    const action = `Cannot heal object ${oidToHex(oid)}`;
    this.#refuseWrites(action);
    if (this.#unrebuilt.has(oid) || this.#dirtySince.has(oid)) return [];
    return await this.#use(oid, action, async (object) => {
      const { meta } = object;
      if (meta.unverified) return [];
      const healed: number[] = [];
      for (const { index, data } of blocks) {
        if (!Number.isInteger(index) || index < 0 || index >= meta.blockCount) continue;
        if (meta.isBad(index) || data.length !== meta.blockLength(index)) continue;
        const release = object.locks.tryLock(index, index, true) ??
          await object.locks.lock(index, index, true);
        try {
          // Under the lock: a write to this block since the caller looked changed its checksum.
          if (blockChecksum(data) !== meta.checksum(index)) continue;
          await writeAll(object.data, data, index * B);
          healed.push(index);
        } finally {
          release();
        }
      }
      if (healed.length > 0) {
        await this.#sync(objectName(oid), object.data).catch((error) => {
          throw this.#failure(error, action);
        });
        this.#log(`object ${oidToHex(oid)}: block(s) ${healed.join(", ")} healed in place`);
      }
      return healed;
    });
  }

  async retryRebuilds(): Promise<number> {
    let rebuilt = 0;
    for (const oid of [...this.#unrebuilt]) {
      // Closed meanwhile, its checksums written out first: a write that reached the copy since
      // the crash raised the version only in memory, and the rebuild keeps the version on file.
      const ok = await this.#whileClosed(oid, () => this.#rebuildChecksums(oid), true)
        .then(() => true, () => false);
      if (!ok || !this.#unrebuilt.delete(oid)) continue;
      rebuilt++;
      this.#log(`object ${oidToHex(oid)}: checksums rebuilt after an earlier failure`);
    }
    if (rebuilt > 0) await this.#syncDirectory("rebuilding checksums").catch(() => undefined);
    return rebuilt;
  }

  async verify(oid: Oid): Promise<BadBlock[]> {
    const action = `Cannot verify object ${oidToHex(oid)}`;
    try {
      this.#refuseUnrebuilt(oid);
      const bad = await this.#use(oid, action, (object) => this.#scan(object));
      if (bad.length > 0) this.#health.checksumErrors++;
      return bad;
    } catch (error) {
      // Unusable checksums or a short data file (already counted when the open found it).
      if (!(error instanceof CorruptionError)) throw error;
      const bad = error.blocks.map((index) => ({ index, reason: error.message }));
      return bad.length > 0 ? bad : [{ index: 0, reason: error.message }];
    }
  }

  async salvage(oid: Oid, options: SalvageOptions = {}): Promise<SalvagedCopy> {
    const action = `Cannot salvage object ${oidToHex(oid)}`;
    // An object whose checksums a crash left unrebuilt still has those of its last sync: the
    // blocks that match them are good; the others changed since (an unsynced write, or rot) and
    // count as bad, expected to hold what the last sync had. With `suspect` they are given as
    // they are instead, as the changed blocks the rebuild would have recorded (see the option).
    const suspect = options.suspect === true && this.#unrebuilt.has(oid);
    return await this.#use(oid, action, async (object) => {
      const data = new Uint8Array(object.meta.size);
      const bad: number[] = [];
      for (let start = 0; start < data.length; start += STORE_SCAN_BYTES) {
        // A block that cannot be read at all (an I/O error) is not salvaged: the error may pass,
        // and a salvaged copy would make it permanent. Only checksum mismatches are.
        const chunk = await this.#readBlocks(
          object,
          Math.min(STORE_SCAN_BYTES, data.length - start),
          start / B,
        );
        data.set(chunk.bytes, start);
        bad.push(...chunk.bad.map((b) => b.index));
      }
      if (suspect) {
        // As `#rebuildChecksums` would record them: an earlier crash's record first (its blocks
        // are as uncertain), then every block whose bytes differ from the checksums on file. A
        // block recorded lost stays bad: its bytes are not what was written.
        const changed = byBlock(this.#changed.get(oid));
        const lost = bad.filter((index) => object.meta.isBad(index));
        for (const index of bad) {
          if (object.meta.isBad(index)) continue;
          if ((changed.get(index) ?? null) === null) {
            changed.set(index, object.meta.checksum(index));
          }
        }
        for (const index of lost) {
          data.fill(0, index * B, Math.min(data.length, (index + 1) * B));
          if (!changed.has(index)) changed.set(index, null);
        }
        return {
          data,
          badBlocks: lost,
          expected: lost.map((index) => object.meta.checksum(index)),
          changed: sortedChanged(changed),
        };
      }
      for (const index of bad) data.fill(0, index * B, Math.min(data.length, (index + 1) * B));
      return { data, badBlocks: bad, expected: bad.map((index) => object.meta.checksum(index)) };
    });
  }

  async #scan(object: OpenObject): Promise<BadBlock[]> {
    const bad: BadBlock[] = [];
    const { size } = object.meta;
    for (let start = 0; start < size; start += STORE_SCAN_BYTES) {
      const length = Math.min(STORE_SCAN_BYTES, size - start);
      const first = start / B;
      try {
        bad.push(...(await this.#readBlocks(object, length, first)).bad);
      } catch (error) {
        const reason = `Object ${oidToHex(object.oid)}: cannot be read: ${message(error)}`;
        for (let index = first; index * B < start + length; index++) {
          bad.push({ index, reason });
        }
      }
    }
    return bad;
  }

  async exists(oid: Oid): Promise<boolean> {
    if (this.#slots.get(oid)?.value) return true;
    try {
      await this.#disk.stat(this.#dataPath(oid));
      return true;
    } catch {
      return false;
    }
  }

  /** Objects whose checksums a crash left unrebuilt read as corrupt (see `#unrebuilt`). */
  #refuseUnrebuilt(oid: Oid): void {
    if (!this.#unrebuilt.has(oid)) return;
    this.#health.checksumErrors++;
    throw new CorruptionError(
      oid,
      [],
      `Object ${oidToHex(oid)}: its checksums could not be rebuilt after a crash`,
    );
  }

  async #remove(oid: Oid): Promise<number> {
    const removed = (await this.meta(oid).catch(() => undefined))?.version ?? 0;
    this.#unrebuilt.delete(oid);
    await this.#dropChanged(oid).catch(() => undefined);
    await this.#whileClosed(oid, async () => {
      // Data first: a crash in between leaves checksums without data, which open removes.
      await this.#unlinkIfPresent(this.#dataPath(oid));
      await this.#unlinkIfPresent(this.#metaPath(oid));
    }).catch((error) => {
      throw this.#failure(error, `Cannot remove object ${oidToHex(oid)}`);
    });
    this.#dirty.delete(oid);
    // Durable before it resolves: a removed copy is often a bad one (a repair fenced it out),
    // and it must not come back after a crash.
    await this.#syncDirectory(`removing ${objectName(oid)}`);
    return removed;
  }

  async list(): Promise<Oid[]> {
    const oids: Oid[] = [];
    for (const name of await this.#disk.readdir(this.objectDir)) {
      const oid = oidFromHex(name);
      if (oid !== undefined) oids.push(oid);
    }
    return oids;
  }

  async flush(vid?: number): Promise<void> {
    if (this.#syncError) throw this.#syncError;
    const oids = [...this.#dirty.keys()].filter((oid) =>
      vid === undefined || oidToVid(oid) === vid
    );
    const failures: unknown[] = [];
    for (let at = 0; at < oids.length; at += FLUSH_PARALLEL) {
      const batch = oids.slice(at, at + FLUSH_PARALLEL);
      await Promise.all(batch.map((oid) => this.#syncDirty(oid).catch((e) => failures.push(e))));
    }
    // A full flush empties the journal of all but the objects that still need it. Per-VDI
    // flushes leave entries behind (harmless: a crash re-checks those objects), so the journal is
    // shrunk once it lists many more than are dirty. An object whose checksums a crash left
    // unrebuilt keeps its entry although nothing about it is dirty: its checksum file still holds
    // those of its last sync, which need not describe its data, so without the entry the next
    // start would take it for a verified copy at that sync's version (and never rebuild it).
    // Nothing is dropped from the journal once any sync failed.
    this.#trustSync();
    const kept = (oid: Oid) => this.#dirty.has(oid) || this.#unrebuilt.has(oid);
    const shrink = vid === undefined ||
      this.#journal.size >
        Math.max(JOURNAL_ENTRIES_KEPT, 2 * (this.#dirty.size + this.#unrebuilt.size));
    if (shrink && failures.length === 0 && this.#journal.hasStale(kept)) {
      const keep = new Set([...this.#dirty.keys(), ...this.#unrebuilt]);
      await this.#journal.rewrite(keep).catch((error) => {
        failures.push(this.#syncFailed(`Cannot rewrite the journal ${JOURNAL_NAME}`, error));
      });
    }
    if (this.#syncError) throw this.#syncError;
    if (failures.length > 0) throw failures[0];
  }

  health(): StoreHealth {
    return { ...this.#health, syncError: this.#syncError?.message };
  }

  async space(): Promise<StoreSpace> {
    const { totalBytes, freeBytes } = await this.#disk.space(this.objectDir);
    let usedBytes = 0;
    for (const name of await this.#disk.readdir(this.objectDir)) {
      const data = name.endsWith(".meta") ? name.slice(0, -5) : name;
      if (oidFromHex(data) === undefined) continue;
      const stat = await this.#disk.stat(path.join(this.objectDir, name)).catch(() => undefined);
      usedBytes += stat?.allocatedBytes ?? 0;
    }
    return { usedBytes, freeBytes, totalBytes };
  }

  async close(): Promise<void> {
    await this.flush().catch(() => undefined);
    for (const oid of [...this.#slots.keys()]) await this.#retire(oid, true);
    await this.#journal.close();
    await this.#hasher.close();
  }

  // ---- The handle cache ----

  /** Runs `fn` with `oid` open; it cannot be closed while `fn` runs. */
  #use<T>(oid: Oid, action: Action, fn: (object: OpenObject) => Promise<T>): Promise<T> {
    // An object open in the cache is used at once (the hot path: no turn of the microtask queue).
    const slot = this.#closing.has(oid) ? undefined : this.#slots.get(oid);
    const open = slot?.value;
    if (open !== undefined && !open.retired) {
      slot!.lastUse = ++this.#uses;
      open.users++;
      return this.#using(open, action, fn);
    }
    return this.#acquire(oid).then(
      (object) => this.#using(object, action, fn),
      (error) => {
        throw this.#failure(error, action);
      },
    );
  }

  /** Runs `fn` on an acquired object, then releases it (`#use`). */
  #using<T>(
    object: OpenObject,
    action: Action,
    fn: (object: OpenObject) => Promise<T>,
  ): Promise<T> {
    const release = () => {
      object.users--;
      if (object.users === 0) { for (const wake of object.idle.splice(0)) wake(); }
    };
    return promiseOf(() => fn(object)).then((value) => {
      release();
      return value;
    }, (error) => {
      release();
      throw this.#failure(error, action);
    });
  }

  async #acquire(oid: Oid): Promise<OpenObject> {
    for (;;) {
      const closing = this.#closing.get(oid);
      if (closing) {
        await closing;
        continue;
      }
      let slot = this.#slots.get(oid);
      const opened = !slot;
      if (slot) {
        slot.lastUse = ++this.#uses;
      } else {
        slot = this.#openSlot(oid);
      }
      const object = await slot.opening;
      if (object.retired) continue; // evicted while we waited: open it again
      object.users++;
      if (opened) await this.#evictBeyondLimit();
      return object;
    }
  }

  #openSlot(oid: Oid): Slot {
    const slot: Slot = { opening: this.#openObject(oid), lastUse: ++this.#uses };
    this.#slots.set(oid, slot);
    slot.opening.then(
      (object) => slot.value = object,
      () => {
        if (this.#slots.get(oid) === slot) this.#slots.delete(oid);
      },
    );
    return slot;
  }

  async #evictBeyondLimit(): Promise<void> {
    while (this.#slots.size > this.#cachedObjectsMax) {
      let victim: Slot | undefined;
      for (const slot of this.#slots.values()) {
        if (slot.value?.users !== 0) continue;
        if (victim === undefined || slot.lastUse < victim.lastUse) victim = slot;
      }
      if (!victim) return; // every cached object is in use: stay over the limit for now
      await this.#retire(victim.value!.oid, true);
    }
  }

  /**
   * Takes `oid` out of the cache and closes it once no call uses it; with `sync`, a dirty object
   * is synced first (its dirty mark stays if that fails). Later calls wait, then open it afresh.
   */
  #retire(oid: Oid, sync: boolean): Promise<void> {
    const slot = this.#slots.get(oid);
    if (!slot) return this.#closing.get(oid) ?? Promise.resolve();
    this.#slots.delete(oid);
    if (slot.value) slot.value.retired = true;
    const done = (async () => {
      const object = await slot.opening.catch(() => undefined);
      if (!object) return;
      object.retired = true;
      while (object.users > 0) await new Promise<void>((wake) => object.idle.push(wake));
      if (sync) {
        await this.#persistMeta(object, 0, -1).catch(() => undefined);
        await this.#syncDirty(oid, object).catch(() => undefined);
      }
      await object.data.close().catch(() => undefined);
      await object.metaFile.close().catch(() => undefined);
    })();
    return this.#keepClosed(oid, done);
  }

  /**
   * Closes `oid` (`#retire`) and runs `change` on its files while it stays closed: a call that
   * uses the object meanwhile waits, then opens what `change` left. Without it such a call could
   * open the old files between the close and a rename over them, and go on reading and writing a
   * file that is no longer the object's (a copy whose file on disk lacks the writes it took).
   */
  #whileClosed<T>(oid: Oid, change: () => Promise<T>, sync = false): Promise<T> {
    const changed = this.#retire(oid, sync).then(change);
    void this.#keepClosed(oid, changed);
    return changed;
  }

  /** Calls that use `oid` wait until `until` settles (`#acquire`). */
  #keepClosed(oid: Oid, until: Promise<unknown>): Promise<void> {
    const done = until.then(() => undefined, () => undefined);
    this.#closing.set(oid, done);
    void done.finally(() => {
      if (this.#closing.get(oid) === done) this.#closing.delete(oid);
    });
    return done;
  }

  /** Opens an object's files and checks its checksum file against its data file's length. */
  async #openObject(oid: Oid): Promise<OpenObject> {
    const data = await this.#disk.open(this.#dataPath(oid), "r+");
    try {
      let meta = await this.#readMeta(oid);
      if (meta === undefined && this.#adoptLegacy) {
        await this.#rebuildChecksums(oid);
        await this.#syncDirectory(`adopting ${objectName(oid)}`);
        meta = await this.#readMeta(oid);
      }
      const length = await data.size();
      const problem = meta === undefined
        ? "its checksum file is missing"
        : typeof meta === "string"
        ? `its checksum file is corrupt: ${meta}`
        : meta.format !== CHECKSUM_FORMAT
        ? `its checksum file is of format ${meta.format} (an older build's), not converted`
        : length !== meta.size
        ? `its data file is ${length} bytes, not ${meta.size}`
        : undefined;
      if (problem !== undefined || !(meta instanceof ChecksumMeta)) {
        const blocks = badBlocksOf(meta, length);
        this.#health.checksumErrors++;
        throw new CorruptionError(oid, blocks, `Object ${oidToHex(oid)}: ${problem}`);
      }
      const metaFile = await this.#disk.open(this.#metaPath(oid), "r+");
      return newOpenObject(oid, data, metaFile, meta);
    } catch (error) {
      await data.close().catch(() => undefined);
      throw error;
    }
  }

  /** The parsed checksum file, a string saying why it is invalid, or undefined if missing. */
  async #readMeta(oid: Oid): Promise<ChecksumMeta | string | undefined> {
    let file: DiskFile;
    try {
      file = await this.#disk.open(this.#metaPath(oid), "r+");
    } catch (error) {
      if (errorCode(error) === "ENOENT") return undefined;
      throw error;
    }
    try {
      const length = await file.size();
      // Entries and at most as many bad-block slots.
      if (length > META_HEADER_BYTES + 8 * (OBJECT_BYTES_MAX / B)) return `it is ${length} bytes`;
      const bytes = new Uint8Array(length);
      return ChecksumMeta.parse(bytes.subarray(0, await readFully(file, bytes, 0)));
    } catch (error) {
      return `it cannot be read: ${message(error)}`;
    } finally {
      await file.close().catch(() => undefined);
    }
  }

  /**
   * Recomputes an object's checksums from its data, UNVERIFIED, keeping its version (0 and a
   * size rounded up to a whole block when its checksum file is missing or unreadable). Used after
   * a crash for journaled objects, and to adopt objects from older builds.
   */
  async #rebuildChecksums(oid: Oid): Promise<void> {
    let data: DiskFile;
    try {
      data = await this.#disk.open(this.#dataPath(oid), "r+");
    } catch (error) {
      if (errorCode(error) === "ENOENT") return; // removed before the crash
      throw error;
    }
    try {
      const read = await this.#readMeta(oid);
      // A file of another checksum format (one open could not convert) is as good as missing.
      const old = read instanceof ChecksumMeta && read.format === CHECKSUM_FORMAT
        ? read
        : undefined;
      const length = await data.size();
      const size = old instanceof ChecksumMeta ? old.size : Math.ceil(length / B) * B;
      // Bad blocks of a salvaged copy stay bad: their bytes (zeros) are not what was written,
      // whatever their checksum says.
      const bad = old instanceof ChecksumMeta ? old.badBlocks : [];
      const meta = ChecksumMeta.create(size, old instanceof ChecksumMeta ? old.version : 0, 0, bad);
      meta.setUnverified(true);
      if (length !== size) await data.truncate(size);
      await hashFile(data, meta);
      await this.#sync(objectName(oid), data);
      // Blocks whose bytes differ from the checksums of the last sync: unsynced writes that
      // landed, or rot the rebuild would otherwise bless. Recorded (durably, before the synced
      // checksums are replaced) so recovery can take each such block from a copy where it did
      // not change. A record left by an earlier, interrupted rebuild is kept.
      // The checksum each such block had at that sync is kept with it: a copy whose block still
      // has it holds the synced bytes (see recovery's merge).
      const changed = byBlock(this.#changed.get(oid));
      if (old instanceof ChecksumMeta && old.blockCount === meta.blockCount) {
        for (let index = 0; index < meta.blockCount; index++) {
          if (old.checksum(index) === meta.checksum(index)) continue;
          if ((changed.get(index) ?? null) === null) changed.set(index, old.checksum(index));
        }
        for (const index of bad) {
          meta.setChecksum(index, old.checksum(index));
          if (!changed.has(index)) changed.set(index, null);
        }
      }
      await this.#writeChanged(oid, sortedChanged(changed));
      const temp = this.#tempPath(oidToHex(oid) + ".meta");
      await this.#writeNewFile(objectName(oid), temp, meta.bytes.length, meta.bytes, 0);
      await this.#disk.rename(temp, this.#metaPath(oid));
    } finally {
      await data.close().catch(() => undefined);
    }
  }

  #changedPath(oid: Oid): string {
    return path.join(this.objectDir, oidToHex(oid) + CHANGED_SUFFIX);
  }

  /**
   * Writes an object's changed-blocks record durably (temp file, sync, rename): the blocks, and
   * the checksums they had at the last sync where known.
   */
  async #writeChanged(oid: Oid, changed: readonly ChangedBlock[]): Promise<void> {
    const bytes = new TextEncoder().encode(formatChanged(changed, this.#dirtySince.get(oid)));
    const temp = this.#tempPath(oidToHex(oid) + CHANGED_SUFFIX);
    await this.#writeNewFile(objectName(oid), temp, bytes.length, bytes, 0);
    await this.#disk.rename(temp, this.#changedPath(oid));
    this.#changed.set(oid, changed);
  }

  /**
   * A block a write covered whole holds acknowledged bytes now, not an unknown left by a crash:
   * it leaves the changed-blocks record (a merge may take it from this copy again).
   */
  #settleChanged(oid: Oid, offset: number, length: number): void {
    const changed = this.#changed.get(oid);
    if (!changed || changed.length === 0) return;
    const first = Math.ceil(offset / B);
    const end = Math.floor((offset + length) / B); // blocks [first, end) are covered whole
    const left = changed.filter(({ block }) => block < first || block >= end);
    if (left.length === changed.length) return;
    this.#changed.set(oid, left);
    this.#changedStale.add(oid);
  }

  async #dropChanged(oid: Oid): Promise<void> {
    this.#changedStale.delete(oid);
    this.#dirtySince.delete(oid);
    if (!this.#changed.delete(oid)) return;
    await this.#unlinkIfPresent(this.#changedPath(oid));
  }

  /**
   * The format the `.format` marker names; undefined when there is none (a new directory, or one
   * of a build before markers). A marker this build cannot read stops the start: it names a newer
   * format, whose files this build could take for corrupt ones.
   */
  async #readFormat(): Promise<{ format: number; adopting: boolean } | undefined> {
    const text = await this.#readText(path.join(this.objectDir, FORMAT_NAME));
    if (text === undefined) return undefined;
    const match = FORMAT_PATTERN.exec(text);
    const format = match ? Number(match[1]) : NaN;
    if (!(format >= 1 && format <= STORE_FORMAT)) {
      throw new SheepdogError(
        ResultCode.EIO,
        `${path.join(this.objectDir, FORMAT_NAME)} names ${
          match ? `object store format ${format}` : "no object store format"
        }: this build reads formats 1 to ${STORE_FORMAT} (a newer build's directory?)`,
      );
    }
    return { format, adopting: match![2] !== undefined };
  }

  /** Writes the `.format` marker, if `found` (what it said at open) is not the current one. */
  async #writeFormat(found: { format: number; adopting: boolean } | undefined): Promise<void> {
    const adopting = this.#adoptLegacy;
    if (found?.format === STORE_FORMAT && found.adopting === adopting) return;
    const temp = this.#tempPath(FORMAT_NAME);
    const bytes = new TextEncoder().encode(
      `sheepdog object store ${STORE_FORMAT}${adopting ? " adopting" : ""}\n`,
    );
    await this.#writeNewFile(`the file ${FORMAT_NAME}`, temp, bytes.length, bytes, 0);
    await this.#disk.rename(temp, path.join(this.objectDir, FORMAT_NAME));
  }

  /**
   * Converts the checksum files an older build wrote (checksum format 1) to the current format,
   * each replaced whole (temporary file, sync, rename): see checksum_conversion.ts.
   */
  async #convertChecksumFiles(names: string[], suspects: ReadonlySet<Oid>): Promise<void> {
    const present = new Set(names);
    const oids = names.flatMap((name) => {
      const oid = name.endsWith(".meta") ? oidFromHex(name.slice(0, -5)) : undefined;
      return oid !== undefined && present.has(name.slice(0, -5)) ? [oid] : [];
    });
    let converted = 0;
    let failed = 0;
    for (const [i, oid] of oids.entries()) {
      const blocks = await this.#convertChecksumFile(oid, suspects.has(oid));
      if (blocks === undefined) continue;
      if (converted++ === 0) {
        this.#log(
          `converting the block checksums of up to ${oids.length} objects to format ` +
            `${CHECKSUM_FORMAT} (once, after an upgrade: every object is read)`,
        );
      }
      failed += blocks.length;
      if (oids.length >= 100 && (i + 1) % Math.ceil(oids.length / 10) === 0) {
        this.#log(`converting block checksums: ${i + 1} of ${oids.length} objects`);
      }
    }
    if (converted === 0) return;
    this.#log(
      `converted the block checksums of ${converted} objects` +
        (failed === 0 ? "" : `; ${failed} blocks ` +
          `failed their old checksum and read as corrupt until a good copy replaces them`),
    );
  }

  /** Converts one object's checksum file if it is of format 1: the blocks that failed, or undefined. */
  async #convertChecksumFile(oid: Oid, suspect: boolean): Promise<number[] | undefined> {
    const old = await this.#readMeta(oid);
    if (!(old instanceof ChecksumMeta) || old.format !== CHECKSUM_FORMAT_CRC32) return undefined;
    const data = await this.#disk.open(this.#dataPath(oid), "r+");
    try {
      // A length that does not match is corrupt as it is: left for reads to report and a good
      // copy to replace (its old format reads as corrupt too).
      if (await data.size() !== old.size) return undefined;
      const { meta, failed } = await convertChecksums(old, data, suspect);
      // The checksums a crash-suspect object's changed blocks had at their last sync are CRC-32s:
      // dropped (see checksum_conversion.ts); blocks that failed in one join its changed blocks.
      const record = this.#changed.get(oid) ?? [];
      if ((suspect && failed.length > 0) || record.some(({ synced }) => synced !== null)) {
        const blocks = [...record.map(({ block }) => block), ...(suspect ? failed : [])];
        await this.#writeChanged(oid, sortedChanged(new Map(blocks.map((b) => [b, null]))));
      }
      const temp = this.#tempPath(oidToHex(oid) + ".meta");
      await this.#writeNewFile(objectName(oid), temp, meta.bytes.length, meta.bytes, 0);
      await this.#disk.rename(temp, this.#metaPath(oid));
      return failed;
    } finally {
      await data.close().catch(() => undefined);
    }
  }

  async #readText(file: string): Promise<string | undefined> {
    try {
      const handle = await this.#disk.open(file, "r+");
      try {
        const bytes = new Uint8Array(Math.min(await handle.size(), 4096));
        return new TextDecoder().decode(bytes.subarray(0, await readFully(handle, bytes, 0)));
      } finally {
        await handle.close();
      }
    } catch (error) {
      if (errorCode(error) === "ENOENT") return undefined;
      throw error;
    }
  }

  // ---- Checksum file updates ----

  /**
   * Writes the changed parts of an object's checksum file (entries [first, last] and the header
   * if it changed, plus whatever earlier calls left unwritten). Updates queue one behind the other
   * and each writes the current bytes, so the last header written is the newest; updates that
   * arrive while one runs share the next.
   */
  #persistMeta(object: OpenObject, first: number, last: number): Promise<void> {
    if (first <= last) {
      object.metaFrom = Math.min(object.metaFrom, first);
      object.metaTo = Math.max(object.metaTo, last);
    }
    if (object.metaFrom > object.metaTo && !object.headerDirty && !object.badDirty) {
      return object.nextMetaWrite ?? Promise.resolve();
    }
    if (!object.nextMetaWrite) {
      const job = object.metaTail.catch(() => undefined).then(() => {
        object.nextMetaWrite = undefined;
        return writeMetaChanges(object);
      });
      object.nextMetaWrite = job;
      object.metaTail = job;
    }
    return object.nextMetaWrite;
  }

  // ---- Durability ----

  #markDirty(oid: Oid): void {
    this.#dirty.set(oid, (this.#dirty.get(oid) ?? 0) + 1);
  }

  #journaled(oid: Oid): Promise<void> {
    return this.#journal.add(oid, this.#epoch()).catch((error) => {
      if (errorCode(error) === "ENOSPC") throw error;
      throw this.#syncFailed(`Cannot journal object ${oidToHex(oid)}`, error);
    });
  }

  /**
   * Syncs a dirty object's data, then its checksums. Its dirty mark goes only if no write
   * completed meanwhile (those may have missed the sync).
   */
  async #syncDirty(oid: Oid, cached?: OpenObject): Promise<void> {
    const mark = this.#dirty.get(oid);
    if (mark === undefined) return;
    if (this.#changedStale.delete(oid)) {
      // The changed-blocks record shrank with writes since: say so durably with this sync (until
      // then the old, longer record only makes a later merge more careful).
      await this.#writeChanged(oid, this.#changed.get(oid) ?? []).catch(() => undefined);
    }
    const object = cached ?? this.#slots.get(oid)?.value;
    if (object && !object.retired) {
      object.users++;
      try {
        await this.#syncOpen(oid, object);
      } finally {
        object.users--;
        if (object.users === 0) { for (const wake of object.idle.splice(0)) wake(); }
      }
    } else if (object) {
      await this.#syncOpen(oid, object);
    } else {
      // Another file descriptor of the same file syncs the same pages.
      if (!await this.#syncPath(oid, this.#dataPath(oid))) return this.#clean(oid, mark);
      this.#trustSync();
      await this.#syncPath(oid, this.#metaPath(oid));
    }
    this.#trustSync();
    this.#clean(oid, mark);
  }

  /** Syncs an open object's data, then writes and syncs its checksums. */
  async #syncOpen(oid: Oid, object: OpenObject): Promise<void> {
    await this.#sync(objectName(oid), object.data);
    this.#trustSync();
    await this.#persistMeta(object, 0, -1);
    await this.#sync(objectName(oid), object.metaFile);
  }

  /**
   * A sync that succeeded proves nothing once another failed (Linux drops the pages a failed
   * sync could not write and marks them clean, so the next sync of the file succeeds at syncing
   * nothing): after any failed sync, an object is never taken for synced, its checksums are not
   * written for data that may not be there, and it stays in the journal, so the next start
   * rebuilds it. Two flushes syncing one object at once did just that (simulation, snapshot seed
   * 712): one's sync failed, the other's succeeded, cleaned the object and dropped it from the
   * journal, and after the crash the copy's checksums, of the lost write, no longer matched its
   * data, on a copy taken for verified.
   */
  #trustSync(): void {
    if (this.#syncError) throw this.#syncError;
  }

  #clean(oid: Oid, mark: number): void {
    if (this.#dirty.get(oid) === mark) this.#dirty.delete(oid);
  }

  /** Syncs a file by path; false when it does not exist (removed meanwhile). */
  async #syncPath(oid: Oid, file: string): Promise<boolean> {
    let handle: DiskFile;
    try {
      handle = await this.#disk.open(file, "r+");
    } catch (error) {
      if (errorCode(error) === "ENOENT") return false;
      throw this.#syncFailed(`Cannot sync ${objectName(oid)}`, error);
    }
    try {
      await this.#sync(objectName(oid), handle);
      return true;
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  /** Syncs `file`, of `what` (for the error: "object 00000000000000ab", "the file .format"). */
  async #sync(what: string, file: DiskFile): Promise<void> {
    try {
      await file.datasync();
    } catch (error) {
      throw this.#syncFailed(`Cannot sync ${what}`, error);
    }
  }

  async #syncDirectory(why: string): Promise<void> {
    try {
      await this.#disk.syncDir(this.objectDir);
    } catch (error) {
      throw this.#syncFailed(`Cannot sync the object directory (${why})`, error);
    }
  }

  /** Records a failed sync; the first one becomes the store's sticky error. */
  #syncFailed(action: string, error: unknown): SheepdogError {
    if (error instanceof SheepdogError) return error;
    this.#health.syncErrors++;
    const failure = new SheepdogError(ResultCode.EIO, `${action}: ${message(error)}`, {
      cause: error,
    });
    this.#syncError ??= failure;
    return failure;
  }

  #refuseWrites(action: Action): void {
    if (!this.#syncError) return;
    throw new SheepdogError(
      ResultCode.EIO,
      `${actionText(action)}: a sync failed earlier on this disk (${this.#syncError.message}): ` +
        "refusing writes until the sheep restarts",
    );
  }

  /** A write or create succeeded: after a full disk, it has room again (`info -t node`). */
  #stored(): void {
    if (this.#health.noSpaceAtMs !== undefined) this.#health.roomAtMs ??= Date.now();
  }

  /** Admits a create's data, or throws NO_SPACE (see `SpaceFloor`). */
  async #admitData(action: Action, bytes: number): Promise<void> {
    const admitted = this.#floor.admit(bytes);
    if (admitted === true || (admitted !== false && await admitted)) return;
    throw this.#beyondFloor(action);
  }

  /**
   * A create or write refused because it could eat into the space kept free for the sheep's own
   * state: for clients and `info -t node` the disk is full, as it would be without the reserve.
   */
  #beyondFloor(action: Action): SheepdogError {
    const reserve = formatSize(this.#floor.reserveBytes);
    return this.#noSpace(
      `${actionText(action)}: the disk is full (the last ${reserve} stay free for the epoch log)`,
    );
  }

  /** A create or write failed for want of space: counted for `info -t node` and `/metrics`. */
  #noSpace(message: string, cause?: unknown): SheepdogError {
    this.#health.noSpaceErrors++;
    this.#health.noSpaceAtMs = Date.now();
    delete this.#health.roomAtMs;
    return new SheepdogError(ResultCode.NO_SPACE, message, cause === undefined ? {} : { cause });
  }

  /** Maps a disk error to a Sheepdog operating error naming what failed. */
  #failure(error: unknown, lazyAction: Action): SheepdogError {
    if (error instanceof SheepdogError) return error;
    const action = actionText(lazyAction);
    const code = errorCode(error);
    if (code === "ENOENT") return new SheepdogError(ResultCode.NO_OBJ, `${action}: no such object`);
    if (code === "ENOSPC" || code === "EDQUOT") {
      return this.#noSpace(`${action}: the disk is full`, error);
    }
    return new SheepdogError(ResultCode.EIO, `${action}: ${message(error)}`, { cause: error });
  }

  async #unlinkIfPresent(file: string): Promise<void> {
    try {
      await this.#disk.unlink(file);
    } catch (error) {
      if (errorCode(error) !== "ENOENT") throw error;
    }
  }
}

function newOpenObject(
  oid: Oid,
  data: DiskFile,
  metaFile: DiskFile,
  meta: ChecksumMeta,
): OpenObject {
  return {
    oid,
    data,
    metaFile,
    meta,
    locks: new RangeLock(),
    users: 0,
    idle: [],
    retired: false,
    metaFrom: Infinity,
    metaTo: -1,
    headerDirty: false,
    badDirty: false,
    metaTail: Promise.resolve(),
  };
}

/** Writes the pending checksum-file changes of `object` (see `#persistMeta`). */
async function writeMetaChanges(object: OpenObject): Promise<void> {
  const { meta, metaFrom, metaTo, headerDirty, badDirty } = object;
  object.metaFrom = Infinity;
  object.metaTo = -1;
  object.headerDirty = false;
  object.badDirty = false;
  const ranges: [number, number][] = [];
  const entries = metaFrom <= metaTo;
  const entriesEnd = entries ? meta.entryOffset(metaTo) + 4 : 0;
  if (headerDirty && entries && entriesEnd <= META_COALESCE_BYTES) {
    ranges.push([0, entriesEnd]);
  } else {
    if (headerDirty) ranges.push([0, META_HEADER_BYTES]);
    if (entries) ranges.push([meta.entryOffset(metaFrom), entriesEnd]);
  }
  if (badDirty) ranges.push(meta.badSlotsRange());
  try {
    for (const [start, end] of ranges) {
      await writeAll(object.metaFile, meta.bytes.subarray(start, end), start);
    }
  } catch (error) {
    // Left for the next update: memory is right, the file is behind.
    if (entries) {
      object.metaFrom = Math.min(object.metaFrom, metaFrom);
      object.metaTo = Math.max(object.metaTo, metaTo);
    }
    object.headerDirty ||= headerDirty;
    object.badDirty ||= badDirty;
    throw error;
  }
}

/**
 * Blocks [first, ...) of `buffer` (of which `read` bytes arrived) that fail their checksum:
 * the checksums of its blocks are `checksums` when given (computed elsewhere), else computed here.
 */
/**
 * The checksums of blocks [first, last] once `data` is written at `offset`, when the write covers
 * each of them whole (what most writes do); undefined when one is covered in part (see
 * `#intendedChecksums`, which reads it).
 */
function wholeBlockChecksums(
  meta: ChecksumMeta,
  data: Uint8Array,
  offset: number,
  first: number,
  last: number,
): Map<number, number> | undefined {
  if (
    last < first || offset !== first * B ||
    offset + data.length < last * B + meta.blockLength(last)
  ) return undefined;
  if (first === last) {
    return new Map([[first, blockChecksum(data.subarray(0, meta.blockLength(first)))]]);
  }
  const sums = blockChecksums(data.subarray(0, Math.min(data.length, meta.size - offset)));
  const checksums = new Map<number, number>();
  for (let index = first; index <= last; index++) checksums.set(index, sums[index - first]!);
  return checksums;
}

function checkBlocks(
  object: OpenObject,
  buffer: Uint8Array,
  first: number,
  read: number,
  checksums?: Uint32Array,
): BadBlock[] {
  const bad: BadBlock[] = [];
  // Named only when a block fails: a read that verifies builds no string.
  const name = () => `Object ${oidToHex(object.oid)}`;
  // One block (most small reads) without the array `blockChecksums` makes, and no view of the
  // buffer where the read filled it.
  const filled = read === buffer.length ? buffer : buffer.subarray(0, read);
  const sums = checksums ?? (read <= B ? [blockChecksum(filled)] : blockChecksums(filled));
  for (let at = 0, index = first; at < buffer.length; at += B, index++) {
    const length = Math.min(B, buffer.length - at);
    if (at + length > read) {
      const reason = `${name()}: block ${index} is missing: the data file ends at byte ${
        first * B + read
      }`;
      bad.push({ index, reason });
      continue;
    }
    if (object.meta.isBad(index)) {
      const reason = `${name()}: block ${index} was lost (no copy could vouch for its bytes when ` +
        `this one was salvaged, or it failed its checksum when its checksums were converted)`;
      bad.push({ index, reason });
      continue;
    }
    const stored = object.meta.checksum(index);
    const computed = sums[at / B]!;
    if (stored !== computed) {
      const reason = `${name()}: block ${index} fails its checksum (stored ${hex32(stored)}, ` +
        `computed ${hex32(computed)})`;
      bad.push({ index, reason });
    }
  }
  return bad;
}

/** The checksums of a new object's blocks that `data` at `offset` touches (the rest are zeros). */
function hashCreated(meta: ChecksumMeta, data: Uint8Array, offset: number): void {
  if (data.length === 0) return;
  const block = new Uint8Array(B);
  const last = Math.floor((offset + data.length - 1) / B);
  for (let index = Math.floor(offset / B); index <= last; index++) {
    const start = index * B;
    const length = meta.blockLength(index);
    if (offset <= start && start + length <= offset + data.length) {
      meta.setChecksum(
        index,
        blockChecksum(data.subarray(start - offset, start + length - offset)),
      );
      continue;
    }
    block.fill(0);
    const from = Math.max(offset, start);
    const to = Math.min(offset + data.length, start + length);
    block.set(data.subarray(from - offset, to - offset), from - start);
    meta.setChecksum(index, blockChecksum(block.subarray(0, length)));
  }
}

/** Sets every checksum of `meta` from the data file (which is `meta.size` bytes long). */
async function hashFile(data: DiskFile, meta: ChecksumMeta): Promise<void> {
  for await (const { start, chunk } of fileChunks(data, meta.size, STORE_SCAN_BYTES)) {
    blockChecksums(chunk).forEach((sum, i) => meta.setChecksum(start / B + i, sum));
  }
}

/** `ObjectMeta.lostBlocks` of a copy: its recorded bad blocks, if it has any. */
function lostBlocksOf(meta: ChecksumMeta): Pick<ObjectMeta, "lostBlocks"> {
  const lost = meta.badBlocks;
  return lost.length > 0 ? { lostBlocks: lost } : {};
}

/** Which blocks a corrupt object has lost: all of them when its checksums are unusable. */
function badBlocksOf(meta: ChecksumMeta | string | undefined, length: number): number[] {
  const count = Math.ceil(length / B);
  if (!(meta instanceof ChecksumMeta)) return Array.from({ length: count }, (_, index) => index);
  const from = Math.floor(Math.min(length, meta.size) / B);
  return Array.from({ length: Math.max(0, meta.blockCount - from) }, (_, i) => from + i);
}

/** Bytes of the whole 4 KiB pages that `length` bytes at `offset` touch. */
function spannedBytes(offset: number, length: number): number {
  if (length === 0) return 0;
  const PAGE = 4096;
  return (Math.floor((offset + length - 1) / PAGE) - Math.floor(offset / PAGE) + 1) * PAGE;
}

/** The first and last block of a byte range (last < first when it is empty). */
function blockSpan(offset: number, length: number): [number, number] {
  const first = Math.floor(offset / B);
  return [first, length === 0 ? first - 1 : Math.floor((offset + length - 1) / B)];
}

function checkVersion(action: Action, version: number): void {
  if (Number.isSafeInteger(version) && version >= 0) return;
  throw new SheepdogError(
    ResultCode.INVALID_PARMS,
    `${actionText(action)}: bad version ${version}`,
  );
}

/** INVALID_PARMS unless [offset, offset + length) is a range of whole bytes inside `size`. */
/**
 * What failed, for an error message: text, or a function that makes it (the hot paths build the
 * text, an oid in hex, only when something failed).
 */
type Action = string | (() => string);

function actionText(action: Action): string {
  return typeof action === "string" ? action : action();
}

function checkRange(action: Action, offset: number, length: number, size: number): void {
  assert(Number.isSafeInteger(size), "object sizes are integers");
  if (
    Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 &&
    offset + length <= size
  ) return;
  throw new SheepdogError(
    ResultCode.INVALID_PARMS,
    `${actionText(action)}: bytes [${offset}, +${length}) are outside the object's ${size} bytes`,
  );
}

function objectName(oid: Oid): string {
  return `object ${oidToHex(oid)}`;
}

function hex32(value: number): string {
  return value.toString(16).padStart(8, "0");
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A changed-blocks record as a map: block -> its checksum at the last sync (null: unknown). */
function byBlock(changed: readonly ChangedBlock[] = []): Map<number, number | null> {
  return new Map(changed.map(({ block, synced }) => [block, synced]));
}

/** A changed-blocks record from a map (see `byBlock`), in block order. */
function sortedChanged(changed: ReadonlyMap<number, number | null>): ChangedBlock[] {
  return [...changed].sort(([a], [b]) => a - b).map(([block, synced]) => ({ block, synced }));
}

/**
 * The blocks of a source's record (it may have come over the wire: checked) that an object of
 * `blockCount` blocks has, each once, with the synced checksum given for it if any.
 */
function changedInRange(
  given: readonly ChangedBlock[],
  blockCount: number,
): Map<number, number | null> {
  const changed = new Map<number, number | null>();
  for (const { block, synced } of given) {
    if (!Number.isSafeInteger(block) || block < 0 || block >= blockCount) continue;
    const known = typeof synced === "number" && synced >>> 0 === synced ? synced : null;
    if (known !== null || !changed.has(block)) changed.set(block, known);
  }
  return changed;
}

/**
 * A record covering both `old`'s blocks and `newer`'s, each with `newer`'s synced checksum where
 * it knows one, else `old`'s.
 */
function widenChanged(
  old: readonly ChangedBlock[],
  newer: readonly ChangedBlock[],
): ChangedBlock[] {
  const widened = byBlock(old);
  for (const { block, synced } of newer) {
    if (synced !== null || !widened.has(block)) widened.set(block, synced);
  }
  return sortedChanged(widened);
}

/** A changed-blocks record as a file holds it (see `parseChanged`). */
function formatChanged(changed: readonly ChangedBlock[], since: number | undefined): string {
  return JSON.stringify({
    blocks: changed.map(({ block }) => block),
    synced: changed.flatMap(({ block, synced }) => synced === null ? [] : [[block, synced]]),
    ...(since === undefined ? {} : { since }),
  });
}

/**
 * A changed-blocks record: `{"blocks": [...], "synced": [[block, checksum], ...], "since": epoch}`
 * (`since` on a copy this node's crash left suspect, see `crashSuspectSince`), or a bare list of
 * blocks (written before the synced checksums were kept: those are unknown). Undefined when it is
 * unreadable (then ignored).
 */
function parseChanged(
  text: string | undefined,
): { blocks: ChangedBlock[]; since?: number } | undefined {
  if (text === undefined) return undefined;
  const isIndex = (b: unknown) => Number.isSafeInteger(b) && (b as number) >= 0;
  try {
    const parsed = JSON.parse(text) as unknown;
    const record = Array.isArray(parsed) ? { blocks: parsed, synced: [] } : parsed as {
      blocks?: unknown;
      synced?: unknown;
      since?: unknown;
    };
    const { blocks, synced, since } = record;
    if (!Array.isArray(blocks) || !blocks.every(isIndex) || !Array.isArray(synced)) return;
    const pairs = synced.filter((pair): pair is [number, number] =>
      Array.isArray(pair) && isIndex(pair[0]) && Number.isInteger(pair[1]) &&
      pair[1] >>> 0 === pair[1]
    );
    const known = new Map(pairs);
    return {
      blocks: blocks.map((block) => ({ block, synced: known.get(block) ?? null })),
      ...(isIndex(since) ? { since: since as number } : {}),
    };
  } catch {
    return undefined;
  }
}

/** The whole blocks a read of [offset, offset + length) reads: the first, and their bytes. */
interface ReadSpan {
  first: number;
  length: number;
}

function readSpan(object: OpenObject, offset: number, length: number): ReadSpan {
  const [first, last] = blockSpan(offset, length);
  return { first, length: Math.min((last + 1) * B, object.meta.size) - first * B };
}

/** The `length` bytes at `offset` out of the span's bytes (a view; the bytes whole if they are). */
function inSpan(bytes: Uint8Array, span: ReadSpan, offset: number, length: number): Uint8Array {
  const skip = offset - span.first * B;
  return skip === 0 && length === bytes.length ? bytes : bytes.subarray(skip, skip + length);
}
