/**
 * Copies and moves: `img cp` (a full, independent copy; `--deep` with its snapshots),
 * `img flatten` (a clone copies what it still reads from its base and stands alone),
 * `img rename` and `img children`. Data moves through `VdiIo` and convert's chunk copier, so
 * only allocated data is read and runs of zeros are never stored.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../core/errors.ts";
import { isZero } from "../core/bytes.ts";
import { VdiIo } from "../core/vdi/io.ts";
import type { Vid } from "../core/vdi/oid.ts";
import { type AdminService, parseVdiRef, type VdiRow } from "../net/admin/admin_service.ts";
import { copyChunk, vdiReader, vdiWriter } from "./img_convert.ts";

/** Objects copied at once. */
const OBJECTS_IN_FLIGHT = 8;

type Progress = ((done: number, total: number) => void) | undefined;

/** One state of the source to reproduce: a snapshot (then snapshotted with its tag) or the head. */
interface Layer {
  io: VdiIo;
  /** Set for a snapshot the copy takes after writing this layer. */
  tag?: string;
}

/** Refuses a target name that is taken, before anything is written. */
async function refuseExisting(admin: AdminService, name: string): Promise<void> {
  const exists = await admin.client.lookupVdi(name).then(() => true, (error) => {
    if (error instanceof SheepdogError && error.code === ResultCode.NO_VDI) return false;
    throw error;
  });
  if (exists) {
    throw new SheepdogError(
      ResultCode.VDI_EXIST,
      `Cannot copy to '${name}': a VDI named '${name}' exists already`,
    );
  }
}

/** Runs `work(item)` for each item, `OBJECTS_IN_FLIGHT` at a time; stops at the first failure. */
async function inParallel<T>(items: T[], work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < items.length && !failed) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: OBJECTS_IN_FLIGHT }, worker));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failure) throw failure.reason;
}

/** The indexes whose object differs between `previous` (undefined: an empty VDI) and `layer`. */
function changedIndexes(layer: VdiIo, previous: VdiIo | undefined): number[] {
  const count = Math.ceil(layer.sizeBytes / layer.objectBytes);
  const changed: number[] = [];
  for (let index = 0; index < count; index++) {
    const owner = layer.inode.dataVdiId[index]!;
    // One owner, one object: a snapshot's objects never change.
    const before = previous !== undefined && index * previous.objectBytes < previous.sizeBytes
      ? previous.inode.dataVdiId[index]!
      : 0;
    if (owner !== before) changed.push(index);
  }
  return changed;
}

/** The layers `source` is copied as: its older snapshots oldest first with `deep`, then itself. */
async function layersOf(
  admin: AdminService,
  source: string,
  deep: boolean,
): Promise<Layer[]> {
  const { name, ref } = parseVdiRef(source);
  const head = await VdiIo.open(admin.client, name, ref);
  if (!deep) return [{ io: head }];
  const older = (await admin.vdis())
    .filter((row) => row.name === name && row.snapshot && row.snapId < head.inode.snapId)
    .sort((a, b) => a.snapId - b.snapId);
  const layers: Layer[] = [];
  for (const row of older) {
    layers.push({ io: await VdiIo.open(admin.client, name, { snapId: row.snapId }), tag: row.tag });
  }
  // A snapshot named as the source is the head, and a snapshot of the copy too.
  layers.push(ref === undefined ? { io: head } : { io: head, tag: head.inode.tag });
  return layers;
}

export interface CopySummary {
  bytes: number;
  writtenBytes: number;
  snapshots: number;
  ms: number;
}

/**
 * `img cp SRC[:SNAP] DST [--deep]`: a new VDI with the source's size, copies and data; with
 * `deep`, its older snapshots first, each snapshotted with its tag. A failed copy deletes what
 * it made.
 */
