import assert from "node:assert/strict";
import { buildRing, type RingNode } from "./ring.ts";
import { copiesPerNode, movedFraction, spreadOf } from "./placement_stats.ts";

function node(port: number, vnodes = 128): RingNode {
  return { id: `127.0.0.1:${port}`, host: "127.0.0.1", port, zone: port, vnodes };
}

function oids(count: number): bigint[] {
  return Array.from({ length: count }, (_, i) => (0x7c2b25n << 32n) | BigInt(i));
}

Deno.test("spreadOf() gives max and min over the mean", () => {
  assert.deepEqual(spreadOf([10, 20, 30]), { mean: 20, maxOverMean: 1.5, minOverMean: 0.5 });
  assert.deepEqual(spreadOf([]), { mean: 0, maxOverMean: 1, minOverMean: 1 });
  assert.deepEqual(spreadOf([0, 0]), { mean: 0, maxOverMean: 1, minOverMean: 1 });
});

Deno.test("copiesPerNode() counts every copy once, and lists nodes holding none", () => {
  const ring = buildRing([node(7000), node(7001), node(7002), node(7003, 0)]);
  const counts = copiesPerNode(ring, oids(1000), 2);
  assert.deepEqual([...counts.keys()].sort(), [
    "127.0.0.1:7000",
    "127.0.0.1:7001",
    "127.0.0.1:7002",
  ]);
  assert.equal([...counts.values()].reduce((a, b) => a + b, 0), 2000);
  const lonely = copiesPerNode(buildRing([node(7000), node(7001, 1)]), oids(0), 1);
  assert.deepEqual([...lonely.values()], [0, 0]);
});

Deno.test("movedFraction(): nothing for the same ring, about 1/N for a join or a leave", () => {
  const nodes = Array.from({ length: 8 }, (_, i) => node(7000 + i));
  const eight = buildRing(nodes);
  const seven = buildRing(nodes.slice(1));
  const sample = oids(8000);
  assert.equal(movedFraction(eight, eight, sample, 3), 0);
  for (const copies of [1, 3]) {
    const join = movedFraction(seven, eight, sample, copies);
    const leave = movedFraction(eight, seven, sample, copies);
    assert.ok(join > 0.7 / 8 && join < 1.3 / 8, `join moved ${join} with ${copies} copies`);
    assert.ok(leave > 0.7 / 8 && leave < 1.3 / 8, `leave moved ${leave} with ${copies} copies`);
  }
  // Everything moves when the ring is replaced by another.
  const other = buildRing([node(8000), node(8001), node(8002)]);
  assert.equal(movedFraction(eight, other, sample, 3), 1);
});
