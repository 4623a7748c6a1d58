import assert from "node:assert/strict";
import { buildRing, defaultZone, oidToNodes, type RingNode, weightedVnodes } from "./ring.ts";

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

Deno.test("weightedVnodes() follows capacity", () => {
  assert.deepEqual(weightedVnodes([100, 100, 200, 0], 128), [96, 96, 192, 0]);
  assert.deepEqual(weightedVnodes([0], 128), [0]);
});
