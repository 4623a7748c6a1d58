// Goal: several sheep behave as one cluster: objects land on `copies` distinct nodes, the loss
// of nodes costs no data, redundancy comes back by itself, and a full restart keeps everything.
// Method: in-process clusters on loopback (unicast seeds, 1.5 s failure detection); random data
// through VdiIo over TCP; replicas checked file by file in every node's store.
import assert from "node:assert/strict";
import { TestCluster } from "./cluster_harness.ts";
import { randomBytes } from "./harness.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { targetsOf } from "../core/cluster/view.ts";
import type { Sheep } from "../net/sheep/sheep.ts";

const MiB = 1 << 20;

/** Every object is on exactly its targets, byte-identical. */
async function checkReplicas(nodes: Sheep[], copies: number): Promise<number> {
  const view = nodes[0]!.view;
  const holders = new Map<bigint, Sheep[]>();
  for (const sheep of nodes) {
    for (const oid of await sheep.store.list()) {
      holders.set(oid, [...(holders.get(oid) ?? []), sheep]);
    }
  }
  for (const [oid, having] of holders) {
    const targets = targetsOf(view, oid, Math.min(copies, view.nodes.length)).map((n) => n.id)
      .sort();
    const ids = having.map((s) => s.id).sort();
    for (const id of targets) assert.ok(ids.includes(id), `${oid.toString(16)} missing on ${id}`);
    const size = nodes[0]!.gateway.objectLimit(oid);
    const first = await having[0]!.store.read(oid, 0, size);
    for (const other of having.slice(1)) {
      assert.deepEqual(await other.store.read(oid, 0, size), first, `${oid.toString(16)} differs`);
    }
  }
  return holders.size;
}

async function writeVdi(cluster: TestCluster, name: string, bytes: number): Promise<Uint8Array> {
  const admin = cluster.admin(0);
  await admin.createVdi({ name, sizeBytes: 64 * MiB });
  const io = await VdiIo.open(admin.client, name);
  const data = randomBytes(bytes);
  await io.write(MiB + 17, data);
  await io.flush();
  return data;
}

async function readVdi(
  cluster: TestCluster,
  index: number,
  name: string,
  length: number,
): Promise<Uint8Array> {
  const io = await VdiIo.open(cluster.admin(index).client, name);
  return await io.read(MiB + 17, length);
}

Deno.test("cluster: 4 nodes, 3 copies: kill one, data stays, redundancy comes back; add one, it rebalances", async () => {
  const cluster = await TestCluster.start({ nodes: 4, copies: 3 });
  try {
    const data = await writeVdi(cluster, "alpha", 10 * MiB);
    const objects = await checkReplicas(cluster.live(), 3);
    assert.ok(objects >= 4);
    const epoch = cluster.node(1).view.epoch;
    await cluster.kill(3);
    assert.deepEqual(
      await readVdi(cluster, 1, "alpha", data.length),
      data,
      "reads survive the loss",
    );
    await cluster.waitForView(3);
    assert.ok(cluster.node(0).view.epoch > epoch);
    await cluster.waitForRecovery();
    await checkReplicas(cluster.live(), 3);
    // A write during the new epoch, then a fourth node joins again and data rebalances.
    const more = await writeVdi(cluster, "beta", 5 * MiB);
    await cluster.startNode(4);
    await cluster.waitForView(4);
    await cluster.waitForRecovery();
    assert.ok((await cluster.node(4).store.list()).length > 0, "the new node received objects");
    await checkReplicas(cluster.live(), 3);
    assert.deepEqual(await readVdi(cluster, 4, "alpha", data.length), data);
    assert.deepEqual(await readVdi(cluster, 4, "beta", more.length), more);
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: 5 nodes, 3 copies: two die at once, nothing is lost", async () => {
  const cluster = await TestCluster.start({ nodes: 5, copies: 3 });
  try {
    const data = await writeVdi(cluster, "gamma", 12 * MiB);
    await Promise.all([cluster.kill(1), cluster.kill(3)]);
    await cluster.waitForView(3);
    assert.deepEqual(await readVdi(cluster, 0, "gamma", data.length), data);
    await cluster.waitForRecovery();
    await checkReplicas(cluster.live(), 3);
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: stop all, restart all, everything is readable", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  try {
    const data = await writeVdi(cluster, "delta", 6 * MiB);
    for (let i = 0; i < 3; i++) await cluster.kill(i);
    await Promise.all([0, 1, 2].map((i) => cluster.startNode(i)));
    await cluster.waitForView(3, 30_000);
    assert.deepEqual(await readVdi(cluster, 2, "delta", data.length), data);
    const io = await VdiIo.open(cluster.admin(1).client, "delta");
    await io.write(0, new Uint8Array([1, 2, 3]));
    assert.deepEqual(await io.read(0, 3), new Uint8Array([1, 2, 3]));
  } finally {
    await cluster.stop();
  }
});
