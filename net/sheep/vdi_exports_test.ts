import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { TestCluster, waitFor } from "../../tests/cluster_harness.ts";
import { randomBytes, withSheep } from "../../tests/harness.ts";
import { AdminService } from "../admin/admin_service.ts";
import { type BlockExport, ExportError, NBD_EINVAL, NBD_EPERM, NbdIoError } from "../nbd/mod.ts";
import { isVdiOid } from "../../core/vdi/oid.ts";
import type { Message } from "../object/header.ts";
import { Opcode } from "../object/ops.ts";
import type { Sheep } from "./sheep.ts";
import { VdiExportProvider } from "./vdi_exports.ts";

const MiB = 1 << 20;
const OBJ = 4 * MiB;

function isExportError(kind: string, text?: RegExp): (e: unknown) => boolean {
  return (e) => e instanceof ExportError && e.kind === kind && (text?.test(e.message) ?? true);
}

function isNbdError(errno: number): (e: unknown) => boolean {
  return (e) => e instanceof NbdIoError && e.errno === errno;
}

/** Extents as [length, allocated] pairs, neighbours merged. */
async function map(exp: BlockExport, offset = 0, length = exp.sizeBytes) {
  const runs: [number, boolean][] = [];
  for (const e of await exp.blockStatus(offset, length)) {
    assert.equal(e.hole, e.zero);
    const last = runs[runs.length - 1];
    if (last && last[1] === !e.hole) last[0] += e.length;
    else runs.push([e.length, !e.hole]);
  }
  return runs;
}

Deno.test("VdiExportProvider lists VDIs writable and snapshots read-only", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "alpha", sizeBytes: 16 * MiB });
    await admin.createVdi({ name: "beta", sizeBytes: 8 * MiB });
    await admin.snapshot("alpha", "monday");
    await admin.snapshot("alpha");
    const provider = new VdiExportProvider(sheep);
    const list = (await provider.list()).sort((a, b) => a.name.localeCompare(b.name));
    assert.deepEqual(list.map((e) => [e.name, e.sizeBytes, e.readOnly, e.description]), [
      ["alpha", 16 * MiB, false, "VDI"],
      ["alpha:1", 16 * MiB, true, "snapshot 'monday' of alpha"],
      ["alpha:2", 16 * MiB, true, "snapshot 2 of alpha"],
      ["beta", 8 * MiB, false, "VDI"],
    ]);
    const byTag = await provider.open("alpha:monday", { client: "127.0.0.1:1" });
    const byId = await provider.open("alpha:1", { client: "127.0.0.1:2" });
    assert.ok(byTag.readOnly && byId.readOnly);
    await assert.rejects(
      byTag.write(0, new Uint8Array(512), { fua: false }),
      isNbdError(NBD_EPERM),
    );
    await assert.rejects(byTag.trim(0, OBJ), isNbdError(NBD_EPERM));
    await byTag.close();
    await byId.close();
    assert.equal(sheep.locks.size, 0, "read-only opens take no lock");
    for (const name of ["gamma", "alpha:7", "alpha:friday", "alpha:", "beta:1"]) {
      await assert.rejects(provider.open(name, { client: "x" }), isExportError("unknown"), name);
    }
  });
});

