/**
 * The consistent-hash ring: each storage node owns `vnodes` points, derived from its address
 * by `sd_hash`; an object goes to the first `copies` nodes clockwise from `sd_hash_oid(oid)`
 * whose zones differ (SHEEPDOG_REFERENCE.md §3.2-3.3). A ring is immutable once built.
 *
 * @module
 */

import { assert } from "../assert.ts";
import { sdHash, sdHashNext, sdHashOid } from "./fnv.ts";

/** A storage node as placement sees it. `id` is "host:port". */
export interface RingNode {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly zone: number;
  /**
   * Points on the ring. With `space` set, the count for a node of the cluster's average
   * capacity, which {@link weighByCapacity} scales to this node's capacity.
   */
  readonly vnodes: number;
  /**
   * Capacity in bytes, when the node's vnodes follow it (Sheepdog's "auto" strategy); absent
   * when its vnodes are fixed (`--vnodes`), and on the nodes of a built view (weighed once).
   */
  readonly space?: number;
}

/** One point of the ring. */
export interface Vnode {
  readonly hash: bigint;
  readonly node: RingNode;
}

/** A built ring: vnodes sorted by position, and the number of distinct zones. */
export interface Ring {
  readonly vnodes: readonly Vnode[];
  readonly nodes: readonly RingNode[];
  readonly zones: number;
}

/** Parses dotted IPv4 into its 4 bytes, or undefined. */
export function parseIPv4(host: string): Uint8Array | undefined {
  const parts = host.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i]!;
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return undefined;
    bytes[i] = Number(part);
  }
  return bytes;
}

/** The first 18 bytes of Sheepdog's `node_id`: addr[16] (IPv4 after 12 zero bytes) + port. */
export function nodeIdBytes(host: string, port: number): Uint8Array {
  const bytes = new Uint8Array(18);
  const ipv4 = parseIPv4(host);
  if (ipv4) bytes.set(ipv4, 12);
  else bytes.set(new TextEncoder().encode(host).subarray(0, 16));
  bytes[16] = port & 0xff;
  bytes[17] = (port >> 8) & 0xff;
  return bytes;
}

/** The default zone: the IPv4 address bytes read as a little-endian u32, as Sheepdog does. */
export function defaultZone(host: string, port: number): number {
  const ipv4 = parseIPv4(host);
  if (!ipv4) return port;
  return (ipv4[0]! | (ipv4[1]! << 8) | (ipv4[2]! << 16) | (ipv4[3]! << 24)) >>> 0;
}

/** Builds the ring of `nodes`; nodes with 0 vnodes (gateways, witnesses) own no points. */
export function buildRing(nodes: readonly RingNode[]): Ring {
  const vnodes: Vnode[] = [];
  const seen = new Set<bigint>();
  for (const node of nodes) {
    let hash = sdHash(nodeIdBytes(node.host, node.port));
    for (let k = 0; k < node.vnodes; k++) {
      hash = sdHashNext(hash);
      // A 64-bit collision is practically impossible; skipping it keeps the ring well-formed.
      if (seen.has(hash)) continue;
      seen.add(hash);
      vnodes.push({ hash, node });
    }
  }
  vnodes.sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
  const zones = new Set(nodes.filter((n) => n.vnodes > 0).map((n) => n.zone)).size;
  return { vnodes, nodes, zones };
}

/** Index of the first vnode with hash >= position, wrapping to 0. */
function firstVnodeAtOrAfter(ring: Ring, position: bigint): number {
  let low = 0;
  let high = ring.vnodes.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (ring.vnodes[middle]!.hash < position) low = middle + 1;
    else high = middle;
  }
  return low === ring.vnodes.length ? 0 : low;
}

/**
 * The nodes that hold `oid`: walking clockwise, the first `copies` vnodes in distinct zones.
 * Returns fewer than `copies` nodes when there are fewer zones (reduced redundancy).
 */
export function oidToNodes(ring: Ring, oid: bigint, copies: number): RingNode[] {
  assert(copies >= 1, "oidToNodes: copies must be at least 1");
  const wanted = Math.min(copies, ring.zones);
  const chosen: RingNode[] = [];
  if (wanted === 0) return chosen;
  const zonesTaken = new Set<number>();
  const start = firstVnodeAtOrAfter(ring, sdHashOid(oid));
  for (let step = 0; step < ring.vnodes.length && chosen.length < wanted; step++) {
    const vnode = ring.vnodes[(start + step) % ring.vnodes.length]!;
    if (zonesTaken.has(vnode.node.zone)) continue;
    zonesTaken.add(vnode.node.zone);
    chosen.push(vnode.node);
  }
  assert(chosen.length === wanted, "oidToNodes: ring walk found too few zones");
  return chosen;
}

/**
 * Capacity-weighted vnodes, Sheepdog's "auto" strategy: a node that advertises its `space`
 * gets `round(vnodes × space / average space)` points, the average taken over the nodes that
 * advertise one (gateways left out), at least 1 (a node twice the size holds twice the objects). Nodes without
 * `space` (fixed vnodes, gateways with 0) keep their count. The result carries no `space`, so
 * weighing it again changes nothing. Every member weighs the same view the same way.
 */
export function weighByCapacity(nodes: readonly RingNode[]): RingNode[] {
  const spaces = nodes.flatMap((n) =>
    n.space !== undefined && n.space > 0 && n.vnodes > 0 ? [n.space] : []
  );
  const average = spaces.reduce((a, b) => a + b, 0) / spaces.length;
  return nodes.map(({ space, ...node }) => {
    if (space === undefined || node.vnodes === 0) return node;
    if (space <= 0) return { ...node, vnodes: 0 };
    return { ...node, vnodes: Math.max(1, Math.round((node.vnodes * space) / average)) };
  });
}
