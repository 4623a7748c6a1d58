// Goal: a cluster never serves wrong bytes and its copies never stay apart: a sheep that comes
// back serves the new data, a rotten copy is served from a good one and repaired, a write that
// fails on one replica leaves every copy equal, and a hostile peer request cannot hurt a sheep.
// Method: in-process clusters on loopback; faults injected into one node's store or files; every
// node's copies checked (bytes and version/digest), not only the one that wrote.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { TestCluster, waitFor } from "./cluster_harness.ts";
import { randomBytes, withSheep } from "./harness.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { targetsOf } from "../core/cluster/view.ts";
import { isResult, ResultCode, SheepdogError } from "../core/errors.ts";
import { isDataOid, type Oid, oidToHex } from "../core/vdi/oid.ts";
import type { Sheep } from "../net/sheep/sheep.ts";
import { requestHeader } from "../net/object/client.ts";
import { Opcode } from "../net/object/ops.ts";
import { ObjectClient } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";

const MiB = 1 << 20;

/** Every object is on all its targets, and every copy has the same version, digest and bytes. */
async function assertCopiesAgree(nodes: Sheep[], copies: number): Promise<number> {
  const view = nodes[0]!.view;
  const holders = new Map<Oid, Sheep[]>();
  for (const sheep of nodes) {
    for (const oid of await sheep.store.list()) {
      holders.set(oid, [...(holders.get(oid) ?? []), sheep]);
    }
  }
  for (const [oid, having] of holders) {
    const targets = targetsOf(view, oid, Math.min(copies, view.nodes.length)).map((n) => n.id);
    const ids = having.map((s) => s.id);
    for (const id of targets) assert.ok(ids.includes(id), `${oidToHex(oid)} missing on ${id}`);
    const metas = await Promise.all(having.map((s) => s.store.meta(oid)));
    const size = metas[0]!.size;
    const first = await having[0]!.store.read(oid, 0, size);
    for (let i = 1; i < having.length; i++) {
      assert.equal(metas[i]!.version, metas[0]!.version, `${oidToHex(oid)} versions differ`);
      assert.equal(metas[i]!.digest, metas[0]!.digest, `${oidToHex(oid)} digests differ`);
      assert.deepEqual(
        await having[i]!.store.read(oid, 0, size),
        first,
        `${oidToHex(oid)} differs`,
      );
    }
  }
  return holders.size;
}

function filled(length: number, byte: number): Uint8Array {
  return new Uint8Array(length).fill(byte);
}

/**
 * A VDI "disk" of 32 MiB: `bytes` of 0xaa written and flushed; node 2 killed; 0xbb written over
 * them and flushed while it is down; node 2 started again and back in the view.
 */
async function writeWhileNodeDown(cluster: TestCluster, bytes: number): Promise<void> {
  const admin = cluster.admin(0);
  await admin.createVdi({ name: "disk", sizeBytes: 32 * MiB });
  const writer = await VdiIo.open(admin.client, "disk");
  await writer.write(0, filled(bytes, 0xaa));
  await writer.flush();
  await cluster.kill(2);
  await cluster.waitForView(2);
  await writer.write(0, filled(bytes, 0xbb));
  await writer.flush();
  await cluster.startNode(2);
  await cluster.waitForView(3);
}

Deno.test("integrity: a sheep that was killed serves the new data once back, and every copy agrees", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  try {
    await writeWhileNodeDown(cluster, 8 * MiB);
    await cluster.waitForRecovery();
    for (const index of [0, 1, 2]) {
      const io = await VdiIo.open(cluster.admin(index).client, "disk");
      assert.deepEqual(
        await io.read(0, 8 * MiB),
        filled(8 * MiB, 0xbb),
        `read through node ${index}`,
      );
    }
    assert.ok(await assertCopiesAgree(cluster.live(), 3) >= 3);
  } finally {
    await cluster.stop();
  }
});

Deno.test("integrity: objects a client pulls ahead of recovery count in its progress", async () => {
  // Recovery paced to a crawl while a client is busy: the client's reads pull (nearly) every
  // object the restarted node lacks before recovery's own queue reaches it.
  const cluster = await TestCluster.start({ nodes: 3, copies: 3, recoveryRate: MiB });
  try {
    await writeWhileNodeDown(cluster, 32 * MiB);
    const reader = await VdiIo.open(cluster.admin(2).client, "disk");
    const reads = Array.from({ length: 8 }, (_, i) => reader.read(i * 4 * MiB, 4 * MiB));
    for (const bytes of await Promise.all(reads)) assert.deepEqual(bytes, filled(4 * MiB, 0xbb));
    await cluster.waitForRecovery(); // which checks that done equals total on every node
    const status = cluster.node(2).recovery.status();
    assert.ok(status.total >= 8, `${status.total} objects to recover`);
    assert.equal(status.done, status.total);
  } finally {
    await cluster.stop();
  }
});

