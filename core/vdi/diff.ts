/**
 * What changed between two versions of a VDI (a snapshot and a later snapshot, or the working
 * VDI), from their inodes: an object whose owning vid is the same in both is the same object,
 * so it is never read. An object the newer version no longer has reads as zeros there. An
 * object with a new owner is read (with its old version, if there was one) and compared in
 * DIFF_BLOCK_BYTES blocks: only the blocks that differ are extents, zero blocks as zero extents.
 * `img export-diff`, `img diff` and the HTTP download all use this, as an rbd diff or a list.
 *
 * @module
 */

import { equalBytes, isZero } from "../bytes.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import { DIFF_BLOCK_BYTES, DIFF_OBJECTS_IN_FLIGHT, objectSize } from "../limits.ts";
import {
  type DiffHeader,
  encodeDataRecordHead,
  encodeDiffEnd,
  encodeDiffHeader,
} from "../format/rbd_diff.ts";
import type { Inode } from "./inode.ts";
import { type ObjectAccess, VdiIo } from "./io.ts";
import { dataOid } from "./oid.ts";
import type { SnapshotRef } from "./registry.ts";

/** A changed byte range: new data (`data` holds it) or zeros. */
export interface Extent {
  offset: number;
  length: number;
  zero: boolean;
  data?: Uint8Array;
}

/** The two versions a diff is taken between, and the metadata it carries. */
export interface DiffEnds {
  /** Undefined: since creation (every allocated byte is a change). */
  from: Inode | undefined;
  to: Inode;
  header: DiffHeader;
}

/** How a snapshot is named in a diff: its tag, else its snap id. */
export function snapshotName(inode: Inode): string {
  return inode.tag !== "" ? inode.tag : String(inode.snapId);
}

/**
 * Opens the versions of `name` a diff is taken between: `to` (a snapshot, else the working
 * VDI, which then has no "to" name) and `from` (a snapshot, older than `to`).
 */
export async function openDiffEnds(
  access: ObjectAccess,
  request: { name: string; to?: SnapshotRef; from?: SnapshotRef },
): Promise<DiffEnds> {
  const to = (await VdiIo.open(access, request.name, request.to)).inode;
  const from = request.from === undefined
    ? undefined
    : (await VdiIo.open(access, request.name, request.from)).inode;
  const toSnapshot = request.to !== undefined;
  if (from !== undefined && (from.snapId > to.snapId || (toSnapshot && from.vdiId === to.vdiId))) {
    const toText = toSnapshot ? `snapshot '${snapshotName(to)}'` : "the working VDI";
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Cannot diff '${request.name}' from snapshot '${snapshotName(from)}': it is not older ` +
        `than ${toText}`,
    );
  }
  return {
    from,
    to,
    header: {
      from: from === undefined ? undefined : snapshotName(from),
      to: toSnapshot ? snapshotName(to) : undefined,
      size: to.vdiSize,
    },
  };
}

/** The blocks of `now` that differ from `before` (zeros when undefined), as extents. */
function changedBlocks(now: Uint8Array, before: Uint8Array | undefined, base: number): Extent[] {
  const extents: Extent[] = [];
  for (let at = 0; at < now.length; at += DIFF_BLOCK_BYTES) {
    const end = Math.min(now.length, at + DIFF_BLOCK_BYTES);
    const block = now.subarray(at, end);
    const zero = isZero(block);
    const same = before === undefined ? zero : equalBytes(block, before.subarray(at, end));
    if (same) continue;
    const last = extents[extents.length - 1];
    if (last && last.zero === zero && last.offset + last.length === base + at) {
      last.length += block.length;
    } else {
      extents.push({ offset: base + at, length: block.length, zero });
    }
  }
  for (const extent of extents) {
    if (!extent.zero) {
      extent.data = now.subarray(extent.offset - base, extent.offset - base + extent.length);
    }
  }
  return extents;
}

/**
 * The extents that changed from `ends.from` to `ends.to`, in ascending order, adjacent zero
 * extents merged. Up to DIFF_OBJECTS_IN_FLIGHT changed objects are read ahead, so memory stays
 * bounded whatever the size. `onProgress` gets the bytes of `to` gone through so far.
 */
export async function* changedExtents(
  access: Pick<ObjectAccess, "readObject">,
  ends: Pick<DiffEnds, "from" | "to">,
  onProgress?: (doneBytes: number, totalBytes: number) => void,
): AsyncGenerator<Extent> {
  const { from, to } = ends;
  const objectBytes = objectSize(to.blockSizeShift);
  const size = to.vdiSize;
  const count = Math.ceil(size / objectBytes);
  const ownerBefore = (index: number) => from?.dataVdiId[index] ?? 0;

  const objectExtents = async (index: number): Promise<Extent[]> => {
    const offset = index * objectBytes;
    const length = Math.min(objectBytes, size - offset);
    const owner = to.dataVdiId[index]!;
    if (owner === 0) return [{ offset, length, zero: true }];
    const previous = ownerBefore(index);
    const [now, before] = await Promise.all([
      access.readObject(dataOid(owner, index), 0, length),
      previous === 0 ? undefined : access.readObject(dataOid(previous, index), 0, length),
    ]);
    return changedBlocks(now, before, offset);
  };

  // Changed objects in order, read ahead; a failure surfaces when its turn comes.
  const queue: { index: number; extents: Promise<Extent[]> }[] = [];
  let next = 0;
  const refill = () => {
    while (queue.length < DIFF_OBJECTS_IN_FLIGHT && next < count) {
      const index = next++;
      if (to.dataVdiId[index] === ownerBefore(index)) continue; // the same object: unchanged
      const extents = objectExtents(index);
      extents.catch(() => undefined); // awaited in order below; not an unhandled rejection
      queue.push({ index, extents });
    }
  };
  let pendingZero: Extent | undefined;
  refill();
  while (queue.length > 0) {
    const { index, extents } = queue.shift()!;
    const found = await extents;
    refill();
    for (const extent of found) {
      if (extent.zero && pendingZero && pendingZero.offset + pendingZero.length === extent.offset) {
        pendingZero.length += extent.length;
        continue;
      }
      if (pendingZero) yield pendingZero;
      pendingZero = undefined;
      if (extent.zero) pendingZero = { ...extent };
      else yield extent;
    }
    onProgress?.(Math.min(size, (index + 1) * objectBytes), size);
  }
  if (pendingZero) yield pendingZero;
  onProgress?.(size, size);
}

/** The rbd diff v1 stream of `ends`, as chunks to write in order. */
export async function* encodeVdiDiff(
  access: Pick<ObjectAccess, "readObject">,
  ends: DiffEnds,
  onProgress?: (doneBytes: number, totalBytes: number) => void,
): AsyncGenerator<Uint8Array> {
  yield encodeDiffHeader(ends.header);
  for await (const extent of changedExtents(access, ends, onProgress)) {
    yield encodeDataRecordHead({
      kind: extent.zero ? "z" : "w",
      offset: extent.offset,
      length: extent.length,
    });
    if (!extent.zero) yield extent.data!;
  }
  yield encodeDiffEnd();
}
