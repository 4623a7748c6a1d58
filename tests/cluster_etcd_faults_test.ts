// Goal: a three-sheep cluster on a three-member etcd survives etcd's own faults with nothing
// acknowledged lost: an etcd member killed, the etcd leader killed, one sheep cut off from etcd
// (it stops writes, the rest go on), etcd restarted from its data directories, and a sheep that
// fell behind etcd's compaction; a malformed event in the log is skipped, loudly, by every
// sheep, and applied by none even in part. Method: one real etcd for the file (tests/etcd_harness.ts),
// each sheep behind its own proxy to it; a writer keeps writing through one sheep during each
// fault, and every write it had acknowledged is read back afterwards through another.
import assert from "node:assert/strict";
import { type TestCluster, TestCluster as Cluster, waitFor } from "./cluster_harness.ts";
import { checkReplicas, readVdi, writeVdi } from "./cluster_cases.ts";
import { etcdInstalled, EtcdTestCluster } from "./etcd_harness.ts";
import { randomBytes } from "./harness.ts";
import { VdiIo } from "../core/vdi/io.ts";
import type { Sheep } from "../net/sheep/sheep.ts";

const MiB = 1 << 20;

function hasVdi(sheep: Sheep, name: string): boolean {
  return sheep.registry.live().some((header) => header.name === name);
}
const BLOCK = 64 * 1024;

/** Writes 64 KiB blocks one after another through node `via` until stopped. */
class Writer {
  readonly acknowledged: { offset: number; data: Uint8Array }[] = [];
  readonly errors: string[] = [];
  #stopped = false;
  #done: Promise<void>;

  constructor(cluster: TestCluster, name: string, via: number) {
    this.#done = (async () => {
      const io = await VdiIo.open(cluster.admin(via).client, name);
      for (let i = 0; !this.#stopped; i++) {
        const offset = (i * BLOCK) % (48 * MiB);
        const data = randomBytes(BLOCK);
        try {
          await io.write(offset, data);
          this.acknowledged.push({ offset, data });
        } catch (error) {
          this.errors.push((error as Error).message);
          return;
        }
      }
    })();
  }

  /** Stops, and checks that every acknowledged write reads back (the last one of each offset). */
  async stopAndCheck(cluster: TestCluster, name: string, via: number): Promise<void> {
    this.#stopped = true;
    await this.#done;
    assert.deepEqual(this.errors, [], "the writer saw no error");
    assert.ok(this.acknowledged.length > 0, "the writer got writes through");
    const latest = new Map(this.acknowledged.map((w) => [w.offset, w.data]));
    const io = await VdiIo.open(cluster.admin(via).client, name);
    for (const [offset, data] of latest) {
      assert.deepEqual(await io.read(offset, data.length), data, `block at ${offset}`);
    }
  }
}

/** Until `count` writes more than now were acknowledged: the writer is getting through. */
async function writesGoOn(writer: Writer, count = 5): Promise<void> {
  const target = writer.acknowledged.length + count;
  await waitFor(`${count} more writes`, () => writer.acknowledged.length >= target);
}

