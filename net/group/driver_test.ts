/**
 * Goal: the driver runs the protocol over real UDP on 127.0.0.1: unicast seeds alone form a
 * cluster, events reach everyone, a stopped member is dropped, the epoch log is persisted
 * before a view is delivered, and multicast discovery works with the interface given.
 * Method: start drivers on ephemeral ports with short timing (one tick is still 100 ms) and
 * poll their callbacks until a deadline; close everything at the end.
 */

import assert from "node:assert/strict";
import { generateKey } from "../auth/cluster_key.ts";
import { DatagramSeal } from "../auth/datagram_seal.ts";
import { GroupDriver, type GroupDriverOptions } from "./driver.ts";
import type { EpochRecord, View } from "./types.ts";

const timing = { heartbeatTicks: 2, failureTimeoutTicks: 10, settleTicks: 5, retransmitTicks: 1 };

interface Probe {
  driver: GroupDriver;
  views: View[];
  events: string[];
  persisted: EpochRecord[];
  /** Epochs delivered before they were persisted (must stay empty). */
  unpersisted: number[];
  errors: Error[];
}

function probe(options: Partial<GroupDriverOptions>): Probe {
  const result: Probe = {
    driver: null as unknown as GroupDriver,
    views: [],
    events: [],
    persisted: [],
    unpersisted: [],
    errors: [],
  };
  const onView = (view: View) => {
    if (!result.persisted.some((r) => r.epoch === view.epoch)) result.unpersisted.push(view.epoch);
    result.views.push(view);
  };
  result.driver = new GroupDriver({
    address: "127.0.0.1:0",
    multicast: false,
    timing,
    persist: async (records) => {
      await new Promise((resolve) => setTimeout(resolve, 1)); // a real write takes time
      result.persisted.push(...records);
    },
    onView,
    onResync: onView,
    onEvent: (event) => result.events.push(new TextDecoder().decode(event.payload)),
    onError: (error) => result.errors.push(error),
    ...options,
  });
  return result;
}

