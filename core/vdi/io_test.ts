import assert from "node:assert/strict";
import { ResultCode, SheepdogError } from "../errors.ts";
import { newInode } from "./cow.ts";
import { encodeInode, INODE_HEADER_SIZE } from "./inode.ts";
import { type ObjectAccess, VdiIo } from "./io.ts";
import { dataOid, isVdiOid, type Oid, vdiOid, type Vid } from "./oid.ts";

const OBJ = 1 << 22;
const VID = 0x7c2b25;

/** Objects in memory; `failTableWrites` makes that many inode table writes fail first. */
class FakeStore implements ObjectAccess {
  readonly objects = new Map<Oid, Uint8Array>();
  failTableWrites = 0;
  /** The failing table writes land anyway (on some copy, which a reconcile then spread). */
  failedTableWritesLand = false;
  /** Runs before each inode table write (after the check that may fail it). */
  beforeTableWrite: () => Promise<void> = () => Promise.resolve();
  /** Table writes, flushes and removals, in the order they were made. */
  readonly calls: string[] = [];

  constructor() {
    const inode = newInode({
      name: "v",
      vid: VID,
      sizeBytes: 4 * OBJ,
      copies: 1,
      blockSizeShift: 22,
      nowMs: 0,
    });
    this.objects.set(vdiOid(VID), encodeInode(inode));
  }

  #object(oid: Oid): Uint8Array {
    const object = this.objects.get(oid);
    if (!object) throw new SheepdogError(ResultCode.NO_OBJ, `no object ${oid}`);
    return object;
  }

  /** Objects whose reads fail with EIO (no copy can be read now). */
  readonly failReads = new Set<Oid>();

  readObject(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    if (this.failReads.has(oid)) {
      return Promise.reject(new SheepdogError(ResultCode.EIO, "no copy can be read"));
    }
    return Promise.resolve(this.#object(oid).slice(offset, offset + length));
  }

  async writeObject(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    if (isVdiOid(oid) && offset >= INODE_HEADER_SIZE) {
      await this.beforeTableWrite();
      if (this.failTableWrites > 0) {
        this.failTableWrites--;
        if (this.failedTableWritesLand) this.#object(oid).set(data, offset);
        throw new SheepdogError(ResultCode.EIO, "table write failed");
      }
    }
    if (isVdiOid(oid) && offset >= INODE_HEADER_SIZE) this.calls.push("table");
    this.#object(oid).set(data, offset);
  }

  async createObject(oid: Oid, data: Uint8Array, offset: number, cowFrom?: Oid): Promise<void> {
    await Promise.resolve();
    const object = cowFrom === undefined ? new Uint8Array(OBJ) : this.#object(cowFrom).slice();
    object.set(data, offset);
    this.objects.set(oid, object);
  }

  removeObject(oid: Oid): Promise<void> {
    this.calls.push("remove");
    this.objects.delete(oid);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    this.calls.push("flush");
    return Promise.resolve();
  }

  lookupVdi(): Promise<Vid> {
    return Promise.resolve(VID);
  }
}

const fill = (byte: number, length = 4096) => new Uint8Array(length).fill(byte);

Deno.test("VdiIo.write() after a failed table write allocates again: a reopen reads it back", async () => {
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  store.failTableWrites = 1;
  await assert.rejects(io.write(OBJ, fill(1)), /table write failed/);
  assert.equal(io.inode.dataVdiId[1], 0, "the failed allocation is not recorded in memory");
  await io.write(OBJ + 4096, fill(2));
  assert.equal(io.inode.dataVdiId[1], VID);
  const reopened = await VdiIo.open(store, "v");
  assert.equal(reopened.inode.dataVdiId[1], VID);
  assert.deepEqual(await reopened.read(OBJ + 4096, 4096), fill(2));
});

Deno.test("VdiIo.write() to an index being allocated waits for its table write", async () => {
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  store.beforeTableWrite = () => gate;
  store.failTableWrites = 1;
  const first = io.write(0, fill(1));
  await new Promise((resolve) => setTimeout(resolve, 5));
  let secondDone = false;
  const second = io.write(8192, fill(2)).then(() => secondDone = true);
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(secondDone, false, "the second writer waits for the first one's table write");
  store.beforeTableWrite = () => Promise.resolve();
  release();
  await assert.rejects(first, /table write failed/);
  await second;
  // The second write allocated the object again and recorded it.
  const reopened = await VdiIo.open(store, "v");
  assert.equal(reopened.inode.dataVdiId[0], VID);
  assert.deepEqual(await reopened.read(8192, 4096), fill(2));
  assert.deepEqual(await reopened.read(0, 4096), fill(0, 4096));
});

