/**
 * VDI administration on the sheep side. Every change makes its inode objects durable first and
 * only then submits its event (applied to the registry in total order, on every node), so a
 * crash at any point rebuilds, from the inodes alone, to the state before or after the change
 * (`DURABILITY.md` gives the order of every operation). A refused event undoes those writes.
 *
 * @module
 */

import {
  dataVdiIdOffset,
  decodeInode,
  decodeInodeHeader,
  encodeInode,
  encodeInodeHeader,
  type Inode,
  INODE_HEADER_SIZE,
  INODE_SIZE,
  type InodeHeader,
  isDeleted,
  isSnapshot,
} from "../../core/vdi/inode.ts";
import { trimTrailingZeros } from "../../core/bytes.ts";
import { predatesFormat, vdiTimeMs } from "../../core/cluster/cluster_config.ts";
import { isResult, ResultCode, SheepdogError } from "../../core/errors.ts";
import { DATA_OBJECTS_PER_VDI_MAX } from "../../core/limits.ts";
import { truncatedTable, unreferencedObjects } from "../../core/vdi/cow.ts";
import { type Oid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import type { VdiChange, VdiEvent, VdiRegistry } from "../../core/vdi/registry.ts";
import type { Gateway } from "./gateway.ts";

/** What VDI administration uses of the gateway. */
export type VdiGateway = Pick<
  Gateway,
  "read" | "writeAt" | "createAt" | "remove" | "flush" | "copiesOf"
>;

/** Applies an event everywhere and resolves with the local result. */
export type SubmitEvent = (event: VdiEvent) => Promise<VdiChange>;

/**
 * Runs `work` while no other sheep changes VDIs (a cluster-wide lock). The inodes a change
 * writes before its event are not visible to other sheep's plans, so without it two sheep can
 * plan the same vid, or change one inode, at once: the expected-vid check makes the loser's
 * event fail, but its writes may already have replaced the winner's inode.
 */
export type Exclusive = <T>(work: () => Promise<T>) => Promise<T>;

/**
 * Throws (HALT, WAIT_FOR_JOIN, ...) when this sheep's events would be refused now, so a change
 * is refused before it writes anything instead of after its writes stalled on a partition.
 */
export type AdmitChange = () => void | Promise<void>;

/** Refusals of a proposal before it reaches the group. */
const NOT_PROPOSED = [ResultCode.HALT, ResultCode.WAIT_FOR_JOIN, ResultCode.SHUTDOWN];

/** Events that allocate a vid: their new inode is written under the vid `plan` predicts. */
type AllocatingEvent = Extract<VdiEvent, { type: "create" | "snapshot" | "clone" | "rollback" }>;

/**
 * Errors that say the event was applied nowhere (refused before it was proposed, or by the
 * registry, which refuses deterministically on every node): the durable writes are undone.
 * After any other error (a lost connection) the event may still be applied, so the writes
 * stay: on their own they rebuild to the state after the change.
 */
const REFUSED = [
  ResultCode.AGAIN,
  ResultCode.HALT,
  ResultCode.WAIT_FOR_JOIN,
  ResultCode.SHUTDOWN,
  ResultCode.VDI_EXIST,
  ResultCode.NO_VDI,
  ResultCode.NO_TAG,
  ResultCode.INVALID_PARMS,
  ResultCode.READONLY,
  ResultCode.FULL_VDI,
];

/** How often an event is resubmitted after another node took the vid it expected. */
const RACE_ATTEMPTS = 5;

/** What the durable writes before an event did, to finish or undo them after it. */
interface Prepared {
  /** The new inode as written (header and table). */
  inode: Inode;
  /** Copies the new inode was placed with (the registry does not know its vid yet). */
  copies: number;
  /** Inodes the change replaced or changed (their header), as they were, for undo. */
  before: Inode[];
}

export class VdiService {
  readonly #registry: VdiRegistry;
  readonly #gateway: VdiGateway;
  readonly #submit: SubmitEvent;
  readonly #exclusive: Exclusive;
  readonly #admit: AdmitChange;
  readonly #unknownInode: (oid: Oid) => void;
  readonly #formatMs: () => number | undefined;
  /** VDI administration is serialised per sheep: each step reads what the last one wrote. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: {
    registry: VdiRegistry;
    gateway: VdiGateway;
    submit: SubmitEvent;
    exclusive?: Exclusive;
    admit?: AdmitChange;
    /** An inode exists that the table lacks (header_drift.ts announces it). */
    unknownInode?: (oid: Oid) => void;
    /**
     * The cluster's format time (`ClusterConfig.ctimeMs`): new inodes are dated after it
     * (`vdiTimeMs`), and an inode older than it (`predatesFormat`) is free to replace.
     */
    formatMs?: () => number | undefined;
  }) {
    this.#formatMs = options.formatMs ?? (() => undefined);
    this.#registry = options.registry;
    this.#gateway = options.gateway;
    this.#submit = options.submit;
    this.#exclusive = options.exclusive ?? ((work) => work());
    this.#admit = options.admit ?? (() => this.#probe());
    this.#unknownInode = options.unknownInode ?? (() => {});
  }

  /**
   * Without an `admit` hook: submits an event every registry refuses alike (NO_VDI, nothing
   * changes), which a sheep that cannot propose refuses at once. Costs one event round trip.
   */
  async #probe(): Promise<void> {
    try {
      await this.#submit({ type: "resize", vid: 0, sizeBytes: 0 });
    } catch (error) {
      if (isResult(error, ...NOT_PROPOSED)) throw error;
    }
  }

  #serialised<T>(work: () => Promise<T>): Promise<T> {
    const exclusive = () =>
      this.#exclusive(async () => {
        await this.#admit();
        return await work();
      });
    const run = this.#queue.then(exclusive, exclusive);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async readInode(vid: Vid): Promise<Inode> {
    return decodeInode(await this.#gateway.read(vdiOid(vid), 0, INODE_SIZE));
  }

  async #readHeader(vid: Vid): Promise<InodeHeader> {
    return decodeInodeHeader(await this.#gateway.read(vdiOid(vid), 0, INODE_HEADER_SIZE));
  }

  /**
   * Creates, snapshots, clones, rolls back, resizes (shrinks), renames, flattens or deletes;
   * resolves with the vid asked about.
   */
  change(event: VdiEvent): Promise<Vid> {
    return this.#serialised(async () => {
      if (event.type === "delete") return await this.#delete(event.vid);
      if (event.type === "resize" && event.shrink) return await this.#shrink(event);
      if (event.type === "resize") return await this.#resize(event);
      if (event.type === "rename") return await this.#rewriteHeaders(event);
      if (event.type === "flatten") return await this.#flatten(event);
      return await this.#allocate(event);
    });
  }

  /** Makes header writes (`writeAt`) to `vid`'s inode durable; `createAt` is durable at once. */
  async #flush(vid: Vid): Promise<void> {
    await this.#gateway.flush(vid);
  }

  /** Create, snapshot, clone and rollback: the new inode is durable before the event. */
  async #allocate(asked: AllocatingEvent): Promise<Vid> {
    // Dated after the format, whatever this node's clock says: an inode older than the format
    // is taken for a copy of a VDI the format erased.
    const event = { ...asked, nowMs: vdiTimeMs(asked.nowMs, this.#formatMs()) };
    for (let attempt = 1;; attempt++) {
      // Refuses (a name that exists, a base that is not a snapshot) before anything is written.
      const plan = this.#registry.plan(event);
      const prepared = await this.#prepare(plan);
      let change: VdiChange;
      try {
        change = await this.#submit({ ...event, expectVid: plan.vid });
      } catch (error) {
        if (isResult(error, ...REFUSED)) await this.#undo(plan, prepared);
        // Another node's event took the vid first: plan again against the new state.
        if (isResult(error, ResultCode.AGAIN) && attempt < RACE_ATTEMPTS) continue;
        throw error;
      }
      await this.#finish(change, prepared);
      return change.vid;
    }
  }

  /**
   * The durable writes before the event, in this order: the new inode, then the inodes the
   * change updates. Until the updates are durable the new inode is a second working VDI of its
   * name (snapshot, rollback), which `VdiRegistry.settle` drops at rebuild.
   */
  async #prepare(plan: VdiChange): Promise<Prepared> {
    const header = plan.created[0]!;
    // Before the try: its undo removes the new inode, which here is another VDI's.
    await this.#refuseTaken(header.vdiId);
    const table = plan.copyTableFrom === undefined
      ? new Uint32Array(DATA_OBJECTS_PER_VDI_MAX)
      : (await this.readInode(plan.copyTableFrom)).dataVdiId;
    const prepared: Prepared = {
      inode: { ...header, dataVdiId: table },
      copies: this.#gateway.copiesOf(vdiOid(header.vdiId)),
      before: [],
    };
    try {
      // Inodes are stored sparse: the zero tail of an unallocated table is not written.
      const bytes = trimTrailingZeros(encodeInode(prepared.inode));
      await this.#gateway.createAt(vdiOid(header.vdiId), bytes, 0);
      for (const updated of plan.updated) {
        const old = await this.readInode(updated.vdiId);
        prepared.before.push(old);
        if (updated.name === "") {
          // A rollback deletes the working VDI: the tombstone replaces the inode whole, so its
          // table is gone and nothing references through it.
          await this.#gateway.createAt(vdiOid(updated.vdiId), encodeInodeHeader(updated), 0);
        } else {
          // A snapshot freezes the working VDI: only the header changes, its table stays.
          await this.#gateway.writeAt(vdiOid(updated.vdiId), encodeInodeHeader(updated), 0);
          await this.#flush(updated.vdiId);
        }
      }
      const from = plan.copyTableFrom;
      if (from !== undefined && plan.updated.some((h) => h.vdiId === from)) {
        // A snapshot of a VDI in use: objects its writers allocated since the table was read
        // belong in the new inode too. The rest of that window is closed after the event.
        await this.#catchUp(prepared.inode, from, { concurrent: false });
      }
    } catch (error) {
      // Nothing was submitted: take back what was written, as far as the storage lets us.
      await this.#undo(plan, prepared).catch(() => undefined);
      // A header write that failed was rolled back on the copies it reached, unsynced: a crash
      // may keep the write and drop the rollback, and a snapshot's frozen header outlived the
      // new working inode the undo removed: a VDI with no working VDI (simulation, snapshot seed
      // 3632). Synced here, whether the undo got that far or not.
      for (const updated of plan.updated) await this.#flush(updated.vdiId).catch(() => undefined);
      throw error;
    }
    return prepared;
  }

  /**
   * Throws if an inode of `vid` exists already: a VDI this node's table lacks (tables that
   * parted, net/sheep/DURABILITY.md). The new inode would replace it whole, and with it the
   * table of every object that VDI wrote. Told to `unknownInode`, which announces it.
   */
  async #refuseTaken(vid: Vid): Promise<void> {
    let existing: InodeHeader;
    try {
      existing = await this.#readHeader(vid);
    } catch (error) {
      if (isResult(error, ResultCode.NO_OBJ)) return;
      throw error;
    }
    // vid 0: an inode created with its header not yet written (a create that failed); or a
    // second working VDI of a name, which the table drops (settle): both leftovers of changes
    // that failed, free to take (simulation, snapshot seed 1813).
    if (existing.vdiId !== vid || !this.#registry.keepsAtSettle(existing)) return;
    // A copy of a VDI the format erased, which a copy in flight at the erase brought back.
    if (predatesFormat(existing.createTime, this.#formatMs())) return;
    this.#unknownInode(vdiOid(vid));
    throw new SheepdogError(
      ResultCode.AGAIN,
      `vid ${vid.toString(16)} is held by an inode this node's VDI table lacks (VDI ` +
        `'${existing.name}'): not replaced; the cluster is told of it, try again`,
    );
  }

  /**
   * Undoes `#prepare` after a refused event: the updates first, then the new inode. An inode
   * another event has changed meanwhile (as the registry says) is left alone.
   */
  async #undo(plan: VdiChange, prepared: Prepared): Promise<void> {
    for (const old of prepared.before) {
      if (!this.#unchanged(old)) continue;
      if (plan.updated.find((h) => h.vdiId === old.vdiId)?.name === "") {
        await this.#gateway.createAt(vdiOid(old.vdiId), trimTrailingZeros(encodeInode(old)), 0);
      } else {
        await this.#gateway.writeAt(vdiOid(old.vdiId), encodeInodeHeader(old), 0);
        await this.#flush(old.vdiId);
      }
    }
    // Never remove an inode some other event has made a VDI meanwhile.
    const vid = prepared.inode.vdiId;
    if (this.#registry.get(vid) === undefined) await this.#gateway.remove(vdiOid(vid));
  }

  /** True when the registry still has `old`'s vid as `old` was (same kind, same size). */
  #unchanged(old: InodeHeader): boolean {
    const now = this.#registry.get(old.vdiId);
    return now !== undefined && now.name === old.name && now.snapCtime === old.snapCtime &&
      now.vdiSize === old.vdiSize;
  }

  /** After the event: place the new inode as its VDI says, sweep what a rollback freed. */
  async #finish(change: VdiChange, prepared: Prepared): Promise<void> {
    const { inode } = prepared;
    const oid = vdiOid(inode.vdiId);
    const from = change.copyTableFrom;
    const snapshot = from !== undefined && change.updated.some((h) => h.vdiId === from);
    if (this.#gateway.copiesOf(oid) !== prepared.copies) {
      // Written before the registry knew its copies: write it again where they place it.
      if (snapshot) inode.dataVdiId = (await this.readInode(from)).dataVdiId;
      await this.#gateway.createAt(oid, trimTrailingZeros(encodeInode(inode)), 0);
    } else if (snapshot) {
      await this.#catchUp(inode, from, { concurrent: true });
    }
    for (const old of prepared.before) {
      if (change.updated.find((h) => h.vdiId === old.vdiId)?.name === "") {
        await this.#sweep(old);
      }
    }
  }

  /**
   * Copies into `inode` (written, sparse) the entries of `fromVid`'s table that changed since
   * `inode.dataVdiId` was read from it: allocations by writers of a VDI being snapshotted.
   * With `concurrent`, writers may already use the new inode: an entry it no longer has as
   * copied is theirs and stays.
   */
  async #catchUp(inode: Inode, fromVid: Vid, options: { concurrent: boolean }): Promise<void> {
    const source = (await this.readInode(fromVid)).dataVdiId;
    const current = options.concurrent
      ? (await this.readInode(inode.vdiId)).dataVdiId
      : inode.dataVdiId;
    const writes: Promise<void>[] = [];
    for (let index = 0; index < DATA_OBJECTS_PER_VDI_MAX; index++) {
      const copied = inode.dataVdiId[index]!;
      if (source[index] === copied || current[index] !== copied) continue;
      const entry = new Uint8Array(4);
      new DataView(entry.buffer).setUint32(0, source[index]!, true);
      inode.dataVdiId[index] = source[index]!;
      writes.push(this.#gateway.writeAt(vdiOid(inode.vdiId), entry, dataVdiIdOffset(index)));
    }
    if (writes.length === 0) return;
    await Promise.all(writes);
    await this.#flush(inode.vdiId);
  }

  /** Removes the data objects of `doomed` (deleted) that no live inode of its family uses. */
  async #sweep(doomed: Inode): Promise<void> {
    const family: Inode[] = [];
    for (const header of this.#registry.family(doomed.vdiId)) {
      family.push(await this.readInode(header.vdiId));
    }
    for (const oid of unreferencedObjects(doomed, family)) await this.#gateway.remove(oid);
  }

  /**
   * An old client's write of `bytes` at `offset` into the header of working VDI `vid`. QEMU's
   * driver keeps its own copy of the inode and writes the whole header back: with a tag and VM
   * state before it asks for a snapshot, with a larger `vdi_size` to grow the VDI. Those are
   * what a client may change: the tag, `vm_state_size` and `vm_clock_nsec` are written, a larger
   * size is a resize (an event: every node's table must know it, or a later snapshot would
   * copy the old size); a smaller one is a stale copy's and is ignored. The rest of the header
   * (name, ids, times, copies) is the cluster's and stays: a client's copy may be out of date.
   */
  clientHeader(vid: Vid, bytes: Uint8Array, offset: number): Promise<void> {
    if (offset < 0 || offset + bytes.length > INODE_HEADER_SIZE) {
      throw new RangeError(`Header write ${offset}+${bytes.length} is outside the header`);
    }
    return this.#serialised(async () => {
      const registered = this.#registry.get(vid);
      if (!registered || isDeleted(registered)) {
        throw new SheepdogError(ResultCode.NO_VDI, `Cannot find VDI with id ${vid.toString(16)}`);
      }
      if (isSnapshot(registered)) {
        throw new SheepdogError(
          ResultCode.READONLY,
          `Cannot change '${registered.name}': it is a snapshot`,
        );
      }
      const stored = await this.#gateway.read(vdiOid(vid), 0, INODE_HEADER_SIZE);
      const asked = stored.slice();
      asked.set(bytes, offset);
      const current = decodeInodeHeader(stored);
      const wanted = decodeInodeHeader(asked);
      const fields = {
        tag: wanted.tag,
        vmStateSize: wanted.vmStateSize,
        vmClockNsec: wanted.vmClockNsec,
      };
      if (wanted.vdiSize > current.vdiSize) {
        await this.#resize({ type: "resize", vid, sizeBytes: wanted.vdiSize }, fields);
        return;
      }
      if (
        fields.tag === current.tag && fields.vmStateSize === current.vmStateSize &&
        fields.vmClockNsec === current.vmClockNsec
      ) return;
      await this.#gateway.writeAt(vdiOid(vid), encodeInodeHeader({ ...current, ...fields }), 0);
      await this.#flush(vid);
    });
  }

  /**
   * Resize: the new header is durable before the event. `fields` are header fields an old
   * client wrote along with the size (`clientHeader`).
   */
  async #resize(
    event: Extract<VdiEvent, { type: "resize" }>,
    fields: Partial<InodeHeader> = {},
  ): Promise<Vid> {
    const resized = { ...this.#registry.plan(event).updated[0]!, ...fields };
    const old = await this.#readHeader(event.vid);
    await this.#gateway.writeAt(vdiOid(event.vid), encodeInodeHeader(resized), 0);
    await this.#flush(event.vid);
    try {
      return (await this.#submit(event)).vid;
    } catch (error) {
      if (isResult(error, ...REFUSED) && this.#unchanged(old)) {
        await this.#gateway.writeAt(vdiOid(event.vid), encodeInodeHeader(old), 0);
        await this.#flush(event.vid);
      }
      throw error;
    }
  }

  /**
   * Rename and flatten: headers only, each written and flushed in `plan`'s order before the
   * event (a rename's working VDI last: `VdiRegistry.settle` undoes one a crash cut short);
   * a refused event writes them back in reverse order.
   */
  async #rewriteHeaders(event: Extract<VdiEvent, { type: "rename" | "flatten" }>): Promise<Vid> {
    const plan = this.#registry.plan(event);
    const before: InodeHeader[] = [];
    try {
      for (const header of plan.updated) {
        before.push(await this.#readHeader(header.vdiId));
        await this.#gateway.writeAt(vdiOid(header.vdiId), encodeInodeHeader(header), 0);
        await this.#flush(header.vdiId);
      }
      return (await this.#submit(event)).vid;
    } catch (error) {
      if (isResult(error, ...REFUSED) || before.length < plan.updated.length) {
        for (const old of before.reverse()) {
          if (!this.#unchanged(old)) continue;
          await this.#gateway.writeAt(vdiOid(old.vdiId), encodeInodeHeader(old), 0);
          await this.#flush(old.vdiId);
        }
      }
      throw error;
    }
  }

  /** Flatten: only a clone whose table holds no object of another name's VDIs drops its parent. */
  async #flatten(event: Extract<VdiEvent, { type: "flatten" }>): Promise<Vid> {
    this.#registry.plan(event);
    const inode = await this.readInode(event.vid);
    const foreign =
      inode.dataVdiId.filter((owner) =>
        owner !== 0 && this.#registry.get(owner)?.name !== inode.name
      ).length;
    if (foreign > 0) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot flatten '${inode.name}': it still reads ${foreign} objects from its parent ` +
          "(img flatten copies them first)",
      );
    }
    return await this.#rewriteHeaders(event);
  }

  /**
   * Shrink: the inode, its table cut at the new end, replaces the old one whole (atomic on every
   * replica) before the event; after it, the objects past the end that no live inode of the
   * family reads are removed. A crash in between leaves them as orphans, never as data a later
   * grow would show: the table no longer points at them.
   */
  async #shrink(event: Extract<VdiEvent, { type: "resize" }>): Promise<Vid> {
    const header = this.#registry.plan(event).updated[0]!;
    const old = await this.readInode(event.vid);
    const shrunk: Inode = { ...header, dataVdiId: truncatedTable(old, event.sizeBytes) };
    await this.#gateway.createAt(vdiOid(event.vid), trimTrailingZeros(encodeInode(shrunk)), 0);
    try {
      await this.#submit(event);
    } catch (error) {
      if (isResult(error, ...REFUSED) && this.#unchanged(old)) {
        await this.#gateway.createAt(vdiOid(event.vid), trimTrailingZeros(encodeInode(old)), 0);
      }
      throw error;
    }
    const cut = old.dataVdiId.map((owner, index) => shrunk.dataVdiId[index] === owner ? 0 : owner);
    await this.#sweep({ ...old, dataVdiId: cut });
    return event.vid;
  }

  /** Delete: the tombstone is durable before the event; the data goes after it. */
  async #delete(vid: Vid): Promise<Vid> {
    const dead = this.#registry.plan({ type: "delete", vid }).updated[0]!;
    const doomed = await this.readInode(vid);
    // The tombstone replaces the inode whole: its table is gone, so nothing references through it.
    await this.#gateway.createAt(vdiOid(vid), encodeInodeHeader(dead), 0);
    let change: VdiChange;
    try {
      change = await this.#submit({ type: "delete", vid });
    } catch (error) {
      if (isResult(error, ...REFUSED) && this.#unchanged(doomed)) {
        await this.#gateway.createAt(vdiOid(vid), trimTrailingZeros(encodeInode(doomed)), 0);
      }
      throw error;
    }
    await this.#sweep(doomed);
    return change.vid;
  }
}
