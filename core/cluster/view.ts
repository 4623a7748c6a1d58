/**
 * An immutable view of the cluster for one epoch: its storage nodes, their ring and the number
 * of copies. A request keeps the view it started with; recovery compares two views.
 *
 * @module
 */

import { buildRing, oidToNodes, type Ring, type RingNode, weighByCapacity } from "../hash/ring.ts";
import type { Oid } from "../vdi/oid.ts";

export interface ClusterView {
  readonly epoch: number;
  readonly nodes: readonly RingNode[];
  readonly ring: Ring;
}

/** The view of `nodes` at `epoch`; vnodes that follow capacity are weighed here, once. */
export function makeView(epoch: number, nodes: readonly RingNode[]): ClusterView {
  const sorted = weighByCapacity(nodes).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return Object.freeze({ epoch, nodes: sorted, ring: buildRing(sorted) });
}

/** The nodes that hold `oid` in this view. */
export function targetsOf(view: ClusterView, oid: Oid, copies: number): RingNode[] {
  return oidToNodes(view.ring, oid, copies);
}
