// What an old client (QEMU's sheepdog driver, which cannot say more than its address and sends
// public opcodes without Flag.EXTENDED) gets from the op table: Sheepdog 1.0's replies, one
// holder per working VDI, its own revert allowed, and inode writes that cannot lose data.
// Requests go to `Sheep.handle` in-process, each from its own "connection" of a chosen address.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import { tempDir, withSheep } from "../../tests/harness.ts";
import { MemDisk } from "../../core/store/mem_disk.ts";
import { ResultCode } from "../../core/errors.ts";
import {
  dataVdiIdOffset,
  encodeInodeHeader,
  encodeName,
  INODE_HEADER_SIZE,
} from "../../core/vdi/inode.ts";
import { dataOid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import { VdiIo } from "../../core/vdi/io.ts";
import { AdminService } from "../admin/admin_service.ts";
import { nameTagPayload, requestHeader } from "../object/client.ts";
import type { Header, Message } from "../object/header.ts";
import { Flag, Opcode } from "../object/ops.ts";
import { Sheep } from "./sheep.ts";

const MiB = 1 << 20;

/** A client known only by `address`: every request comes on a new connection, as QEMU's do. */
function oldClient(sheep: Sheep, address: string) {
  let port = 40_000;
  const send = (header: Header, data: Uint8Array = new Uint8Array(0)): Promise<Message> => {
    header.flags &= ~Flag.EXTENDED;
    if (data.length > 0) {
      header.flags |= Flag.WRITE;
      header.dataLength = data.length;
    }
    return sheep.handle({ header, data }, `${address}:${port++}`);
  };
  const named = (opcode: number, name: string, options: { snapId?: number; tag?: string } = {}) => {
    const header = requestHeader(opcode);
    header.snapid = options.snapId ?? 0;
    return send(header, nameTagPayload(name, options.tag));
  };
  return {
    send,
    lock: (name: string, options?: { snapId?: number; tag?: string }) =>
      named(Opcode.LOCK_VDI, name, options),
    release: (vid: Vid) => {
      const header = requestHeader(Opcode.RELEASE_VDI);
      header.baseVdiId = vid;
      return send(header, new TextEncoder().encode("x\0"));
    },
    /** DEL_VDI as QEMU's branch sends it: name[256] only, based on the snapshot it goes to. */
    deleteWorking: (name: string, baseVid: Vid) => {
      const header = requestHeader(Opcode.DEL_VDI);
      header.baseVdiId = baseVid;
      return send(header, encodeName256(name));
    },
    /** NEW_VDI from `baseVid` (QEMU: snapid 1 = snapshot or rollback, 0 = clone or branch). */
    newVdi: (name: string, baseVid: Vid, snapId: number) => {
      const header = requestHeader(Opcode.NEW_VDI);
      header.baseVdiId = baseVid;
      header.snapid = snapId;
      return send(header, encodeName256(name));
    },
    write: (oid: bigint, data: Uint8Array, offset: number) => {
      const header = requestHeader(Opcode.WRITE_OBJ);
      header.oid = oid;
      header.offset = offset;
      return send(header, data);
    },
  };
}

function encodeName256(name: string): Uint8Array {
  const payload = new Uint8Array(256);
  payload.set(encodeName(name, 255, "VDI name"));
  return payload;
}

Deno.test("a failed public request of an old client has no payload; ours and internal ones have the text", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "a", sizeBytes: 8 * MiB });
    const qemu = oldClient(sheep, "10.0.0.5");
    const exists = await qemu.newVdi("a", 0, 0);
    assert.equal(exists.header.result, ResultCode.VDI_EXIST);
    assert.equal(exists.data.length, 0, "Sheepdog 1.0 sent no payload with an error");

    const ours = requestHeader(Opcode.NEW_VDI);
    assert.ok(ours.flags & Flag.EXTENDED, "our clients say who they are");
    ours.flags |= Flag.WRITE;
    ours.dataLength = 256;
    const detailed = await sheep.handle({ header: ours, data: encodeName256("a") }, "10.0.0.5:1");
    assert.equal(detailed.header.result, ResultCode.VDI_EXIST);
    assert.match(new TextDecoder().decode(detailed.data), /Cannot create VDI 'a': it exists/);
    await assert.rejects(admin.createVdi({ name: "a", sizeBytes: MiB }), /it exists already/);

    // A failed write keeps the stream in step: nothing follows the header.
    await admin.snapshot("a", "s");
    const snapshotVid = sheep.registry.lookup("a", { tag: "s" }).vdiId;
    const refused = await qemu.write(dataOid(snapshotVid, 0), new Uint8Array(512), 0);
    assert.equal(refused.header.result, ResultCode.READONLY);
    assert.equal(refused.data.length, 0);

    const internal = requestHeader(Opcode.RESIZE_VDI);
    const body = new TextEncoder().encode("{");
    internal.flags |= Flag.WRITE;
    internal.dataLength = body.length;
    const bad = await sheep.handle({ header: internal, data: body }, "local");
    assert.equal(bad.header.result, ResultCode.INVALID_PARMS);
    assert.match(new TextDecoder().decode(bad.data), /not valid JSON/);
  });
});

