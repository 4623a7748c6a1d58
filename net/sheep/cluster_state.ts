/**
 * The state a joining or restarting sheep fetches from a peer: cluster config, every VDI
 * header, attach locks, and the last event sequence number it reflects.
 *
 * @module
 */

import type { InodeHeader } from "../../core/vdi/inode.ts";
import type { ClusterConfig } from "./cluster_config.ts";
import type { VdiLock } from "./sheep.ts";

export interface ClusterState {
  seq: number;
  config: ClusterConfig | null;
  headers: InodeHeader[];
  locks: VdiLock[];
  /** Recovery reports heard so far, per epoch: a joiner missed the events that carried them. */
  recovered?: Record<string, string[]>;
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
