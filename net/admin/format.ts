/**
 * Text output in the seed's formats (SHEEPDOG_REFERENCE.md §7.3): `info -t vdi` lines,
 * the `-f tree` drawing and the `info -t vm` table; plus size parsing and printing.
 *
 * @module
 */

import type {
  ClusterInfo,
  LockRow,
  NodeRow,
  RecoveryRow,
  ScrubRow,
  VdiRow,
} from "./admin_service.ts";
import type { StoreHealth } from "../../core/store/object_store.ts";
import type { DuReport } from "./views.ts";
import { formatSize } from "../../core/size.ts";

export { formatSize, parseSize } from "../../core/size.ts";

function pad2(n: number): string {
  return String(n).padStart(2, "0");
}

/** "2009-10-15 16:17:18" in local time. */
export function formatTime(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function wholeMb(bytes: number): string {
  return `${Math.round(bytes / (1024 * 1024))} MB`;
}

/** `40000 : Alice's Disk  256 GB (allocated: 0 MB, shared: 0 MB), 2009-10-15 16:17:18, tag:        0, current` */
export function formatVdiLine(row: VdiRow): string {
  const tag = row.snapshot ? (row.tag || String(row.snapId)) : (row.tag || "0");
  return `${row.vid.toString(16).padStart(5)} : ${row.name}  ${formatSize(row.sizeBytes)} ` +
    `(allocated: ${wholeMb(row.allocatedBytes)}, shared: ${wholeMb(row.sharedBytes)}), ` +
    `${formatTime(row.snapshot ? row.snapshotMs : row.createdMs)}, tag: ${tag.padStart(8)}, ` +
    (row.snapshot ? "not current" : "current");
}

interface TreeNode {
  label: string;
  children: TreeNode[];
}

function shortTime(ms: number): string {
  return formatTime(ms).slice(2);
}

/** Builds the family trees of `rows`: snapshots by time, working VDIs as "(You Are Here)". */
function buildTrees(rows: VdiRow[]): TreeNode[] {
  const byVid = new Map(rows.map((r) => [r.vid, r]));
  const nodes = new Map<number, TreeNode>();
  for (const row of rows) {
    const here = row.snapshot ? `[${shortTime(row.snapshotMs)}]` : "(You Are Here)";
    nodes.set(row.vid, { label: here, children: [] });
  }
  const roots: TreeNode[] = [];
  // The VDI's own line of descent first, clones (other names) after it.
  const ordered = [...rows].sort((a, b) => {
    const aClone = byVid.get(a.parentVid)?.name !== a.name && a.parentVid !== 0 ? 1 : 0;
    const bClone = byVid.get(b.parentVid)?.name !== b.name && b.parentVid !== 0 ? 1 : 0;
    return aClone - bClone || a.vid - b.vid;
  });
  for (const row of ordered) {
    const node = nodes.get(row.vid)!;
    const parent = byVid.get(row.parentVid);
    if (parent && parent.name === row.name) nodes.get(parent.vid)!.children.push(node);
    else if (parent) nodes.get(parent.vid)!.children.push({ label: row.name, children: [node] });
    else roots.push({ label: row.name, children: [node] });
  }
  return roots;
}

function drawTree(node: TreeNode, indent: string, lines: string[], first: boolean): void {
  const text = node.label;
  if (first) lines[lines.length - 1] += text;
  else lines.push(indent + text);
  const childIndent = indent + " ".repeat(text.length);
  node.children.forEach((child, i) => {
    const many = node.children.length > 1;
    if (i === 0) {
      lines[lines.length - 1] += many ? "-+-" : "---";
      drawTree(child, childIndent + (many ? " | " : "   "), lines, true);
      return;
    }
    const last = i === node.children.length - 1;
    lines.push(childIndent + (last ? " `-" : " |-"));
    drawTree(child, childIndent + (last ? "   " : " | "), lines, true);
  });
}

/** The seed's tree: `Alice's Disk---[09-10-16 10:02:31]-+-[...]---(You Are Here)`. */
export function formatVdiTree(rows: VdiRow[]): string {
  const lines: string[] = [];
  for (const root of buildTrees(rows)) {
    lines.push("");
    drawTree(root, "", lines, true);
  }
  return lines.map((line) => line.replace(/ \| ( *)$/, "")).join("\n");
}

/** `info -t vm`: Name | Vdi size | Allocated | Shared | Status, working VDIs only. */
export function formatVmTable(rows: VdiRow[]): string {
  const table = [["Name", "Vdi size", "Allocated", "Shared", "Status"]];
  for (const row of rows.filter((r) => !r.snapshot)) {
    table.push([
      row.name,
      formatSize(row.sizeBytes),
      wholeMb(row.allocatedBytes),
      wholeMb(row.sharedBytes),
      // The seed printed the client's address; `--json` keeps the port too.
      row.attachedTo ? `running on ${row.attachedTo.replace(/:\d+$/, "")}` : "not running",
    ]);
  }
  return formatTable(table, " | ");
}

/** Left-aligned columns. */
export function formatTable(rows: string[][], separator = "  "): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  }
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join(separator).trimEnd())
    .join("\n");
}

