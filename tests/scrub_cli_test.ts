/**
 * The scrub commands as a user runs them: `shepherd cluster scrub [--wait]` and
 * `shepherd info -t scrub` over TCP against a fake three-node cluster of real Scrubbers
 * (served by an ObjectServer through the real handlers), and the `sheep` scrub flags.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dataOid, oidToHex } from "../core/vdi/oid.ts";
import { ObjectServer } from "../net/object/server.ts";
import { shepherdMain } from "../cmd/shepherd.ts";
import { scrubSettings } from "../cmd/sheep.ts";
import { UsageError } from "../cmd/cli.ts";
import { FakeScrubCluster, FakeWorld } from "./scrub_fakes.ts";

const MiB = 2 ** 20;

/** Runs `shepherd args...` and returns its exit status and what it printed. */
async function shepherd(args: string[]): Promise<{ status: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const write = process.stdout.write;
  const writeErr = process.stderr.write;
  process.stdout.write = ((chunk: string) => (out.push(String(chunk)), true)) as typeof write;
  process.stderr.write = ((chunk: string) => (err.push(String(chunk)), true)) as typeof writeErr;
  try {
    const status = await shepherdMain(args);
    return { status, out: out.join(""), err: err.join("") };
  } finally {
    process.stdout.write = write;
    process.stderr.write = writeErr;
  }
}

async function withServedCluster(
  world: FakeWorld,
  fn: (address: string, fake: FakeScrubCluster) => Promise<void>,
): Promise<void> {
  const fake = new FakeScrubCluster(world);
  const first = world.nodes[0]!.id;
  const server = new ObjectServer((request) => fake.handle(first, request));
  const bound = await server.listen({ host: "127.0.0.1", port: 0 });
  try {
    await fn(`127.0.0.1:${bound.port}`, fake);
  } finally {
    await server.close();
    await fake.stop();
  }
}

Deno.test("shepherd cluster scrub --wait shows progress, then every node and every finding", async () => {
  const world = new FakeWorld({ nodes: 3, copies: 2 });
  for (let i = 0; i < 6; i++) world.put(dataOid(7, i));
  const rotten = dataOid(7, 1);
  world.rot(world.targets(rotten)[1]!.id, rotten);
  await withServedCluster(world, async (address) => {
    const before = await shepherd(["info", "-t", "scrub", "--cluster", address]);
    assert.equal(before.status, 0, before.err);
    assert.match(before.out, /^Scrub: never run\n/);

    const run = await shepherd(["cluster", "scrub", "--wait", "--cluster", address]);
    assert.equal(run.status, 0, run.err);
    assert.match(
      run.out,
      /^Scrubbed: 12\/12 objects \(100\.0%\), 12 MB verified, 1 bad block, 1 repaired, 0 not repaired$/m,
    );
    assert.match(run.out, /^Scrub: done: 1 bad block, 1 copy repaired, 0 not repaired$/m);
    for (const node of world.nodes) {
      assert.match(run.out, new RegExp(`^${node.id}\\s+done\\s`, "m"));
    }
    assert.match(run.out, /^Findings \(1\):$/m);
    assert.match(run.out, new RegExp(`^${oidToHex(rotten)}\\s+\\S+\\s+yes\\s+1 bad block`, "m"));

    const json = await shepherd(["info", "-t", "scrub", "--json", "--cluster", address]);
    // The same schema as GET /api/v1/scrub: totals, then each node's row.
    const report = JSON.parse(json.out);
    assert.equal(report.state, "idle");
    assert.equal(report.badBlocks, 1);
    assert.deepEqual(report.nodes.map((r: { state: string }) => r.state), ["done", "done", "done"]);
  });
});

Deno.test("shepherd cluster scrub --wait exits 1 when a copy could not be repaired", async () => {
  const world = new FakeWorld({ nodes: 1, copies: 1 });
  world.put(dataOid(3, 0));
  world.rot(world.nodes[0]!.id, dataOid(3, 0));
  await withServedCluster(world, async (address) => {
    const run = await shepherd(["cluster", "scrub", "--wait", "--cluster", address]);
    assert.equal(run.status, 1);
    assert.match(run.out, /NO\s+1 bad block .*no good copy/);
    assert.match(run.err, /Scrub found 1 bad copies it could not repair/);
  });
});

Deno.test("shepherd cluster scrub without --wait says where it started; usage errors exit 2", async () => {
  const world = new FakeWorld({ nodes: 3, copies: 2 });
  world.put(dataOid(7, 0));
  world.unreachable.add(world.nodes[2]!.id);
  await withServedCluster(world, async (address, fake) => {
    const run = await shepherd(["cluster", "scrub", "--cluster", address]);
    assert.equal(run.status, 0, run.err);
    assert.match(run.out, /^Scrub started on 2 of 3 nodes \(progress: shepherd info -t scrub\)$/m);
    assert.match(
      run.out,
      new RegExp(`^${world.nodes[2]!.id}: not started: Peer is unreachable$`, "m"),
    );
    await fake.settled();
    const usage = await shepherd(["cluster", "scrub", "a", "b", "--cluster", address]);
    assert.equal(usage.status, 2);
    assert.match(usage.err, /at most one VDI/);
  });
});

Deno.test("sheep --scrub-interval and --scrub-rate: daily at 64 MiB/s by default, 'off', checked", () => {
  assert.deepEqual(scrubSettings("86400", "64M"), {
    intervalMs: 86_400_000,
    bytesPerSecond: 64 * MiB,
  });
  assert.deepEqual(scrubSettings("off", "128M/s"), { intervalMs: 0, bytesPerSecond: 128 * MiB });
  assert.deepEqual(scrubSettings("0", "1G"), { intervalMs: 0, bytesPerSecond: 1024 * MiB });
  assert.throws(() => scrubSettings("-5", "64M"), UsageError);
  assert.throws(() => scrubSettings("daily", "64M"), UsageError);
  assert.throws(() => scrubSettings("60", "fast"), UsageError);
  assert.throws(() => scrubSettings("60", "10K"), /at least 1M/);
});
