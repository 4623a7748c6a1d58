/**
 * Copy-on-write, snapshot, clone, rollback and delete as pure functions over inodes
 * (ARCHITECTURE.md §4, SHEEPDOG_REFERENCE.md §2). Nothing here does I/O: callers persist
 * the inodes these functions return.
 *
 * @module
 */

import {
  DATA_OBJECTS_PER_VDI_MAX,
  NAME_BYTES_MAX,
  objectSize,
  TAG_BYTES_MAX,
  vdiSizeMax,
} from "../limits.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import { formatSize } from "../size.ts";
import { dataOid, type Oid, type Vid } from "./oid.ts";
import { encodeName, type Inode, isDeleted, isSnapshot, sheepTime } from "./inode.ts";

/** What a write to one data index must do. */
export type WritePlan =
  | { kind: "create" }
  | { kind: "write" }
  | { kind: "cow"; from: Oid };

/** Decides how a write to `index` of the working VDI `inode` reaches storage. */
export function planWrite(inode: Inode, index: number): WritePlan {
  const owner = inode.dataVdiId[index]!;
  if (owner === 0) return { kind: "create" };
  if (owner === inode.vdiId) return { kind: "write" };
  return { kind: "cow", from: dataOid(owner, index) };
}

/** Options for a new VDI. */
export interface NewVdiOptions {
  name: string;
  vid: Vid;
  sizeBytes: number;
  copies: number;
  blockSizeShift: number;
  nowMs: number;
}

/** Characters no new name or tag may hold: they break listings and one-line output. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Why `text` (a new name or tag) is refused for its characters, or undefined. */
function badCharacters(text: string, forbidden: RegExp): string | undefined {
  const found = forbidden.exec(text)?.[0] ?? CONTROL.exec(text)?.[0];
  if (found !== undefined) {
    const shown = CONTROL.test(found)
      ? `control character U+${found.charCodeAt(0).toString(16).padStart(4, "0")}`
      : `'${found}'`;
    return `${shown} is not allowed`;
  }
  if (/^\s|\s$/.test(text)) return "it may not begin or end with a space";
  return undefined;
}

/**
 * Checks a new VDI name: 1..255 bytes of printable characters except `:` `/` `#` (they address
 * snapshots and clusters: `NAME:SNAP`, `sheepdog://HOST:PORT/NAME#SNAP`), no space at either end.
 * Only new names are checked: a VDI made before these rules keeps working.
 */
export function validateName(name: string): void {
  if (name.length === 0) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, "Invalid VDI name: empty");
  }
  const why = badCharacters(name, /[:/#]/);
  if (why !== undefined) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Invalid VDI name ${JSON.stringify(name)}: ${why} (names may use any printable ` +
        "characters except : / #)",
    );
  }
  encodeName(name, NAME_BYTES_MAX, "VDI name");
}

/** Checks a snapshot tag: at most 255 bytes, printable, no space at either end. */
export function validateTag(tag: string): void {
  const why = badCharacters(tag, /(?!)/);
  if (why !== undefined) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Invalid tag ${JSON.stringify(tag)}: ${why}`);
  }
  encodeName(tag, TAG_BYTES_MAX, "tag");
}

/** Checks a size against the maximum for the object size. */
export function validateSize(sizeBytes: number, blockSizeShift: number): void {
  const max = vdiSizeMax(blockSizeShift);
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > max) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Invalid VDI size ${formatSize(sizeBytes)}: it must be between 1 B and ${formatSize(max)}`,
    );
  }
}

/** A new, empty working VDI: every index unallocated (thin). */
export function newInode(options: NewVdiOptions): Inode {
  validateName(options.name);
  validateSize(options.sizeBytes, options.blockSizeShift);
  return {
    name: options.name,
    tag: "",
    createTime: sheepTime(options.nowMs),
    snapCtime: 0n,
    vmClockNsec: 0n,
    vdiSize: options.sizeBytes,
    vmStateSize: 0n,
    copyPolicy: 0,
    storePolicy: 0,
    nrCopies: options.copies,
    blockSizeShift: options.blockSizeShift,
    snapId: 1,
    vdiId: options.vid,
    parentVdiId: 0,
    dataVdiId: new Uint32Array(DATA_OBJECTS_PER_VDI_MAX),
  };
}

/**
 * Snapshot: the working VDI freezes under its vid (read-only, tagged) and a new working VDI
 * with the same name, the next snap id and `parent = frozen` takes over, sharing every object.
 */
export function snapshotInodes(
  working: Inode,
  options: { newVid: Vid; tag: string; nowMs: number },
): { frozen: Inode; next: Inode } {
  if (isSnapshot(working)) {
    throw new SheepdogError(
      ResultCode.READONLY,
      `Cannot snapshot '${working.name}': it is a snapshot`,
    );
  }
  validateTag(options.tag);
  // snap_ctime != 0 is what marks a snapshot, so it may never be 0, even at time 0.
  const snapCtime = sheepTime(options.nowMs) || 1n;
  const frozen: Inode = { ...working, tag: options.tag, snapCtime };
  const next: Inode = {
    ...working,
    tag: "",
    createTime: sheepTime(options.nowMs),
    snapCtime: 0n,
    snapId: working.snapId + 1,
    vdiId: options.newVid,
    parentVdiId: working.vdiId,
    dataVdiId: working.dataVdiId.slice(),
  };
  return { frozen, next };
}

/** Clone: a new name whose parent is a snapshot; instant, every object shared until written. */
export function cloneInode(
  snapshot: Inode,
  options: { name: string; newVid: Vid; nowMs: number; sizeBytes?: number },
): Inode {
  if (!isSnapshot(snapshot)) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Cannot clone '${snapshot.name}': only a snapshot can be cloned, take one first`,
    );
  }
  validateName(options.name);
  const sizeBytes = options.sizeBytes ?? snapshot.vdiSize;
  validateSize(sizeBytes, snapshot.blockSizeShift);
  if (sizeBytes < snapshot.vdiSize) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, "Cannot clone to a smaller size");
  }
  return {
    ...snapshot,
    name: options.name,
    tag: "",
    createTime: sheepTime(options.nowMs),
    snapCtime: 0n,
    vdiSize: sizeBytes,
    snapId: 1,
    vdiId: options.newVid,
    parentVdiId: snapshot.vdiId,
    dataVdiId: snapshot.dataVdiId.slice(),
  };
}

