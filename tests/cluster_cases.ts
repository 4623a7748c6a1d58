/**
 * The cluster tests every cluster driver must pass: several sheep behave as one cluster, objects
 * land on `copies` distinct nodes, the loss of nodes costs no data, redundancy comes back by
 * itself, a full restart keeps everything, and an NBD attachment is one cluster-wide lock.
 * tests/cluster_test.ts runs them on the built-in group, tests/cluster_etcd_test.ts on a real
 * three-member etcd; a case marked `builtinOnly` exercises the group itself.
 *
 * Method: in-process clusters on loopback (1.5 s failure detection); random data through VdiIo
 * over TCP; replicas checked file by file in every node's store.
 *
 * @module
 */
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { isDeepStrictEqual } from "node:util";
import { TestCluster, type TestClusterOptions, waitFor } from "./cluster_harness.ts";
import { randomBytes } from "./harness.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { targetsOf } from "../core/cluster/view.ts";
import { isVdiOid, oidToVid } from "../core/vdi/oid.ts";
import { FOUND_HEADERS_PER_EVENT } from "../core/limits.ts";
import type { Sheep } from "../net/sheep/sheep.ts";
import { silentLogger } from "../net/sheep/logger.ts";
import { VdiExportProvider } from "../net/sheep/vdi_exports.ts";
import { MemDisk } from "../core/store/mem_disk.ts";
import { readConfig } from "../net/sheep/cluster_config.ts";

/** Starts a test cluster on the driver under test. */
export type StartCluster = (options: TestClusterOptions) => Promise<TestCluster>;

export interface ClusterCase {
  readonly name: string;
  /** Tests the built-in group itself (a dog witness, sheep partitioned from each other). */
  readonly builtinOnly?: boolean;
  run(start: StartCluster): Promise<void>;
}

const MiB = 1 << 20;
/** Fresh clusters formatted at once by the first case (each takes about a second). */
const FORMAT_AT_ONCE_ROUNDS = 5;
const GiB = 1 << 30;

/**
 * Every object is on its targets, byte-identical. With `leftovers: "may be older"`, copies on
 * nodes that are not targets are not compared: after writes during a membership change, a purge
 * keeps an older leftover until its holders confirm the same digest (net/sheep/recovery.ts).
 */
export async function checkReplicas(
  nodes: Sheep[],
  copies: number,
  options: { leftovers?: "identical" | "may be older" } = {},
): Promise<number> {
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
    const compared = options.leftovers === "may be older"
      ? having.filter((s) => targets.includes(s.id))
      : having;
    const size = nodes[0]!.gateway.objectLimit(oid);
    const first = await compared[0]!.store.read(oid, 0, size);
    for (const other of compared.slice(1)) {
      // Not assert.deepEqual: its diff of two differing 4 MiB arrays takes minutes.
      const theirs = await other.store.read(oid, 0, size);
      const same = theirs.length === first.length && theirs.every((b, i) => b === first[i]);
      assert.ok(same, `${oid.toString(16)} differs between ${compared[0]!.id} and ${other.id}`);
    }
  }
  return holders.size;
}