Deno.test("LOCK_VDI: one holder per working VDI, readers of a snapshot share it; RELEASE_VDI frees its holder's", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "a", sizeBytes: 8 * MiB });
    const qemu = oldClient(sheep, "10.0.0.5");
    const other = oldClient(sheep, "10.0.0.6");
    const locked = await qemu.lock("a");
    assert.equal(locked.header.result, ResultCode.SUCCESS);
    const vid = locked.header.rspVdiId;
    assert.equal(sheep.locks.get(vid)?.client, "10.0.0.5");
    // As 1.0 with locking on: a second attach is refused, from any client.
    assert.equal((await other.lock("a")).header.result, ResultCode.VDI_LOCKED);
    assert.equal((await qemu.lock("a")).header.result, ResultCode.VDI_LOCKED);
    assert.equal((await other.lock("a")).data.length, 0);

    await admin.snapshot("a", "s");
    const working = sheep.registry.lookup("a").vdiId;
    assert.deepEqual([...sheep.locks.keys()], [working], "the lock follows the working VDI");
    for (const client of [qemu, other]) {
      const reader = await client.lock("a", { tag: "s" });
      assert.equal(reader.header.result, ResultCode.SUCCESS);
      assert.equal(reader.header.rspVdiId, vid);
    }
    assert.deepEqual([...sheep.locks.keys()], [working], "a snapshot is not locked");

    assert.equal((await other.release(working)).header.result, ResultCode.SUCCESS);
    assert.equal(sheep.locks.get(working)?.client, "10.0.0.5", "only its holder releases it");
    await qemu.release(working);
    assert.equal(sheep.locks.size, 0);
    assert.equal((await qemu.release(working)).header.result, ResultCode.SUCCESS);

    // An operator frees the VDI of a client that died attached.
    await other.lock("a");
    assert.equal(await admin.unlockVdi("a"), "10.0.0.6");
    assert.equal(sheep.locks.size, 0);
    assert.equal(await admin.unlockVdi("a"), null);
  });
});