export async function copyVdi(
  admin: AdminService,
  options: { source: string; target: string; deep: boolean; onProgress?: Progress },
): Promise<CopySummary> {
  const started = performance.now();
  const { target } = options;
  if (parseVdiRef(target).ref !== undefined) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Cannot copy to '${target}': name a VDI, not a snapshot`,
    );
  }
  const layers = await layersOf(admin, options.source, options.deep);
  await refuseExisting(admin, target);
  const plan = layers.map((layer, i) => changedIndexes(layer.io, layers[i - 1]?.io));
  const total = plan.reduce(
    (sum, indexes, i) => sum + indexes.length * layers[i]!.io.objectBytes,
    0,
  );
  const first = layers[0]!.io.inode;
  await admin.client.newVdi({ name: target, sizeBytes: first.vdiSize, copies: first.nrCopies });
  let done = 0;
  let writtenBytes = 0;
  let snapshots = 0;
  try {
    for (const [i, layer] of layers.entries()) {
      const current = await admin.vdi(target);
      if (current.sizeBytes !== layer.io.sizeBytes) {
        const shrink = layer.io.sizeBytes < current.sizeBytes;
        await admin.resize(target, layer.io.sizeBytes, { shrink });
      }
      const io = await VdiIo.open(admin.client, target);
      const reader = vdiReader(layer.io, admin.client);
      const writer = vdiWriter(io, admin.client, undefined, undefined);
      await inParallel(plan[i]!, async (index) => {
        const offset = index * io.objectBytes;
        const length = Math.min(io.objectBytes, io.sizeBytes - offset);
        const written = await copyChunk(reader, writer, offset, length);
        writtenBytes += written; // (not `+= await`: that would add to a stale total)
        done += io.objectBytes;
        options.onProgress?.(done, total);
      });
      await io.flush();
      if (layer.tag !== undefined) {
        await admin.snapshot(target, layer.tag);
        snapshots++;
      }
    }
  } catch (error) {
    await deleteFamily(admin, target).catch(() => undefined);
    throw error;
  }
  options.onProgress?.(total, total);
  return {
    bytes: layers.at(-1)!.io.sizeBytes,
    writtenBytes,
    snapshots,
    ms: performance.now() - started,
  };
}

/** Deletes a half-made copy: its snapshots, then its working VDI. */
async function deleteFamily(admin: AdminService, name: string): Promise<void> {
  const rows = (await admin.vdis()).filter((row) => row.name === name);
  for (const row of rows.filter((r) => r.snapshot)) await admin.deleteVdi(`${name}:${row.snapId}`);
  if (rows.some((r) => !r.snapshot)) await admin.deleteVdi(name);
}

/** The first ancestor of `row` with another name (its clone base), or undefined. */
export function cloneBase(row: VdiRow, byVid: Map<Vid, VdiRow>): VdiRow | undefined {
  let current = row;
  for (let guard = 0; guard < byVid.size + 1; guard++) {
    const parent = byVid.get(current.parentVid);
    if (parent === undefined) return undefined;
    if (parent.name !== row.name) return parent;
    current = parent;
  }
  return undefined;
}

export interface FlattenSummary {
  /** Objects copied from the base (zero ones are dropped instead). */
  copied: number;
  dropped: number;
  /** The base the clone read from, as NAME:SNAP. */
  base: string;
  /** True when the parent link went too; false when own snapshots still sit between. */
  detached: boolean;
}

/**
 * `img flatten NAME`: every object the clone reads from another name's VDI (its base, or a
 * deleted snapshot the base read) is copied into the clone; then its parent link goes.
 * Refused while attached: the client's cached table would still point at the base, and its
 * next copy-on-write of an object would replace the one flatten made.
 */
export async function flattenVdi(
  admin: AdminService,
  name: string,
  onProgress?: Progress,
): Promise<FlattenSummary> {
  if (parseVdiRef(name).ref !== undefined) {
    throw new SheepdogError(ResultCode.READONLY, `Cannot flatten '${name}': it is a snapshot`);
  }
  const vid = await admin.client.lookupVdi(name);
  const rows = await admin.vdis();
  const byVid = new Map(rows.map((r) => [r.vid, r]));
  const row = byVid.get(vid)!;
  const base = cloneBase(row, byVid);
  if (base === undefined) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Cannot flatten '${name}': it is not a clone`,
    );
  }
  if (row.attachedTo !== undefined) {
    throw new SheepdogError(
      ResultCode.VDI_LOCKED,
      `Cannot flatten '${name}': it is attached by ${row.attachedTo}; detach it first (its ` +
        "cached table would race with the copy and could undo it)",
    );
  }
  const io = await VdiIo.open(admin.client, name);
  const foreign: number[] = [];
  for (let index = 0; index * io.objectBytes < io.sizeBytes; index++) {
    const owner = io.inode.dataVdiId[index]!;
    if (owner !== 0 && byVid.get(owner)?.name !== name) foreign.push(index);
  }
  let copied = 0;
  let dropped = 0;
  let done = 0;
  await inParallel(foreign, async (index) => {
    const offset = index * io.objectBytes;
    const data = await io.read(offset, Math.min(io.objectBytes, io.sizeBytes - offset));
    if (isZero(data) && data.length === io.objectBytes) {
      // A zero object need not be stored: the entry goes (it reads zeros unallocated).
      await io.discard(offset, io.objectBytes, { zeroPartial: false });
      dropped++;
    } else {
      // A write to an object the clone does not own copies it: the clone owns it afterwards.
      await io.write(offset, data);
      copied++;
    }
    onProgress?.(++done, foreign.length);
  });
  await io.flush();
  const detached = byVid.get(row.parentVid)?.name !== name;
  if (detached) await admin.dropParent(name);
  return { copied, dropped, base: `${base.name}:${base.snapId}`, detached };
}

/** `img children NAME:SNAP`: the clones made from a snapshot. */
export async function childrenOf(admin: AdminService, text: string): Promise<VdiRow[]> {
  const { name, ref } = parseVdiRef(text);
  if (ref === undefined) {
    await admin.client.lookupVdi(name);
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Cannot list children of '${text}': name a snapshot (NAME:SNAP); clones are made of snapshots`,
    );
  }
  const vid = await admin.client.lookupVdi(name, ref);
  return (await admin.vdis()).filter((row) => row.parentVid === vid && row.name !== name);
}
