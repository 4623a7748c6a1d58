import { Buffer } from "node:buffer";
import assert from "node:assert/strict";
import { randomBytes, withSheep } from "./harness.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { ResultCode, SheepdogError } from "../core/errors.ts";
import { dataOid } from "../core/vdi/oid.ts";
import { TestCluster } from "./cluster_harness.ts";

const MiB = 1 << 20;
const OBJ = 4 * MiB;

Deno.test("a sheep serves thin VDIs: writes read back, holes read as zeros", async () => {
  await withSheep(async ({ client }) => {
    await client.newVdi({ name: "alice", sizeBytes: 64 * MiB });
    const io = await VdiIo.open(client, "alice");
    assert.equal(io.sizeBytes, 64 * MiB);
    const data = randomBytes(3 * MiB);
    await io.write(4 * MiB - 1234, data); // unaligned, crosses object boundaries
    await io.flush();
    const again = await VdiIo.open(client, "alice");
    assert.deepEqual(await again.read(4 * MiB - 1234, 3 * MiB), data);
    assert.deepEqual(await again.read(0, 4096), new Uint8Array(4096));
    assert.equal(again.inode.dataVdiId.filter((v) => v !== 0).length, 2);
  });
});

Deno.test("snapshots freeze data and clones copy on write", async () => {
  await withSheep(async ({ client }) => {
    await client.newVdi({ name: "alice", sizeBytes: 16 * MiB });
    const alice = await VdiIo.open(client, "alice");
    const first = randomBytes(MiB);
    await alice.write(0, first);
    const working = await client.lookupVdi("alice");
    await client.newVdi({
      name: "alice",
      sizeBytes: 0,
      baseVid: working,
      snapshot: true,
      tag: "before",
    });
    // The open handle follows the VDI to its new vid transparently.
    const second = randomBytes(4096);
    await alice.write(0, second);
    const snapshot = await VdiIo.open(client, "alice", { tag: "before" });
    assert.ok(snapshot.readOnly);
    assert.deepEqual(await snapshot.read(0, MiB), first);
    await assert.rejects(
      snapshot.write(0, second),
      (e: unknown) => e instanceof SheepdogError && e.code === ResultCode.READONLY,
    );
    const head = await VdiIo.open(client, "alice");
    assert.deepEqual(await head.read(0, 4096), second);
    assert.deepEqual(await head.read(4096, MiB - 4096), first.subarray(4096));
    // Clone from the snapshot and write to it.
    const snapVid = await client.lookupVdi("alice", { snapId: 1 });
    await client.newVdi({ name: "charlie", sizeBytes: 0, baseVid: snapVid });
    const charlie = await VdiIo.open(client, "charlie");
    assert.deepEqual(await charlie.read(0, MiB), first);
    await charlie.write(100, new Uint8Array([1, 2, 3]));
    assert.deepEqual(await charlie.read(99, 5), new Uint8Array([first[99]!, 1, 2, 3, first[103]!]));
    assert.deepEqual(await (await VdiIo.open(client, "alice", { snapId: 1 })).read(0, MiB), first);
  });
});

Deno.test("a snapshot beneath an open handle: its next flush, discard and write follow the VDI", async () => {
  // Found by the simulation (snapshot seed 8): a flush rewrote the entries of the allocations
  // since the last one into the old vid's table, a discard cleared entries there; both failed
  // with READONLY once that vid was a snapshot, where a write followed the VDI.
  await withSheep(async ({ client }) => {
    await client.newVdi({ name: "alice", sizeBytes: 4 * OBJ });
    const alice = await VdiIo.open(client, "alice");
    const first = randomBytes(MiB);
    const snapshot = async (tag: string) =>
      await client.newVdi({
        name: "alice",
        sizeBytes: 0,
        baseVid: await client.lookupVdi("alice"),
        snapshot: true,
        tag,
      });
    await alice.write(0, first); // allocates object 0, not flushed
    await snapshot("one");
    await alice.flush();
    await alice.write(OBJ, first); // allocates object 1 in the new VDI
    await alice.flush();
    await snapshot("two");
    await alice.discard(OBJ, OBJ, { zeroPartial: false });
    await snapshot("three");
    await alice.write(0, new Uint8Array(4096));
    assert.notEqual(alice.inode.vdiId, await client.lookupVdi("alice", { tag: "one" }));
    const read = async (tag: string | undefined, offset: number) =>
      await (await VdiIo.open(client, "alice", tag ? { tag } : undefined)).read(offset, MiB);
    const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
    assert.ok(same(await read("one", 0), first), "snapshot one");
    assert.ok(same(await read("two", OBJ), first), "snapshot two");
    assert.ok(same(await read("three", OBJ), new Uint8Array(MiB)), "snapshot three");
    assert.ok(same((await read(undefined, 0)).subarray(4096), first.subarray(4096)), "working");
  });
});

Deno.test("requests before mkfs get WAIT_FOR_FORMAT", async () => {
  await withSheep(async ({ client }) => {
    await assert.rejects(
      client.newVdi({ name: "x", sizeBytes: MiB }),
      (e: unknown) => e instanceof SheepdogError && e.code === ResultCode.WAIT_FOR_FORMAT,
    );
  }, { format: false });
});

