/**
 * The storage engine's contract: objects addressed by oid, created atomically, written and read
 * positionally, every 4 KiB block checksummed and verified on read, each object carrying a
 * version so replicas can tell the newest copy, made durable by `flush`.
 * Implementations: `FsObjectStore` (files under DIR/obj/, on a `Disk`).
 *
 * Versions are assigned by the writer (the gateway), never counted locally, so every replica
 * that applied the same writes holds the same version, and a replica that missed a write holds
 * an older one. A store keeps `max(current, given)`: replaying an older write never lowers it.
 *
 * Objects are canonical: an object is exactly `size` bytes (a sparse file), so replicas with the
 * same content have the same bytes, the same checksums and the same digest.
 *
 * @module
 */

import type { Oid } from "../vdi/oid.ts";

/** Space on the store's file system. */
export interface StoreSpace {
  usedBytes: number;
  freeBytes: number;
  totalBytes: number;
}

/** What a store knows of one object without reading its data. */
export interface ObjectMeta {
  /** The writer-assigned version of the last write applied (see the module doc). */
  version: number;
  /** The object's canonical length in bytes. */
  size: number;
  /** Hex digest of (size, every block checksum): equal digests mean equal content. */
  digest: string;
  /**
   * False after a crash left the object with writes that were never synced (its checksums were
   * recomputed from whatever reached the disk): it must be checked against its replicas before
   * it is trusted. Recovery calls `markVerified` once it has.
   */
  verified: boolean;
  /**
   * Only on a copy that is not verified: the blocks whose bytes changed since its last sync
   * (unsynced writes that reached the disk, or rot: a crash cannot tell them apart). Recovery
   * takes each of these from a copy where it did not change.
   */
  changed?: readonly ChangedBlock[];
  /**
   * Blocks recorded lost on this copy (salvaged when no copy could vouch for them; absent when
   * none): they read as I/O errors, and keep the checksum they should have, until a copy whose
   * block has that checksum fills them or a write covers them whole. Recovery looks for such a
   * copy whenever another copy may hold one (see `Recovery`).
   */
  lostBlocks?: readonly number[];
}

/**
 * A block of a crash-suspect copy that changed since the copy's last sync, with the checksum it
 * had at that sync (null where unknown). A copy whose block has that checksum holds the synced
 * bytes, so a merge can take a changed block from a copy of any version that still has them.
 */
export interface ChangedBlock {
  /** Block index: bytes [block * CHECKSUM_BLOCK_BYTES, +CHECKSUM_BLOCK_BYTES). */
  readonly block: number;
  readonly synced: number | null;
}

/** A block and the bytes it should hold (`ObjectStore.healBlocks`). */
export interface HealedBlock {
  readonly index: number;
  readonly data: Uint8Array;
}

/** A block whose bytes do not match their checksum (or that cannot be read). */
export interface BadBlock {
  /** Block index: bytes [index * CHECKSUM_BLOCK_BYTES, +CHECKSUM_BLOCK_BYTES). */
  index: number;
  reason: string;
}

/**
 * How the digest of a copy whose checksums a crash left unrebuilt begins (`ObjectStore.meta`):
 * such a copy lists version 0, its true version unknown (at least the one on file, maybe more).
 */
export const UNREBUILT_DIGEST_PREFIX = "unrebuilt:";

/** True for the meta of a copy whose checksums a crash left unrebuilt: its version is unknown. */
export function versionUnknown(meta: ObjectMeta): boolean {
  return meta.digest.startsWith(UNREBUILT_DIGEST_PREFIX);
}

/** How `ObjectStore.create` makes a copy: its canonical size, version, and what is known of it. */
export interface CreateOptions {
  size: number;
  version: number;
  /** Blocks whose bytes are not known good (a salvaged copy): they keep failing on read. */
  badBlocks?: readonly number[];
  /** The checksums those blocks should have, where known (kept: a later repair needs them). */
  expected?: readonly (number | undefined)[];
  /**
   * A copy of a crash-suspect copy (no copy was there to check it against): it stays
   * crash-suspect, so a verified copy that comes back later still wins over it.
   */
  unverified?: boolean;
  /**
   * With `unverified`: the blocks of the source copy that changed since its last sync before a
   * crash, with their checksums at that sync (its `changed`). The bytes are the source's, so the
   * same blocks are the uncertain ones here; without it every block counts as uncertain (changed
   * blocks unknown).
   */
  changed?: readonly ChangedBlock[];
}

/** A copy read without failing on bad blocks (see `ObjectStore.salvage`). */
export interface SalvagedCopy {
  /** The object's bytes; bad blocks are zeros. */
  data: Uint8Array;
  badBlocks: number[];
  /**
   * The checksum each bad block should have (what was written), where known: a block of any
   * other copy that matches it holds the right bytes and can fill the hole.
   */
  expected: (number | undefined)[];
  /**
   * Only with `SalvageOptions.suspect`, from a copy whose checksums a crash left unrebuilt: the
   * blocks that changed since its last sync (an unsynced write that landed, or rot), with their
   * checksums at that sync, as a rebuild would have recorded them. Their bytes are in `data` as
   * they are, not vouched for; those also in `badBlocks` (recorded lost) are zeros.
   */
  changed?: readonly ChangedBlock[];
}

