/**
 * The id a cluster writes under its etcd prefix: a fingerprint of its cluster key, so sheep of
 * one cluster (one key) agree on it without configuration, and a sheep with another key, or
 * another cluster's data left under the same prefix, is refused at start. The key itself never
 * goes to etcd.
 *
 * @module
 */

import { mac } from "../auth/mac.ts";

/** 16 hex digits; "unkeyed" for a sheep without a key (in-process tests only). */
export function clusterIdOf(key: Uint8Array | undefined): string {
  if (!key) return "unkeyed";
  return [...mac(key, "sheepdog etcd cluster id").subarray(0, 8)]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}
