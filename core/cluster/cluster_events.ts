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
  | { type: "recovered"; node: string; epoch: number }
  /**
   * VDI headers read from inodes that the tables lack or hold older versions of (`headers`:
   * their 4,664 bytes each, base64): net/sheep/header_drift.ts says when a node finds them.
   */
  | {
    type: "found";
    headers: string;
    /** The proposer's format (`ClusterConfig.ctimeMs`): headers of another are not taken in. */
    formatMs?: number;
  };

export function encodeEvent(event: ClusterEvent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(event));
}

/**
 * Decodes an event and checks its shape, so that a malformed one is refused whole before any
 * node applies any of it (a known type with a missing or mistyped field). Types this version
 * does not know pass: the state machine ignores them on every node alike.
 */
export function decodeEvent(payload: Uint8Array): ClusterEvent {
  try {
    const event = JSON.parse(new TextDecoder().decode(payload)) as unknown;
    const problem = eventProblem(event);
    if (problem) throw new Error(problem);
    return event as ClusterEvent;
  } catch (error) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Malformed cluster event: ${(error as Error).message}`,
    );
  }
}

type Field = "number" | "string" | "boolean" | "object" | "number?" | "string?" | "boolean?";

/** The fields each known event (and VDI event) must have. */
const EVENT_FIELDS: Record<string, Record<string, Field>> = {
  mkfs: { config: "object", force: "boolean" },
  vdi: { event: "object" },
  lock: { vid: "number", client: "string", node: "string", sinceMs: "number", force: "boolean" },
  unlock: { vid: "number", client: "string?" },
  recovered: { node: "string", epoch: "number" },
  found: { headers: "string", formatMs: "number?" },
};
const CONFIG_FIELDS: Record<string, Field> = {
  ctimeMs: "number",
  flags: "number",
  copies: "number",
  blockSizeShift: "number",
  shutdown: "boolean",
};
/** Every VDI event type must be listed (the compiler says so), or a valid one is refused. */
const VDI_EVENT_FIELDS: Record<VdiEvent["type"], Record<string, Field>> = {
  create: {
    name: "string",
    sizeBytes: "number",
    copies: "number",
    blockSizeShift: "number",
    nowMs: "number",
    expectVid: "number?",
  },
  snapshot: { vid: "number", tag: "string", nowMs: "number", expectVid: "number?" },
  clone: {
    baseVid: "number",
    name: "string",
    nowMs: "number",
    sizeBytes: "number?",
    expectVid: "number?",
  },
  rollback: {
    snapshotVid: "number",
    nowMs: "number",
    afterSnapId: "number?",
    expectVid: "number?",
  },
  delete: { vid: "number" },
  resize: { vid: "number", sizeBytes: "number", shrink: "boolean?" },
  rename: { vid: "number", name: "string" },
  flatten: { vid: "number" },
};

/** What is wrong with a decoded event, or null. */
function eventProblem(event: unknown): string | null {
  if (!isObject(event) || typeof event.type !== "string") return "no type";
  const fields = EVENT_FIELDS[event.type];
  if (!fields) return null;
  const problem = fieldsProblem(event, fields);
  if (problem) return `${event.type}: ${problem}`;
  if (event.type === "mkfs") {
    const config = fieldsProblem(event.config as Record<string, unknown>, CONFIG_FIELDS);
    return config ? `mkfs config: ${config}` : null;
  }
  if (event.type === "vdi") {
    const vdi = event.event as Record<string, unknown>;
    const vdiFields = (VDI_EVENT_FIELDS as Record<string, Record<string, Field> | undefined>)[
      String(vdi.type)
    ];
    if (!vdiFields) return `vdi: unknown VDI event type ${JSON.stringify(vdi.type)}`;
    const problem = fieldsProblem(vdi, vdiFields);
    return problem ? `vdi ${vdi.type}: ${problem}` : null;
  }
  return null;
}

function fieldsProblem(
  value: Record<string, unknown>,
  fields: Record<string, Field>,
): string | null {
  for (const [name, field] of Object.entries(fields)) {
    const optional = field.endsWith("?");
    const type = optional ? field.slice(0, -1) : field;
    const actual = value[name];
    if (actual === undefined && optional) continue;
    const ok = FIELD_CHECKS[type as keyof typeof FIELD_CHECKS](actual);
    if (!ok) return `${name} is ${actual === undefined ? "missing" : `not a ${type}`}`;
  }
  return null;
}

const FIELD_CHECKS = {
  number: (value: unknown) => typeof value === "number" && Number.isFinite(value),
  string: (value: unknown) => typeof value === "string",
  boolean: (value: unknown) => typeof value === "boolean",
  object: (value: unknown) => isObject(value),
};

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