for (const checksumWorkers of [0, 1]) {
  const where = checksumWorkers ? " (found by a checksum worker)" : "";
  Deno.test(`integrity: a flipped byte in one copy is served from another and the copy is repaired${where}`, async () => {
    const warnings: string[] = [];
    const quiet = () => {};
    const logger = (index: number) => ({
      debug: quiet,
      info: quiet,
      warn: index === 1 ? (line: string) => warnings.push(line) : quiet,
      error: quiet,
    });
    const cluster = await TestCluster.start({ nodes: 3, copies: 3, checksumWorkers, logger });
    try {
      const admin = cluster.admin(0);
      await admin.createVdi({ name: "disk", sizeBytes: 16 * MiB });
      const data = randomBytes(8 * MiB);
      const writer = await VdiIo.open(admin.client, "disk");
      await writer.write(0, data);
      await writer.flush();
      const victim = cluster.node(1);
      const oid = (await victim.store.list()).find(isDataOid)!;
      const file = path.join(victim.store.objectDir, oidToHex(oid));
      const handle = await fsp.open(file, "r+");
      const position = 3 * 4096 + 5;
      const byte = new Uint8Array(1);
      await handle.read(byte, 0, 1, position);
      byte[0] = byte[0]! ^ 0xff;
      await handle.write(byte, 0, 1, position);
      await handle.close();

      const io = await VdiIo.open(cluster.admin(1).client, "disk");
      assert.deepEqual(await io.read(0, 8 * MiB), data, "the right bytes, from a good copy");
      await waitFor("the rotten copy to be repaired", () => victim.repairs > 0);
      await waitFor(
        "the copy to verify",
        async () => (await victim.store.verify(oid)).length === 0,
      );
      assert.ok(victim.store.health().checksumErrors > 0, "the mismatch is counted");
      assert.ok(
        warnings.some((line) => line.startsWith(`repaired object ${oidToHex(oid)}`)),
        "the repair is logged",
      );
      await assertCopiesAgree(cluster.live(), 3);
      if (checksumWorkers) {
        const stats = victim.checksumWorkers!.stats;
        assert.ok(stats.answered > 0 && stats.fallbacks === 0, JSON.stringify(stats));
      }
    } finally {
      await cluster.stop();
    }
    for (const sheep of cluster.sheep) {
      assert.equal(sheep?.checksumWorkers?.stats.running ?? 0, 0, "stopping ends the workers");
    }
  });
}

Deno.test("integrity: with one copy, a rotten block is an I/O error, never wrong bytes", async () => {
  await withSheep(async ({ sheep, client }) => {
    await client.newVdi({ name: "solo", sizeBytes: 16 * MiB });
    const io = await VdiIo.open(client, "solo");
    await io.write(0, filled(8 * MiB, 0x5a));
    await io.flush();
    const oid = (await sheep.store.list()).find(isDataOid)!;
    const file = path.join(sheep.store.objectDir, oidToHex(oid));
    const handle = await fsp.open(file, "r+");
    await handle.write(new Uint8Array([0x00]), 0, 1, 4096 * 7);
    await handle.close();
    const first = oid & 0xffffffffn; // data index of the rotten object
    const start = Number(first) * 4 * MiB;
    await assert.rejects(
      io.read(start, 4 * MiB),
      (error) => isResult(error, ResultCode.EIO),
    );
    // The other object still reads.
    const other = start === 0 ? 4 * MiB : 0;
    assert.deepEqual(await io.read(other, 4 * MiB), filled(4 * MiB, 0x5a));
  }, { copies: 1 });
});

Deno.test("integrity: a write that fails on one replica is repaired there before it is acknowledged", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  try {
    const admin = cluster.admin(0);
    await admin.createVdi({ name: "disk", sizeBytes: 16 * MiB });
    const io = await VdiIo.open(admin.client, "disk");
    await io.write(0, filled(4 * MiB, 0x11));
    await io.flush();
    const flaky = cluster.node(2);
    const realWrite = flaky.store.write.bind(flaky.store);
    let failures = 0;
    flaky.store.write = (...args) => {
      if (failures++ === 0) return Promise.reject(new SheepdogError(ResultCode.EIO, "injected"));
      return realWrite(...args);
    };
    await io.write(4096, filled(4096, 0x22));
    assert.equal(failures, 1, "the write reached the flaky replica once");
    await io.flush();
    await assertCopiesAgree(cluster.live(), 3);
    const back = await (await VdiIo.open(cluster.admin(2).client, "disk")).read(4096, 4096);
    assert.deepEqual(back, filled(4096, 0x22));
  } finally {
    await cluster.stop();
  }
});

