/**
 * `sheepdog shepherd`: the admin CLI of the 2009 design (mkfs, info, vdi delete), plus cluster
 * recovery and scrub.
 *
 * @module
 */

import * as path from "node:path";
import { BLOCK_SIZE_SHIFT_DEFAULT } from "../core/limits.ts";
import { writeNewKeyFile } from "../net/auth/cluster_key.ts";
import {
  formatClusterInfo,
  formatLocks,
  formatNodeTable,
  formatRecovery,
  formatScrub,
  formatScrubFindings,
  formatScrubProgress,
  formatVdiLine,
  formatVdiTree,
  formatVmTable,
} from "../net/admin/format.ts";
import {
  CLUSTER_FLAG,
  clusterAddress,
  connect,
  parseFlags,
  print,
  printJson,
  runSubcommand,
  UsageError,
} from "./cli.ts";
import type { AdminService, ScrubRow } from "../net/admin/admin_service.ts";
import { parseVdiAddress, withAdmin } from "./vdi_address.ts";
import {
  clusterView,
  nodeView,
  recoveryReport,
  scrubReport,
  vdiViews,
} from "../net/admin/views.ts";

export const SHEPHERD_USAGE = `Usage: sheepdog shepherd COMMAND [options]

Commands:
  keygen FILE                    write a new cluster key to FILE (mode 0600); copy it to every
                                 host and start each sheep with --key-file FILE
  mkfs [--copies=N] [--object-size-shift=S] [--strict] [--force]
                                 format the cluster (N copies of every object, default 3)
  info -t vdi [-f list|tree] [--json]   list VDIs and snapshots
  info -t vm [--json]                   attached VDIs and who runs them
  info -t node [--json]                 storage nodes, zones, space
  info -t cluster [--json]              status, copies, epoch history newest first
  info -t recovery [--json]             nodes in recovery, objects to go, progress, rate
  info -t scrub [--json]                each node's scrub: state, progress, bad blocks,
                                        copies repaired and not repaired, newest finding
  vdi delete NAME[:SNAP]                delete a VDI or one snapshot; space is reclaimed
  vdi lock list [--json]                attach locks: VDI, holder, the sheep it is attached through, since
  vdi lock break NAME                   release NAME's lock whoever holds it (logged on the
                                        sheep); an error if it is not attached
  vdi unlock NAME                       release a VDI a client died with attached (it stays
                                        "running on" that client, refused to others, until then)
  cluster recover force                 after a full stop, start with the nodes that are back
  cluster forget HOST:PORT...           those nodes are gone for good (a dead disk): copies a
                                        crash left suspect stop waiting for them, and the
                                        writes only they held are given up
  cluster scrub [NAME[:SNAP]] [--wait] [--json]
                                 scrub every node now (only the VDI's objects when named):
                                 verify every block against its checksum, compare the
                                 copies of every object, repair what differs. A node already
                                 scrubbing reports its running pass. --wait shows progress
                                 until every node is done, then the findings, and exits 1
                                 if a copy could not be repaired

Options:
  --cluster HOST:PORT   a sheep of the cluster (default: $SHEEPDOG_CLUSTER or 127.0.0.1:7000)
  --key-file FILE       the cluster key (default: $SHEEPDOG_KEY_FILE, else the key of the
                        sheep on this host at that port); commands that change the cluster
                        need it
  -h, --help            show this help`;

const INFO_FLAGS = {
  ...CLUSTER_FLAG,
  type: { type: "string", short: "t" },
  format: { type: "string", short: "f", default: "list" },
  json: { type: "boolean", default: false },
} as const;

async function mkfs(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    copies: { type: "string", default: "3" },
    "object-size-shift": { type: "string", default: String(BLOCK_SIZE_SHIFT_DEFAULT) },
    strict: { type: "boolean", default: false },
    force: { type: "boolean", default: false },
  });
  if (positionals.length > 0) throw new UsageError(`mkfs takes no arguments: '${positionals[0]}'`);
  const copies = Number(values.copies);
  const shift = Number(values["object-size-shift"]);
  if (!Number.isInteger(copies)) throw new UsageError(`Invalid --copies '${values.copies}'`);
  if (!Number.isInteger(shift)) {
    throw new UsageError(`Invalid --object-size-shift '${values["object-size-shift"]}'`);
  }
  const admin = connect(clusterAddress(values));
  try {
    await admin.mkfs({ copies, blockSizeShift: shift, force: values.force, strict: values.strict });
    print(`Cluster formatted with ${copies} ${copies === 1 ? "copy" : "copies"}`);
    // Copies go to distinct zones, and a sheep's default zone comes from its address: sheep
    // sharing one host share one zone. Said now, not found out after a disk is lost.
    const info = await admin.clusterInfo().catch(() => undefined);
    if (info?.redundancyReduced) {
      process.stderr.write(
        `warning: the nodes are in ${info.zones} zone(s), so objects get ${
          info.strict ? "no writes" : `${info.zones} ${info.zones === 1 ? "copy" : "copies"}`
        }, not ${copies}, until nodes of more zones join (sheep on one host: give each --zone N)\n`,
      );
    }
  } finally {
    await admin.client.close();
  }
}

