/**
 * The one JSON schema of what the cluster reports: the HTTP API (`/api/v1/...`) answers these
 * objects and the command line's `--json` prints the same ones, so a field has one name
 * everywhere (`createdMs`, `epochHistory`, `rate`, ...).
 *
 * - `clusterView`: status, epoch, copies, strict, blockSizeShift, objectSize, createdMs (ms
 *   since the Unix epoch), zones, nodes (ids), redundancy {state, copies, zones, message},
 *   epochHistory [{epoch, nodes, timeMs?}] newest first.
 * - `nodeView`: the node row (id, host, port, zone, vnodes, space, health) plus address,
 *   state ("up" | "degraded") and problem.
 * - `vdiViews`: each VDI or snapshot row plus ref ("NAME" or "NAME:SNAPID") and parent (a ref).
 * - `recoveryReport`: state ("idle" | "recovering") and nodes [{id, epoch, state, phase (the
 *   node's own: idle, gathering, recovering, done, failed, unreachable), done, total, failed,
 *   rate (objects per second), error?}].
 * - `scrubReport`: totals of every node's current or last pass, and each node's row.
 * - `duReport` (`img du`, `/api/v1/du`): vdis [{ref, name, snapshot, snapId, tag, vid,
 *   sizeBytes, allocatedBytes, sharedBytes}] as `rbd du` orders them (each VDI's snapshots oldest
 *   first, then the VDI), and total {sizeBytes (working VDIs'), allocatedBytes, sharedBytes}.
 *   `allocatedBytes` is what `rbd du` calls used: the same count as in `vdiViews`.
 *
 * @module
 */

import type { ClusterInfo, NodeRow, RecoveryRow, ScrubRow, VdiRow } from "./admin_service.ts";
import { nodeProblem } from "./format.ts";

/** One epoch of the cluster's history: who was in it. */
export interface EpochRecord {
  epoch: number;
  nodes: string[];
  timeMs?: number;
}

/** Recovery progress of one node. */
export interface NodeRecovery {
  id: string;
  /** The epoch the node recovers (or last recovered). */
  epoch: number;
  /** The node's own state: "recovering" above covers gathering and recovering. */
  phase: RecoveryRow["state"];
  /** Objects whose pull failed in the last pass (retried). */
  failed: number;
  error?: string;
  state: "idle" | "recovering";
  done: number;
  total: number;
  /** Objects per second. */
  rate: number;
}

export interface RecoveryReport {
  state: "idle" | "recovering";
  nodes: NodeRecovery[];
}

/** The cluster's scrub: totals of every node's current (or last) pass, and each node's row. */
export interface ScrubReport {
  /** "running" while any node scrubs. */
  state: "running" | "idle";
  objectsChecked: number;
  objectsTotal: number;
  bytesVerified: number;
  badBlocks: number;
  repaired: number;
  repairFailed: number;
  /** Findings of the current (or last) passes, all nodes. */
  findings: number;
  nodes: ScrubRow[];
}

/** Sums the nodes' rows into a report. */
export function scrubReport(nodes: ScrubRow[]): ScrubReport {
  const sum = (f: (row: ScrubRow) => number | undefined) =>
    nodes.reduce((total, row) => total + (f(row) ?? 0), 0);
  return {
    state: nodes.some((n) => n.state === "running") ? "running" : "idle",
    objectsChecked: sum((r) => r.objectsChecked),
    objectsTotal: sum((r) => r.objectsTotal),
    bytesVerified: sum((r) => r.bytesVerified),
    badBlocks: sum((r) => r.badBlocks),
    repaired: sum((r) => r.repaired),
    repairFailed: sum((r) => r.repairFailed),
    findings: sum((r) => r.findingsTotal),
    nodes,
  };
}

/** A VDI or snapshot as the API shows it: the admin row plus how to address it. */
export interface VdiView extends VdiRow {
  /** "NAME" for a working VDI, "NAME:SNAPID" for a snapshot: what the endpoints accept. */
  ref: string;
  /** The `ref` of the snapshot this one grew from, or null. */
  parent: string | null;
}

function refOf(row: VdiRow): string {
  return row.snapshot ? `${row.name}:${row.snapId}` : row.name;
}

export function vdiViews(rows: VdiRow[]): VdiView[] {
  const byVid = new Map(rows.map((row) => [row.vid, row]));
  return rows.map((row) => {
    const parent = byVid.get(row.parentVid);
    return { ...row, ref: refOf(row), parent: parent ? refOf(parent) : null };
  });
}

