/**
 * The inode codec: Sheepdog's 4,664-byte header followed by `data_vdi_id[2^20]`, little-endian,
 * the layout QEMU's driver read and wrote (SHEEPDOG_REFERENCE.md §1.4). We stop after
 * `data_vdi_id`: generational reference counts are not used (space is reclaimed by sweeping).
 *
 * @module
 */

import { DATA_OBJECTS_PER_VDI_MAX, NAME_BYTES_MAX, TAG_BYTES_MAX } from "../limits.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import type { Vid } from "./oid.ts";

export const INODE_HEADER_SIZE = 4664;
export const INODE_SIZE = INODE_HEADER_SIZE + 4 * DATA_OBJECTS_PER_VDI_MAX;
/** Byte offset of `data_vdi_id[index]` inside the inode object. */
export function dataVdiIdOffset(index: number): number {
  return INODE_HEADER_SIZE + 4 * index;
}

const OFFSET = {
  name: 0,
  tag: 256,
  createTime: 512,
  snapCtime: 520,
  vmClockNsec: 528,
  vdiSize: 536,
  vmStateSize: 544,
  copyPolicy: 552,
  storePolicy: 553,
  nrCopies: 554,
  blockSizeShift: 555,
  snapId: 556,
  vdiId: 560,
  parentVdiId: 564,
  // Sheepdog 1.0's `__unused` words after `btree_counter` (568): QEMU's driver never sets them
  // and our sheep keep them when an old client writes a header back (VdiService.clientHeader).
  generation: 572,
  renameAnchor: 576,
  renamedFrom: 580,
} as const;

/** The header fields. Times are Sheepdog's `(seconds << 32) | nanoseconds`. */
export interface InodeHeader {
  name: string;
  tag: string;
  createTime: bigint;
  snapCtime: bigint;
  vmClockNsec: bigint;
  vdiSize: number;
  vmStateSize: bigint;
  copyPolicy: number;
  storePolicy: number;
  nrCopies: number;
  blockSizeShift: number;
  snapId: number;
  vdiId: Vid;
  parentVdiId: Vid;
  /**
   * Bumped by each change a merge could not otherwise order (rename, shrink, flatten):
   * `compareHeaders` ranks by kind, then this, then size. Absent means 0.
   */
  generation?: number;
  /**
   * Set by a rename on every header it rewrites: the name before it and the working VDI whose
   * header is written last (the rename's commit point on disk). `VdiRegistry.settle` undoes a
   * rename the crash cut short: a header whose anchor still has the old name.
   */
  renamedFrom?: string;
  renameAnchor?: Vid;
}

/** A whole inode: header plus the owner vid of every data object (0 = unallocated). */
export interface Inode extends InodeHeader {
  dataVdiId: Uint32Array;
}

/** Sheepdog time for a JS millisecond timestamp. */
export function sheepTime(epochMs: number): bigint {
  const seconds = BigInt(Math.floor(epochMs / 1000));
  const nanoseconds = BigInt(Math.round((epochMs % 1000) * 1e6));
  return (seconds << 32n) | nanoseconds;
}

/** Milliseconds since 1970 of a Sheepdog time. */
export function sheepTimeToMs(time: bigint): number {
  return Number(time >> 32n) * 1000 + Math.floor(Number(time & 0xffffffffn) / 1e6);
}

/** True for snapshots: a set `snap_ctime` makes the inode and its data read-only. */
export function isSnapshot(header: InodeHeader): boolean {
  return header.snapCtime !== 0n;
}

/** True for a deleted inode (a tombstone keeps its vid to keep probe chains intact). */
export function isDeleted(header: InodeHeader): boolean {
  return header.name === "";
}

/**
 * Which of two headers of one vid is newer (> 0: `a`): a tombstone beats a snapshot beats a
 * working VDI (a vid only ever moves that way), then the higher generation (renames, shrinks
 * and flattens bump it), then the larger size (growing needs no generation).
 */
export function compareHeaders(a: InodeHeader, b: InodeHeader): number {
  const kind = (header: InodeHeader) => isDeleted(header) ? 2 : isSnapshot(header) ? 1 : 0;
  return kind(a) - kind(b) || (a.generation ?? 0) - (b.generation ?? 0) ||
    a.vdiSize - b.vdiSize;
}

/** Encodes a name or tag field, refusing what does not fit. */
export function encodeName(text: string, maxBytes: number, what: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > maxBytes) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Invalid ${what} '${text.slice(0, 40)}…': ${bytes.length} bytes, at most ${maxBytes}`,
    );
  }
  if (bytes.includes(0)) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Invalid ${what}: it contains a NUL byte`);
  }
  return bytes;
}

/** Decodes a NUL-terminated field. */
export function decodeName(field: Uint8Array): string {
  const end = field.indexOf(0);
  return new TextDecoder().decode(end === -1 ? field : field.subarray(0, end));
}