Deno.test("VdiExportProvider allows one writer per VDI and records it in sheep.locks", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    const vid = await admin.createVdi({ name: "vm1", sizeBytes: 8 * MiB });
    const provider = new VdiExportProvider(sheep);
    const first = await provider.open("vm1", { client: "10.0.0.5:40122" });
    const lock = sheep.locks.get(vid);
    assert.equal(lock?.client, "10.0.0.5:40122");
    assert.equal(lock?.node, sheep.id);
    // A second client gets the VDI read-only (NBD cannot say whether it means to write).
    const reader = await provider.open("vm1", { client: "10.0.0.6:5000" });
    assert.equal(reader.readOnly, true);
    await reader.close();
    // Another provider of the same sheep (say, the Unix socket) sees the lock too.
    const unix = await new VdiExportProvider(sheep).open("vm1", { client: "unix" });
    assert.equal(unix.readOnly, true);
    await unix.close();
    assert.equal(sheep.locks.get(vid)?.client, "10.0.0.5:40122", "the writer keeps its lock");
    // Snapshots stay readable meanwhile.
    await admin.snapshot("vm1", "t");
    const snap = await provider.open("vm1:t", { client: "10.0.0.6:5001" });
    await snap.close();
    assert.equal(
      (await provider.list()).find((e) => e.name === "vm1")?.description,
      "VDI, attached by 10.0.0.5:40122",
    );
    await first.close();
    assert.equal(sheep.locks.size, 0);
    const second = await provider.open("vm1", { client: "10.0.0.6:5002" });
    const shared = new VdiExportProvider(sheep, { forceShared: true });
    const third = await shared.open("vm1", { client: "10.0.0.7:1" });
    await third.close();
    assert.equal(
      [...sheep.locks.values()][0]?.client,
      "10.0.0.6:5002",
      "the forced writer leaves the lock alone",
    );
    await second.close();
    assert.equal(sheep.locks.size, 0);
    // Forced sharing in one provider: the lock passes to the writer that stays.
    const a = await shared.open("vm1", { client: "10.0.0.8:1" });
    const b = await shared.open("vm1", { client: "10.0.0.8:2" });
    assert.equal([...sheep.locks.values()][0]?.client, "10.0.0.8:1");
    await a.close();
    assert.equal([...sheep.locks.values()][0]?.client, "10.0.0.8:2");
    await b.close();
    assert.equal(sheep.locks.size, 0);
    // Racing opens: exactly one gets the VDI writable, the other read-only.
    const racers = await Promise.all([
      provider.open("vm1", { client: "a:1" }),
      provider.open("vm1", { client: "b:2" }),
    ]);
    assert.deepEqual(racers.map((r) => r.readOnly).sort(), [false, true]);
    for (const r of racers) await r.close();
    assert.equal(sheep.locks.size, 0);
  });
});

Deno.test("VdiExportProvider moves the lock to the new working VDI after a snapshot", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    const oldVid = await admin.createVdi({ name: "vm1", sizeBytes: 8 * MiB });
    const provider = new VdiExportProvider(sheep);
    const exp = await provider.open("vm1", { client: "10.0.0.5:40122" });
    await exp.write(0, new Uint8Array(4096).fill(1), { fua: false });
    await admin.snapshot("vm1", "s1");
    const newVid = sheep.registry.lookup("vm1").vdiId;
    assert.notEqual(newVid, oldVid);
    assert.deepEqual([...sheep.locks.keys()], [newVid]);
    const rows = await admin.vdis();
    assert.equal(rows.find((r) => r.vid === newVid)?.attachedTo, "10.0.0.5:40122");
    assert.equal(rows.find((r) => r.vid === oldVid)?.attachedTo, undefined);
    await assert.rejects(admin.deleteVdi("vm1"), /attached by 10\.0\.0\.5/);
    await admin.deleteVdi("vm1:s1"); // the snapshot is not attached
    // Writes after the snapshot land in the working VDI.
    await exp.write(4096, new Uint8Array(4096).fill(2), { fua: true });
    await exp.close();
    assert.equal(sheep.locks.size, 0);
    const again = await provider.open("vm1", { client: "x:1" });
    const data = await again.read(0, 8192);
    assert.deepEqual(data, new Uint8Array(8192).fill(1, 0, 4096).fill(2, 4096));
    await again.close();
  });
});

Deno.test("VdiExport: trim releases whole objects, write zeroes allocates nothing", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "d", sizeBytes: 16 * MiB });
    const exp = await new VdiExportProvider(sheep).open("d", { client: "c:1" });
    assert.deepEqual(await map(exp), [[16 * MiB, false]]);
    await exp.write(OBJ - 100, randomBytes(OBJ + 200), { fua: false }); // objects 0, 1, 2
    assert.deepEqual(await map(exp), [[3 * OBJ, true], [OBJ, false]]);
    // A partial trim keeps the object; a whole one becomes a hole.
    await exp.trim(0, OBJ + 4096);
    assert.deepEqual(await map(exp), [[OBJ, false], [2 * OBJ, true], [OBJ, false]]);
    // Zeroes: whole object 1 becomes a hole, partial object 2 reads zeros but stays allocated.
    await exp.writeZeroes(OBJ, OBJ + 4096, { fua: true, noHole: false });
    assert.deepEqual(await map(exp), [[2 * OBJ, false], [OBJ, true], [OBJ, false]]);
    assert.deepEqual(await exp.read(2 * OBJ, 4096), new Uint8Array(4096));
    // Zeroes over unallocated space allocate nothing; with NO_HOLE they do.
    await exp.writeZeroes(3 * OBJ, 100, { fua: false, noHole: false });
    assert.deepEqual(await map(exp), [[2 * OBJ, false], [OBJ, true], [OBJ, false]]);
    await exp.writeZeroes(3 * OBJ + 5, 3 * MiB, { fua: false, noHole: true });
    assert.deepEqual(await map(exp), [[2 * OBJ, false], [2 * OBJ, true]]);
    assert.deepEqual(await exp.read(3 * OBJ, OBJ), new Uint8Array(OBJ));
    await assert.rejects(exp.read(16 * MiB - 1, 2), isNbdError(NBD_EINVAL));
    await exp.close();
  });
});

