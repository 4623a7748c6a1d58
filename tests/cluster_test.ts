// Goal: several sheep behave as one cluster: objects land on `copies` distinct nodes, the loss
// of nodes costs no data, redundancy comes back by itself, and a full restart keeps everything.
// Method: in-process clusters on loopback (unicast seeds, 1.5 s failure detection); random data
// through VdiIo over TCP; replicas checked file by file in every node's store.
import assert from "node:assert/strict";
import { TestCluster, waitFor } from "./cluster_harness.ts";
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

async function writeVdi(
  cluster: TestCluster,
  name: string,
  bytes: number,
  via = 0,
): Promise<Uint8Array> {
  const admin = cluster.admin(via);
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
    // Right after the loss, before anyone noticed: a write stalls until the new view, then
    // lands; the client never sees an error.
    const io = await VdiIo.open(cluster.admin(0).client, "gamma");
    const late = randomBytes(64 * 1024);
    await io.write(20 * MiB, late);
    assert.deepEqual(await io.read(20 * MiB, late.length), late);
    await cluster.waitForView(3);
    assert.deepEqual(await readVdi(cluster, 0, "gamma", data.length), data);
    await cluster.waitForRecovery();
    await checkReplicas(cluster.live(), 3);
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: stop all, restart all, everything is readable", async () => {
  // Four nodes, two copies: no node holds every inode, so each must learn the VDIs it does not
  // store from the others when the cluster comes back.
  const cluster = await TestCluster.start({ nodes: 4, copies: 2 });
  try {
    const names = ["delta", "epsilon", "zeta", "eta", "theta"];
    const data = new Map<string, Uint8Array>();
    for (const name of names) data.set(name, await writeVdi(cluster, name, 2 * MiB));
    for (let i = 0; i < 4; i++) await cluster.kill(i);
    await Promise.all([0, 1, 2, 3].map((i) => cluster.startNode(i)));
    await cluster.waitForView(4, 30_000);
    for (const [index, sheep] of cluster.live().entries()) {
      assert.deepEqual(sheep.registry.live().map((h) => h.name).sort(), [...names].sort());
      const name = names[index]!;
      assert.deepEqual(await readVdi(cluster, index, name, 2 * MiB), data.get(name));
    }
    const io = await VdiIo.open(cluster.admin(1).client, "delta");
    await io.write(0, new Uint8Array([1, 2, 3]));
    assert.deepEqual(await io.read(0, 3), new Uint8Array([1, 2, 3]));
    await cluster.admin(2).createVdi({ name: "after", sizeBytes: MiB });
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: fewer zones than copies keeps serving, reduced; --strict refuses writes", async () => {
  const loose = await TestCluster.start({ nodes: 2, copies: 3 });
  try {
    const data = await writeVdi(loose, "loose", 2 * MiB);
    assert.deepEqual(await readVdi(loose, 1, "loose", data.length), data);
    const info = await loose.admin(1).clusterInfo();
    assert.equal(info.redundancyReduced, true);
    assert.equal(info.zones, 2);
  } finally {
    await loose.stop();
  }
  const strict = await TestCluster.start({ nodes: 2, copies: 3, strict: true });
  try {
    const admin = strict.admin(0);
    await admin.createVdi({ name: "strict", sizeBytes: 8 * MiB });
    const io = await VdiIo.open(admin.client, "strict");
    await assert.rejects(io.write(0, new Uint8Array(512)), /strict cluster needs 3/);
  } finally {
    await strict.stop();
  }
});

Deno.test("cluster: a dog witness is the third vote of a two-sheep cluster", async () => {
  const { GroupDriver } = await import("../net/group/mod.ts");
  const { freePort } = await import("./cluster_harness.ts");
  const dogPort = await freePort();
  const views: number[] = [];
  const { generateKey } = await import("../net/auth/cluster_key.ts");
  const { DatagramSeal } = await import("../net/auth/datagram_seal.ts");
  const key = generateKey();
  const dog = new GroupDriver({
    address: `127.0.0.1:${dogPort}`,
    witness: true,
    seal: new DatagramSeal(key),
    persist: () => Promise.resolve(),
    multicast: false,
    timing: { failureTimeoutTicks: 15, heartbeatTicks: 1, settleTicks: 5 },
    onView: (view) => views.push(view.members.length),
  });
  await dog.start();
  const cluster = await TestCluster.start({
    nodes: 2,
    copies: 2,
    extraSeeds: [`127.0.0.1:${dogPort}`],
    key,
  });
  try {
    await waitFor("the dog in the view", () => cluster.node(0).member!.members.length === 3);
    const data = await writeVdi(cluster, "pair", 3 * MiB);
    await cluster.kill(1);
    // One sheep plus the witness are a majority of three: the survivor installs a new view.
    await cluster.waitForView(1);
    assert.equal(cluster.node(0).status, "running");
    assert.deepEqual(await readVdi(cluster, 0, "pair", data.length), data);
    const io = await VdiIo.open(cluster.admin(0).client, "pair");
    await io.write(0, new Uint8Array([9, 9]));
    assert.ok(views.length > 0);
  } finally {
    await cluster.stop();
    await dog.stop();
  }
});