/** How long after a write failed for lack of space the node still counts as full. */
export const DISK_FULL_RECENT_MS = 10 * 60_000;

/**
 * What is wrong with a node's disk, in one line, from the health its store reports: a failed
 * sync (its store refuses writes until the sheep restarts) or a recently full disk (writes of
 * objects placed there fail, so those objects may lack a copy) that no write has succeeded on
 * since. Undefined when all is well or the node did not report. The CLI, the HTTP API and the
 * dashboard say it the same way.
 */
export function nodeProblem(health: StoreHealth | undefined, nowMs: number): string | undefined {
  if (!health) return undefined;
  if (health.syncError) {
    return `disk failing: a sync failed, writes refused until the sheep restarts (${health.syncError})`;
  }
  if (
    health.noSpaceAtMs !== undefined && health.roomAtMs === undefined &&
    nowMs - health.noSpaceAtMs < DISK_FULL_RECENT_MS
  ) {
    const writes = health.noSpaceErrors === 1 ? "1 write" : `${health.noSpaceErrors} writes`;
    return `disk full: ${writes} failed, the last at ${formatTime(health.noSpaceAtMs)}`;
  }
  return undefined;
}

/** `info -t node`, with each node's disk problem (if any) under the table. */
export function formatNodeTable(nodes: NodeRow[], nowMs = Date.now()): string {
  const rows = [["Id", "Host:Port", "V-Nodes", "Zone", "Used", "Free", "State"]];
  const problems: string[] = [];
  nodes.forEach((node, i) => {
    const problem = nodeProblem(node.health, nowMs);
    if (problem) problems.push(`${node.id}: ${problem}`);
    rows.push([
      String(i),
      node.id,
      String(node.vnodes),
      String(node.zone),
      node.usedBytes === undefined ? "-" : formatSize(node.usedBytes),
      node.freeBytes === undefined ? "-" : formatSize(node.freeBytes),
      node.health === undefined
        ? "-"
        : node.health.syncError
        ? "DISK FAILING"
        : problem
        ? "DISK FULL"
        : "ok",
    ]);
  });
  return [formatTable(rows), ...problems].join("\n");
}

const STATUS_TEXT: Record<string, string> = {
  "running": "running",
  "waiting-for-format": "Waiting for cluster to be formatted",
  "waiting-for-nodes": "Waiting for other nodes to join cluster",
  "minority": "halted: this node is cut off from the majority of the cluster",
  "left": "halted: this node has left the cluster (it could not persist its epoch log)",
  "stopped": "shutting down",
};

/** `info -t cluster`, after Sheepdog's `cluster info`: status, then epochs newest first. */
export function formatClusterInfo(
  info: ClusterInfo,
  nodes: NodeRow[] = [],
  nowMs = Date.now(),
): string {
  const lines = [`Cluster status: ${STATUS_TEXT[info.status] ?? info.status}`];
  for (const node of nodes) {
    const problem = nodeProblem(node.health, nowMs);
    if (problem) lines.push(`${node.id}: ${problem}; objects placed there may lack a copy`);
  }
  if (info.redundancyReduced && info.status === "running") {
    lines.push(
      info.strict
        ? `Writes refused: only ${info.zones} zone(s) for ${info.copies} copies (strict)`
        : `Redundancy reduced: only ${info.zones} zone(s) alive for ${info.copies} copies`,
    );
  }
  if (info.ctimeMs) {
    lines.push("", `Cluster created at ${formatTime(info.ctimeMs)}`);
    lines.push(`Copies: ${info.copies}, object size: ${formatSize(2 ** info.blockSizeShift)}`);
  }
  if (info.epochs.length > 0) {
    lines.push("", "Epoch Time           Version [Host:Port:V-Nodes,,,]");
    for (const epoch of info.epochs) {
      const members = epoch.members.map((m) => `${m.id}:${m.witness ? "witness" : m.vnodes}`);
      lines.push(
        `${formatTime(epoch.timeMs)} ${String(epoch.epoch).padStart(6)} [${members.join(", ")}]`,
      );
    }
  } else if (info.nodes.length > 0) {
    lines.push("", `Epoch ${info.epoch}: ${info.nodes.join(", ")}`);
  }
  return lines.join("\n");
}

