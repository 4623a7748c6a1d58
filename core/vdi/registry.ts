/**
 * The cluster's table of VDIs: the in-use bitmap and every inode header, kept in memory by every
 * sheep. Changes arrive as `VdiEvent`s that every node applies in the same order, so `apply` is
 * deterministic: the same events give the same vids everywhere. The node that proposed an event
 * then writes the inode objects it implies (see `net/sheep/vdi_service.ts`).
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../errors.ts";
import {
  cloneInode,
  newInode,
  resizeInode,
  rollbackInode,
  snapshotInodes,
  tombstone,
} from "./cow.ts";
import { type Inode, type InodeHeader, isDeleted, isSnapshot } from "./inode.ts";
import type { Vid } from "./oid.ts";
import { probeChain, VdiBitmap, vidHash } from "./vid.ts";

/** Which VDI a name refers to: the working one, or a snapshot by id or tag. */
export type SnapshotRef = { snapId: number } | { tag: string } | undefined;

/** A change to the VDI table, applied in total order on every node. */
export type VdiEvent =
  | {
    type: "create";
    name: string;
    sizeBytes: number;
    copies: number;
    blockSizeShift: number;
    nowMs: number;
  }
  | { type: "snapshot"; vid: Vid; tag: string; nowMs: number }
  | { type: "clone"; baseVid: Vid; name: string; nowMs: number; sizeBytes?: number }
  | {
    type: "rollback";
    snapshotVid: Vid;
    nowMs: number;
    /** The snap id of the working VDI deleted first, so the new one continues after it. */
    afterSnapId?: number;
  }
  | { type: "delete"; vid: Vid }
  | { type: "resize"; vid: Vid; sizeBytes: number };

/** What applying an event changed: headers to write (new or updated), in write order. */
export interface VdiChange {
  /** The vid the caller asked about (the new VDI, the new working VDI, the deleted one). */
  vid: Vid;
  /** Headers whose inode objects must be written. `created` ones are new objects. */
  created: InodeHeader[];
  updated: InodeHeader[];
  /** For snapshot/clone/rollback: the vid whose data_vdi_id table the new inode copies. */
  copyTableFrom?: Vid;
}

const EMPTY_TABLE = new Uint32Array(0);

function headerOf(inode: Inode): InodeHeader {
  const { dataVdiId: _table, ...header } = inode;
  return header;
}

function asInode(header: InodeHeader): Inode {
  return { ...header, dataVdiId: EMPTY_TABLE };
}

export class VdiRegistry {
  readonly bitmap = new VdiBitmap();
  readonly #headers = new Map<Vid, InodeHeader>();

  /** Forgets every VDI (a forced re-format). */
  clear(): void {
    this.bitmap.bytes.fill(0);
    this.#headers.clear();
  }

  /** Loads a header read from storage (at startup or when joining). */
  load(header: InodeHeader): void {
    this.bitmap.set(header.vdiId);
    this.#headers.set(header.vdiId, header);
  }

  get(vid: Vid): InodeHeader | undefined {
    return this.#headers.get(vid);
  }

  /** Every header, deleted ones included, by ascending vid. */
  all(): InodeHeader[] {
    return [...this.#headers.values()].sort((a, b) => a.vdiId - b.vdiId);
  }

  /** Live (not deleted) VDIs and snapshots. */
  live(): InodeHeader[] {
    return this.all().filter((h) => !isDeleted(h));
  }

  /**
   * Finds a VDI by name: the working VDI, or with `ref` a snapshot by snap id or tag.
   * Throws NO_VDI when the name is unknown, NO_TAG when the snapshot is.
   */
  lookup(name: string, ref?: SnapshotRef): InodeHeader {
    let nameFound = false;
    for (const vid of probeChain(this.bitmap, name)) {
      const header = this.#headers.get(vid);
      if (!header || header.name !== name) continue;
      nameFound = true;
      if (ref === undefined) {
        if (!isSnapshot(header)) return header;
      } else if (isSnapshot(header)) {
        if ("snapId" in ref ? header.snapId === ref.snapId : header.tag === ref.tag) return header;
      }
    }
    if (nameFound && ref !== undefined) {
      const what = "snapId" in ref ? `snapshot ${ref.snapId}` : `snapshot tag '${ref.tag}'`;
      throw new SheepdogError(ResultCode.NO_TAG, `Cannot find ${what} of VDI '${name}'`);
    }
    if (nameFound) {
      throw new SheepdogError(
        ResultCode.NO_VDI,
        `VDI '${name}' has only snapshots, no working VDI`,
      );
    }
    throw new SheepdogError(ResultCode.NO_VDI, `Cannot find VDI '${name}': no such VDI`);
  }

  #exists(name: string): boolean {
    try {
      this.lookup(name);
      return true;
    } catch {
      return false;
    }
  }

