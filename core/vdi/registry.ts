/**
 * The cluster's table of VDIs: the in-use bitmap and every inode header, kept in memory by every
 * sheep. Changes arrive as `VdiEvent`s that every node applies in the same order, so `apply` is
 * deterministic: the same events give the same vids everywhere. The node that proposes an event
 * first works out what it implies (`plan`), writes those inode objects durably, and only then
 * submits it, carrying the vid it wrote under (`expectVid`); see `net/sheep/DURABILITY.md`.
 * At start the table is rebuilt from the stored inodes (`load` each, then `settle`).
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
  validateName,
} from "./cow.ts";
import { type Inode, type InodeHeader, isDeleted, isSnapshot } from "./inode.ts";
import type { Vid } from "./oid.ts";
import { VdiBitmap, vidHash } from "./vid.ts";

/** Which VDI a name refers to: the working one, or a snapshot by id or tag. */
export type SnapshotRef = { snapId: number } | { tag: string } | undefined;

/**
 * A change to the VDI table, applied in total order on every node. `expectVid`, on the events
 * that allocate a vid, is the vid the proposer already wrote the new inode under: the event is
 * refused (AGAIN, nothing changes) when the registry would allocate another one.
 */
export type VdiEvent =
  | {
    type: "create";
    name: string;
    sizeBytes: number;
    copies: number;
    blockSizeShift: number;
    nowMs: number;
    expectVid?: Vid;
  }
  | { type: "snapshot"; vid: Vid; tag: string; nowMs: number; expectVid?: Vid }
  | {
    type: "clone";
    baseVid: Vid;
    name: string;
    nowMs: number;
    sizeBytes?: number;
    expectVid?: Vid;
  }
  | {
    type: "rollback";
    snapshotVid: Vid;
    nowMs: number;
    /** The snap id of a working VDI deleted first, so the new one continues after it. */
    afterSnapId?: number;
    expectVid?: Vid;
  }
  | { type: "delete"; vid: Vid }
  | { type: "resize"; vid: Vid; sizeBytes: number; shrink?: boolean }
  /** The working VDI `vid` and every snapshot of its name take the name `name`. */
  | { type: "rename"; vid: Vid; name: string }
  /** The working VDI `vid`, a clone that no longer reads from its base, drops its parent link. */
  | { type: "flatten"; vid: Vid };

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
  /**
   * The vids of each name. Lookups use it rather than the probe chain from the name's hash: a
   * renamed VDI keeps the vids it was given under its old name.
   */
  readonly #byName = new Map<string, Set<Vid>>();

  /** Forgets every VDI (a forced re-format). */
  clear(): void {
    this.bitmap.bytes.fill(0);
    this.#headers.clear();
    this.#byName.clear();
  }

  /** Loads a header read from storage (at startup or when joining). */
  load(header: InodeHeader): void {
    this.#forget(header.vdiId);
    this.bitmap.set(header.vdiId);
    this.#headers.set(header.vdiId, header);
    const vids = this.#byName.get(header.name);
    if (vids) vids.add(header.vdiId);
    else this.#byName.set(header.name, new Set([header.vdiId]));
  }

  /** Takes `vid` out of the name index (its header is replaced or dropped). */
  #forget(vid: Vid): void {
    const old = this.#headers.get(vid);
    if (!old) return;
    const vids = this.#byName.get(old.name);
    vids?.delete(vid);
    if (vids?.size === 0) this.#byName.delete(old.name);
  }

  /** The live headers called `name`, newest (highest snap id, then vid) first. */
  #named(name: string): InodeHeader[] {
    if (name === "") return [];
    const headers = [...this.#byName.get(name) ?? []].map((vid) => this.#headers.get(vid)!);
    return headers.sort((a, b) => b.snapId - a.snapId || b.vdiId - a.vdiId);
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
    for (const header of this.#named(name)) {
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
    for (const header of this.#named(name)) latest = Math.max(latest, header.snapId);
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
    const change = this.plan(event);
    this.#commit(change.created, change.updated);
    return change;
  }

  /**
   * What applying `event` now would change, without changing anything: the proposer writes
   * these inodes before it submits the event. Throws what `apply` would throw.
   */
  plan(event: VdiEvent): VdiChange {
    const change = this.#plan(event);
    if ("expectVid" in event && event.expectVid !== undefined && event.expectVid !== change.vid) {
      throw new SheepdogError(
        ResultCode.AGAIN,
        `VDI id ${event.expectVid.toString(16)} was taken meanwhile: ${
          change.vid.toString(16)
        } is next`,
      );
    }
    return change;
  }

  #plan(event: VdiEvent): VdiChange {
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
        return this.#resize(event.vid, event.sizeBytes, event.shrink ?? false);
      case "rename":
        return this.#rename(event.vid, event.name);
      case "flatten":
        return this.#flatten(event.vid);
    }
  }

  #allocate(name: string): Vid {
    return this.bitmap.firstFreeFrom(vidHash(name));
  }

  #commit(created: InodeHeader[], updated: InodeHeader[]): void {
    for (const header of [...updated, ...created]) this.load(header);
  }

  /**
   * Resolves what a crash in the middle of a VDI change leaves among the loaded headers
   * (DURABILITY.md): where a name has more than one working VDI, the one with the lowest snap
   * id (then the lowest vid) is the working VDI and the others are dropped, bit and all. The
   * others are new working inodes written before their event by a snapshot (whose parent was
   * not frozen yet), a rollback (whose old working VDI was not deleted yet) or a create that
   * lost a race, so dropping them gives the state before the change. Call it after loading
   * (and merging) headers; idempotent. Returns the dropped headers: their inode objects are
   * orphans that a later allocation of the same vid replaces.
   */
  /**
   * False when `settle` would drop `header` were it loaded: a second working VDI of a name this
   * table has a working VDI of, older by snap id (then vid). A change that failed before its
   * event leaves such an inode behind (DURABILITY.md), and a new inode may take its vid.
   */
  keepsAtSettle(header: InodeHeader): boolean {
    if (isDeleted(header) || isSnapshot(header)) return true;
    for (const vid of this.#byName.get(header.name) ?? []) {
      const other = this.#headers.get(vid)!;
      if (vid === header.vdiId || isDeleted(other) || isSnapshot(other)) continue;
      if (settleOrder(other, header) < 0) return false;
    }
    return true;
  }

  settle(): InodeHeader[] {
    this.#settleRenames();
    const working = new Map<string, InodeHeader[]>();
    for (const header of this.#headers.values()) {
      if (isDeleted(header) || isSnapshot(header)) continue;
      const same = working.get(header.name);
      if (same) same.push(header);
      else working.set(header.name, [header]);
    }
    const dropped: InodeHeader[] = [];
    for (const headers of working.values()) {
      if (headers.length < 2) continue;
      headers.sort(settleOrder);
      dropped.push(...headers.slice(1));
    }
    for (const header of dropped) {
      this.#forget(header.vdiId);
      this.#headers.delete(header.vdiId);
      this.bitmap.clear(header.vdiId);
    }
    return dropped;
  }

  /**
   * A rename writes its headers before its event, the working VDI's (the anchor's) last. A
   * header that has the new name while its anchor still has the old one is from a rename a
   * crash cut short, which the cluster never applied: it takes its old name back (in memory;
   * every rebuild decides the same from the same objects, and the next change rewrites it).
   */
  #settleRenames(): void {
    const undone: InodeHeader[] = [];
    for (const header of this.#headers.values()) {
      const from = header.renamedFrom;
      if (from === undefined || header.name === from || isDeleted(header)) continue;
      const anchor = this.#headers.get(header.renameAnchor ?? 0);
      if (anchor === undefined || anchor.name !== from) continue;
      const { renamedFrom: _from, renameAnchor: _anchor, ...before } = header;
      undone.push({ ...before, name: from, generation: (header.generation ?? 1) - 1 });
    }
    for (const header of undone) this.load(header);
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
    return { vid: newVid, created: [created], updated, copyTableFrom: snapshot.vdiId };
  }

  #delete(vid: Vid): VdiChange {
    const header = this.#require(vid);
    const dead = headerOf(tombstone(asInode(header)));
    return { vid, created: [], updated: [dead] };
  }

  #resize(vid: Vid, sizeBytes: number, shrink: boolean): VdiChange {
    const header = this.#require(vid);
    const resized = headerOf(resizeInode(asInode(header), sizeBytes, { shrink }));
    return { vid, created: [], updated: [resized] };
  }

  /**
   * Rename: the working VDI and its snapshots (they share its name) take the new one; clones
   * keep theirs. `updated` is in write order: snapshots oldest first, the working VDI last (see
   * `settle` for a rename a crash cut short).
   */
  #rename(vid: Vid, name: string): VdiChange {
    const working = this.#require(vid);
    if (isSnapshot(working)) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot rename a snapshot of '${working.name}': its snapshots follow the VDI, ` +
          `rename '${working.name}'`,
      );
    }
    validateName(name);
    if (this.#named(name).length > 0) {
      throw new SheepdogError(
        ResultCode.VDI_EXIST,
        `Cannot rename '${working.name}' to '${name}': a VDI named '${name}' exists already`,
      );
    }
    const family = this.#named(working.name).reverse().filter((h) => h.vdiId !== vid);
    const updated = [...family, working].map((header) => ({
      ...header,
      name,
      generation: (header.generation ?? 0) + 1,
      renamedFrom: working.name,
      renameAnchor: vid,
    }));
    return { vid, created: [], updated };
  }

  /** Flatten: a clone whose data is all its own (the caller checked) stands alone. */
  #flatten(vid: Vid): VdiChange {
    const working = this.#require(vid);
    const parent = this.#headers.get(working.parentVdiId);
    if (isSnapshot(working) || working.parentVdiId === 0 || parent?.name === working.name) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot flatten '${working.name}': it is not a clone` +
          (parent?.name === working.name ? " (its parent is one of its own snapshots)" : ""),
      );
    }
    const flat = { ...working, parentVdiId: 0, generation: (working.generation ?? 0) + 1 };
    return { vid, created: [], updated: [flat] };
  }
}

/** Which of two working VDIs of one name `settle` keeps: the lower snap id, then vid (< 0: `a`). */
function settleOrder(a: InodeHeader, b: InodeHeader): number {
  return a.snapId - b.snapId || a.vdiId - b.vdiId;
}
