/**
 * VDI_SUMMARY: every live VDI and snapshot with the objects it owns and shares, what every
 * listing shows (`info -t vdi`, `info -t vm`, `img du`, the HTTP API, the dashboard). The
 * headers are the registry's (every node holds them in memory); the counts are those the
 * holders of each inode keep (allocation_counts.ts), gathered with one VDI_SUMMARY with
 * Flag.FWD per node ("your own counts"). No inode is read, except one that no holder counted
 * (all of them in recovery, or unreachable): that one is read through the gateway and counted.
 *
 * @module
 */

import { type AllocationCount, countObjects } from "../../core/vdi/cow.ts";
import type { InodeHeader } from "../../core/vdi/inode.ts";
import { vdiOid, type Vid } from "../../core/vdi/oid.ts";
import type { VdiRegistryReader } from "../../core/cluster/cluster_state_machine.ts";
import type { ClusterView } from "../../core/cluster/view.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import { type ObjectClient, requestHeader } from "../object/client.ts";
import { Flag, Opcode } from "../object/ops.ts";
import type { AllocationCounts } from "./allocation_counts.ts";
import type { Gateway } from "./gateway.ts";
import type { VdiService } from "./vdi_service.ts";

/** What the summary uses of its node. */
export interface SummaryHost {
  readonly id: string;
  readonly view: ClusterView;
  readonly registry: VdiRegistryReader;
  readonly peers: { get(node: RingNode): Pick<ObjectClient, "send"> };
  readonly allocations: Pick<AllocationCounts, "counts">;
  readonly recovery: { readonly active: boolean };
  readonly gateway: Pick<Gateway, "targets">;
  readonly vdis: Pick<VdiService, "readInode">;
}

/** A node's own counts (VDI_SUMMARY with Flag.FWD): `[vid, allocated, shared]` per copy it holds. */
interface OwnCounts {
  counts?: [Vid, number, number][];
  /** The node is recovering: its copies may be behind, so it counts none of them. */
  recovering?: boolean;
}

/** One row of VDI_SUMMARY: the inode header (times as decimal strings) and its counts. */
export type SummaryRow =
  & Omit<InodeHeader, "createTime" | "snapCtime" | "vmClockNsec" | "vmStateSize">
  & { createTime: string; snapCtime: string; vmClockNsec: string; vmStateSize: string }
  & AllocationCount;

const decoder = new TextDecoder();

/** This node's counts of the live inodes it holds a copy of. */
export async function ownCounts(host: SummaryHost): Promise<OwnCounts> {
  if (host.recovery.active) return { recovering: true };
  const counts = await host.allocations.counts(host.registry.live().map((h) => h.vdiId));
  return { counts: [...counts].map(([vid, c]) => [vid, c.allocated, c.shared]) };
}

/** Every node's own counts, by node id (a node that does not answer is left out). */
async function countsByNode(host: SummaryHost): Promise<Map<string, Map<Vid, AllocationCount>>> {
  const byNode = new Map<string, Map<Vid, AllocationCount>>();
  const nodes = host.view.nodes.some((n) => n.id === host.id)
    ? host.view.nodes
    : [{ id: host.id } as RingNode];
  await Promise.all(nodes.map(async (node) => {
    let own: OwnCounts;
    if (node.id === host.id) own = await ownCounts(host);
    else {
      const header = requestHeader(Opcode.VDI_SUMMARY, { internal: true });
      header.flags |= Flag.FWD;
      try {
        const response = await host.peers.get(node).send(header);
        own = JSON.parse(decoder.decode(response.data)) as OwnCounts;
      } catch {
        return; // the other holders answer, or the inode is read
      }
    }
    if (!Array.isArray(own?.counts)) return;
    byNode.set(
      node.id,
      new Map(own.counts.map(([vid, allocated, shared]) => [vid, { allocated, shared }])),
    );
  }));
  return byNode;
}

/** The count of `vid`'s inode from its holders (this node first), else from the inode itself. */
async function countOf(
  host: SummaryHost,
  byNode: Map<string, Map<Vid, AllocationCount>>,
  vid: Vid,
): Promise<AllocationCount> {
  let holders: string[] = [];
  try {
    holders = host.gateway.targets(vdiOid(vid)).map((n) => n.id);
  } catch {
    // No placement (no node alive): only the read below can say.
  }
  holders.sort((a, b) => Number(b === host.id) - Number(a === host.id));
  for (const id of holders) {
    const count = byNode.get(id)?.get(vid);
    if (count) return count;
  }
  return countObjects(await host.vdis.readInode(vid));
}

/** VDI_SUMMARY's rows: every live VDI and snapshot, by ascending vid. */
export async function vdiSummary(host: SummaryHost): Promise<SummaryRow[]> {
  const live = host.registry.live();
  const byNode = await countsByNode(host);
  return await Promise.all(live.map(async (header) => ({
    ...header,
    createTime: header.createTime.toString(),
    snapCtime: header.snapCtime.toString(),
    vmClockNsec: header.vmClockNsec.toString(),
    vmStateSize: header.vmStateSize.toString(),
    ...await countOf(host, byNode, header.vdiId),
  })));
}