/** `info -t recovery`: each node's progress. */
export function formatRecovery(rows: RecoveryRow[]): string {
  const busy = rows.filter((r) => r.state === "gathering" || r.state === "recovering");
  const table = [["Node", "Epoch", "State", "Objects", "Progress", "Rate"]];
  for (const row of rows) {
    const percent = row.total === 0 ? 100 : (row.done / row.total) * 100;
    table.push([
      row.node,
      String(row.epoch ?? "-"),
      row.state,
      `${row.done ?? 0}/${row.total ?? 0}`,
      `${percent.toFixed(1)}%`,
      `${(row.objectsPerSecond ?? 0).toFixed(1)} obj/s`,
    ]);
  }
  const head = busy.length === 0
    ? "Recovery: done"
    : `Nodes In Recovery: ${busy.map((r) => r.node).join(", ")}`;
  // Copies a crash left suspect, held until a node that may hold their lost writes is back.
  const held = rows.filter((r) => (r.waiting ?? 0) > 0).map((r) =>
    `${r.node}: ${plural(r.waiting, "object")} a crash left suspect wait for ` +
    `${(r.waitingFor ?? []).join(", ")} to rejoin (reads and writes of them wait meanwhile)`
  );
  const notes = held.length > 0 ? `\n\n${held.join("\n")}` : "";
  return `${head}\n\n${formatTable(table)}${notes}`;
}

function plural(n: number, one: string, many = one + "s"): string {
  return `${n} ${n === 1 ? one : many}`;
}

function scrubPercent(row: ScrubRow): string {
  const total = row.objectsTotal ?? 0;
  if (total === 0) return row.state === "done" ? "100.0%" : "-";
  return `${(((row.objectsChecked ?? 0) / total) * 100).toFixed(1)}%`;
}

/** Sums of the current (or last) passes of `rows`. */
function scrubSums(rows: ScrubRow[]) {
  const sum = (
    field:
      | "objectsChecked"
      | "objectsTotal"
      | "bytesVerified"
      | "badBlocks"
      | "repaired"
      | "repairFailed",
  ) => rows.reduce((total, row) => total + (row[field] ?? 0), 0);
  return {
    checked: sum("objectsChecked"),
    total: sum("objectsTotal"),
    bytes: sum("bytesVerified"),
    badBlocks: sum("badBlocks"),
    repaired: sum("repaired"),
    failed: sum("repairFailed"),
  };
}

/** `Scrubbing: 12/40 objects (30.0%), 12 MB verified, 1 bad block, 1 repaired, 0 not repaired` */
export function formatScrubProgress(rows: ScrubRow[]): string {
  const s = scrubSums(rows);
  const running = rows.some((r) => r.state === "running");
  const percent = s.total === 0
    ? (running ? "-" : "100.0%")
    : `${((s.checked / s.total) * 100).toFixed(1)}%`;
  return `${running ? "Scrubbing" : "Scrubbed"}: ${s.checked}/${s.total} objects (${percent}), ` +
    `${formatSize(s.bytes)} verified, ${plural(s.badBlocks, "bad block")}, ` +
    `${s.repaired} repaired, ${s.failed} not repaired`;
}

function lastFinding(row: ScrubRow): string {
  const finding = row.findings?.[row.findings.length - 1];
  if (finding) {
    return `${finding.oid} on ${finding.node}: ${finding.problem}` +
      (finding.repaired ? " (repaired)" : " (NOT repaired)");
  }
  return row.error ?? "-";
}

/**
 * `info -t scrub`: a headline, then per node its pass's state, progress, bytes verified, bad
 * blocks, copies repaired and not repaired, and its newest finding (or error).
 */
