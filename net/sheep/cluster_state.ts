/**
 * The state a joining or restarting sheep fetches from a peer: cluster config, every VDI
 * header, attach locks, and the last event sequence number it reflects.
 *
 * @module
 */

import type { ReplicatedState } from "../../core/cluster/cluster_state_machine.ts";

/** GET_CLUSTER_STATE's answer: the replicated state and the last event sequence it reflects. */
export interface ClusterState extends ReplicatedState {
  seq: number;
  /**
   * The epoch of the answering node's first view since it started (absent before that view):
   * it fetched the state of that view's members, and of no node that came after.
   */
  firstEpoch?: number;
}

const BIGINT_FIELDS = ["createTime", "snapCtime", "vmClockNsec", "vmStateSize"] as const;

export function encodeClusterState(state: ClusterState): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify(state, (_key, value) => typeof value === "bigint" ? value.toString() : value),
  );
}

export function decodeClusterState(bytes: Uint8Array): ClusterState {
  const state = JSON.parse(new TextDecoder().decode(bytes)) as ClusterState;
  for (const header of state.headers) {
    for (const field of BIGINT_FIELDS) {
      (header as unknown as Record<string, unknown>)[field] = BigInt(
        header[field] as unknown as string,
      );
    }
  }
  return state;
}
