/**
 * Placement statistics over a ring: how evenly objects spread over the nodes, and how many
 * copies move when the ring changes (a join, a leave). Pure; the scale benchmark reports them.
 *
 * @module
 */

import { oidToNodes, type Ring } from "./ring.ts";

/** Copies each node of `ring` holds of `oids` (every node listed, 0 if it holds none). */
export function copiesPerNode(
  ring: Ring,
  oids: Iterable<bigint>,
  copies: number,
): Map<string, number> {
  const counts = new Map(ring.nodes.filter((n) => n.vnodes > 0).map((n) => [n.id, 0]));
  for (const oid of oids) {
    for (const node of oidToNodes(ring, oid, copies)) {
      counts.set(node.id, (counts.get(node.id) ?? 0) + 1);
    }
  }
  return counts;
}

/** How far per-node counts stray from their mean: max ÷ mean and min ÷ mean (1 is even). */
export interface Spread {
  readonly mean: number;
  readonly maxOverMean: number;
  readonly minOverMean: number;
}

export function spreadOf(counts: readonly number[]): Spread {
  if (counts.length === 0) return { mean: 0, maxOverMean: 1, minOverMean: 1 };
  const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
  if (mean === 0) return { mean, maxOverMean: 1, minOverMean: 1 };
  return { mean, maxOverMean: Math.max(...counts) / mean, minOverMean: Math.min(...counts) / mean };
}

/**
 * The fraction of copies that must move from `before` to `after`: copies placed on a node
 * that did not hold that object before (recovery makes each one), over all copies placed
 * after. One node joining or leaving N nodes moves 1/N at best (N counted with the node).
 */
export function movedFraction(
  before: Ring,
  after: Ring,
  oids: Iterable<bigint>,
  copies: number,
): number {
  let moved = 0;
  let placed = 0;
  for (const oid of oids) {
    const held = new Set(oidToNodes(before, oid, copies).map((n) => n.id));
    for (const node of oidToNodes(after, oid, copies)) {
      placed++;
      if (!held.has(node.id)) moved++;
    }
  }
  return placed === 0 ? 0 : moved / placed;
}
