/**
 * The hash ring as the dashboard draws it: each node's vnode positions as fractions of the
 * 64-bit ring, and the share of the ring it owns. An object hashing to `h` lives first on the
 * vnode at or after `h` clockwise, so a vnode owns the arc from the previous vnode (exclusive)
 * up to itself.
 *
 * @module
 */

import { buildRing, type RingNode } from "../../core/hash/ring.ts";

export interface RingNodeLayout {
  id: string;
  zone: number;
  vnodes: number;
  /** Fraction of the ring (0..1) whose objects this node holds first. */
  share: number;
  /** Vnode positions, ascending, as fractions of the ring in [0, 1). */
  positions: number[];
}

export interface RingLayout {
  /** Vnodes on the ring (all nodes). */
  points: number;
  zones: number;
  nodes: RingNodeLayout[];
}

const RING_SIZE = 2 ** 64;

function fraction(hash: bigint): number {
  // The top 53 bits are all a double holds; positions only need to be drawn.
  return Number(hash >> 11n) / 2 ** 53;
}

/** Lays out the ring of `nodes` (as `GET_NODE_LIST` reports them). */
export function ringLayout(nodes: readonly RingNode[]): RingLayout {
  const ring = buildRing(nodes);
  const byId = new Map<string, RingNodeLayout>();
  for (const node of nodes) {
    byId.set(node.id, {
      id: node.id,
      zone: node.zone,
      vnodes: node.vnodes,
      share: 0,
      positions: [],
    });
  }
  const count = ring.vnodes.length;
  for (let i = 0; i < count; i++) {
    const vnode = ring.vnodes[i]!;
    const layout = byId.get(vnode.node.id)!;
    layout.positions.push(fraction(vnode.hash));
    const previous = ring.vnodes[(i + count - 1) % count]!.hash;
    // Arc (previous, this]; with one vnode it is the whole ring.
    const arc = count === 1 ? RING_SIZE : Number(BigInt.asUintN(64, vnode.hash - previous));
    layout.share += arc / RING_SIZE;
  }
  return { points: count, zones: ring.zones, nodes: [...byId.values()] };
}
