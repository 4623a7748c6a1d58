import assert from "node:assert/strict";
import { buildRing } from "../../core/hash/ring.ts";
import { ringLayout } from "./ring_layout.ts";

const nodes = [1, 2, 3].map((i) => ({
  id: `10.0.0.${i}:7000`,
  host: `10.0.0.${i}`,
  port: 7000,
  zone: i,
  vnodes: 64 * i,
}));

Deno.test("ringLayout() gives every vnode's position and shares that sum to the whole ring", () => {
  const layout = ringLayout(nodes);
  assert.equal(layout.points, 64 + 128 + 192);
  assert.equal(layout.zones, 3);
  assert.deepEqual(layout.nodes.map((n) => [n.id, n.positions.length]), [
    ["10.0.0.1:7000", 64],
    ["10.0.0.2:7000", 128],
    ["10.0.0.3:7000", 192],
  ]);
  const total = layout.nodes.reduce((sum, n) => sum + n.share, 0);
  assert.ok(Math.abs(total - 1) < 1e-9, `shares sum to ${total}`);
  // More vnodes, more of the ring (on average).
  assert.ok(layout.nodes[2]!.share > layout.nodes[0]!.share);
  for (const node of layout.nodes) {
    assert.deepEqual(node.positions, [...node.positions].sort((a, b) => a - b));
    assert.ok(node.positions.every((p) => p >= 0 && p < 1));
  }
});

Deno.test("ringLayout() matches the ring placement uses", () => {
  const ring = buildRing(nodes);
  const layout = ringLayout(nodes);
  const first = ring.vnodes[0]!;
  const owner = layout.nodes.find((n) => n.id === first.node.id)!;
  assert.equal(Math.min(...layout.nodes.flatMap((n) => n.positions)), owner.positions[0]);
  assert.equal(owner.positions[0], Number(first.hash >> 11n) / 2 ** 53);
});

Deno.test("ringLayout() of one node owns the whole ring; no vnodes, no points", () => {
  const one = ringLayout([{ ...nodes[0]!, vnodes: 1 }]);
  assert.equal(one.nodes[0]!.share, 1);
  const none = ringLayout([{ ...nodes[0]!, vnodes: 0 }]);
  assert.equal(none.points, 0);
  assert.deepEqual(none.nodes[0]!.positions, []);
  assert.equal(none.nodes[0]!.share, 0);
});