/**
 * Rollback: a new working VDI of the same name branched from `snapshot`; the caller deletes
 * the old working VDI. The snap id continues after `latestSnapId`.
 */
export function rollbackInode(
  snapshot: Inode,
  options: { newVid: Vid; nowMs: number; latestSnapId: number },
): Inode {
  const branch = cloneInode(snapshot, {
    name: snapshot.name,
    newVid: options.newVid,
    nowMs: options.nowMs,
  });
  return { ...branch, snapId: options.latestSnapId + 1 };
}

/**
 * Grows a VDI; with `shrink`, makes it smaller too. Shrinking is not constrained by snapshots:
 * each snapshot keeps its own size and table, so the objects it reads stay whatever the
 * working VDI does (the caller clears the table past the new end and removes what the VDI
 * alone owned there). A shrink bumps the generation: merges cannot order it by size.
 */
export function resizeInode(
  inode: Inode,
  sizeBytes: number,
  options: { shrink?: boolean } = {},
): Inode {
  if (isSnapshot(inode)) {
    throw new SheepdogError(ResultCode.READONLY, `Cannot resize '${inode.name}': it is a snapshot`);
  }
  validateSize(sizeBytes, inode.blockSizeShift);
  if (sizeBytes < inode.vdiSize) {
    if (!options.shrink) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot shrink '${inode.name}' from ${inode.vdiSize} to ${sizeBytes} bytes: ` +
          "use --shrink (the data past the new end is lost)",
      );
    }
    return { ...inode, vdiSize: sizeBytes, generation: (inode.generation ?? 0) + 1 };
  }
  return { ...inode, vdiSize: sizeBytes };
}

/** The table of `inode` cut at `sizeBytes`: entries past the new end unallocated. */
export function truncatedTable(inode: Inode, sizeBytes: number): Uint32Array {
  const table = inode.dataVdiId.slice();
  table.fill(0, Math.ceil(sizeBytes / objectSize(inode.blockSizeShift)));
  return table;
}

/** The tombstone a deleted inode becomes: its vid stays in use, its name and data go. */
export function tombstone(inode: Inode): Inode {
  return {
    ...inode,
    name: "",
    tag: "",
    vdiSize: 0,
    dataVdiId: new Uint32Array(DATA_OBJECTS_PER_VDI_MAX),
  };
}

/**
 * Mark and sweep after a delete: of the data objects `deleted` referenced, those no live inode
 * of the family still references. An object `vid<<32|i` is live iff some live inode has
 * `dataVdiId[i] === vid`, so a snapshot's data stays while a child still reads it.
 */
export function unreferencedObjects(deleted: Inode, liveFamily: readonly Inode[]): Oid[] {
  const garbage: Oid[] = [];
  const live = liveFamily.filter((inode) => !isDeleted(inode) && inode.vdiId !== deleted.vdiId);
  for (let index = 0; index < DATA_OBJECTS_PER_VDI_MAX; index++) {
    const owner = deleted.dataVdiId[index]!;
    if (owner === 0) continue;
    if (live.some((inode) => inode.dataVdiId[index] === owner)) continue;
    garbage.push(dataOid(owner, index));
  }
  return garbage;
}

/**
 * Objects a VDI owns (`allocated`: its own vid in `data_vdi_id`) and reads from an ancestor
 * (`shared`: another vid). The one definition of space per VDI: `info -t vdi`/`-t vm`, `img du`
 * (its USED column is `allocated`), the HTTP API and the dashboard all show these counts.
 */
export interface AllocationCount {
  allocated: number;
  shared: number;
}

/** Counts `entries` (a whole `data_vdi_id` table, or any run of it) of the inode of `vid`. */
export function countEntries(vid: Vid, entries: ArrayLike<number>): AllocationCount {
  let allocated = 0;
  let shared = 0;
  for (let index = 0; index < entries.length; index++) {
    const owner = entries[index]!;
    if (owner === 0) continue;
    if (owner === vid) allocated++;
    else shared++;
  }
  return { allocated, shared };
}

/** The counts of a whole inode. */
export function countObjects(inode: Inode): AllocationCount {
  return countEntries(inode.vdiId, inode.dataVdiId);
}