  #require(vid: Vid): InodeHeader {
    const header = this.#headers.get(vid);
    if (!header || isDeleted(header)) {
      throw new SheepdogError(ResultCode.NO_VDI, `Cannot find VDI with id ${vid.toString(16)}`);
    }
    return header;
  }

  /** The highest snap id ever used by `name` (snapshots and working VDIs, deleted excluded). */
  #latestSnapId(name: string): number {
    let latest = 0;
    for (const vid of probeChain(this.bitmap, name)) {
      const header = this.#headers.get(vid);
      if (header?.name === name) latest = Math.max(latest, header.snapId);
    }
    return latest;
  }

  /** Every live member of the family of `vid`: its ancestors, their descendants, and clones. */
  family(vid: Vid): InodeHeader[] {
    let root = this.#headers.get(vid);
    for (let guard = 0; root && root.parentVdiId !== 0 && guard < 1 << 24; guard++) {
      const parent = this.#headers.get(root.parentVdiId);
      if (!parent) break;
      root = parent;
    }
    if (!root) return [];
    const members: InodeHeader[] = [];
    const queue: Vid[] = [root.vdiId];
    const all = this.all();
    while (queue.length > 0) {
      const current = queue.shift()!;
      const header = this.#headers.get(current);
      if (header) members.push(header);
      for (const child of all) if (child.parentVdiId === current) queue.push(child.vdiId);
    }
    return members.filter((h) => !isDeleted(h));
  }

  /** Applies one event. Deterministic: throws the same error on every node for a bad event. */
  apply(event: VdiEvent): VdiChange {
    switch (event.type) {
      case "create":
        return this.#create(event);
      case "snapshot":
        return this.#snapshot(event);
      case "clone":
        return this.#clone(event);
      case "rollback":
        return this.#rollback(event);
      case "delete":
        return this.#delete(event.vid);
      case "resize":
        return this.#resize(event.vid, event.sizeBytes);
    }
  }

  #allocate(name: string): Vid {
    return this.bitmap.firstFreeFrom(vidHash(name));
  }

  #commit(created: InodeHeader[], updated: InodeHeader[]): void {
    for (const header of [...updated, ...created]) this.load(header);
  }

  #create(event: Extract<VdiEvent, { type: "create" }>): VdiChange {
    if (this.#exists(event.name)) {
      throw new SheepdogError(
        ResultCode.VDI_EXIST,
        `Cannot create VDI '${event.name}': it exists already`,
      );
    }
    const vid = this.#allocate(event.name);
    const snapId = this.#latestSnapId(event.name) + 1;
    const header = { ...headerOf(newInode({ ...event, vid })), snapId };
    this.#commit([header], []);
    return { vid, created: [header], updated: [] };
  }

  #snapshot(event: Extract<VdiEvent, { type: "snapshot" }>): VdiChange {
    const working = this.#require(event.vid);
    const newVid = this.#allocate(working.name);
    const { frozen, next } = snapshotInodes(asInode(working), {
      newVid,
      tag: event.tag,
      nowMs: event.nowMs,
    });
    const created = headerOf(next);
    const updated = headerOf(frozen);
    this.#commit([created], [updated]);
    return { vid: newVid, created: [created], updated: [updated], copyTableFrom: working.vdiId };
  }

  #clone(event: Extract<VdiEvent, { type: "clone" }>): VdiChange {
    const base = this.#require(event.baseVid);
    if (this.#exists(event.name)) {
      throw new SheepdogError(
        ResultCode.VDI_EXIST,
        `Cannot create VDI '${event.name}': it exists already`,
      );
    }
    const newVid = this.#allocate(event.name);
    const options = { name: event.name, newVid, nowMs: event.nowMs };
    const clone = cloneInode(
      asInode(base),
      event.sizeBytes === undefined ? options : { ...options, sizeBytes: event.sizeBytes },
    );
    const header = { ...headerOf(clone), snapId: this.#latestSnapId(event.name) + 1 };
    this.#commit([header], []);
    return { vid: newVid, created: [header], updated: [], copyTableFrom: base.vdiId };
  }

  #rollback(event: Extract<VdiEvent, { type: "rollback" }>): VdiChange {
    const snapshot = this.#require(event.snapshotVid);
    if (!isSnapshot(snapshot)) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot roll back to '${snapshot.name}': not a snapshot`,
      );
    }
    const updated: InodeHeader[] = [];
    if (this.#exists(snapshot.name)) {
      const working = this.lookup(snapshot.name);
      updated.push(headerOf(tombstone(asInode(working))));
    }
    const latestSnapId = Math.max(this.#latestSnapId(snapshot.name), event.afterSnapId ?? 0);
    const newVid = this.#allocate(snapshot.name);
    const branch = rollbackInode(asInode(snapshot), { newVid, nowMs: event.nowMs, latestSnapId });
    const created = headerOf(branch);
    this.#commit([created], updated);
    return { vid: newVid, created: [created], updated, copyTableFrom: snapshot.vdiId };
  }

  #delete(vid: Vid): VdiChange {
    const header = this.#require(vid);
    const dead = headerOf(tombstone(asInode(header)));
    this.#commit([], [dead]);
    return { vid, created: [], updated: [dead] };
  }

  #resize(vid: Vid, sizeBytes: number): VdiChange {
    const header = this.#require(vid);
    const resized = headerOf(resizeInode(asInode(header), sizeBytes));
    this.#commit([], [resized]);
    return { vid, created: [], updated: [resized] };
  }
}