Deno.test("rollback replaces the working VDI with a branch of the snapshot and frees its data", async () => {
  const { AdminService } = await import("../net/admin/admin_service.ts");
  await withSheep(async ({ client, sheep }) => {
    const admin = new AdminService(client);
    await admin.createVdi({ name: "r", sizeBytes: 16 * MiB });
    const before = randomBytes(MiB);
    await (await VdiIo.open(client, "r")).write(0, before);
    await admin.snapshot("r", "good");
    const after = randomBytes(MiB);
    await (await VdiIo.open(client, "r")).write(5 * MiB, after); // a new object only the head owns
    const dataObjects = async () =>
      (await sheep.store.list()).filter((oid) => oid >> 63n === 0n).length;
    assert.equal(await dataObjects(), 2);
    await admin.rollback("r:good");
    const head = await VdiIo.open(client, "r");
    assert.deepEqual(await head.read(0, MiB), before);
    assert.deepEqual(await head.read(5 * MiB, MiB), new Uint8Array(MiB), "the later write is gone");
    assert.equal(await dataObjects(), 1, "what only the old head owned is reclaimed");
    assert.equal((await admin.vdi("r")).snapId, 3);
    await assert.rejects(admin.rollback("r"), /name a snapshot/);
  });
});

Deno.test("a copy-on-write whose source no node holds fails; never zeros for the snapshot's data", async () => {
  await withSheep(async ({ sheep, client }) => {
    await client.newVdi({ name: "alice", sizeBytes: 8 * MiB });
    const alice = await VdiIo.open(client, "alice");
    const first = randomBytes(MiB);
    await alice.write(0, first);
    await alice.flush();
    const working = await client.lookupVdi("alice");
    await client.newVdi({ name: "alice", sizeBytes: 0, baseVid: working, snapshot: true });
    // The snapshot's object, as if every node holding it were away.
    const source = alice.inode.dataVdiId[0]!;
    const sourceOid = (BigInt(source) << 32n) | 0n;
    const data = await sheep.store.read(sourceOid, 0, MiB);
    await sheep.store.remove(sourceOid);
    await assert.rejects(
      alice.write(4096, new Uint8Array([7])),
      (e: unknown) =>
        e instanceof SheepdogError && e.code === ResultCode.NO_OBJ &&
        /copy-on-write .*: no node present holds a copy/.test(e.message),
    );
    // A read says so too: the object was written, its holders are what is missing.
    await assert.rejects(
      alice.read(0, 4096),
      (e: unknown) =>
        e instanceof SheepdogError && e.code === ResultCode.NO_OBJ &&
        /^Cannot read object [0-9a-f]{16}: no node present holds a copy \(asked .*shepherd info -t recovery/
          .test(e.message),
    );
    // Nothing was made of zeros: the working VDI still reads the snapshot's object, and once it
    // is back the write goes through with the snapshot's bytes around it.
    await sheep.store.create(sourceOid, data, 0, { size: 4 * MiB, version: 1 });
    await alice.write(4096, new Uint8Array([7]));
    const head = await VdiIo.open(client, "alice");
    const want = first.slice();
    want[4096] = 7;
    assert.deepEqual(await head.read(0, MiB), want);
  });
});

Deno.test("a short read is answered at once from this node's own copy, else left to the gateway", async () => {
  const cluster = await TestCluster.start({ nodes: 2, copies: 1 });
  try {
    await cluster.admin(0).createVdi({ name: "alice", sizeBytes: 128 * MiB });
    const sheep = cluster.node(0);
    const io = await VdiIo.open(sheep.localAccess, "alice");
    // 4 KiB in each of the first 16 objects: both nodes hold some (all on one: 2 in 65,536).
    const data = randomBytes(16 * 4096);
    const at = (index: number) => index * 4 * MiB + 12_345;
    const bytesOf = (index: number) => data.subarray(index * 4096, (index + 1) * 4096);
    for (let index = 0; index < 16; index++) await io.write(at(index), bytesOf(index));
    const isMine = (index: number) =>
      sheep.gateway.targets(dataOid(io.inode.vdiId, index))[0]!.id === sheep.id;
    const indexes = [...Array(16).keys()];
    const mine = indexes.find(isMine);
    const theirs = indexes.find((index) => !isMine(index));
    assert.ok(mine !== undefined && theirs !== undefined, "both nodes hold some objects");
    for (const index of [mine, theirs]) {
      assert.deepEqual(await io.read(at(index), 4096), bytesOf(index)); // opens node 0's copy
    }
    assert.deepEqual(io.readNow(at(mine), 4096), bytesOf(mine), "this node's copy, at once");
    assert.equal(io.readNow(at(theirs), 4096), undefined, "the other node's copy");
    assert.deepEqual(io.readNow(100 * MiB, 4096), new Uint8Array(4096), "a hole is zeros");
    assert.equal(io.readNow(4 * MiB - 10, 20), undefined, "across two objects");
  } finally {
    await cluster.stop();
  }
});

Deno.test("a write to an object no node present holds says so, not 'no such object'", async () => {
  await withSheep(async ({ sheep, client }) => {
    await client.newVdi({ name: "bob", sizeBytes: 8 * MiB });
    const bob = await VdiIo.open(client, "bob");
    await bob.write(0, randomBytes(4096));
    const oid = dataOid(bob.inode.vdiId, 0);
    await sheep.store.remove(oid); // as if every node holding it were away
    await assert.rejects(
      bob.write(8192, new Uint8Array([1])),
      (e: unknown) =>
        e instanceof SheepdogError && e.code === ResultCode.NO_OBJ &&
        /^Cannot write object [0-9a-f]{16}: no node present holds a copy \(asked /.test(e.message),
    );
  });
});