/** How `ObjectStore.salvage` reads a copy. */
export interface SalvageOptions {
  /**
   * Read as a crash suspect, for recovery's merge (`mergeCopies`, which prefers, block by block,
   * a copy holding the bytes of the last sync): a copy whose checksums a crash left unrebuilt
   * (its disk full) gives the blocks that differ from its last sync's checksums as they are,
   * listed in `changed`, as its rebuild would have recorded them, instead of as bad blocks (as
   * bad blocks, the only copy left of an unsynced write that landed was stored lost: sim seed
   * 18707). Any other copy is salvaged as without it.
   */
  suspect?: boolean;
}

/** Problems the store has seen, for `info -t node`, the dashboard and metrics. */
export interface StoreHealth {
  /** Set once a sync failed: every later flush fails with it (the page cache may have lost data). */
  syncError?: string;
  /** When a write last failed because the disk was full (ms since the epoch), if ever. */
  noSpaceAtMs?: number;
  /** When a write or create first succeeded after that failure: the disk has room again. */
  roomAtMs?: number;
  /** Counters since start. */
  noSpaceErrors: number;
  checksumErrors: number;
  syncErrors: number;
}

/**
 * The object store of one sheep. Errors are SheepdogErrors: NO_OBJ (missing), NO_SPACE (disk
 * full), INVALID_PARMS (a range outside the object), EIO (a failed I/O or sync), and
 * CHECKSUM (EIO with `corrupt: true` in its options: the bytes on disk are not what was written;
 * thrown as a `CorruptionError` from core/errors.ts, recognised with `isCorruption`).
 */
export interface ObjectStore {
  /**
   * Creates (or atomically replaces) `oid` so that it is `size` bytes long and holds `data` at
   * `offset` and zeros elsewhere, at `version`. The object becomes visible only complete: a crash
   * leaves the old one or none. Durable when it resolves (temp file synced, renamed, dir synced).
   * Resolves with the version of the copy it replaced: 0 when there was none, or when its version
   * is unknown (checksums a crash left unrebuilt), as a write answers with the version it raised.
   */
  create(
    oid: Oid,
    data: Uint8Array,
    offset: number,
    options: CreateOptions,
  ): Promise<number>;
  /**
   * Writes `data` at `offset` of an existing object and raises its version to `version` (if
   * higher); resolves with the version it had before. NO_OBJ when it does not exist;
   * INVALID_PARMS past its size.
   */
  write(oid: Oid, data: Uint8Array, offset: number, version: number): Promise<number>;
  /**
   * Reads `length` bytes at `offset`, verifying the checksum of every block it touches.
   * NO_OBJ if missing; INVALID_PARMS outside the object; EIO with `corrupt` on a mismatch.
   */
  read(oid: Oid, offset: number, length: number): Promise<Uint8Array>;
  /**
   * `read` answered on the calling thread when it can be at once (an object open, a short read
   * of blocks at hand that verify): undefined otherwise, and then nothing was done (`read` takes
   * it, errors included). What a client's small read tries first: it costs no promise.
   */
  readNow(oid: Oid, offset: number, length: number): Uint8Array | undefined;
  /** The object's version, size and digest; undefined when it does not exist. */
  meta(oid: Oid): Promise<ObjectMeta | undefined>;
  /** Records that a crash-suspect object was checked against its replicas. */
  markVerified(oid: Oid): Promise<void>;
  /**
   * Tries again to rebuild the checksums of the copies a crash left unrebuilt (their data could
   * not be read, the disk was full): a fault that has passed must not leave a copy unreadable
   * for good. What it rebuilds is crash-suspect, as a rebuild at open leaves it. Resolves with
   * how many it rebuilt; cheap when there are none.
   */
  retryRebuilds(): Promise<number>;
  /**
   * Reads the whole object without failing on blocks that fail their checksum (a block that
   * cannot be read at all fails the call): their bytes come back as zeros and
   * their indexes in `badBlocks`. For repairs of a newest copy that partly rotted: its good
   * blocks are kept, its bad ones stay bad (see `create`'s `badBlocks`).
   */
  salvage(oid: Oid, options?: SalvageOptions): Promise<SalvagedCopy>;
  /**
   * Rewrites blocks in place with bytes whose checksum is the one the copy records for them:
   * the bytes of the last write to each, as another copy holds them (a scrub's repair of rot).
   * Checked under each block's lock, so a write racing it is never undone (a block it changed
   * has another checksum by then, and is left). Nothing else changes: not the version, not the
   * checksums, not a block recorded lost (recovery fills those). Durable when it resolves.
   * Resolves with the blocks rewritten; refused (nothing done) on a copy a crash left suspect
   * or unrebuilt, whose checksums do not vouch for anything.
   */
  healBlocks(oid: Oid, blocks: readonly HealedBlock[]): Promise<number[]>;
  /** Reads the whole object and returns every block that fails its checksum (scrub). */
  verify(oid: Oid): Promise<BadBlock[]>;
  exists(oid: Oid): Promise<boolean>;
  /**
   * Removes `oid` (data and checksums), durably: a removed copy does not come back after a
   * crash. Removing a missing object is not an error. Resolves with the removed copy's version
   * (0: there was none, or its version is unknown), as a write and a create answer.
   */
  remove(oid: Oid): Promise<number>;
  /** Every stored oid. */
  list(): Promise<Oid[]>;
  /**
   * Makes every completed write durable (one sync per dirty file); with `vid`, only the objects
   * of that VDI (its data objects and its inode). A failed sync is sticky: this and every later
   * flush rejects with EIO naming the object, since the data may be gone from the page cache.
   */
  flush(vid?: number): Promise<void>;
  health(): StoreHealth;
  space(): Promise<StoreSpace>;
  close(): Promise<void>;
}