Deno.test("VdiIo.discard() keeps the entries in memory when the table write fails", async () => {
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  await io.write(0, fill(7, OBJ));
  store.failTableWrites = 1;
  await assert.rejects(io.discard(0, OBJ, { zeroPartial: true }), /table write failed/);
  assert.equal(io.inode.dataVdiId[0], VID);
  assert.deepEqual(await io.read(0, 4096), fill(7));
  await io.discard(0, OBJ, { zeroPartial: true });
  assert.equal(io.inode.dataVdiId[0], 0);
  const reopened = await VdiIo.open(store, "v");
  assert.equal(reopened.inode.dataVdiId[0], 0);
  assert.deepEqual(await reopened.read(0, 4096), fill(0));
});

Deno.test("VdiIo.discard() makes the table durable before it removes an object", async () => {
  // A crash between the two must never leave an entry naming a removed object: not on the
  // copy that took the table write, nor on a copy a crash rebuilds from others (inode_merge.ts).
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  await io.write(0, fill(7, OBJ));
  store.calls.length = 0;
  await io.discard(0, 2 * OBJ, { zeroPartial: false });
  assert.deepEqual(store.calls, ["table", "flush", "remove"]);
});

Deno.test("VdiIo.discard() whose failed table write landed anyway: memory follows the table", async () => {
  // Seed 491 of the simulation with discards: the entry cleared on the table, kept in memory,
  // and the next write went in place into an object no reader finds.
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  await io.write(0, fill(7, OBJ));
  store.failTableWrites = 1;
  store.failedTableWritesLand = true;
  await assert.rejects(io.discard(0, OBJ, { zeroPartial: false }), /table write failed/);
  assert.equal(io.inode.dataVdiId[0], 0, "the table says unallocated: so does memory");
  await io.write(8192, fill(3));
  const reopened = await VdiIo.open(store, "v");
  assert.deepEqual(await reopened.read(8192, 4096), fill(3), "a fresh reader sees the write");
  assert.deepEqual(await reopened.read(0, 4096), fill(0), "allocated afresh: zeros around it");
});

Deno.test("VdiIo.discard() of an index whose failed allocation may have reached the table clears it", async () => {
  // Seed 2988 of the simulation with discards: the allocation's table write failed but landed;
  // memory said "unallocated", the discard skipped the index, and its bytes stayed readable.
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  store.failTableWrites = 1;
  store.failedTableWritesLand = true;
  await assert.rejects(io.write(OBJ, fill(9)), /table write failed/);
  assert.equal(io.inode.dataVdiId[1], 0);
  assert.equal((await VdiIo.open(store, "v")).inode.dataVdiId[1], VID, "the table has it");
  await io.discard(OBJ, OBJ, { zeroPartial: false });
  const reopened = await VdiIo.open(store, "v");
  assert.equal(reopened.inode.dataVdiId[1], 0);
  assert.deepEqual(await reopened.read(OBJ, 4096), fill(0), "zeros, as the discard promised");
  assert.equal(store.objects.has(0x007c2b2500000001n), false, "the object is gone too");
});

Deno.test("VdiIo.flush() writes again the table entries of its allocations since the last flush", async () => {
  // Simulation seed 26629: a crash of every holder of the inode took an unsynced allocation's
  // entry off every copy, while the client's handle (QEMU's driver keeps its inode too) went on
  // writing into the object in place; the flush made the data durable but not the entry, and
  // the next open created the object afresh over the acknowledged, flushed write.
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  await io.write(2 * OBJ, fill(1)); // allocates object 2: its entry is written, not synced
  const table = store.objects.get(vdiOid(VID))!;
  const entry = new DataView(table.buffer, table.byteOffset).getUint32(
    INODE_HEADER_SIZE + 4 * 2,
    true,
  );
  assert.equal(entry, VID);
  // The crash: every copy of the table is back at its last sync, without the entry.
  new DataView(table.buffer, table.byteOffset).setUint32(INODE_HEADER_SIZE + 4 * 2, 0, true);
  await io.write(2 * OBJ + 8192, fill(2)); // in place: memory still names the object
  store.calls.length = 0;
  await io.flush();
  assert.deepEqual(store.calls, ["table", "flush"], "the entry is written again, then synced");
  const reopened = await VdiIo.open(store, "v");
  assert.equal(reopened.inode.dataVdiId[2], VID);
  assert.deepEqual(await reopened.read(2 * OBJ + 8192, 4096), fill(2));
  // Written once: the next flush has nothing to write again.
  store.calls.length = 0;
  await io.flush();
  assert.deepEqual(store.calls, ["flush"]);
});