async function until(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function lastView(p: Probe): View | undefined {
  return p.views.at(-1);
}

Deno.test("three drivers on 127.0.0.1 with unicast seeds form a cluster and agree", async () => {
  const a = probe({ incarnation: 1 });
  await a.driver.start();
  const b = probe({ incarnation: 1, seeds: [a.driver.id] });
  await b.driver.start();
  const c = probe({ incarnation: 1, seeds: [a.driver.id, b.driver.id] });
  await c.driver.start();
  const all = [a, b, c];
  try {
    await until(
      "one view of three",
      () =>
        all.every((p) =>
          lastView(p)?.members.length === 3 && p.driver.status().state === "primary"
        ) &&
        new Set(all.map((p) => lastView(p)?.epoch)).size === 1,
    );

    c.driver.propose(new TextEncoder().encode("vdi create alpha"));
    a.driver.propose(new TextEncoder().encode("vdi create beta"));
    await until("events everywhere", () => all.every((p) => p.events.length === 2));
    assert.deepEqual(b.events, a.events);
    assert.deepEqual(c.events, a.events);
    assert.throws(() => a.driver.propose(new Uint8Array(60_001)), RangeError);

    const epoch = lastView(a)!.epoch;
    await c.driver.stop();
    await until(
      "the stopped member dropped",
      () =>
        [a, b].every((p) => lastView(p)?.epoch === epoch + 1 && lastView(p)?.members.length === 2),
    );
    for (const p of all) assert.deepEqual(p.unpersisted, []);
    for (const p of all) assert.deepEqual(p.errors, []);
    assert.ok(a.driver.stats.received > 0 && a.driver.stats.rejected === 0);
  } finally {
    await Promise.all(all.map((p) => p.driver.stop()));
  }
});

Deno.test("two drivers find each other by multicast alone on 127.0.0.1", async () => {
  const port = 40_000 + (Date.now() % 20_000);
  const multicast = { group: "239.10.10.10", port };
  const groupName = `driver-test-${port}`;
  const a = probe({ multicast, groupName });
  await a.driver.start();
  const b = probe({ multicast, groupName });
  await b.driver.start();
  try {
    await until(
      "one view of two",
      () =>
        [a, b].every((p) =>
          lastView(p)?.members.length === 2 && p.driver.status().state === "primary"
        ),
    );
    assert.deepEqual(a.errors, []);
  } finally {
    await Promise.all([a.driver.stop(), b.driver.stop()]);
  }
});

Deno.test("a failed start() closes what it opened, so the port can be reused", async () => {
  const first = probe({});
  await first.driver.start();
  const port = Number(first.driver.id.split(":")[1]);
  const clash = probe({ address: `127.0.0.1:${port}` });
  await assert.rejects(() => clash.driver.start(), /Cannot bind UDP 127\.0\.0\.1:\d+/);
  await first.driver.stop();
  const badGroup = probe({ multicast: { group: "10.1.2.3", port: port } });
  await assert.rejects(() => badGroup.driver.start(), /Cannot join multicast group 10\.1\.2\.3/);
  const retry = probe({ address: `127.0.0.1:${port}` });
  await retry.driver.start(); // the unicast port is free again
  await retry.driver.stop();
});

Deno.test("a driver refuses a malformed address and reports a failing persist by stopping", async () => {
  assert.throws(
    () => new GroupDriver({ address: "localhost:7000", persist: async () => {} }),
    TypeError,
  );
  assert.throws(
    () => new GroupDriver({ address: "10.0.0.300:7000", persist: async () => {} }),
    TypeError,
  );
  const failed: string[] = [];
  const p = probe({
    persist: () => Promise.reject(new Error("disk full")),
    onFailed: (reason) => failed.push(reason),
  });
  await p.driver.start();
  try {
    await until("the persist failure", () => p.errors.length > 0);
    assert.match(p.errors[0]!.message, /Cannot persist the epoch log: disk full/);
    assert.deepEqual(p.views, [], "nothing is delivered without the epoch log");
    assert.deepEqual(failed, ["cannot persist the epoch log: disk full"]);
    assert.equal(p.driver.failure, "cannot persist the epoch log: disk full");
    // A caller that has not heard yet gets the reason, not an assertion.
    const leftGroup = {
      message: "This member has left the group: cannot persist the epoch log: disk full",
    };
    assert.throws(() => p.driver.propose(new Uint8Array(1)), leftGroup);
    assert.throws(() => p.driver.status(), leftGroup);
  } finally {
    await p.driver.stop();
  }
});

Deno.test("sealed drivers form a group; one with another key never joins and both sides report it", async () => {
  const key = generateKey();
  const refusedBy = new Map<string, string[]>();
  const sealed = (name: string, k: Uint8Array, seeds: string[]) =>
    probe({
      incarnation: 1,
      seeds,
      seal: new DatagramSeal(k),
      onRefusal: (reason, sender) => {
        refusedBy.set(name, [...(refusedBy.get(name) ?? []), `${reason} from ${sender}`]);
      },
    });
  const a = sealed("a", key, []);
  await a.driver.start();
  // The stranger knows a; b knows both: datagrams go both ways between the keys.
  const stranger = sealed("stranger", generateKey(), [a.driver.id]);
  await stranger.driver.start();
  const b = sealed("b", key, [a.driver.id, stranger.driver.id]);
  await b.driver.start();
  try {
    await until(
      "a and b in one view, and each side refusing the other key",
      () =>
        [a, b].every((p) => lastView(p)?.members.length === 2) &&
        (refusedBy.get("a")?.length ?? 0) > 0 && (refusedBy.get("stranger")?.length ?? 0) > 0,
    );
    assert.ok(
      [a, b].every((p) =>
        p.views.every((v) => !v.members.some((m) => m.id === stranger.driver.id))
      ),
      "the stranger is never a member",
    );
    assert.match(refusedBy.get("a")![0]!, new RegExp(`bad MAC from ${stranger.driver.id}`));
    assert.match(refusedBy.get("stranger")![0]!, /bad MAC from 127\.0\.0\.1:\d+/);
    assert.ok((lastView(stranger)?.members.length ?? 1) === 1, "the stranger is alone");
    // A hello goes to the group and to each known peer: each copy is sealed on its own, so a
    // peer that gets both takes neither for a replay (a false alarm on every heartbeat).
    const received = a.driver.stats.received;
    await until("a few more rounds of hellos", () => a.driver.stats.received >= received + 10);
    const replays = [...refusedBy].flatMap(([name, lines]) =>
      lines.filter((line) => line.startsWith("replay")).map((line) => `${name}: ${line}`)
    );
    assert.deepEqual(replays, [], "no genuine datagram is refused as a replay");
  } finally {
    await Promise.all([a, b, stranger].map((p) => p.driver.stop()));
  }
});
