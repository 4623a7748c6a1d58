// Goal: on etcd too, a proposal etcd sequenced while its proposer was not following the event
// log is answered once the proposer catches up with its peers' state, never left to its
// client's timeout: both when its event was trimmed from etcd meanwhile (the proposer never
// sees it) and when it is still there but the fetched state holds it (the proposer skips it).
// Either way it is applied once, by the others, and reaches the proposer with their state.
//
// Method: two EtcdDrivers on one real etcd (tests/etcd_harness.ts), each host a real cluster
// state machine (tests/member_fakes.ts). B's watch is stalled (its other requests go through,
// so it stays a member and its appends succeed) while it proposes and A trims the events and
// etcd compacts them; then B's watch resumes behind the compaction and B reloads.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import { EtcdClient } from "./etcd_client.ts";
import { EtcdDriver, type EtcdDriverOptions } from "./etcd_driver.ts";
import { EtcdLayout } from "./etcd_layout.ts";
import { etcdInstalled, EtcdTestCluster } from "../../tests/etcd_harness.ts";
import { freePort, tempDir } from "../../tests/harness.ts";
import {
  assertAppliedElsewhere,
  type FakeNode,
  fakeNode,
  lockOf,
  outcomeOf,
  stateOf,
} from "../../tests/member_fakes.ts";

/**
 * A fetch whose watch requests can be stalled: `stall()` ends the open watch and holds new ones
 * until `resume()`, as a watch stream that stopped coming; every other request goes through.
 */
function stallableWatch() {
  let stalled: Promise<void> | null = null;
  let wake = () => {};
  const streams = new Set<AbortController>();
  const wrapped: typeof fetch = async (input, init) => {
    if (!String(input).endsWith("/v3/watch")) return await fetch(input, init);
    while (stalled) await stalled;
    const stream = new AbortController();
    init?.signal?.addEventListener("abort", () => stream.abort());
    streams.add(stream);
    return await fetch(input, { ...init, signal: stream.signal });
  };
  return {
    fetch: wrapped,
    stall() {
      stalled = new Promise((resolve) => (wake = resolve));
      for (const stream of streams) stream.abort();
      streams.clear();
    },
    resume() {
      stalled = null;
      wake();
    },
  };
}

Deno.test({
  name:
    "etcd: proposals sequenced while their proposer's watch was behind are answered when it reloads",
  ignore: !etcdInstalled(),
  async fn() {
    const etcd = await EtcdTestCluster.start(1);
    const dir = await tempDir("sd-etcd-driver-");
    const watch = stallableWatch();
    const nodes: FakeNode<EtcdDriver>[] = [];
    try {
      const prefix = "/sheepdog-proposals/";
      const options = (fetch?: typeof globalThis.fetch): EtcdDriverOptions => ({
        endpoints: etcd.endpoints,
        prefix,
        clusterId: "test",
        failureTimeoutMs: 2000,
        settleMs: 100,
        eventsKept: 4,
        ...(fetch ? { fetch } : {}),
      });
      const start = async (name: string, fetch?: typeof globalThis.fetch) => {
        const port = await freePort();
        const peer = () => nodes.find((n) => n.id !== `127.0.0.1:${port}`)!;
        const node = fakeNode(
          port,
          `${dir}/${name}`,
          () => Promise.resolve(stateOf(peer())),
          (host) => new EtcdDriver(host, options(fetch)),
        );
        nodes.push(node);
        await node.member.start();
        return node;
      };
      const bothIn = (node: FakeNode<EtcdDriver>) =>
        node.changes.until(
          () => node.member.state === "primary" && node.member.members.length === 2,
          10_000,
        );
      const a = await start("a");
      assert.ok(await a.changes.until(() => a.member.state === "primary", 10_000));
      const b = await start("b", watch.fetch);
      assert.ok((await bothIn(a)) && (await bothIn(b)), "one epoch of both");
      assert.equal(a.member.master, a.id, "A, the longer lived, writes epochs and trims");

      const events = new EtcdClient({ endpoints: etcd.endpoints });
      const layout = new EtcdLayout(prefix);
      /** Whether etcd still holds an event of B's. */
      const bEventKept = async () =>
        (await events.range(layout.events, { prefix: true, keysOnly: true })).kvs.some((kv) =>
          kv.key.startsWith(`${layout.events}${b.id}/`)
        );

      watch.stall();
      // B's first proposal: appended, applied by A, and then trimmed from etcd.
      const trimmed = outcomeOf(b.member.propose(lockOf(b)));
      assert.ok(await a.changes.until(() => a.machine.locks.has(7), 10_000));
      for (let i = 0; await bEventKept(); i++) {
        assert.ok(i < 100, "A trims the old events");
        await a.member.propose(
          i % 2 === 0
            ? { type: "lock", vid: 99, client: "filler", node: a.id, sinceMs: 0, force: false }
            : { type: "unlock", vid: 99 },
        );
      }
      // B's second proposal: appended after the trimmed ones, still in etcd when B reloads.
      const kept = outcomeOf(b.member.propose(lockOf(b, 8)));
      assert.ok(await a.changes.until(() => a.machine.locks.has(8), 10_000));
      assert.ok(await bEventKept());
      await etcd.compact();
      assert.deepEqual(b.lockedHere, [], "B applied neither itself");

      watch.resume();
      await assertAppliedElsewhere(trimmed, b, [a], 7);
      await assertAppliedElsewhere(kept, b, [a], 8);
    } finally {
      watch.resume();
      for (const node of nodes) await node.member.stop({ leave: true });
      await etcd.stop();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  },
});