Deno.test("VdiIo.reload() keeps the allocations not yet flushed that the table lost, unless the object went too", async () => {
  // Simulation seed 26629 again: the client read the table again after the crash (as a
  // reopen) and forgot object 2; its next write there created the object afresh over an
  // acknowledged write, and no flush wrote the entry again.
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  await io.write(2 * OBJ, fill(1)); // allocates object 2
  await io.write(3 * OBJ, fill(3)); // allocates object 3
  const table = store.objects.get(vdiOid(VID))!;
  const entries = new DataView(table.buffer, table.byteOffset);
  // The crash takes both entries off the table; object 3 went with them (its create was not
  // synced either), object 2 stayed.
  entries.setUint32(INODE_HEADER_SIZE + 4 * 2, 0, true);
  entries.setUint32(INODE_HEADER_SIZE + 4 * 3, 0, true);
  store.objects.delete(dataOid(VID, 3));
  await io.reload();
  assert.equal(io.inode.dataVdiId[2], VID, "object 2 is still this VDI's");
  assert.equal(io.inode.dataVdiId[3], 0, "object 3 is gone: its allocation with it");
  const entry = (index: number) => entries.getUint32(INODE_HEADER_SIZE + 4 * index, true);
  assert.equal(entry(2), VID, "the reload wrote the entry again, for every reader");
  assert.equal(entry(3), 0);
  await io.write(2 * OBJ + 8192, fill(2)); // in place, not a create over fill(1)
  await io.flush();
  const reopened = await VdiIo.open(store, "v");
  assert.equal(reopened.inode.dataVdiId[2], VID, "the flush wrote the entry again");
  assert.equal(reopened.inode.dataVdiId[3], 0);
  assert.deepEqual(await reopened.read(2 * OBJ, 4096), fill(1));
  assert.deepEqual(await reopened.read(2 * OBJ + 8192, 4096), fill(2));
});

Deno.test("VdiIo.reload(): an allocation whose object cannot be read now stays in memory and holds up no other", async () => {
  // Simulation seed 29783: the check of one object failed (no copy readable after the crash),
  // the whole reload failed with it, and the entry of another object, which could be written
  // again, was not; a new open then read that object as zeros under acknowledged writes.
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  await io.write(0, fill(1)); // allocates object 0
  await io.write(2 * OBJ, fill(2)); // allocates object 2
  const table = store.objects.get(vdiOid(VID))!;
  const entries = new DataView(table.buffer, table.byteOffset);
  const entry = (index: number) => entries.getUint32(INODE_HEADER_SIZE + 4 * index, true);
  entries.setUint32(INODE_HEADER_SIZE, 0, true);
  entries.setUint32(INODE_HEADER_SIZE + 4 * 2, 0, true);
  store.failReads.add(dataOid(VID, 0));
  await io.reload();
  assert.equal(entry(2), VID, "object 2's entry is written again");
  assert.equal(entry(0), 0, "object 0's is not, while it cannot be told");
  assert.equal(io.inode.dataVdiId[0], VID, "but the handle still writes into it in place");
  store.failReads.clear();
  await io.flush();
  assert.equal(entry(0), VID, "the flush writes it again");
});

Deno.test("VdiIo: a write into an object whose entry a reload could not write again records it before it is acknowledged", async () => {
  // Simulation seed 32275: the reload's rewrite of the entry failed (a full disk), the handle
  // went on writing into the object in place, and a new open read those writes as zeros.
  const store = new FakeStore();
  const io = await VdiIo.open(store, "v");
  await io.write(3 * OBJ, fill(1)); // allocates object 3
  const table = store.objects.get(vdiOid(VID))!;
  const entries = new DataView(table.buffer, table.byteOffset);
  entries.setUint32(INODE_HEADER_SIZE + 4 * 3, 0, true); // the crash took the entry
  store.failTableWrites = 1;
  await assert.rejects(io.reload(), /table write failed/);
  assert.equal(io.inode.dataVdiId[3], VID, "memory still names the object");
  await io.write(3 * OBJ + 8192, fill(2));
  const reopened = await VdiIo.open(store, "v");
  assert.equal(reopened.inode.dataVdiId[3], VID, "the write recorded the entry");
  assert.deepEqual(await reopened.read(3 * OBJ + 8192, 4096), fill(2));
  store.calls.length = 0;
  await io.write(3 * OBJ + 16384, fill(3)); // recorded now: in place, no table write
  assert.deepEqual(store.calls, []);
});