async function info(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, INFO_FLAGS);
  if (positionals.length > 0) throw new UsageError(`info takes no arguments: '${positionals[0]}'`);
  const admin = connect(clusterAddress(values));
  try {
    await showInfo(admin, values.type ?? "vdi", values.format, values.json);
  } finally {
    await admin.client.close();
  }
}

async function showInfo(
  admin: AdminService,
  type: string,
  format: string,
  json: boolean,
): Promise<void> {
  if (format !== "list" && format !== "tree") {
    throw new UsageError(`Unknown format '${format}': use list or tree`);
  }
  switch (type) {
    case "vdi": {
      const rows = await admin.vdis();
      if (json) return printJson(vdiViews(rows));
      if (rows.length === 0) return print("No VDIs");
      print(format === "tree" ? formatVdiTree(rows) : rows.map(formatVdiLine).join("\n"));
      return;
    }
    case "vm": {
      const rows = await admin.vdis();
      if (json) return printJson(vdiViews(rows).filter((r) => !r.snapshot));
      return print(formatVmTable(rows));
    }
    case "node": {
      const nodes = await admin.nodes();
      return json ? printJson(nodes.map(nodeView)) : print(formatNodeTable(nodes));
    }
    case "cluster": {
      const cluster = await admin.clusterInfo();
      if (json) return printJson(clusterView(cluster));
      // Each node's disk problems belong in the cluster's status too (a full disk loses copies).
      const nodes = await admin.nodes().catch(() => []);
      return print(formatClusterInfo(cluster, nodes));
    }
    case "recovery": {
      const rows = await admin.recovery();
      return json ? printJson(recoveryReport(rows)) : print(formatRecovery(rows));
    }
    case "scrub": {
      const rows = await admin.scrubStatus();
      return json ? printJson(scrubReport(rows)) : print(formatScrub(rows));
    }
    default:
      throw new UsageError(
        `Unknown info type '${type}': use vdi, vm, node, cluster, recovery or scrub`,
      );
  }
}

async function vdi(args: string[]): Promise<void> {
  // `vdi lock list` and `vdi lock break NAME` (issue 12's words) sit beside `vdi unlock NAME`.
  const [sub, ...rest] = args[0] === "lock"
    ? [`lock ${args[1] ?? ""}`.trim(), ...args.slice(2)]
    : args;
  const { values, positionals } = parseFlags(rest, { ...CLUSTER_FLAG, json: { type: "boolean" } });
  if (sub === "lock list") {
    if (positionals.length > 0) throw new UsageError("vdi lock list takes no arguments");
    const admin = connect(clusterAddress(values));
    try {
      const locks = await admin.locks();
      if (values.json) return printJson(locks);
      print(formatLocks(locks));
    } finally {
      await admin.client.close();
    }
    return;
  }
  if (sub !== "delete" && sub !== "unlock" && sub !== "lock break") {
    throw new UsageError(
      `Unknown vdi command '${sub ?? ""}': use delete, lock list, lock break or unlock`,
    );
  }
  if (positionals.length !== 1) throw new UsageError(`vdi ${sub} takes one VDI name`);
  await withAdmin(positionals[0]!, values, async (admin, name) => {
    if (sub === "delete") {
      await admin.deleteVdi(name);
      print(`Deleted ${name}`);
    } else if (sub === "lock break") {
      print(`Released ${name} (attached by ${await admin.breakLock(name)})`);
    } else {
      const holder = await admin.unlockVdi(name);
      print(
        holder === null ? `${name} was not attached` : `Released ${name} (attached by ${holder})`,
      );
    }
  });
}

async function cluster(args: string[]): Promise<void> {
  if (args[0] === "scrub") return await scrub(args.slice(1));
  if (args[0] === "forget") return await forget(args.slice(1));
  const { values, positionals } = parseFlags(args, CLUSTER_FLAG);
  if (positionals[0] !== "recover" || positionals[1] !== "force" || positionals.length !== 2) {
    throw new UsageError(
      "Unknown cluster command: use 'cluster recover force', 'cluster forget HOST:PORT...' " +
        "or 'cluster scrub [VDI]'",
    );
  }
  const admin = connect(clusterAddress(values));
  try {
    await admin.forceRecover();
    print("Recovery forced: the cluster starts with the nodes that are back");
  } finally {
    await admin.client.close();
  }
}

