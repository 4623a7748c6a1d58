/**
 * Catching up from peers: a node that missed history (it joined, restarted, was cut off, or its
 * driver lost the log it was reading) fetches the replicated state (GET_CLUSTER_STATE) from the
 * other members and merges it into its own.
 *
 * @module
 */

import type { RingNode } from "../../core/hash/ring.ts";
import { requestHeader } from "../object/client.ts";
import { Opcode } from "../object/ops.ts";
import { decodeClusterState } from "./cluster_state.ts";
import type { MemberHost } from "./cluster_driver.ts";

/**
 * Merges every reachable peer's state into the host's. Returns the highest event position
 * (`ClusterState.seq`) among the states merged, or null if no peer answered. `reached` hears each
 * merged state's position the moment the state is in (before its I/O is done), so that the
 * driver's own position never lags what its state holds: a peer fetching from this node
 * meanwhile must not get a state that already holds events its position says are still to come.
 */
export async function mergeFromPeers(
  host: MemberHost,
  nodes: readonly Pick<RingNode, "id" | "host" | "port">[],
  reached: (seq: number) => void = () => {},
): Promise<number | null> {
  let seq: number | null = null;
  for (const node of nodes) {
    if (node.id === host.id) continue;
    try {
      const header = requestHeader(Opcode.GET_CLUSTER_STATE, { internal: true });
      const response = await host.peers.get(node).send(header);
      const state = decodeClusterState(response.data);
      const merging = host.mergeState(state);
      reached(state.seq);
      await merging;
      seq = Math.max(seq ?? 0, state.seq);
    } catch (error) {
      host.logger.warn(`cannot fetch cluster state from ${node.id}: ${(error as Error).message}`);
    }
  }
  return seq;
}