Deno.test({
  name: "cluster on etcd: faults of etcd itself",
  ignore: !etcdInstalled(),
  fn: async (t) => {
    const etcd = await EtcdTestCluster.start();
    const start = (options: Parameters<typeof Cluster.start>[0]) =>
      Cluster.start({ ...options, etcd });
    try {
      await t.step("an etcd member killed: the sheep carry on, views still change", async () => {
        const cluster = await start({ nodes: 3, copies: 2 });
        try {
          await writeVdi(cluster, "disk", 4 * MiB);
          const writer = new Writer(cluster, "disk", 0);
          await writesGoOn(writer);
          const leader = await etcd.leader();
          await etcd.kill((leader + 1) % 3);
          await writesGoOn(writer);
          await cluster.admin(1).createVdi({ name: "while-one-is-down", sizeBytes: MiB });
          // Two of three etcd members are a quorum: a sheep's loss is still noticed.
          await cluster.kill(2);
          await cluster.waitForView(2);
          await cluster.startNode(2);
          await cluster.waitForView(3);
          await writesGoOn(writer);
          await writer.stopAndCheck(cluster, "disk", 2);
          assert.ok(hasVdi(cluster.node(2), "while-one-is-down"));
        } finally {
          await cluster.stop();
          await etcd.restartMissing();
        }
      });

      await t.step("the etcd leader killed: no sheep drops out, no write fails", async () => {
        // A 3 s lease: an election (0.5 to 1 s here) must not look like a lost etcd.
        const cluster = await start({ nodes: 3, copies: 3, failureTimeoutMs: 3000 });
        try {
          await writeVdi(cluster, "disk", 4 * MiB);
          const epoch = cluster.node(0).view.epoch;
          const writer = new Writer(cluster, "disk", 1);
          await writesGoOn(writer);
          const leader = await etcd.leader();
          await etcd.kill(leader);
          const next = await etcd.leader();
          assert.notEqual(next, leader);
          await cluster.admin(0).createVdi({ name: "after-the-election", sizeBytes: MiB });
          await writesGoOn(writer);
          await writer.stopAndCheck(cluster, "disk", 2);
          assert.ok(cluster.live().every((s) => s.status === "running"));
          assert.equal(cluster.node(2).view.epoch, epoch, "no lease lapsed: the view held");
          assert.ok(hasVdi(cluster.node(2), "after-the-election"));
        } finally {
          await cluster.stop();
          await etcd.restartMissing();
        }
      });

      await t.step(
        "a sheep cut off from etcd as its wall clock is set back an hour knows it within a lease",
        async () => {
          // Its lease was counted on the wall clock: set back an hour, the sheep would have
          // counted itself in touch, and taken writes, for an hour after the others moved on.
          const setBack = { ms: 0 };
          const cluster = await start({
            nodes: 3,
            copies: 2,
            clock: (index) => index === 2 ? () => Date.now() - setBack.ms : undefined,
          });
          try {
            await writeVdi(cluster, "before", MiB);
            setBack.ms = 3_600_000;
            cluster.cutFromEtcd(2);
            await waitFor(
              "the cut-off sheep to know it",
              () => cluster.node(2).status === "minority",
              15_000,
            );
            await assert.rejects(
              cluster.admin(2).createVdi({ name: "nope", sizeBytes: MiB }),
              /cut off/,
            );
            cluster.cutFromEtcd(2, false);
            await cluster.waitForView(3, 30_000);
            assert.ok(!hasVdi(cluster.node(2), "nope"));
          } finally {
            await cluster.stop();
          }
        },
      );

      await t.step("one sheep cut off from etcd: it refuses writes, the others go on", async () => {
        const cluster = await start({ nodes: 3, copies: 2 });
        try {
          const before = await writeVdi(cluster, "before", 4 * MiB);
          const epoch = cluster.node(0).view.epoch;
          const cutOff = await VdiIo.open(cluster.admin(2).client, "before");
          const writer = new Writer(cluster, "before", 0);
          cluster.cutFromEtcd(2);
          await waitFor(
            "the cut-off sheep to know it",
            () => cluster.node(2).status === "minority",
          );
          await assert.rejects(cutOff.write(0, new Uint8Array([1])), /cut off/);
          await assert.rejects(
            cluster.admin(2).createVdi({ name: "nope", sizeBytes: MiB }),
            /cut off/,
          );
          await waitFor(
            "the others' view without it",
            () =>
              [0, 1].every((i) =>
                cluster.node(i).view.epoch > epoch && cluster.node(i).view.nodes.length === 2
              ),
          );
          const during = await writeVdi(cluster, "during", 3 * MiB, 1);
          await writesGoOn(writer);
          cluster.cutFromEtcd(2, false);
          await cluster.waitForView(3, 30_000);
          await cluster.waitForRecovery();
          await writer.stopAndCheck(cluster, "before", 2);
          assert.deepEqual(await readVdi(cluster, 2, "during", during.length), during);
          assert.deepEqual(
            (await readVdi(cluster, 2, "before", before.length)).subarray(48 * MiB),
            before.subarray(48 * MiB),
          );
          assert.ok(!hasVdi(cluster.node(2), "nope"));
          // The writer went on through the cut: a leftover on a non-target may be older.
          await checkReplicas(cluster.live(), 2, { leftovers: "may be older" });
        } finally {
          await cluster.stop();
        }
      });

      await t.step("etcd restarted from its data directories: the cluster resumes", async () => {
        const cluster = await start({ nodes: 3, copies: 2 });
        try {
          const data = await writeVdi(cluster, "kept", 6 * MiB);
          await etcd.killAll();
          // No etcd: every sheep counts itself cut off and refuses writes.
          await waitFor(
            "every sheep cut off",
            () => cluster.live().every((s) => s.status === "minority"),
          );
          await assert.rejects(
            cluster.admin(0).createVdi({ name: "nope", sizeBytes: MiB }),
            /cut off/,
          );
          await etcd.restartMissing();
          await cluster.waitForView(3, 30_000);
          assert.ok(cluster.live().every((s) => s.status === "running"));
          assert.deepEqual(await readVdi(cluster, 1, "kept", data.length), data);
          const more = await writeVdi(cluster, "after", 2 * MiB, 2);
          assert.deepEqual(await readVdi(cluster, 0, "after", more.length), more);
        } finally {
          await cluster.stop();
        }
      });

      await t.step("a sheep behind a compaction and trimmed events reloads its state", async () => {
        const cluster = await start({ nodes: 3, copies: 2, etcdEventsKept: 4 });
        try {
          await writeVdi(cluster, "first", MiB);
          cluster.cutFromEtcd(2);
          await waitFor(
            "the cut-off sheep to know it",
            () => cluster.node(2).status === "minority",
          );
          const names = ["a", "b", "c", "d", "e", "f", "g", "h"];
          for (const name of names) await cluster.admin(0).createVdi({ name, sizeBytes: MiB });
          await etcd.compact();
          cluster.cutFromEtcd(2, false);
          await cluster.waitForView(3, 30_000);
          await waitFor(
            "the VDIs created meanwhile on the sheep that was away",
            () => names.every((n) => hasVdi(cluster.node(2), n)),
          );
          await cluster.admin(2).createVdi({ name: "after", sizeBytes: MiB });
          await waitFor(
            "its own event everywhere",
            () => cluster.live().every((s) => hasVdi(s, "after")),
          );
        } finally {
          await cluster.stop();
        }
      });

      await t.step(
        "a malformed event in the log is skipped loudly, never applied half-way",
        async () => {
          const logs: string[][] = [[], [], []];
          const cluster = await start({
            nodes: 3,
            copies: 2,
            logger: (index) => {
              const line = (message: string) => logs[index]!.push(message);
              return { debug() {}, info: line, warn: line, error: line };
            },
          });
          try {
            await cluster.admin(0).createVdi({ name: "before", sizeBytes: MiB });
            const events = `${cluster.etcdPrefix}events/`;
            /** Event `n` of a made-up proposer, its value as given. */
            const put = (n: number, value: string) =>
              etcd.post("/v3/kv/put", {
                key: btoa(`${events}127.0.0.9:1/1/${n}`),
                value: btoa(value),
              });
            const envelope = (n: number, event: unknown) =>
              JSON.stringify({ origin: "127.0.0.9:1", incarnation: 1, proposalId: n, event });
            // Not JSON; then a VDI creation with its size mistyped (half of it would be a VDI
            // with no size); then a lock without its client.
            await put(1, "{not json");
            await put(
              2,
              envelope(2, {
                type: "vdi",
                event: {
                  type: "create",
                  name: "half",
                  sizeBytes: "1G",
                  copies: 2,
                  blockSizeShift: 22,
                  nowMs: 0,
                },
              }),
            );
            await put(3, envelope(3, { type: "lock", vid: 1, node: "x", sinceMs: 0, force: true }));
            await cluster.admin(1).createVdi({ name: "after", sizeBytes: MiB });
            await waitFor(
              "the event after them everywhere",
              () => cluster.live().every((s) => hasVdi(s, "after")),
            );
            for (const [index, sheep] of cluster.live().entries()) {
              assert.deepEqual(
                sheep.registry.live().map((h) => h.name).sort(),
                ["after", "before"],
                `node ${index} applied none of them`,
              );
              assert.ok(!sheep.locks.has(1), "the lock without a client was not taken");
              assert.equal(sheep.status, "running");
              for (const n of [1, 2, 3]) {
                assert.ok(
                  logs[index]!.some((l) =>
                    l.includes(`skipped a malformed cluster event ${events}127.0.0.9:1/1/${n}`)
                  ),
                  `node ${index} said it skipped event ${n}: ${logs[index]!.join("\n")}`,
                );
              }
            }
          } finally {
            await cluster.stop();
          }
        },
      );
    } finally {
      await etcd.stop();
    }
  },
});