/** `cluster forget HOST:PORT...`: nodes gone for good stop holding up crash-suspect copies. */
async function forget(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, CLUSTER_FLAG);
  if (positionals.length === 0 || !positionals.every((n) => /^[^\s:]+:\d{1,5}$/.test(n))) {
    throw new UsageError("Usage: cluster forget HOST:PORT [HOST:PORT...] (nodes gone for good)");
  }
  const admin = connect(clusterAddress(values));
  try {
    const rows = await admin.forgetNodes(positionals);
    for (const row of rows) {
      print(
        row.error !== undefined
          ? `${row.node}: not reached (${row.error}); run this again once it answers`
          : `${row.node}: ${row.held ?? 0} object(s) held for ${positionals.join(", ")} are ` +
            "checked against the nodes that are here",
      );
    }
    const missed = rows.filter((row) => row.error !== undefined);
    if (missed.length > 0) {
      throw new Error(`Not every node was told: ${missed.map((r) => r.node).join(", ")}`);
    }
  } finally {
    await admin.client.close();
  }
}

/** How often `cluster scrub --wait` asks for progress. */
const SCRUB_POLL_MS = 1_000;

async function scrub(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    wait: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  });
  if (positionals.length > 1) throw new UsageError("cluster scrub takes at most one VDI name");
  const vdi = positionals[0] === undefined ? undefined : parseVdiAddress(positionals[0]);
  const admin = connect(
    vdi?.cluster ? { ...clusterAddress(values), ...vdi.cluster } : clusterAddress(values),
  );
  try {
    const started = await admin.startScrub(vdi === undefined ? {} : { vdi: vdi.vdi });
    if (!values.wait) {
      if (values.json) return printJson(started);
      const joined = started.filter((r) => r.started === false && r.state === "running");
      print(
        `Scrub started on ${started.filter((r) => r.started).length} of ${started.length} nodes` +
          (vdi === undefined ? "" : ` (VDI ${vdi})`) +
          (joined.length > 0
            ? `; already running on ${joined.map((r) => r.node).join(", ")}`
            : "") +
          " (progress: shepherd info -t scrub)",
      );
      for (const row of started.filter((r) => r.state === "unreachable")) {
        print(`${row.node}: not started: ${row.error ?? "no answer"}`);
      }
      return;
    }
    const rows = await waitForScrub(admin, started, values.json);
    if (values.json) printJson(scrubReport(rows));
    else print(`\n${formatScrub(rows)}\n\n${formatScrubFindings(rows)}`);
    const failed = rows.reduce((n, r) => n + (r.repairFailed ?? 0), 0);
    const unreachable = rows.filter((r) => r.state === "unreachable" || r.state === "failed");
    if (failed > 0) throw new Error(`Scrub found ${failed} bad copies it could not repair`);
    if (unreachable.length > 0) {
      throw new Error(`Scrub did not complete on ${unreachable.map((r) => r.node).join(", ")}`);
    }
  } finally {
    await admin.client.close();
  }
}

/**
 * Polls until every node's pass (the one `started` names) is over, printing a progress line
 * whenever it changes (unless `quiet`). Returns the last rows.
 */
export async function waitForScrub(
  admin: AdminService,
  started: ScrubRow[],
  quiet: boolean,
): Promise<ScrubRow[]> {
  const passOf = new Map(started.map((r) => [r.node, r.pass ?? 0]));
  let shown = "";
  for (;;) {
    const rows = await admin.scrubStatus();
    // A node is done once its pass is over (or a later one began: ours is over too).
    const running = rows.filter((r) =>
      r.state === "running" && (r.pass ?? 0) <= (passOf.get(r.node) ?? 0)
    );
    const line = formatScrubProgress(rows);
    if (!quiet && line !== shown) print(line);
    shown = line;
    if (running.length === 0) return rows;
    await new Promise((resolve) => setTimeout(resolve, SCRUB_POLL_MS));
  }
}

function keygen(args: string[]): Promise<void> {
  const { positionals } = parseFlags(args, {});
  if (positionals.length !== 1) throw new UsageError("keygen takes one file name");
  const file = path.resolve(positionals[0]!);
  writeNewKeyFile(file);
  print(`wrote a new cluster key to ${file} (mode 0600): copy it to every host of the cluster`);
  return Promise.resolve();
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  keygen,
  mkfs,
  info,
  vdi,
  cluster,
};

export function shepherdMain(args: string[]): Promise<number> {
  return runSubcommand("shepherd", SHEPHERD_USAGE, COMMANDS, args);
}