export function nodeView(
  row: NodeRow,
): NodeRow & { address: string; state: "up" | "degraded"; problem?: string } {
  const problem = nodeProblem(row.health, Date.now());
  return {
    ...row,
    address: `${row.host}:${row.port}`,
    state: problem ? "degraded" : "up",
    ...(problem ? { problem } : {}),
  };
}

/** How many copies each object really has, given the zones the ring spans. */
function redundancy(info: { status: string; copies: number; zones: number; strict: boolean }) {
  if (info.status !== "running") {
    return {
      state: "unavailable",
      copies: info.copies,
      zones: info.zones,
      message: "Not serving I/O",
    };
  }
  if (info.zones >= info.copies) {
    return {
      state: "full",
      copies: info.copies,
      zones: info.zones,
      message: `Every object has ${info.copies} ${info.copies === 1 ? "copy" : "copies"}`,
    };
  }
  return {
    state: info.zones === 0 ? "none" : "degraded",
    copies: info.copies,
    zones: info.zones,
    message: info.strict
      ? `Only ${info.zones} of ${info.copies} zones: writes are refused (strict mode)`
      : `Only ${info.zones} of ${info.copies} zones: objects have ${info.zones} copies`,
  };
}

/** The cluster as reported: `history` is the epoch log when the caller has it. */
export function clusterView(info: ClusterInfo, history?: EpochRecord[]) {
  const epochHistory = history ??
    (info.epochs.length > 0
      ? info.epochs.map((e) => ({
        epoch: e.epoch,
        timeMs: e.timeMs,
        nodes: e.members.map((m) => m.id),
      }))
      : info.epoch > 0
      ? [{ epoch: info.epoch, nodes: info.nodes }]
      : []);
  return {
    status: info.status,
    epoch: info.epoch,
    copies: info.copies,
    strict: info.strict,
    blockSizeShift: info.blockSizeShift,
    objectSize: info.blockSizeShift > 0 ? 2 ** info.blockSizeShift : 0,
    createdMs: info.ctimeMs,
    zones: info.zones,
    nodes: info.nodes,
    redundancy: redundancy(info),
    epochHistory,
  };
}

/** Every node's recovery, as each reported it (STAT_RECOVERY). */
export function recoveryReport(rows: RecoveryRow[]): RecoveryReport {
  const nodes = rows.map((row): NodeRecovery => ({
    id: row.node,
    epoch: row.epoch,
    state: row.state === "gathering" || row.state === "recovering" ? "recovering" : "idle",
    phase: row.state,
    failed: row.failed ?? 0,
    ...(row.error === undefined ? {} : { error: row.error }),
    done: row.done,
    total: row.total,
    rate: row.objectsPerSecond,
  }));
  const state = nodes.some((n) => n.state === "recovering") ? "recovering" : "idle";
  return { state, nodes };
}

/** One row of `img du`: a VDI or snapshot and its space (`VdiRow`'s counts, nothing else). */
export interface DuRow {
  ref: string;
  name: string;
  snapshot: boolean;
  snapId: number;
  tag: string;
  vid: number;
  /** Provisioned: the virtual size. */
  sizeBytes: number;
  /** Used: data objects it owns (written while it was the working VDI). */
  allocatedBytes: number;
  /** Data objects it reads from the snapshot it grew from (owned there, not stored again). */
  sharedBytes: number;
}

export interface DuReport {
  vdis: DuRow[];
  /** Provisioned of the working VDIs (a snapshot promises no more space); used and shared of all. */
  total: { sizeBytes: number; allocatedBytes: number; sharedBytes: number };
}

/** `rows` as `img du` shows them: by name, each name's snapshots by snap id, then its VDI. */
export function duReport(rows: VdiRow[]): DuReport {
  const ordered = [...rows].sort((a, b) =>
    (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) ||
    Number(a.snapshot === false) - Number(b.snapshot === false) || a.snapId - b.snapId
  );
  const vdis = ordered.map((row): DuRow => ({
    ref: refOf(row),
    name: row.name,
    snapshot: row.snapshot,
    snapId: row.snapId,
    tag: row.tag,
    vid: row.vid,
    sizeBytes: row.sizeBytes,
    allocatedBytes: row.allocatedBytes,
    sharedBytes: row.sharedBytes,
  }));
  const sum = (f: (row: DuRow) => number) => vdis.reduce((total, row) => total + f(row), 0);
  return {
    vdis,
    total: {
      sizeBytes: sum((r) => (r.snapshot ? 0 : r.sizeBytes)),
      allocatedBytes: sum((r) => r.allocatedBytes),
      sharedBytes: sum((r) => r.sharedBytes),
    },
  };
}