Deno.test("the holder reverts its VDI on other connections; other clients and administrators may not", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "r", sizeBytes: 8 * MiB });
    const snapshot = await admin.snapshot("r", "s1");
    const qemu = oldClient(sheep, "10.0.0.5");
    const other = oldClient(sheep, "10.0.0.6");
    const w1 = (await qemu.lock("r")).header.rspVdiId;

    assert.equal((await other.deleteWorking("r", snapshot)).header.result, ResultCode.VDI_LOCKED);
    assert.equal((await other.newVdi("r", snapshot, 1)).header.result, ResultCode.VDI_LOCKED);
    await assert.rejects(admin.deleteVdi("r"), /Cannot delete 'r': it is attached by 10\.0\.0\.5/);
    await assert.rejects(admin.rollback("r:s1"), /Cannot roll back 'r': it is attached by/);

    // QEMU's revert when its delete failed: a rollback; the new working VDI is still its own.
    const rolled = await qemu.newVdi("r", snapshot, 1);
    assert.equal(rolled.header.result, ResultCode.SUCCESS);
    const w2 = rolled.header.rspVdiId;
    assert.notEqual(w2, w1);
    assert.deepEqual([...sheep.locks.values()].map((l) => [l.vid, l.client]), [[w2, "10.0.0.5"]]);

    // QEMU's revert: delete the working VDI, then branch a new one from the snapshot.
    assert.equal((await qemu.deleteWorking("r", snapshot)).header.result, ResultCode.SUCCESS);
    assert.equal(sheep.locks.size, 0);
    const branched = await qemu.newVdi("r", snapshot, 0);
    assert.equal(branched.header.result, ResultCode.SUCCESS);
    const w3 = branched.header.rspVdiId;
    assert.equal(sheep.registry.lookup("r").vdiId, w3);
    assert.equal(sheep.registry.lookup("r").parentVdiId, snapshot);
    assert.equal(sheep.locks.get(w3)?.client, "10.0.0.5", "it switches to the branch at once");
    await qemu.release(w3);
    assert.equal(sheep.locks.size, 0);

    // A clone under another name is not attached by whoever made it.
    const cloned = await other.newVdi("c", snapshot, 0);
    assert.equal(cloned.header.result, ResultCode.SUCCESS);
    assert.equal(sheep.locks.size, 0);
  });
});

Deno.test("an old client's zeros in data_vdi_id: one entry is a discard; a table cleared before a delete is not written", async () => {
  await withSheep(async ({ sheep, client }) => {
    const admin = new AdminService(client);
    await admin.createVdi({ name: "z", sizeBytes: 16 * MiB });
    const io = await VdiIo.open(client, "z");
    await io.write(0, new Uint8Array(16 * MiB).fill(7));
    const vid = sheep.registry.lookup("z").vdiId;
    const table = async (of = vid) => [...(await sheep.vdis.readInode(of)).dataVdiId.slice(0, 4)];
    const qemu = oldClient(sheep, "10.0.0.5");
    const ok = async (oid: bigint, data: Uint8Array, offset: number) =>
      assert.equal((await qemu.write(oid, data, offset)).header.result, ResultCode.SUCCESS);

    const stored = async () => (await sheep.store.list()).filter((oid) => oid < vdiOid(0));
    assert.deepEqual(await stored(), [0, 1, 2, 3].map((index) => dataOid(vid, index)));
    // The table is durable before the object goes (no crash brings back a dangling entry).
    const order: string[] = [];
    const store = sheep.store;
    const { flush, remove } = store;
    store.flush = (of?: number) => (order.push("flush"), flush.call(store, of));
    store.remove = (oid: bigint) => (order.push("remove"), remove.call(store, oid));
    await ok(vdiOid(vid), new Uint8Array(4), dataVdiIdOffset(1)); // a discard of object 1
    store.flush = flush;
    store.remove = remove;
    assert.deepEqual(order, ["flush", "remove"]);
    assert.deepEqual(await table(), [vid, 0, vid, vid]);
    assert.deepEqual(await stored(), [0, 2, 3].map((index) => dataOid(vid, index)), "reclaimed");
    // QEMU's remove_objects: zeros over several entries, or over the last one alone.
    await ok(vdiOid(vid), new Uint8Array(8), dataVdiIdOffset(2));
    await ok(vdiOid(vid), new Uint8Array(4), dataVdiIdOffset(3));
    await ok(vdiOid(vid), new Uint8Array(16), dataVdiIdOffset(0));
    assert.deepEqual(await table(), [vid, 0, vid, vid]);
    assert.equal((await stored()).length, 3);
    // Entries it sets after allocating are written as they come.
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, vid, true);
    const again = await VdiIo.open(client, "z"); // it sees the hole
    await again.write(4 * MiB, new Uint8Array(4 * MiB).fill(7)); // allocates object 1 again
    await ok(vdiOid(vid), entry, dataVdiIdOffset(1));
    assert.deepEqual(await table(), [vid, vid, vid, vid]);

    const snapshot = await admin.snapshot("z", "s");
    await ok(vdiOid(snapshot), new Uint8Array(4), dataVdiIdOffset(0));
    await ok(vdiOid(snapshot), new Uint8Array(16), dataVdiIdOffset(0));
    assert.deepEqual(await table(snapshot), [snapshot, snapshot, snapshot, snapshot]);
    const changed = await qemu.write(vdiOid(snapshot), entry, dataVdiIdOffset(0));
    assert.equal(changed.header.result, ResultCode.READONLY);
    assert.deepEqual(
      await (await VdiIo.open(client, "z")).read(0, 16 * MiB),
      new Uint8Array(16 * MiB).fill(7),
    );

    const create = requestHeader(Opcode.CREATE_AND_WRITE_OBJ);
    create.oid = vdiOid(snapshot);
    assert.equal(
      (await qemu.send(create, new Uint8Array(INODE_HEADER_SIZE))).header.result,
      ResultCode.INVALID_PARMS,
    );
  });
});