Deno.test("cluster: partition 2|3: the 2-side refuses writes, the 3-side serves; healed, all converge", async () => {
  const cluster = await TestCluster.start({ nodes: 5, copies: 3 });
  try {
    const before = await writeVdi(cluster, "split", 6 * MiB);
    const epoch = cluster.node(0).view.epoch;
    // Opened before the split: the inode may have no copy on the minority side (1 in 10 layouts).
    const minority = await VdiIo.open(cluster.admin(0).client, "split");
    cluster.partition([0, 1], [2, 3, 4]);
    await waitFor(
      "the majority's new view",
      () =>
        [2, 3, 4].every((i) =>
          cluster.node(i).view.nodes.length === 3 && cluster.node(i).view.epoch > epoch
        ),
    );
    await waitFor(
      "the minority to know it",
      () => [0, 1].every((i) => cluster.node(i).status === "minority"),
    );
    // The minority never diverges: writes and VDI changes are refused with a clear error.
    await assert.rejects(minority.write(0, new Uint8Array([1])), /cut off from the majority/);
    await assert.rejects(
      cluster.admin(1).createVdi({ name: "nope", sizeBytes: MiB }),
      /cut off from the majority/,
    );
    // The majority serves reads and writes.
    assert.deepEqual(await readVdi(cluster, 2, "split", before.length), before);
    const during = await writeVdi(cluster, "during", 3 * MiB, 2);
    cluster.heal();
    await cluster.waitForView(5, 30_000);
    await cluster.waitForRecovery();
    assert.ok(cluster.live().every((s) => s.status === "running"));
    await checkReplicas(cluster.live(), 3);
    assert.deepEqual(
      await readVdi(cluster, 0, "during", during.length),
      during,
      "the healed side caught up",
    );
    assert.deepEqual(await readVdi(cluster, 1, "split", before.length), before);
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: after a full stop it waits for the last epoch's nodes; recover force starts without them", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  try {
    const data = await writeVdi(cluster, "waiting", 4 * MiB);
    await Promise.all([0, 1, 2].map((i) => cluster.kill(i)));
    await Promise.all([0, 1].map((i) => cluster.startNode(i)));
    await new Promise((resolve) => setTimeout(resolve, 2500));
    for (const i of [0, 1]) assert.equal(cluster.node(i).status, "waiting-for-nodes");
    await assert.rejects(
      readVdi(cluster, 0, "waiting", 16),
      /Waiting for other nodes to join cluster/,
    );
    await cluster.admin(1).forceRecover();
    await cluster.waitForView(2);
    assert.deepEqual(await readVdi(cluster, 0, "waiting", data.length), data);
    assert.equal((await cluster.admin(0).clusterInfo()).status, "running");
  } finally {
    await cluster.stop();
  }
});

Deno.test("cluster: the epoch history is the cluster's, the same whichever node is asked", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 2 });
  try {
    await cluster.kill(2);
    await cluster.waitForView(2);
    await cluster.startNode(2);
    await cluster.waitForView(3);
    // Node 2 was away for an epoch its own log never saw.
    const own = (await cluster.node(2).member!.epochHistory()).map((r) => r.epoch);
    const asked = await Promise.all(
      [0, 1, 2].map(async (i) => (await cluster.admin(i).clusterInfo()).epochs.map((e) => e.epoch)),
    );
    assert.ok(asked[0]!.length > own.length, `node 2's own log ${own} misses an epoch`);
    assert.deepEqual(asked[1], asked[0]);
    assert.deepEqual(asked[2], asked[0], "the returning node reports the whole history");
    const newestFirst = [...asked[0]!].sort((a, b) => b - a);
    assert.deepEqual(asked[0], newestFirst);
  } finally {
    await cluster.stop();
  }
});