/** Encodes the 4,664-byte header. */
export function encodeInodeHeader(header: InodeHeader): Uint8Array {
  const bytes = new Uint8Array(INODE_HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  bytes.set(encodeName(header.name, NAME_BYTES_MAX, "name"), OFFSET.name);
  bytes.set(encodeName(header.tag, TAG_BYTES_MAX, "tag"), OFFSET.tag);
  view.setBigUint64(OFFSET.createTime, header.createTime, true);
  view.setBigUint64(OFFSET.snapCtime, header.snapCtime, true);
  view.setBigUint64(OFFSET.vmClockNsec, header.vmClockNsec, true);
  view.setBigUint64(OFFSET.vdiSize, BigInt(header.vdiSize), true);
  view.setBigUint64(OFFSET.vmStateSize, header.vmStateSize, true);
  view.setUint8(OFFSET.copyPolicy, header.copyPolicy);
  view.setUint8(OFFSET.storePolicy, header.storePolicy);
  view.setUint8(OFFSET.nrCopies, header.nrCopies);
  view.setUint8(OFFSET.blockSizeShift, header.blockSizeShift);
  view.setUint32(OFFSET.snapId, header.snapId, true);
  view.setUint32(OFFSET.vdiId, header.vdiId, true);
  view.setUint32(OFFSET.parentVdiId, header.parentVdiId, true);
  view.setUint32(OFFSET.generation, header.generation ?? 0, true);
  view.setUint32(OFFSET.renameAnchor, header.renameAnchor ?? 0, true);
  if (header.renamedFrom !== undefined) {
    bytes.set(encodeName(header.renamedFrom, NAME_BYTES_MAX, "name"), OFFSET.renamedFrom);
  }
  return bytes;
}

/** Decodes a header from the first 4,664 bytes of `bytes`. */
export function decodeInodeHeader(bytes: Uint8Array): InodeHeader {
  if (bytes.length < INODE_HEADER_SIZE) {
    throw new SheepdogError(
      ResultCode.EIO,
      `Cannot decode inode: ${bytes.length} bytes, the header needs ${INODE_HEADER_SIZE}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, INODE_HEADER_SIZE);
  const header: InodeHeader = {
    name: decodeName(bytes.subarray(OFFSET.name, OFFSET.name + 256)),
    tag: decodeName(bytes.subarray(OFFSET.tag, OFFSET.tag + 256)),
    createTime: view.getBigUint64(OFFSET.createTime, true),
    snapCtime: view.getBigUint64(OFFSET.snapCtime, true),
    vmClockNsec: view.getBigUint64(OFFSET.vmClockNsec, true),
    vdiSize: Number(view.getBigUint64(OFFSET.vdiSize, true)),
    vmStateSize: view.getBigUint64(OFFSET.vmStateSize, true),
    copyPolicy: view.getUint8(OFFSET.copyPolicy),
    storePolicy: view.getUint8(OFFSET.storePolicy),
    nrCopies: view.getUint8(OFFSET.nrCopies),
    blockSizeShift: view.getUint8(OFFSET.blockSizeShift),
    snapId: view.getUint32(OFFSET.snapId, true),
    vdiId: view.getUint32(OFFSET.vdiId, true),
    parentVdiId: view.getUint32(OFFSET.parentVdiId, true),
  };
  // Absent when unset, so headers written before these fields decode exactly as they did.
  const generation = view.getUint32(OFFSET.generation, true);
  if (generation !== 0) header.generation = generation;
  const renamedFrom = decodeName(bytes.subarray(OFFSET.renamedFrom, OFFSET.renamedFrom + 256));
  if (renamedFrom !== "") {
    header.renamedFrom = renamedFrom;
    header.renameAnchor = view.getUint32(OFFSET.renameAnchor, true);
  }
  return header;
}

/** Encodes a whole inode (header + data_vdi_id), INODE_SIZE bytes. */
export function encodeInode(inode: Inode): Uint8Array {
  const bytes = new Uint8Array(INODE_SIZE);
  bytes.set(encodeInodeHeader(inode), 0);
  const table = new DataView(bytes.buffer, INODE_HEADER_SIZE);
  for (let i = 0; i < DATA_OBJECTS_PER_VDI_MAX; i++) {
    const owner = inode.dataVdiId[i]!;
    if (owner !== 0) table.setUint32(4 * i, owner, true);
  }
  return bytes;
}

/** Decodes a whole inode; a short buffer reads as unallocated entries past its end. */
export function decodeInode(bytes: Uint8Array): Inode {
  const header = decodeInodeHeader(bytes);
  const dataVdiId = new Uint32Array(DATA_OBJECTS_PER_VDI_MAX);
  const tableBytes = Math.min(bytes.length - INODE_HEADER_SIZE, 4 * DATA_OBJECTS_PER_VDI_MAX);
  const table = new DataView(bytes.buffer, bytes.byteOffset + INODE_HEADER_SIZE, tableBytes);
  for (let i = 0; i < tableBytes >>> 2; i++) dataVdiId[i] = table.getUint32(4 * i, true);
  return { ...header, dataVdiId };
}

/** Encodes `data_vdi_id[first..last]` for a partial inode write at `dataVdiIdOffset(first)`. */
export function encodeDataVdiIdRange(inode: Inode, first: number, last: number): Uint8Array {
  const bytes = new Uint8Array(4 * (last - first + 1));
  const view = new DataView(bytes.buffer);
  for (let i = first; i <= last; i++) view.setUint32(4 * (i - first), inode.dataVdiId[i]!, true);
  return bytes;
}

/** `data_vdi_id` entries stored in `bytes` (whole 4-byte little-endian entries; a run of the table). */
export function decodeEntries(bytes: Uint8Array): Uint32Array {
  const entries = new Uint32Array(bytes.length >>> 2);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  for (let i = 0; i < entries.length; i++) entries[i] = view.getUint32(4 * i, true);
  return entries;
}