Deno.test("an old client's header write: tag and VM state kept, a larger size is a resize, the rest stays", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    const vid = await admin.createVdi({ name: "h", sizeBytes: 8 * MiB });
    const qemu = oldClient(sheep, "10.0.0.5");
    const stored = () => sheep.vdis.readInode(vid);
    const mine = await stored();
    const written = {
      ...mine,
      tag: "t1",
      vmStateSize: 5n,
      vmClockNsec: 6n,
      vdiSize: 16 * MiB,
      name: "evil",
      nrCopies: 9,
    };
    const write = async (header: typeof written) =>
      (await qemu.write(vdiOid(vid), encodeInodeHeader(header), 0)).header.result;
    assert.equal(await write(written), ResultCode.SUCCESS);
    const after = await stored();
    assert.deepEqual(
      [after.tag, after.vmStateSize, after.vmClockNsec, after.vdiSize, after.name, after.nrCopies],
      ["t1", 5n, 6n, 16 * MiB, "h", mine.nrCopies],
    );
    assert.equal(sheep.registry.get(vid)?.vdiSize, 16 * MiB, "every node's table knows");
    // A stale copy's smaller size changes nothing; a snapshot keeps the size.
    assert.equal(await write({ ...written, tag: "t2", vdiSize: 8 * MiB }), ResultCode.SUCCESS);
    assert.equal((await stored()).vdiSize, 16 * MiB);
    assert.equal((await stored()).tag, "t2");
    await admin.snapshot("h", "s");
    assert.equal(sheep.registry.lookup("h").vdiSize, 16 * MiB);
    assert.equal(await write({ ...written, vdiSize: 32 * MiB }), ResultCode.READONLY);
  });
});

/**
 * A lone sheep whose store is on a simulated disk that `crash` takes back to its last sync (a
 * power loss: unlike kill -9, the page cache goes too), then starts again on.
 */
