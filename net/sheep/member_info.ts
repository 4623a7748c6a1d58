/**
 * What a sheep advertises of itself to its cluster (the `info` of a group member): its ring
 * node, that is address, zone, vnodes and, when its vnodes follow capacity, its space. Every
 * member builds the ring of a view from these, so all build the same one.
 *
 * @module
 */

import type { RingNode } from "../../core/hash/ring.ts";
import { type ClusterView, makeView } from "../../core/cluster/view.ts";
import type { EpochRecord, JsonObject } from "../group/mod.ts";

/** The `info` that advertises `node`. */
export function memberInfoOf(node: RingNode): JsonObject {
  return {
    host: node.host,
    port: node.port,
    zone: node.zone,
    vnodes: node.vnodes,
    ...(node.space === undefined ? {} : { space: node.space }),
  };
}

/**
 * The ring node member `id` advertised (before weighing by capacity). A member that sent no
 * space (fixed vnodes, or a version before capacity weighting) keeps its vnodes as sent.
 */
export function ringNodeOfMember(id: string, info: JsonObject): RingNode {
  const space = info.space;
  return {
    id,
    host: String(info.host),
    port: Number(info.port),
    zone: Number(info.zone),
    vnodes: Number(info.vnodes ?? 0),
    ...(typeof space === "number" && Number.isFinite(space) && space >= 0 ? { space } : {}),
  };
}

/** The ring view of a logged epoch: its storage members (witnesses store nothing). */
export function viewOfEpoch(record: Pick<EpochRecord, "epoch" | "members">): ClusterView {
  return makeView(record.epoch, storageNodesOf(record.members));
}

/** The storage members (witnesses store nothing), as the ring knows them. */
export function storageNodesOf(
  members: readonly { id: string; witness?: boolean; info: JsonObject }[],
): RingNode[] {
  return members.filter((m) => !m.witness).map((m) => ringNodeOfMember(m.id, m.info));
}