Deno.test("VdiExport: concurrent writes into one object being created all land", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "c", sizeBytes: 3 * OBJ });
    const exp = await new VdiExportProvider(sheep).open("c", { client: "c:1" });
    const data = randomBytes(3 * OBJ);
    // 64 KiB blocks of objects 0..2 in a shuffled order, all in flight at once.
    const blocks = Array.from({ length: (3 * OBJ) / 65536 }, (_, i) => i * 65536);
    blocks.sort(() => Math.random() - 0.5);
    await Promise.all(
      blocks.map((o) => exp.write(o, data.subarray(o, o + 65536), { fua: o % 3 === 0 })),
    );
    assert.deepEqual(await exp.read(0, 3 * OBJ), data);
    await exp.close();
    const reopened = await new VdiExportProvider(sheep).open("c", { client: "c:2" });
    assert.deepEqual(
      await reopened.read(0, 3 * OBJ),
      data,
      "the table on disk references every write",
    );
    await reopened.close();
  });
});

Deno.test("VdiExport: a snapshot taken under concurrent writes loses no acknowledged write", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "s", sizeBytes: 4 * OBJ });
    const exp = await new VdiExportProvider(sheep).open("s", { client: "c:1" });
    const base = randomBytes(OBJ);
    await exp.write(0, base, { fua: false }); // object 0 exists; objects 1..3 do not
    const data = randomBytes(4 * OBJ);
    const block = 32768;
    const offsets = Array.from({ length: (4 * OBJ) / block }, (_, i) => i * block);
    offsets.sort(() => Math.random() - 0.5);
    const acked = new Set<number>();
    let next = 0;
    const worker = async () => {
      while (next < offsets.length) {
        const o = offsets[next++]!;
        await exp.write(o, data.subarray(o, o + block), { fua: false });
        acked.add(o);
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    while (acked.size < offsets.length / 4) await new Promise((r) => setTimeout(r, 1));
    const before = new Set(acked);
    await admin.snapshot("s", "mid");
    await Promise.all(workers);
    // The working VDI has every write.
    assert.deepEqual(await exp.read(0, 4 * OBJ), data);
    await exp.close();
    const reopened = await new VdiExportProvider(sheep).open("s", { client: "c:2" });
    assert.deepEqual(await reopened.read(0, 4 * OBJ), data);
    await reopened.close();
    // The snapshot has every write acknowledged before it was asked for, else the old bytes.
    const snap = await new VdiExportProvider(sheep).open("s:mid", { client: "c:3" });
    const frozen = await snap.read(0, 4 * OBJ);
    const old = new Uint8Array(4 * OBJ);
    old.set(base);
    for (const o of offsets) {
      const got = frozen.subarray(o, o + block);
      const isNew = Buffer.from(got).equals(data.subarray(o, o + block));
      const isOld = Buffer.from(got).equals(old.subarray(o, o + block));
      assert.ok(isNew || isOld, `snapshot block at ${o} is torn`);
      if (before.has(o)) assert.ok(isNew, `snapshot lost the write at ${o}`);
    }
    await snap.close();
  });
});

/**
 * Slows the sheep's handling of some requests (the export reaches it in-process): the request
 * waits before it is handled, or with `reply` the reply waits after it was.
 */
