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
import {
  dataVdiIdOffset,
  decodeInode,
  encodeDataVdiIdRange,
  type Inode,
  INODE_SIZE,
  isSnapshot,
} from "./inode.ts";
import { dataOid, type Oid, vdiOid, type Vid } from "./oid.ts";
import type { SnapshotRef } from "./registry.ts";

/** What VDI I/O needs from the cluster (implemented by the object-protocol client). */
export interface ObjectAccess {
  readObject(oid: Oid, offset: number, length: number): Promise<Uint8Array>;
  writeObject(oid: Oid, data: Uint8Array, offset: number): Promise<void>;
  /** Creates `oid` with `data` at `offset`; with `cowFrom`, the rest comes from that object. */
  createObject(oid: Oid, data: Uint8Array, offset: number, cowFrom?: Oid): Promise<void>;
  removeObject(oid: Oid): Promise<void>;
  /** Makes every acknowledged write durable on every replica. */
  flush(): Promise<void>;
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
  /** Creates in flight per index: a second writer waits, then writes in place. */
  #creating = new Map<number, Promise<void>>();
  /** Per inode: indexes created whose table entry has not been stored yet. */
  #unrecorded = new WeakMap<Inode, Set<number>>();

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

  /** Re-reads the inode: after a snapshot the working VDI has moved to a new vid. */
  async reload(): Promise<void> {
    const vid = await this.#access.lookupVdi(this.#name, this.#ref);
    this.#inode = await VdiIo.#readInode(this.#access, vid);
  }

  /** Reads `length` bytes at `offset`; unallocated ranges are zeros. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.#inode, offset, length);
    const pieces = splitRange(offset, length, this.objectBytes);
    if (pieces.length === 1) {
      // The common case (a request inside one object): hand the object's bytes over uncopied.
      const owner = this.#inode.dataVdiId[pieces[0]!.index]!;
      if (owner === 0) return new Uint8Array(length);
      const piece = pieces[0]!;
      const bytes = await this.#access.readObject(
        dataOid(owner, piece.index),
        piece.offset,
        length,
      );
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength); // a view, not a Buffer
    }
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

  /** Writes `data` at `offset`, creating or copying objects as needed. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this.#inode, offset, data.length);
    for (let attempt = 0;; attempt++) {
      if (this.readOnly) {
        throw new SheepdogError(
          ResultCode.READONLY,
          `Cannot write to '${this.#name}': it is a snapshot`,
        );
      }
      try {
        await this.#writePieces(offset, data);
        return;
      } catch (error) {
        // Someone snapshotted the VDI beneath us: follow it to its new vid and resend.
        if (!isResult(error, ResultCode.READONLY) || attempt >= 3 || this.#ref !== undefined) {
          throw error;
        }
        await this.reload();
      }
    }
  }

  async #writePieces(offset: number, data: Uint8Array): Promise<void> {
    // One inode for the whole attempt: a reload meanwhile (a snapshot) must not redirect the
    // table write of objects created under the old vid; that write then fails READONLY instead.
    const inode = this.#inode;
    const pieces = splitRange(offset, data.length, this.objectBytes);
    const results = await Promise.allSettled(
      pieces.map((piece) =>
        this.#writePiece(
          inode,
          piece,
          data.subarray(piece.bufferOffset, piece.bufferOffset + piece.length),
        )
      ),
    );
    // Objects created (now or by an earlier write) whose table entry is not stored yet: written
    // back before anything is acknowledged, even when another piece failed, so the cached inode
    // never stays ahead of the stored one (a later write to such an object would be acknowledged
    // and never be found by a fresh open).
    const unrecorded = this.#unrecordedOf(inode);
    if (unrecorded.size > 0) {
      const indexes = [...unrecorded];
      await this.#writeTable(inode, Math.min(...indexes), Math.max(...indexes));
      for (const index of indexes) unrecorded.delete(index);
    }
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  #unrecordedOf(inode: Inode): Set<number> {
    let indexes = this.#unrecorded.get(inode);
    if (!indexes) this.#unrecorded.set(inode, indexes = new Set());
    return indexes;
  }

  /** Writes one piece, creating its object (and noting the table entry to store) if needed. */
  async #writePiece(inode: Inode, piece: Piece, bytes: Uint8Array): Promise<void> {
    for (;;) {
      const pending = this.#creating.get(piece.index);
      if (!pending) break;
      await pending.catch(() => undefined);
    }
    const vid = inode.vdiId;
    const target = dataOid(vid, piece.index);
    const plan = planWrite(inode, piece.index);
    if (plan.kind === "write") {
      await this.#access.writeObject(target, bytes, piece.offset);
      return;
    }
    const cowFrom = plan.kind === "cow" ? plan.from : undefined;
    const creating = this.#access.createObject(target, bytes, piece.offset, cowFrom).then(() => {
      inode.dataVdiId[piece.index] = vid;
      this.#unrecordedOf(inode).add(piece.index);
    });
    this.#creating.set(piece.index, creating);
    try {
      await creating;
    } finally {
      this.#creating.delete(piece.index);
    }
  }

  async #writeTable(inode: Inode, first: number, last: number): Promise<void> {
    const bytes = encodeDataVdiIdRange(inode, first, last);
    await this.#access.writeObject(vdiOid(inode.vdiId), bytes, dataVdiIdOffset(first));
  }

  /**
   * Deallocates whole objects inside [offset, offset+length) (they then read as zeros) and
   * writes zeros over partial pieces that hold data. Objects this VDI owns are removed.
   */
  async discard(offset: number, length: number, options: { zeroPartial: boolean }): Promise<void> {
    checkRange(this.#inode, offset, length);
    if (this.readOnly) {
      throw new SheepdogError(
        ResultCode.READONLY,
        `Cannot write to '${this.#name}': it is a snapshot`,
      );
    }
    const pieces = splitRange(offset, length, this.objectBytes);
    const whole = pieces.filter((p) =>
      p.length === this.objectBytes && this.#inode.dataVdiId[p.index] !== 0
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
    const vid = this.#inode.vdiId;
    const owned: Oid[] = [];
    for (const piece of whole) {
      if (this.#inode.dataVdiId[piece.index] === vid) owned.push(dataOid(vid, piece.index));
      this.#inode.dataVdiId[piece.index] = 0;
    }
    // The table goes first: a crash in between leaves an orphan object, never a dangling entry.
    await this.#writeTable(this.#inode, whole[0]!.index, whole[whole.length - 1]!.index);
    await Promise.all(owned.map((oid) => this.#access.removeObject(oid)));
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

  /** Durability: every write acknowledged so far survives a crash once this resolves. */
  flush(): Promise<void> {
    return this.#access.flush();
  }
}