Deno.test("integrity: a write a full disk refuses is rolled back on the other copies: all keep the old bytes", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  try {
    const admin = cluster.admin(0);
    await admin.createVdi({ name: "disk", sizeBytes: 16 * MiB });
    const io = await VdiIo.open(admin.client, "disk");
    await io.write(0, filled(4 * MiB, 0x33));
    await io.flush();
    const full = cluster.node(2);
    const store = full.store;
    const realWrite = store.write.bind(store);
    const realCreate = store.create.bind(store);
    const noSpace = () => Promise.reject(new SheepdogError(ResultCode.NO_SPACE, "disk full"));
    store.write = noSpace;
    store.create = noSpace;
    await assert.rejects(
      io.write(8192, filled(4096, 0x44)),
      (e) => isResult(e, ResultCode.NO_SPACE),
    );
    // Every node still holds the object, one value everywhere: the refused write did not land.
    await assertCopiesAgree(cluster.live(), 3);
    for (const i of [0, 1, 2]) {
      const bytes = await (await VdiIo.open(cluster.admin(i).client, "disk")).read(8192, 4096);
      assert.deepEqual(bytes, filled(4096, 0x33), `read through node ${i}`);
    }
    store.write = realWrite;
    store.create = realCreate;
    // Space is back: writes land everywhere again.
    await io.write(8192, filled(4096, 0x55));
    await io.flush();
    await assertCopiesAgree(cluster.live(), 3);
    const back = await (await VdiIo.open(cluster.admin(2).client, "disk")).read(8192, 4096);
    assert.deepEqual(back, filled(4096, 0x55));
  } finally {
    await cluster.stop();
  }
});

Deno.test("integrity: a copy a full disk refused is restored once the disk has room, without a view change", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  try {
    const admin = cluster.admin(0);
    await admin.createVdi({ name: "disk", sizeBytes: 16 * MiB });
    const io = await VdiIo.open(admin.client, "disk");
    const full = cluster.node(2).store;
    const realCreate = full.create.bind(full);
    full.create = () => Promise.reject(new SheepdogError(ResultCode.NO_SPACE, "disk full"));
    // A new object: node 2 cannot create its copy, so the object has two of its three copies and
    // the client is told the disk is full.
    await assert.rejects(
      io.write(4 * MiB, filled(4096, 0x66)),
      (e) => isResult(e, ResultCode.NO_SPACE),
    );
    const epoch = cluster.node(0).view.epoch;
    const oid = (await cluster.node(0).store.list()).find((o) =>
      isDataOid(o) && (o & 0xffffffffn) === 1n
    )!;
    assert.ok(oid !== undefined, "the object is stored on node 0");
    assert.equal(await full.meta(oid), undefined, "no copy on the full node");
    full.create = realCreate; // room again
    await waitFor(
      "the refused copy to be restored",
      async () => (await full.meta(oid)) !== undefined,
    );
    assert.equal(cluster.node(0).view.epoch, epoch, "no view change did it");
    assert.equal(cluster.node(0).gateway.restoresPending, 0);
    await assertCopiesAgree(cluster.live(), 3);
    assert.deepEqual(await full.read(oid, 0, 4096), filled(4096, 0x66));
    // The client, told its write failed, writes again: it lands, and reads back through node 2.
    await io.write(4 * MiB, filled(4096, 0x77));
    await io.flush();
    await assertCopiesAgree(cluster.live(), 3);
    const back = await (await VdiIo.open(cluster.admin(2).client, "disk")).read(4 * MiB, 4096);
    assert.deepEqual(back, filled(4096, 0x77));
  } finally {
    await cluster.stop();
  }
});

Deno.test("integrity: a peer read of 2^31 bytes, or past the object, is refused and the sheep serves on", async () => {
  await withSheep(async ({ sheep, client }) => {
    await client.newVdi({ name: "x", sizeBytes: 8 * MiB });
    const raw = new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: sheep.port }));
    try {
      for (const [offset, length] of [[0, 2 ** 31], [4_198_968 - 10, 20], [2 ** 31, 1]]) {
        const header = requestHeader(Opcode.READ_PEER, { internal: true });
        header.oid = 0x8000000000000000n | (BigInt(sheep.registry.live()[0]!.vdiId) << 32n);
        header.offset = offset!;
        header.dataLength = length!;
        const response = await raw.transport.request(header);
        assert.equal(response.header.result, ResultCode.INVALID_PARMS, `${offset}+${length}`);
      }
    } finally {
      await raw.close();
    }
    const io = await VdiIo.open(client, "x");
    await io.write(0, filled(4096, 1));
    assert.deepEqual(await io.read(0, 4096), filled(4096, 1));
  });
});

Deno.test("integrity: VDI changes from every node at once are serialised; every inode says what the registry says", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 2 });
  try {
    await Promise.all([0, 1, 2].map(async (i) => {
      const admin = cluster.admin(i);
      for (let k = 0; k < 3; k++) {
        await admin.createVdi({ name: `v${i}-${k}`, sizeBytes: 8 * MiB });
        await admin.snapshot(`v${i}-${k}`, `s${k}`);
      }
    }));
    const node = cluster.node(0);
    const headers = node.registry.live();
    assert.equal(headers.length, 18, "9 working VDIs and 9 snapshots");
    for (const header of headers) {
      const inode = await node.vdis.readInode(header.vdiId);
      assert.equal(inode.name, header.name, `inode ${header.vdiId.toString(16)}`);
      assert.equal(inode.snapId, header.snapId);
      assert.equal(inode.snapCtime, header.snapCtime);
    }
    for (const other of cluster.live()) {
      assert.equal(other.locks.size, 0, "the admin lock is released");
    }
  } finally {
    await cluster.stop();
  }
});