function slowDown(
  sheep: Sheep,
  ms: (request: Message) => number,
  options: { reply?: boolean } = {},
): () => void {
  const handle = sheep.handle;
  const sleep = (delay: number) => new Promise((resolve) => setTimeout(resolve, delay));
  sheep.handle = async (request, peer) => {
    const delay = ms(request);
    if (delay > 0 && !options.reply) await sleep(delay);
    const reply = await handle.call(sheep, request, peer);
    if (delay > 0 && options.reply) await sleep(delay);
    return reply;
  };
  return () => {
    sheep.handle = handle;
  };
}

Deno.test("VdiExport: a create still in flight when a snapshot lands is not lost", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "v", sizeBytes: 3 * OBJ });
    const exp = await new VdiExportProvider(sheep).open("v", { client: "c:1" });
    await exp.write(0, new Uint8Array(4096).fill(1), { fua: false });
    const restore = slowDown(
      sheep,
      (r) => r.header.opcode === Opcode.CREATE_AND_WRITE_OBJ ? 60 : 0,
      { reply: true },
    );
    try {
      // Object 1 is being created (slowly) when the snapshot lands; meanwhile a write to
      // object 0 makes the export follow the VDI to its new vid.
      const creating = exp.write(OBJ + 512, new Uint8Array(4096).fill(2), { fua: false });
      await new Promise((resolve) => setTimeout(resolve, 5));
      await admin.snapshot("v");
      await exp.write(8192, new Uint8Array(4096).fill(3), { fua: false });
      await creating;
    } finally {
      restore();
    }
    await exp.close();
    const again = await new VdiExportProvider(sheep).open("v", { client: "c:2" });
    assert.deepEqual(await again.read(OBJ + 512, 4096), new Uint8Array(4096).fill(2));
    assert.deepEqual(await again.read(0, 4096), new Uint8Array(4096).fill(1));
    assert.deepEqual(await again.read(8192, 4096), new Uint8Array(4096).fill(3));
    await again.close();
  });
});

Deno.test("VdiExport: a write into an object being created is acknowledged after its table update", async () => {
  await withSheep(async ({ sheep }) => {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "v", sizeBytes: 3 * OBJ });
    const exp = await new VdiExportProvider(sheep).open("v", { client: "c:1" });
    // Table updates (writes to the inode object) are slow.
    const restore = slowDown(
      sheep,
      (r) => r.header.opcode === Opcode.WRITE_OBJ && isVdiOid(r.header.oid) ? 80 : 0,
    );
    try {
      const first = exp.write(OBJ, new Uint8Array(4096).fill(1), { fua: false });
      const second = exp.write(OBJ + 8192, new Uint8Array(4096).fill(2), { fua: false });
      await second;
      // Once the second write is acknowledged, a snapshot must see both writes.
      await admin.snapshot("v", "after-second");
      await first;
    } finally {
      restore();
    }
    await exp.close();
    for (const name of ["v", "v:after-second"]) {
      const check = await new VdiExportProvider(sheep).open(name, { client: "c:2" });
      assert.deepEqual(await check.read(OBJ, 4096), new Uint8Array(4096).fill(1), name);
      assert.deepEqual(await check.read(OBJ + 8192, 4096), new Uint8Array(4096).fill(2), name);
      await check.close();
    }
  });
});

Deno.test("VdiExportProvider: a client that leaves during a minority is released once the partition heals", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 2 });
  try {
    await cluster.admin(1).createVdi({ name: "vm", sizeBytes: 8 * MiB });
    await waitFor("the VDI on node 0", () => cluster.node(0).registry.live().length === 1);
    await cluster.kill(2);
    await cluster.waitForView(2);
    const exp = await new VdiExportProvider(cluster.node(0)).open("vm", { client: "10.0.0.5:1" });
    const vid = cluster.node(0).registry.lookup("vm").vdiId;
    await waitFor("the lock on both", () => cluster.live().every((s) => s.locks.has(vid)));
    // Two nodes cut apart: neither side is a majority, so no view drops the attachment.
    cluster.partition([0], [1]);
    await waitFor(
      "both in the minority",
      () => cluster.live().every((s) => s.status === "minority"),
    );
    await exp.close(); // the release cannot be proposed now
    assert.ok(cluster.node(0).locks.has(vid), "still attached while nothing can change");
    cluster.heal();
    await waitFor(
      "the lock released on both",
      () => cluster.live().every((s) => !s.locks.has(vid)),
    );
  } finally {
    await cluster.stop();
  }
});
