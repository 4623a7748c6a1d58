/**
 * Cluster events: what a sheep proposes through the group so that every node applies it in the
 * same order (format, VDI changes, attach locks, recovery completion).
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../errors.ts";
import type { VdiEvent } from "../vdi/registry.ts";
import type { ClusterConfig } from "./cluster_config.ts";

export type ClusterEvent =
  | { type: "mkfs"; config: ClusterConfig; force: boolean }
  | { type: "vdi"; event: VdiEvent }
  | { type: "lock"; vid: number; client: string; node: string; sinceMs: number; force: boolean }
  | { type: "unlock"; vid: number; client?: string }
  | { type: "recovered"; node: string; epoch: number };

export function encodeEvent(event: ClusterEvent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(event));
}

export function decodeEvent(payload: Uint8Array): ClusterEvent {
  try {
    const event = JSON.parse(new TextDecoder().decode(payload)) as ClusterEvent;
    if (typeof event?.type !== "string") throw new Error("no type");
    return event;
  } catch (error) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Malformed cluster event: ${(error as Error).message}`,
    );
  }
}
