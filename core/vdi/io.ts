/**
 * Client-side VDI I/O, as QEMU's old driver did it: cache the inode, split byte ranges into
 * object pieces, read unallocated pieces as zeros without asking anyone, create objects on
 * first write, copy on write when an object is shared with an ancestor, then write back the
 * changed `data_vdi_id` entries. `img`, the NBD export and tests all use this one path.
 *
 * @module
 */

import { isResult, ResultCode, SheepdogError } from "../errors.ts";
import { objectSize } from "../limits.ts";
import { planWrite } from "./cow.ts";
import { dataVdiIdOffset, decodeInode, type Inode, INODE_SIZE, isSnapshot } from "./inode.ts";
import { dataOid, type Oid, oidToVid, vdiOid, type Vid } from "./oid.ts";
import type { SnapshotRef } from "./registry.ts";

/** What VDI I/O needs from the cluster (implemented by the object-protocol client). */
export interface ObjectAccess {
  readObject(oid: Oid, offset: number, length: number): Promise<Uint8Array>;
  /**
   * `readObject` answered on the calling thread when it can be at once; undefined otherwise (and
   * nothing was done). Optional: an access over the network has no such thing.
   */
  readObjectNow?(oid: Oid, offset: number, length: number): Uint8Array | undefined;
  writeObject(oid: Oid, data: Uint8Array, offset: number): Promise<void>;
  /** Creates `oid` with `data` at `offset`; with `cowFrom`, the rest comes from that object. */
  createObject(oid: Oid, data: Uint8Array, offset: number, cowFrom?: Oid): Promise<void>;
  removeObject(oid: Oid): Promise<void>;
  /** Makes every acknowledged write durable on every replica: with `vid`, writes to that VDI. */
  flush(vid?: Vid): Promise<void>;
  /** Resolves a name (and snapshot) to a vid. */
  lookupVdi(name: string, ref?: SnapshotRef): Promise<Vid>;
}

/** One object-sized slice of a byte range. */
export interface Piece {
  index: number;
  /** Offset inside the object. */
  offset: number;
  length: number;
  /** Offset inside the caller's buffer. */
  bufferOffset: number;
}

/** Splits [offset, offset+length) into per-object pieces. */
export function splitRange(offset: number, length: number, objectBytes: number): Piece[] {
  const pieces: Piece[] = [];
  let done = 0;
  while (done < length) {
    const position = offset + done;
    const index = Math.floor(position / objectBytes);
    const inner = position - index * objectBytes;
    const part = Math.min(objectBytes - inner, length - done);
    pieces.push({ index, offset: inner, length: part, bufferOffset: done });
    done += part;
  }
  return pieces;
}

/** True when `next` is the working VDI a snapshot of `previous` (the working one) made. */
function isSnapshotChild(next: Inode, previous: Inode): boolean {
  return !isSnapshot(next) && next.vdiId !== previous.vdiId &&
    next.parentVdiId === previous.vdiId && next.name === previous.name;
}