export async function writeVdi(
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

export async function readVdi(
  cluster: TestCluster,
  index: number,
  name: string,
  length: number,
): Promise<Uint8Array> {
  const io = await VdiIo.open(cluster.admin(index).client, name);
  return await io.read(MiB + 17, length);
}

/** Creates VDIs `names` through node 0; returns those whose inode node 0 holds. */
async function createOnZero(cluster: TestCluster, names: string[], sizeBytes: number) {
  for (const name of names) await cluster.admin(0).createVdi({ name, sizeBytes });
  return (await cluster.node(0).store.list()).filter(isVdiOid)
    .map((oid) => cluster.node(0).registry.get(oidToVid(oid))!.name);
}

/**
 * Stops three nodes one by one, node 0 first, so that the last view is nodes 1 and 2; then
 * `beforeStart`, and starts nodes 1 and 2, which run without waiting for node 0.
 */
async function restartWithoutZero(cluster: TestCluster, beforeStart = async () => {}) {
  await cluster.kill(0);
  await cluster.waitForLapse([0]);
  await cluster.waitForView(2);
  for (const i of [1, 2]) await cluster.kill(i);
  await cluster.waitForLapse([1, 2]);
  await beforeStart();
  await Promise.all([1, 2].map((i) => cluster.startNode(i)));
  await cluster.waitForView(2, 30_000);
}

export const CLUSTER_CASES: ClusterCase[] = [
  {
    name:
      "a node back after the cluster was formatted again takes no part: erased VDIs stay erased",
    run: async (start) => {
      // Node 2 is away while the others format again (--force) and make a new VDI of an old
      // name (its vid, so its objects' oids, are the old one's). Before, node 2 came back with
      // its old config and store: the erased VDIs were listed again everywhere and its copies
      // were recovery's to take.
      const cluster = await start({ nodes: 3, copies: 2 });
      try {
        const old = await writeVdi(cluster, "vm", 3 * MiB);
        await writeVdi(cluster, "erased", 2 * MiB);
        const oldOids = (await cluster.node(2).store.list()).length;
        assert.ok(oldOids > 0, "node 2 holds copies of the old format");
        await cluster.kill(2);
        await cluster.waitForLapse([2]);
        await cluster.waitForView(2);
        // Formatted while recovery still moves copies: one in flight may land after the erase
        // (it is older than the format, and never listed or taken in for that).
        await cluster.admin(0).mkfs({ copies: 2, blockSizeShift: 22, force: true });
        const fresh = await writeVdi(cluster, "vm", 1 * MiB);
        assert.notDeepEqual(fresh.subarray(0, 64), old.subarray(0, 64));
        const stale = await cluster.startNode(2);
        await waitFor("node 2 to leave", () => stale.status === "left", 20_000);
        await assert.rejects(
          VdiIo.open(cluster.admin(2).client, "vm"),
          /left the cluster \(its store .* holds the format of .*formatted again at/,
        );
        await waitFor(
          "a view without node 2",
          () => [0, 1].every((i) => cluster.node(i).view.nodes.length === 2),
          20_000,
        );
        for (const i of [0, 1]) {
          const sheep = cluster.node(i);
          assert.deepEqual(sheep.registry.live().map((h) => h.name), ["vm"], `node ${i}`);
          assert.deepEqual(await readVdi(cluster, i, "vm", MiB), fresh, `through node ${i}`);
          assert.equal(sheep.status, "running");
        }
        // Its store is left for the operator, as it was.
        assert.equal((await stale.store.list()).length, oldOids);
        // The operator moves the directory away: the node joins with an empty store.
        await cluster.kill(2);
        await fsp.rename(path.join(cluster.root, "sheep2"), path.join(cluster.root, "old2"));
        await cluster.startNode(2);
        await cluster.waitForView(3, 30_000);
        await cluster.waitForRecovery();
        await checkReplicas(cluster.live(), 2);
        for (let i = 0; i < 3; i++) {
          assert.deepEqual(cluster.node(i).registry.live().map((h) => h.name), ["vm"]);
          assert.deepEqual(await readVdi(cluster, i, "vm", MiB), fresh, `through node ${i}`);
        }
      } finally {
        await cluster.stop();
      }
    },
  },
  {
    name:
      "a node restarted with its clock set back an hour rejoins, and its writes win over older ones",
    run: async (start) => {
      // The built-in group tells a restarted process by a higher incarnation, and it was the
      // wall clock at start: a node back with its clock set back (an NTP step, a new host, a
      // dead RTC) was a stale incarnation to its peers, ignored until its clock passed the old
      // one. Its versions come from that clock too.
      const behind = { ms: 0 };
      const cluster = await start({
        nodes: 3,
        copies: 3,
        clock: (index) => index === 2 ? () => Date.now() - behind.ms : undefined,
      });
      try {
        await writeVdi(cluster, "vm", 2 * MiB);
        await cluster.kill(2);
        await cluster.waitForLapse([2]);
        await cluster.waitForView(2);
        behind.ms = 3_600_000;
        await cluster.startNode(2);
        await cluster.waitForView(3, 30_000);
        await cluster.waitForRecovery();
        // A write through the node whose clock is behind, then one through another: each read
        // back through every node.
        for (const through of [2, 0]) {
          const io = await VdiIo.open(cluster.admin(through).client, "vm");
          const data = new Uint8Array(64 * 1024).fill(0x30 + through);
          await io.write(4096, data);
          await io.flush();
          for (let i = 0; i < 3; i++) {
            const reader = await VdiIo.open(cluster.admin(i).client, "vm");
            const read = await reader.read(4096, data.length);
            assert.deepEqual(read, data, `written through ${through}, read through ${i}`);
          }
        }
        await checkReplicas(cluster.live(), 3);
      } finally {
        await cluster.stop();
      }
    },
  },
  {
    name:
      "a node whose clock is an hour behind issues versions on the cluster's latest clock, and says so",
    run: async (start) => {
      // Versions ordered by each gateway's own wall clock let a write through a node behind lose
      // to an earlier write's leftover (tests/sim: seed 1893). Every sheep asks the others for
      // their timeline (GET_CLOCK) and follows the latest.
      const lines: string[] = [];
      const cluster = await start({
        nodes: 3,
        copies: 3,
        clock: (index) => index === 2 ? () => Date.now() - 3_600_000 : undefined,
        logger: (index) =>
          index === 2
            ? { ...silentLogger, warn: (line: string) => lines.push(line) }
            : silentLogger,
      });
      try {
        const behind = cluster.node(2);
        await waitFor(
          "node 2 on the others' timeline",
          () => behind.gateway.timelineMs() >= Date.now() - 60_000,
          20_000,
          () => `(${behind.gateway.timelineMs() - Date.now()} ms off)`,
        );
        // Within the time an answer takes to arrive of the others' clocks, not an hour behind.
        const lag = Date.now() - behind.gateway.nextVersion() / 1024;
        assert.ok(lag < 1_000, `versions through node 2 lag ${lag} ms`);
        await waitFor(
          "the clock warning on node 2",
          () =>
            lines.some((line) => /reports a clock 3[56]\d{5} ms ahead of this node.s/.test(line)),
        );
        // Writes through it read back through every node.
        await writeVdi(cluster, "vm", 2 * MiB);
        const io = await VdiIo.open(cluster.admin(2).client, "vm");
        const data = new Uint8Array(64 * 1024).fill(0x5a);
        await io.write(4096, data);
        await io.flush();
        for (let i = 0; i < 3; i++) {
          const reader = await VdiIo.open(cluster.admin(i).client, "vm");
          assert.deepEqual(await reader.read(4096, data.length), data, `read through ${i}`);
        }
        await checkReplicas(cluster.live(), 3);
      } finally {
        await cluster.stop();
      }
    },
  },
  {
    name: "mkfs the moment three fresh sheep answer: formatted once, on every node, each time",
    run: async (start) => {
      // A format proposed while the first view is still being caught up (its state fetched from
      // peers) used to be applied a second time on top of the fetched state, and its proposer
      // answered "formatted already". Repeated: the window is a few milliseconds wide.
      for (let round = 0; round < FORMAT_AT_ONCE_ROUNDS; round++) {
        const cluster = await start({ nodes: 3, copies: 3, formatAtOnce: true });
        try {
          await cluster.waitForView(3);
          const held = cluster.live().map((sheep) => sheep.config);
          for (const config of held) {
            assert.equal(config?.copies, 3, `round ${round}: formatted everywhere`);
            assert.deepEqual(config, held[0], `round ${round}: one format, the same config`);
          }
          // Every node writes the config it holds (the proposer's before the client's answer).
          await waitFor("the config on every disk", async () => {
            const stored = await Promise.all(cluster.live().map((s) => readConfig(s.dir)));
            return stored.every((config) => isDeepStrictEqual(config, held[0]));
          });
          await assert.rejects(
            cluster.admin(1).mkfs({ copies: 2, blockSizeShift: 22 }),
            /formatted already/,
          );
        } finally {
          await cluster.stop();
        }
      }
    },
  },
  {
    name: "4 nodes, 3 copies: kill one, data stays, redundancy comes back; add one, it rebalances",
    run: async (start) => {
      const cluster = await start({ nodes: 4, copies: 3 });
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
    },
  },
  {
    name: "5 nodes, 3 copies: two die at once, nothing is lost",
    run: async (start) => {
      const cluster = await start({ nodes: 5, copies: 3 });
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
    },
  },
  {
    name: "stop all, restart all, everything is readable",
    run: async (start) => {
      // Four nodes, two copies: no node holds every inode, so each must learn the VDIs it does not
      // store from the others when the cluster comes back.
      const cluster = await start({ nodes: 4, copies: 2 });
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
    },
  },
  {
    name:
      "stop all, restart one by one, VDI tables lost: the VDIs of the last node back are known everywhere",
    run: async (start) => {
      // One copy: each inode is on one node. Nodes 1 and 2, the last view before the stop, come
      // back first and form a view without node 0; each learns the other's VDIs at its first
      // view, and node 0 learns theirs at its own. What only node 0 holds the other two learn
      // from node 0: before, nothing told them, and a VDI listed by one sheep was "no such VDI"
      // through the others (and a create of its name would have succeeded there alone).
      const cluster = await start({ nodes: 3, copies: 1 });
      try {
        // Enough that node 0's take needs more than one "found" event.
        const names = Array.from({ length: 60 }, (_, i) => `vm${i}`).sort();
        const onlyOnZero = await createOnZero(cluster, names, MiB);
        assert.ok(onlyOnZero.length > FOUND_HEADERS_PER_EVENT, `${onlyOnZero.length} on node 0`);
        // Without the VDI tables they kept (vdi_table_file.ts; lost, or from before it existed),
        // their inodes are all nodes 1 and 2 know of at start.
        await restartWithoutZero(cluster, async () => {
          for (const i of [1, 2]) {
            await fsp.rm(path.join(cluster.root, `sheep${i}`, "vdi-table"), { force: true });
          }
        });
        await cluster.startNode(0);
        await cluster.waitForView(3, 30_000);
        const listed = (sheep: Sheep) => sheep.registry.live().map((h) => h.name).sort();
        await waitFor(
          "every node to list every VDI",
          () => cluster.live().every((sheep) => isDeepStrictEqual(listed(sheep), names)),
          20_000,
          () => JSON.stringify(cluster.live().map(listed)),
        );
        for (let i = 0; i < 3; i++) {
          for (const name of onlyOnZero.slice(0, 3)) {
            const io = await VdiIo.open(cluster.admin(i).client, name);
            await io.write(0, new Uint8Array([i + 1]));
          }
        }
      } finally {
        await cluster.stop();
      }
    },
  },
  {
    name:
      "stop all, restart without the node stopped first: its VDIs stay known, their names taken",
    run: async (start) => {
      // One copy; node 0 stopped first, then 1 and 2, which come back without it. They knew
      // node 0's VDIs before the stop and still do (the VDI table each keeps): a create of such
      // a name is refused instead of taking its vid, which recovery would later have given the
      // new VDI's inode over the old one's (and with it the old VDI's table).
      const cluster = await start({ nodes: 3, copies: 1 });
      try {
        const names = Array.from({ length: 12 }, (_, i) => `vm${i}`).sort();
        const onZero = await createOnZero(cluster, names, 64 * MiB);
        assert.ok(onZero.length > 0, "no inode landed on node 0: pick other names");
        const name = onZero[0]!;
        const io = await VdiIo.open(cluster.admin(0).client, name);
        const data = randomBytes(3 * MiB);
        await io.write(MiB + 17, data);
        await io.flush();
        await restartWithoutZero(cluster);
        for (const i of [1, 2]) {
          const listed = cluster.node(i).registry.live().map((h) => h.name).sort();
          assert.deepEqual(listed, names, `node ${i}`);
        }
        await assert.rejects(
          cluster.admin(1).createVdi({ name, sizeBytes: MiB }),
          /exists/,
        );
        await cluster.startNode(0);
        await cluster.waitForView(3, 30_000);
        await cluster.waitForRecovery();
        for (let i = 0; i < 3; i++) {
          assert.deepEqual(await readVdi(cluster, i, name, 3 * MiB), data, `through node ${i}`);
        }
      } finally {
        await cluster.stop();
      }
    },
  },
  {
    name: "fewer zones than copies keeps serving, reduced; --strict refuses writes",
    run: async (start) => {
      const loose = await start({ nodes: 2, copies: 3 });
      try {
        const data = await writeVdi(loose, "loose", 2 * MiB);
        assert.deepEqual(await readVdi(loose, 1, "loose", data.length), data);
        const info = await loose.admin(1).clusterInfo();
        assert.equal(info.redundancyReduced, true);
        assert.equal(info.zones, 2);
      } finally {
        await loose.stop();
      }
      const strict = await start({ nodes: 2, copies: 3, strict: true });
      try {
        const admin = strict.admin(0);
        await admin.createVdi({ name: "strict", sizeBytes: 8 * MiB });
        const io = await VdiIo.open(admin.client, "strict");
        await assert.rejects(io.write(0, new Uint8Array(512)), /strict cluster needs 3/);
      } finally {
        await strict.stop();
      }
    },
  },
  {
    name: "a dog witness is the third vote of a two-sheep cluster",
    builtinOnly: true,
    run: async (start) => {
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
      const cluster = await start({
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
    },
  },
  {
    name: "partition 2|3: the 2-side refuses writes, the 3-side serves; healed, all converge",
    builtinOnly: true,
    run: async (start) => {
      const cluster = await start({ nodes: 5, copies: 3 });
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
    },
  },
  {
    name:
      "after a full stop it waits for the last epoch's nodes; recover force starts without them",
    run: async (start) => {
      const cluster = await start({ nodes: 3, copies: 3 });
      try {
        const data = await writeVdi(cluster, "waiting", 4 * MiB);
        await Promise.all([0, 1, 2].map((i) => cluster.kill(i)));
        await cluster.waitForLapse([0, 1, 2]);
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
    },
  },
  {
    name: "the epoch history is the cluster's, the same whichever node is asked",
    run: async (start) => {
      const cluster = await start({ nodes: 3, copies: 2 });
      try {
        await cluster.kill(2);
        await cluster.waitForView(2);
        await cluster.startNode(2);
        await cluster.waitForView(3);
        // Node 2 was away for an epoch its own log never saw.
        const own = (await cluster.node(2).member!.epochHistory()).map((r) => r.epoch);
        const asked = await Promise.all(
          [0, 1, 2].map(async (i) =>
            (await cluster.admin(i).clusterInfo()).epochs.map((e) => e.epoch)
          ),
        );
        assert.ok(asked[0]!.length > own.length, `node 2's own log ${own} misses an epoch`);
        assert.deepEqual(asked[1], asked[0]);
        assert.deepEqual(asked[2], asked[0], "the returning node reports the whole history");
        const newestFirst = [...asked[0]!].sort((a, b) => b - a);
        assert.deepEqual(asked[0], newestFirst);
      } finally {
        await cluster.stop();
      }
    },
  },
  {
    name: "the one-writer lock holds across the sheep of a cluster",
    run: async (start) => {
      const cluster = await start({ nodes: 2, copies: 2 });
      try {
        const [a, b] = [cluster.node(0), cluster.node(1)];
        const admin = cluster.admin(1);
        await admin.createVdi({ name: "shared", sizeBytes: 8 * MiB });
        await waitFor("the VDI on both nodes", () => a.registry.live().length === 1);
        const exp = await new VdiExportProvider(a).open("shared", { client: "10.0.0.5:1" });
        await waitFor("the lock on node 1", () => b.locks.size === 1);
        const reader = await new VdiExportProvider(b).open("shared", { client: "10.0.0.6:2" });
        assert.equal(reader.readOnly, true, "attached through another sheep: read-only");
        await reader.close();
        // A snapshot through the other node: the lock follows the VDI on both.
        await admin.snapshot("shared", "s");
        const vid = b.registry.lookup("shared").vdiId;
        await waitFor("the lock moved", () => a.locks.has(vid) && b.locks.has(vid));
        assert.equal((await admin.vdi("shared")).attachedTo, "10.0.0.5:1");
        await exp.write(0, new Uint8Array(4096).fill(7), { fua: true });
        // The client moves to the other node at once (a VM migrating): the release is still on
        // its way there, and the new open waits for it instead of falling back to read-only.
        await exp.close();
        const other = await new VdiExportProvider(b).open("shared", { client: "10.0.0.6:3" });
        assert.equal(other.readOnly, false, "the lock was handed over");
        assert.deepEqual(await other.read(0, 4096), new Uint8Array(4096).fill(7));
        await other.close();
        await waitFor("the lock gone everywhere", () => a.locks.size === 0 && b.locks.size === 0);
      } finally {
        await cluster.stop();
      }
    },
  },
  {
    name: "an NBD attach lost with a restarted sheep is released; others keep theirs",
    run: async (start) => {
      const cluster = await start({ nodes: 3, copies: 2, failureTimeoutMs: 5_000 });
      try {
        const admin = cluster.admin(1);
        await admin.createVdi({ name: "lost", sizeBytes: 8 * MiB });
        await admin.createVdi({ name: "kept", sizeBytes: 8 * MiB });
        await waitFor("the VDIs everywhere", () => cluster.node(0).registry.live().length === 2);
        await new VdiExportProvider(cluster.node(0)).open("lost", { client: "10.0.0.5:1" });
        const kept = await new VdiExportProvider(cluster.node(1)).open("kept", {
          client: "10.0.0.6:1",
        });
        await waitFor("both locks on node 2", () => cluster.node(2).locks.size === 2);
        // Node 0 dies and comes back within the failure timeout: the cluster never dropped it, so
        // nothing released the lock of the NBD client it had.
        await cluster.kill(0);
        await cluster.startNode(0);
        const lostVid = cluster.node(2).registry.lookup("lost").vdiId;
        await waitFor("the lost attach released", () => !cluster.node(2).locks.has(lostVid));
        assert.deepEqual(
          [...cluster.node(2).locks.values()].map((l) => l.client),
          ["10.0.0.6:1"],
          "the attach through node 1 stays",
        );
        await kept.close();
      } finally {
        await cluster.stop();
      }
    },
  },
  {
    name:
      "vnodes follow capacity: a store twice the size gets twice the vnodes; --vnodes fixes them",
    run: async (start) => {
      // Node 0 on 2 GiB, node 1 on 1 GiB (both weighed), node 2 on 1 GiB with 64 fixed vnodes.
      const capacities = [2 * GiB, GiB, GiB];
      const cluster = await start({
        nodes: 3,
        copies: 2,
        disk: (index) => {
          const disk = new MemDisk();
          disk.setCapacity(capacities[index]!);
          return disk;
        },
        vnodes: (index) => (index === 2 ? 64 : undefined),
      });
      try {
        const ids = cluster.live().map((s) => s.id);
        // The average of the weighed nodes is 1.5 GiB: 128 × 2/1.5 and 128 × 1/1.5.
        const expected = { [ids[0]!]: 171, [ids[1]!]: 85, [ids[2]!]: 64 };
        for (const sheep of cluster.live()) {
          const counts = Object.fromEntries(sheep.view.nodes.map((n) => [n.id, n.vnodes]));
          assert.deepEqual(counts, expected, `the ring of ${sheep.id}`);
          assert.equal(sheep.view.ring.vnodes.length, 171 + 85 + 64);
        }
        const admin = cluster.admin(0);
        const listed = Object.fromEntries((await admin.nodes()).map((n) => [n.id, n.vnodes]));
        assert.deepEqual(listed, expected, "info -t node");
        const history = (await admin.clusterInfo()).epochs[0]!;
        assert.deepEqual(
          Object.fromEntries(history.members.map((m) => [m.id, m.vnodes])),
          expected,
          "the epoch history",
        );
      } finally {
        await cluster.stop();
      }
    },
  },
];
