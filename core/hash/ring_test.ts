import assert from "node:assert/strict";
import { buildRing, defaultZone, oidToNodes, type RingNode, weighByCapacity } from "./ring.ts";

function node(port: number, zone = port, vnodes = 128): RingNode {
  return { id: `127.0.0.1:${port}`, host: "127.0.0.1", port, zone, vnodes };
}

Deno.test("defaultZone() reads the IPv4 bytes as a little-endian u32", () => {
  assert.equal(defaultZone("192.168.10.4", 7000), 67807424);
});

Deno.test("buildRing() sorts vnodes and counts zones", () => {
  const ring = buildRing([node(7000), node(7001), node(7002, 7001)]);
  assert.equal(ring.vnodes.length, 384);
  assert.equal(ring.zones, 2);
  for (let i = 1; i < ring.vnodes.length; i++) {
    assert.ok(ring.vnodes[i - 1]!.hash < ring.vnodes[i]!.hash);
  }
});

Deno.test("oidToNodes() picks distinct zones and is deterministic", () => {
  const nodes = [node(7000), node(7001), node(7002), node(7003, 7000)];
  const ring = buildRing(nodes);
  for (let i = 0n; i < 500n; i++) {
    const oid = (0x7c2b25n << 32n) | i;
    const chosen = oidToNodes(ring, oid, 3);
    assert.equal(chosen.length, 3);
    assert.equal(new Set(chosen.map((n) => n.zone)).size, 3);
    assert.deepEqual(oidToNodes(buildRing([...nodes].reverse()), oid, 3), chosen);
  }
});

Deno.test("oidToNodes() returns fewer copies when zones are short", () => {
  const ring = buildRing([node(7000, 1), node(7001, 1)]);
  assert.equal(oidToNodes(ring, 42n, 3).length, 1);
  assert.equal(oidToNodes(buildRing([]), 42n, 3).length, 0);
});

Deno.test("oidToNodes() spreads objects over nodes and moves few on a join", () => {
  const three = buildRing([node(7000), node(7001), node(7002)]);
  const four = buildRing([node(7000), node(7001), node(7002), node(7003)]);
  const counts = new Map<string, number>();
  let moved = 0;
  const total = 3000;
  for (let i = 0; i < total; i++) {
    const oid = (0x10n << 32n) | BigInt(i);
    const before = oidToNodes(three, oid, 1)[0]!;
    const after = oidToNodes(four, oid, 1)[0]!;
    counts.set(before.id, (counts.get(before.id) ?? 0) + 1);
    if (before.id !== after.id) {
      moved++;
      assert.equal(after.port, 7003, "an object only moves to the new node");
    }
  }
  for (const count of counts.values()) assert.ok(count > total / 3 * 0.7, `skewed: ${count}`);
  assert.ok(moved > total * 0.15 && moved < total * 0.35, `moved ${moved}`);
});

Deno.test("weighByCapacity() scales vnodes by space over the average, once", () => {
  const nodes = [
    { ...node(7000), space: 100 },
    { ...node(7001), space: 100 },
    { ...node(7002), space: 200 },
    node(7003, 7003, 50), // fixed: no space advertised
    { ...node(7004, 7004, 0), space: 900 }, // a gateway: out of the ring and of the average
  ];
  const weighed = weighByCapacity(nodes);
  assert.deepEqual(weighed.map((n) => n.vnodes), [96, 96, 192, 50, 0]);
  assert.ok(weighed.every((n) => !("space" in n)));
  assert.deepEqual(weighByCapacity(weighed), weighed);
  const tiny = weighByCapacity([{ ...node(7000), space: 1e12 }, { ...node(7001), space: 1 }]);
  assert.deepEqual(tiny.map((n) => n.vnodes), [256, 1], "a tiny node stays on the ring");
  assert.deepEqual(weighByCapacity([{ ...node(7000), space: 0 }]).map((n) => n.vnodes), [0]);
});

Deno.test("a node with twice the capacity holds about twice the objects", () => {
  const nodes = Array.from({ length: 10 }, (_, i) => ({ ...node(7000 + i), space: 1e12 }));
  nodes[0] = { ...nodes[0]!, space: 2e12 };
  const ring = buildRing(weighByCapacity(nodes));
  const counts = new Map<string, number>();
  for (let i = 0; i < 40_000; i++) {
    const oid = (0x7c2b25n << 32n) | BigInt(i);
    for (const holder of oidToNodes(ring, oid, 1)) {
      counts.set(holder.id, (counts.get(holder.id) ?? 0) + 1);
    }
  }
  const big = counts.get(nodes[0]!.id)!;
  const others = nodes.slice(1).map((n) => counts.get(n.id)!);
  const mean = others.reduce((a, b) => a + b, 0) / others.length;
  // 128 vnodes spread a node's share by about ±10%: twice, within that.
  assert.ok(big / mean > 1.7 && big / mean < 2.3, `big node holds ${big / mean}× the mean`);
});