/** Range-checks an I/O request against the VDI size. */
function checkRange(inode: Inode, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Invalid I/O range ${offset}+${length}`);
  }
  if (offset + length > inode.vdiSize) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `I/O range ${offset}+${length} is past the end of '${inode.name}' (${inode.vdiSize} bytes)`,
    );
  }
}

/** An opened VDI or snapshot. Writes to a snapshot fail with READONLY. */
export class VdiIo {
  readonly #access: ObjectAccess;
  readonly #name: string;
  readonly #ref: SnapshotRef;
  #inode: Inode;
  /** VDIs written since the last flush: a flush syncs exactly these. */
  #written = new Set<Vid>();
  /**
   * Allocations in flight per index: each settles once the table write that records it has
   * (or has failed). A second writer to the index waits for it, then plans again.
   */
  #allocating = new Map<number, Promise<void>>();
  /**
   * Indexes whose allocation failed after its table write was sent: that write may have landed
   * (on some copy, which a reconcile then spread), so the table may name this VDI's object there
   * while memory does not. A write there allocates afresh (a create replaces the object whole);
   * a discard clears the entry and removes the object all the same (seed 2988 of the simulation
   * with discards: skipped, it left the failed write's bytes where it had acknowledged zeros).
   */
  #uncertain = new Set<number>();
  /**
   * Indexes allocated through this handle since the last flush that made their table entries
   * durable (`flush` writes them again first; see `#rewriteAllocations`).
   */
  #unflushedAllocations = new Set<number>();
  /**
   * Indexes memory gives this VDI whose table entry a reload found missing and no table write has
   * recorded since: a write into one records it before it is acknowledged, so that what it wrote
   * is what a new open (or a snapshot) reads, not a hole (simulation seed 32275: the rewrite
   * failed on a full disk, and acknowledged writes into the object read as zeros elsewhere).
   */
  #unrecorded = new Set<number>();

  private constructor(access: ObjectAccess, inode: Inode, ref: SnapshotRef) {
    this.#access = access;
    this.#inode = inode;
    this.#name = inode.name;
    this.#ref = ref;
  }

  /** Opens `name` (the working VDI, or a snapshot with `ref`). */
  static async open(access: ObjectAccess, name: string, ref?: SnapshotRef): Promise<VdiIo> {
    const vid = await access.lookupVdi(name, ref);
    return new VdiIo(access, await VdiIo.#readInode(access, vid), ref);
  }

  static async #readInode(access: ObjectAccess, vid: Vid): Promise<Inode> {
    return decodeInode(await access.readObject(vdiOid(vid), 0, INODE_SIZE));
  }

  get inode(): Inode {
    return this.#inode;
  }

  get sizeBytes(): number {
    return this.#inode.vdiSize;
  }

  get readOnly(): boolean {
    return isSnapshot(this.#inode);
  }

  get objectBytes(): number {
    return objectSize(this.#inode.blockSizeShift);
  }

  /**
   * Re-reads the inode: after a snapshot the working VDI has moved to a new vid. Objects this
   * VdiIo allocated under the old vid after the snapshot copied its table (it copies before
   * its event freezes the old vid) are recorded in the new inode before it is used.
   */
  async reload(): Promise<void> {
    const previous = this.#inode;
    const vid = await this.#access.lookupVdi(this.#name, this.#ref);
    const next = await VdiIo.#readInode(this.#access, vid);
    // A concurrent reload got there first: its inode may already have new allocations.
    if (this.#inode !== previous) return;
    if (this.#ref === undefined && isSnapshotChild(next, previous)) {
      const missing: number[] = [];
      for (let index = 0; index < previous.dataVdiId.length; index++) {
        const owner = next.dataVdiId[index];
        if (previous.dataVdiId[index] !== previous.vdiId) continue;
        if (owner !== previous.vdiId && owner !== next.vdiId) missing.push(index);
      }
      if (missing.length > 0) {
        await this.#recordOwners(next.vdiId, missing, previous.vdiId);
        for (const index of missing) next.dataVdiId[index] = previous.vdiId;
        if (this.#inode !== previous) return;
      }
    }
    const kept = next.vdiId === previous.vdiId
      ? await this.#keepUnflushedAllocations(previous, next)
      : [];
    if (this.#inode !== previous) return;
    this.#inode = next;
    // Read from the table: what failed allocations left there is in memory now.
    this.#uncertain.clear();
    // Written again at once: other readers of the table (a snapshot, another open) must see
    // them too, not only the next flush.
    await this.#recordAgain(next, kept);
  }

  /**
   * Carries this handle's allocations not yet flushed into `next`, a table just read, where it
   * lost them: their entries were never synced, so a crash of every holder of the inode may
   * have taken them off every copy while the objects, written since, stayed. Forgotten, the
   * next write there would create the object afresh over acknowledged writes, and the next
   * flush would not write the entry again (simulation seed 26629). An object no node holds any
   * more (creates are durable, so something removed it since) is dropped: an entry naming it
   * would dangle.
   */
  async #keepUnflushedAllocations(previous: Inode, next: Inode): Promise<number[]> {
    const vid = previous.vdiId;
    const kept: number[] = [];
    for (const index of [...this.#unflushedAllocations]) {
      if (previous.dataVdiId[index] !== vid || next.dataVdiId[index] === vid) continue;
      // Unknown (no copy can be read now): kept in memory, as before the reload, and written
      // again by a later flush or reload once it can be told; one such object does not hold up
      // the others (simulation seed 29783).
      const exists = await this.#objectExists(dataOid(vid, index)).catch(() => undefined);
      if (exists === false) {
        this.#unflushedAllocations.delete(index);
        continue;
      }
      next.dataVdiId[index] = vid;
      this.#unrecorded.add(index);
      if (exists) kept.push(index);
    }
    return kept;
  }

  /** False only when no node holds `oid` (NO_OBJ); other errors are the caller's. */
  async #objectExists(oid: Oid): Promise<boolean> {
    try {
      await this.#access.readObject(oid, 0, 1);
      return true;
    } catch (error) {
      if (isResult(error, ResultCode.NO_OBJ)) return false;
      throw error;
    }
  }

  /** Reads `length` bytes at `offset`; unallocated ranges are zeros. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.#inode, offset, length);
    const one = this.#insideOneObject(offset, length);
    if (one !== undefined) {
      // The common case (a request inside one object): hand the object's bytes over uncopied.
      if (one.oid === null) return new Uint8Array(length);
      return asView(await this.#access.readObject(one.oid, one.offset, length));
    }
    const pieces = splitRange(offset, length, this.objectBytes);
    const buffer = new Uint8Array(length);
    await Promise.all(pieces.map(async (piece) => {
      const owner = this.#inode.dataVdiId[piece.index]!;
      if (owner === 0) return;
      const bytes = await this.#access.readObject(
        dataOid(owner, piece.index),
        piece.offset,
        piece.length,
      );
      buffer.set(bytes, piece.bufferOffset);
    }));
    return buffer;
  }

  /**
   * `read` answered on the calling thread, when the range is inside one object and the access
   * has its bytes at once (`ObjectAccess.readObjectNow`). Undefined otherwise: nothing was done.
   */
  readNow(offset: number, length: number): Uint8Array | undefined {
    if (this.#access.readObjectNow === undefined) return undefined;
    checkRange(this.#inode, offset, length);
    const one = this.#insideOneObject(offset, length);
    if (one === undefined) return undefined;
    if (one.oid === null) return new Uint8Array(length);
    const bytes = this.#access.readObjectNow(one.oid, one.offset, length);
    return bytes && asView(bytes);
  }

  /**
   * The object a non-empty range inside one object reads (null for a hole), and where in it;
   * undefined for a range across objects.
   */
  #insideOneObject(
    offset: number,
    length: number,
  ): { oid: Oid | null; offset: number } | undefined {
    const objectBytes = this.objectBytes;
    const index = oneObjectOf(offset, length, objectBytes);
    if (index === undefined) return undefined;
    const owner = this.#inode.dataVdiId[index]!;
    return {
      oid: owner === 0 ? null : dataOid(owner, index),
      offset: offset - index * objectBytes,
    };
  }

  /** Writes `data` at `offset`, creating or copying objects as needed. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this.#inode, offset, data.length);
    const inPlace = this.#writeInPlace(offset, data);
    if (inPlace !== undefined) {
      try {
        await inPlace;
        if (this.#unrecorded.size > 0) await this.#recordWritten(offset, data.length);
        return;
      } catch (error) {
        // A snapshot taken beneath us: the loop below follows it (or fails as it says).
        if (!isResult(error, ResultCode.READONLY)) throw error;
      }
    }
    await this.#followingSnapshots(async () => {
      if (this.readOnly) {
        throw new SheepdogError(
          ResultCode.READONLY,
          `Cannot write to '${this.#name}': it is a snapshot`,
        );
      }
      await this.#writePieces(offset, data);
      if (this.#unrecorded.size > 0) await this.#recordWritten(offset, data.length);
    });
  }

  /** Records the entries of the unrecorded objects a write went into (see `#unrecorded`). */
  async #recordWritten(offset: number, length: number): Promise<void> {
    const indexes = splitRange(offset, length, this.objectBytes)
      .map((piece) => piece.index)
      .filter((index) => this.#unrecorded.has(index));
    if (indexes.length > 0) await this.#recordAgain(this.#inode, indexes);
  }

  /**
   * The common write, started at once: inside one object this VDI already owns, with no
   * allocation of it under way. Undefined for any other (`#writePieces` handles those).
   */
  #writeInPlace(offset: number, data: Uint8Array): Promise<void> | undefined {
    const inode = this.#inode;
    const objectBytes = objectSize(inode.blockSizeShift);
    const index = oneObjectOf(offset, data.length, objectBytes);
    if (
      index === undefined || isSnapshot(inode) || this.#allocating.has(index) ||
      inode.dataVdiId[index] !== inode.vdiId
    ) {
      return undefined;
    }
    this.#written.add(inode.vdiId);
    return this.#access.writeObject(
      dataOid(inode.vdiId, index),
      data,
      offset - index * objectBytes,
    );
  }

  async #writePieces(offset: number, data: Uint8Array): Promise<void> {
    // One inode for the whole attempt: a reload meanwhile (a snapshot) must not redirect the
    // table write of objects created under the old vid; that write then fails READONLY instead.
    const inode = this.#inode;
    const pieces = splitRange(offset, data.length, this.objectBytes);
    // Settles when this request's table write has: writers to an index this request allocates
    // wait for it, so none writes in place into an object the table does not record yet.
    let settle!: (error?: unknown) => void;
    const recorded = new Promise<void>((resolve, reject) => {
      settle = (error) => error === undefined ? resolve() : reject(error);
    });
    recorded.catch(() => undefined); // waiters only need it settled
    const allocated: number[] = [];
    let failure: unknown;
    try {
      const results = await Promise.allSettled(pieces.map((piece) =>
        this.#writePiece(
          inode,
          piece,
          data.subarray(piece.bufferOffset, piece.bufferOffset + piece.length),
          { recorded, allocated },
        )
      ));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
      if (allocated.length > 0) await this.#recordAllocated(inode, allocated);
    } catch (error) {
      failure = error;
      for (const index of allocated) this.#uncertain.add(index);
      throw error;
    } finally {
      for (const index of allocated) {
        if (this.#allocating.get(index) === recorded) this.#allocating.delete(index);
      }
      settle(failure);
    }
  }

  /**
   * Writes one piece. An index the working VDI does not own is allocated (created, or copied
   * on write) and joins `allocated`: the caller records it in the table; until then, and if
   * that fails, the in-memory inode still says it is not allocated.
   */
  async #writePiece(
    inode: Inode,
    piece: Piece,
    bytes: Uint8Array,
    request: { recorded: Promise<void>; allocated: number[] },
  ): Promise<void> {
    for (;;) {
      const pending = this.#allocating.get(piece.index);
      if (!pending) break;
      await pending.catch(() => undefined);
    }
    const target = dataOid(inode.vdiId, piece.index);
    const plan = planWrite(inode, piece.index);
    if (plan.kind === "write") {
      this.#written.add(oidToVid(target));
      await this.#access.writeObject(target, bytes, piece.offset);
      return;
    }
    // Claimed before the first await: a concurrent writer to this index now waits for the
    // whole create + table sequence, not just the create.
    this.#allocating.set(piece.index, request.recorded);
    request.allocated.push(piece.index);
    const cowFrom = plan.kind === "cow" ? plan.from : undefined;
    // A create replaces the object whole, so creating again after a failed table write is safe.
    this.#written.add(oidToVid(target));
    await this.#access.createObject(target, bytes, piece.offset, cowFrom);
  }

  /** Writes the table entries of `indexes` (now owned by the VDI), then updates the inode. */
  async #recordAllocated(inode: Inode, indexes: number[]): Promise<void> {
    await this.#recordOwners(inode.vdiId, indexes, inode.vdiId);
    for (const index of indexes) {
      inode.dataVdiId[index] = inode.vdiId;
      this.#uncertain.delete(index);
      this.#unflushedAllocations.add(index);
    }
  }

  /**
   * Sets `data_vdi_id[i] = owner` for each of `indexes` in the inode of `vid`, one write per
   * run of consecutive indexes (so it rewrites no entry another request may be changing).
   */
  async #recordOwners(vid: Vid, indexes: number[], owner: Vid): Promise<void> {
    const sorted = [...indexes].sort((a, b) => a - b);
    const runs: { first: number; count: number }[] = [];
    for (const index of sorted) {
      const run = runs[runs.length - 1];
      if (run && run.first + run.count === index) run.count++;
      else runs.push({ first: index, count: 1 });
    }
    await Promise.all(
      runs.map((run) => this.#writeEntries(vid, run.first, new Uint32Array(run.count).fill(owner))),
    );
  }

  /** Writes `entries` as `data_vdi_id[first..]` of the inode of `vid`. */
  async #writeEntries(vid: Vid, first: number, entries: Uint32Array): Promise<void> {
    const bytes = new Uint8Array(4 * entries.length);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < entries.length; i++) view.setUint32(4 * i, entries[i]!, true);
    this.#written.add(vid);
    await this.#access.writeObject(vdiOid(vid), bytes, dataVdiIdOffset(first));
    // Written, whatever they say now (an allocation, a discard, an entry written again).
    if (vid !== this.#inode.vdiId) return;
    for (let index = first; index < first + entries.length; index++) this.#unrecorded.delete(index);
  }

  /**
   * Deallocates whole objects inside [offset, offset+length) (they then read as zeros) and
   * writes zeros over partial pieces that hold data. Objects this VDI owns are removed.
   */
  discard(offset: number, length: number, options: { zeroPartial: boolean }): Promise<void> {
    return this.#followingSnapshots(() => this.#discard(offset, length, options));
  }

  async #discard(offset: number, length: number, options: { zeroPartial: boolean }): Promise<void> {
    checkRange(this.#inode, offset, length);
    if (this.readOnly) {
      throw new SheepdogError(
        ResultCode.READONLY,
        `Cannot write to '${this.#name}': it is a snapshot`,
      );
    }
    const pieces = splitRange(offset, length, this.objectBytes);
    const whole = pieces.filter((p) =>
      p.length === this.objectBytes && this.#mayBeAllocated(this.#inode, p.index)
    );
    const partial = pieces.filter((p) =>
      p.length !== this.objectBytes && this.#inode.dataVdiId[p.index] !== 0
    );
    if (options.zeroPartial) {
      for (const piece of partial) {
        await this.write(
          piece.index * this.objectBytes + piece.offset,
          new Uint8Array(piece.length),
        );
      }
    }
    if (whole.length === 0) return;
    const inode = this.#inode;
    const vid = inode.vdiId;
    const first = whole[0]!.index;
    const last = whole[whole.length - 1]!.index;
    // The table write covers [first, last]: allocations in flight there settle first, and new
    // ones wait for it, so neither table write can undo the other.
    await this.#whileClaimed(first, last, async () => {
      const entries = inode.dataVdiId.slice(first, last + 1);
      const owned: Oid[] = [];
      const freed: number[] = [];
      for (const piece of whole) {
        if (!this.#mayBeAllocated(inode, piece.index)) continue;
        const owner = inode.dataVdiId[piece.index]!;
        if (owner === vid || this.#uncertain.has(piece.index)) {
          owned.push(dataOid(vid, piece.index));
        }
        entries[piece.index - first] = 0;
        freed.push(piece.index);
      }
      if (freed.length === 0) return;
      // The table goes first, durably: a crash in between leaves an orphan object, never a
      // dangling entry, and no crash can bring back an entry whose object is gone (an inode
      // rebuilt from crash-suspect copies keeps the entries any copy has: inode_merge.ts).
      // The in-memory entries change only once the table says so.
      try {
        await this.#writeEntries(vid, first, entries);
        await this.#access.flush(vid);
      } catch (error) {
        await this.#relearnEntries(inode, freed);
        throw error;
      }
      for (const index of freed) {
        inode.dataVdiId[index] = 0;
        this.#uncertain.delete(index);
      }
      for (const oid of owned) this.#written.add(oidToVid(oid));
      await Promise.all(owned.map((oid) => this.#access.removeObject(oid)));
    });
  }

  /** The table may name an object at `index`: memory says so, or a failed allocation may have. */
  #mayBeAllocated(inode: Inode, index: number): boolean {
    return inode.dataVdiId[index] !== 0 || this.#uncertain.has(index);
  }

  /**
   * After a table write that failed, or was not made durable: it may have landed on some copies
   * (and a reconcile then took it to all), so the entries of `indexes` are what the table holds
   * now. Kept as they were in memory while the table says "unallocated", they would send writes
   * in place into an object no reader finds (found by the data-path simulation with discards,
   * seed 491). When the table cannot be read either, they count as unallocated here: a write
   * allocates afresh, and a create replaces the object whole.
   */
  async #relearnEntries(inode: Inode, indexes: readonly number[]): Promise<void> {
    const first = Math.min(...indexes);
    const count = Math.max(...indexes) - first + 1;
    let table: DataView | undefined;
    try {
      const bytes = await this.#access.readObject(
        vdiOid(inode.vdiId),
        dataVdiIdOffset(first),
        4 * count,
      );
      table = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch {
      table = undefined;
    }
    for (const index of indexes) {
      inode.dataVdiId[index] = table?.getUint32(4 * (index - first), true) ?? 0;
    }
  }

  /**
   * Waits until no allocation is in flight on [first, last], then runs `work` with those indexes
   * claimed: writers to them wait for it, and see how it ended (as for an allocation).
   */
  async #whileClaimed<T>(first: number, last: number, work: () => Promise<T>): Promise<T> {
    for (;;) {
      let pending: Promise<void> | undefined;
      for (let index = first; index <= last && !pending; index++) {
        pending = this.#allocating.get(index);
      }
      if (!pending) break;
      await pending.catch(() => undefined);
    }
    let settle!: (error?: unknown) => void;
    const claimed = new Promise<void>((resolve, reject) => {
      settle = (error) => error === undefined ? resolve() : reject(error);
    });
    claimed.catch(() => undefined);
    for (let index = first; index <= last; index++) this.#allocating.set(index, claimed);
    let failure: unknown;
    try {
      return await work();
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      for (let index = first; index <= last; index++) {
        if (this.#allocating.get(index) === claimed) this.#allocating.delete(index);
      }
      settle(failure);
    }
  }

  /** Allocation map of [offset, offset+length): runs of allocated and unallocated bytes. */
  allocation(offset: number, length: number): { length: number; allocated: boolean }[] {
    checkRange(this.#inode, offset, length);
    const runs: { length: number; allocated: boolean }[] = [];
    for (const piece of splitRange(offset, length, this.objectBytes)) {
      const allocated = this.#inode.dataVdiId[piece.index] !== 0;
      const last = runs[runs.length - 1];
      if (last && last.allocated === allocated) last.length += piece.length;
      else runs.push({ length: piece.length, allocated });
    }
    return runs;
  }

  /**
   * Durability: every write acknowledged so far survives a crash once this resolves. Only the
   * VDIs written through this handle are synced (the old vid too, when a snapshot moved it).
   */
  flush(): Promise<void> {
    return this.#followingSnapshots(() => this.#flush());
  }

  /**
   * Runs `change` (a write, a discard or a flush) and, when a snapshot taken beneath this handle
   * refuses it (READONLY: the object or the table it writes is a snapshot's now), follows the
   * VDI to its new vid and runs it again. Flushes and discards once failed there (they rewrite or
   * clear table entries of the old vid): a flush right after an operator's snapshot of a running
   * disk was an I/O error (simulation, snapshot seed 8). NBD clients did not see it: the export
   * follows the VDI too (vdi_exports.ts), for a rollback as well.
   */
  async #followingSnapshots(change: () => Promise<void>): Promise<void> {
    for (let attempt = 0;; attempt++) {
      try {
        return await change();
      } catch (error) {
        if (!isResult(error, ResultCode.READONLY) || attempt >= 3 || this.#ref !== undefined) {
          throw error;
        }
        await this.reload();
      }
    }
  }

  async #flush(): Promise<void> {
    const allocations = await this.#rewriteAllocations();
    const vids = new Set(this.#written);
    vids.add(this.#inode.vdiId);
    this.#written.clear();
    try {
      await Promise.all([...vids].map((vid) => this.#access.flush(vid)));
    } catch (error) {
      for (const vid of vids) this.#written.add(vid);
      throw error;
    }
    for (const index of allocations) this.#unflushedAllocations.delete(index);
  }

  /**
   * Writes again the table entries of the allocations made since the last flush, before it
   * syncs. A crash of every holder of the inode before a flush may take such an entry off every
   * copy (it was never synced) while this handle, whose memory still names the object (as QEMU's
   * driver keeps its inode), goes on writing into it in place: the flush would then make the
   * data durable but not the entry, and the next open would find the index unallocated and
   * create the object afresh over acknowledged, flushed writes (simulation seed 26629).
   * Resolves with the indexes it looked at (durable once the flush's sync succeeds).
   */
  async #rewriteAllocations(): Promise<number[]> {
    // Those no longer owned (discarded, or a reload moved the table) need nothing.
    const examined = [...this.#unflushedAllocations];
    await this.#recordAgain(this.#inode, examined);
    return examined;
  }

  /**
   * Writes again the table entries of those of `indexes` that `inode` (the one in use) still
   * gives its own VDI. The run of indexes is claimed as a discard claims its range, so neither
   * table write undoes the other.
   */
  async #recordAgain(inode: Inode, indexes: readonly number[]): Promise<void> {
    const owned = (index: number) =>
      this.#inode === inode && inode.dataVdiId[index] === inode.vdiId;
    const sorted = indexes.filter(owned).sort((a, b) => a - b);
    if (sorted.length === 0) return;
    await this.#whileClaimed(sorted[0]!, sorted[sorted.length - 1]!, async () => {
      // A discard may have cleared some while this waited for the claim.
      const still = sorted.filter(owned);
      if (still.length > 0) await this.#recordOwners(inode.vdiId, still, inode.vdiId);
    });
  }
}

/** The object a non-empty range lies inside of, if one. */
function oneObjectOf(offset: number, length: number, objectBytes: number): number | undefined {
  const index = Math.floor(offset / objectBytes);
  if (length === 0 || Math.floor((offset + length - 1) / objectBytes) !== index) return undefined;
  return index;
}

/** `bytes` as a plain Uint8Array view (not a Buffer) of the same memory. */
function asView(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