async function withCrashableSheep(
  fn: (context: { sheep: () => Sheep; crash: () => Promise<void> }) => Promise<void>,
): Promise<void> {
  const dir = await tempDir();
  const disk = new MemDisk();
  const start = async () => {
    const started = new Sheep({
      dir,
      host: "127.0.0.1",
      port: 0,
      listen: false,
      disk: disk.attach(),
    });
    await started.start();
    return started;
  };
  let sheep = await start();
  try {
    await sheep.makeFs({ copies: 1, blockSizeShift: 22, force: false, strict: false });
    await fn({
      sheep: () => sheep,
      crash: async () => {
        disk.crash();
        await sheep.stop({ graceful: false });
        sheep = await start();
      },
    });
  } finally {
    await sheep.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function createVdi(sheep: Sheep): Promise<Vid> {
  return sheep.vdis.change({
    type: "create",
    name: "q",
    sizeBytes: 16 * MiB,
    copies: 1,
    blockSizeShift: 22,
    nowMs: 1000,
  });
}

Deno.test("an old client's table entry survives a power loss before any flush: the driver will not write it again", async () => {
  // Simulation seed 26629's path for QEMU's driver: it keeps its table in memory and writes into
  // the object in place after a crash took the unsynced entry off the inode; the next open
  // then created the object afresh over flushed writes.
  await withCrashableSheep(async ({ sheep, crash }) => {
    const vid = await createVdi(sheep());
    const qemu = oldClient(sheep(), "10.0.0.5");
    const create = requestHeader(Opcode.CREATE_AND_WRITE_OBJ);
    create.oid = dataOid(vid, 2);
    assert.equal((await qemu.send(create, new Uint8Array(4096).fill(9))).header.result, 0);
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, vid, true);
    assert.equal((await qemu.write(vdiOid(vid), entry, dataVdiIdOffset(2))).header.result, 0);
    await crash();
    assert.equal((await sheep().vdis.readInode(vid)).dataVdiId[2], vid);
  });
});

Deno.test("an old client's write in place records its object when the driver's entry write failed", async () => {
  // Simulation with QEMU's driver, seed 26: the create succeeded, the write of its table entry
  // into the inode failed (a failed sync), and the driver, which keeps the entry in memory and
  // never writes it again, went on writing into the object in place; every open after read the
  // object as zeros, flushed writes included.
  await withCrashableSheep(async ({ sheep, crash }) => {
    const vid = await createVdi(sheep());
    const qemu = () => oldClient(sheep(), "10.0.0.5");
    const create = requestHeader(Opcode.CREATE_AND_WRITE_OBJ);
    create.oid = dataOid(vid, 2);
    assert.equal((await qemu().send(create, new Uint8Array(4096).fill(9))).header.result, 0);
    // Its entry write never arrived: failed, as far as the driver knows.
    assert.equal((await sheep().vdis.readInode(vid)).dataVdiId[2], 0);
    const written = await qemu().write(dataOid(vid, 2), new Uint8Array(4096).fill(5), 4096);
    assert.equal(written.header.result, ResultCode.SUCCESS);
    await crash(); // durable when answered
    assert.equal((await sheep().vdis.readInode(vid)).dataVdiId[2], vid);
    const io = await VdiIo.open(sheep().localAccess, "q");
    assert.deepEqual(await io.read(8 * MiB + 4096, 4096), new Uint8Array(4096).fill(5));
    // A discard clears it; the write in place after the driver's create records it again.
    assert.equal(
      (await qemu().write(vdiOid(vid), new Uint8Array(4), dataVdiIdOffset(2)))
        .header.result,
      0,
    );
    assert.equal((await sheep().vdis.readInode(vid)).dataVdiId[2], 0);
    assert.equal((await qemu().send(create, new Uint8Array(4096).fill(9))).header.result, 0);
    assert.equal((await qemu().write(dataOid(vid, 2), new Uint8Array(4), 0)).header.result, 0);
    assert.equal((await sheep().vdis.readInode(vid)).dataVdiId[2], vid);
  });
});

Deno.test("a write with Flag.DIRECT (QEMU's cache=none, which never flushes) is durable when answered", async () => {
  await withCrashableSheep(async ({ sheep, crash }) => {
    const vid = await createVdi(sheep());
    const qemu = () => oldClient(sheep(), "10.0.0.5"); // the sheep that runs now
    const create = requestHeader(Opcode.CREATE_AND_WRITE_OBJ);
    create.oid = dataOid(vid, 0);
    assert.equal((await qemu().send(create, new Uint8Array(4096).fill(1))).header.result, 0);
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, vid, true);
    assert.equal((await qemu().write(vdiOid(vid), entry, dataVdiIdOffset(0))).header.result, 0);
    const write = (flags: number, fill: number) => {
      const header = requestHeader(Opcode.WRITE_OBJ);
      header.oid = dataOid(vid, 0);
      header.offset = 8192;
      header.flags = flags;
      return qemu().send(header, new Uint8Array(4096).fill(fill));
    };
    assert.equal((await write(Flag.CACHE, 2)).header.result, 0);
    await crash(); // a writeback write before any flush: may be lost, and is here
    const read = async () => (await sheep().store.read(dataOid(vid, 0), 8192, 1))[0];
    assert.equal(await read(), 0);
    assert.equal((await write(Flag.DIRECT, 3)).header.result, 0);
    await crash();
    assert.equal(await read(), 3);
  });
});