export function formatScrub(rows: ScrubRow[]): string {
  const running = rows.filter((r) => r.state === "running");
  const s = scrubSums(rows);
  let head: string;
  if (running.length > 0) head = `Scrub running on: ${running.map((r) => r.node).join(", ")}`;
  else if (rows.every((r) => (r.pass ?? 0) === 0)) head = "Scrub: never run";
  else {
    head =
      `Scrub: done: ${plural(s.badBlocks, "bad block")}, ${plural(s.repaired, "copy", "copies")} ` +
      `repaired, ${s.failed} not repaired`;
  }
  const table = [[
    "Node",
    "State",
    "Progress",
    "Verified",
    "Bad blocks",
    "Repaired",
    "Failed",
    "Last finding",
  ]];
  for (const row of rows) {
    if (row.state === "unreachable") {
      table.push([row.node, "unreachable", "-", "-", "-", "-", "-", row.error ?? "-"]);
      continue;
    }
    const state = row.phase ? `${row.state} (${row.phase})` : row.state;
    const scope = row.vid === undefined ? "" : ` vdi ${row.vid.toString(16)}`;
    table.push([
      row.node,
      state + scope,
      `${row.objectsChecked ?? 0}/${row.objectsTotal ?? 0} (${scrubPercent(row)})`,
      formatSize(row.bytesVerified ?? 0),
      String(row.badBlocks ?? 0),
      String(row.repaired ?? 0),
      String(row.repairFailed ?? 0),
      lastFinding(row),
    ]);
  }
  const notes: string[] = [];
  for (const row of rows) {
    if (row.unlisted && row.unlisted.length > 0) {
      notes.push(`${row.node}: not compared with ${row.unlisted.join(", ")} (no answer)`);
    }
    if (row.state !== "running" && row.finishedMs) {
      notes.push(
        `${row.node}: pass ${row.pass} ${row.trigger ?? "manual"}, ` +
          `finished ${formatTime(row.finishedMs)}` +
          (row.nextMs ? `, next ${formatTime(row.nextMs)}` : ""),
      );
    } else if (row.state === "idle" && row.nextMs) {
      notes.push(`${row.node}: next pass ${formatTime(row.nextMs)}`);
    }
  }
  return [head, "", formatTable(table), ...(notes.length > 0 ? ["", ...notes] : [])].join("\n");
}

/** Every node's findings of its last pass, for `cluster scrub --wait`. */
export function formatScrubFindings(rows: ScrubRow[]): string {
  const findings = rows.flatMap((row) => row.findings ?? []);
  if (findings.length === 0) return "No problems found";
  const table = [["OID", "Node", "Repaired", "Problem"]];
  for (const f of findings) table.push([f.oid, f.node, f.repaired ? "yes" : "NO", f.problem]);
  const lines = [`Findings (${findings.length}):`, formatTable(table)];
  for (const row of rows) {
    const total = row.findingsTotal ?? 0;
    if (total > (row.findings?.length ?? 0)) {
      lines.push(`${row.node}: ${total} findings, the newest ${row.findings?.length ?? 0} shown`);
    }
  }
  return lines.join("\n");
}

/** `shepherd vdi lock list`: one attach lock a line. */
export function formatLocks(locks: LockRow[]): string {
  if (locks.length === 0) return "No VDI is attached";
  const rows = locks.map((l) => [l.vdi, l.client, l.node ?? "-", formatTime(l.sinceMs)]);
  const header = ["VDI", "Holder", "Through", "Since"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/**
 * `img du`, in `rbd du`'s shape: NAME, PROVISIONED, USED (and SHARED: read from the snapshot it
 * grew from), a snapshot as NAME:TAG (NAME:SNAPID without a tag), `<TOTAL>` last when there is
 * more than one row.
 */
export function formatDu(report: DuReport): string {
  const rows = [["NAME", "PROVISIONED", "USED", "SHARED"]];
  for (const row of report.vdis) {
    const name = row.snapshot ? `${row.name}:${row.tag || row.snapId}` : row.name;
    rows.push([
      name,
      formatSize(row.sizeBytes),
      formatSize(row.allocatedBytes),
      formatSize(row.sharedBytes),
    ]);
  }
  if (report.vdis.length > 1) {
    const { total } = report;
    rows.push([
      "<TOTAL>",
      formatSize(total.sizeBytes),
      formatSize(total.allocatedBytes),
      formatSize(total.sharedBytes),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  // Names left, sizes right, as rbd aligns them.
  return rows.map((cells) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  ).join("\n");
}
