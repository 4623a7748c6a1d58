/**
 * `sheepdog img`: the image tool, in the spirit of `qemu-img` (the seed's `kvm-img`): create,
 * convert (raw or qcow2 <-> VDI, skipping runs of zeros), snapshot, info, resize, and incremental
 * backup in Ceph's rbd diff format (img_diff.ts).
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import { ResultCode, SheepdogError } from "../core/errors.ts";
import { formatDu, formatSize, formatTime, parseSize } from "../net/admin/format.ts";
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
import { parseVdiAddress, withAdmin } from "./vdi_address.ts";
import { convertImage, imageEnd } from "./img_convert.ts";
import { DIFF_COMMANDS, DIFF_USAGE } from "./img_diff.ts";
import { COPY_COMMANDS, INSPECT_COMMANDS } from "./img_verbs.ts";
import { endProgress, progressReporter } from "./progress.ts";
import type { AdminService } from "../net/admin/admin_service.ts";

export const IMG_USAGE = `Usage: sheepdog img COMMAND [options]

Commands:
  create [-f sheepdog] [-b BACKING:SNAP] NAME [SIZE]   create a thin VDI (SIZE like 256G), or a
                                                        copy-on-write clone of a snapshot with -b
  convert [-f raw|qcow2|sheepdog] [-O raw|qcow2|sheepdog] [-o compat=0.10|1.1] [-n] [-p]
          SOURCE TARGET          copy a raw or qcow2 image into a VDI, or a VDI out to a raw
                                 or qcow2 file; a file's format is told from its magic (-f
                                 forces one); vmdk, VirtualBox vdi, vhd(x), qed, ... are
                                 refused by name; -O qcow2 writes qcow2 v3 with 64 KiB clusters
                                 (-o compat=0.10: v2); -n writes into an existing VDI, -p shows
                                 progress
  snapshot -c TAG NAME           take a snapshot
  snapshot -l NAME               list snapshots
  snapshot -d SNAP NAME          delete a snapshot (by id or tag)
  snapshot -a SNAP NAME          revert NAME to a snapshot (its current data is discarded)
  info [--json] NAME[:SNAP]      show a VDI
  resize [--shrink] NAME [+|-]SIZE  grow a VDI; --shrink lets it get smaller (refused while
                                 attached; data past the new end is lost, its space reclaimed)
  rename OLD NEW                 rename a VDI with its snapshots (refused while attached)
  cp [--deep] [-p] SRC[:SNAP] DST  copy a VDI into a new, independent one (only data is
                                 copied); --deep also copies its snapshots, oldest first
  flatten [-p] NAME              make a clone stand alone: copy what it reads from its base
  children NAME:SNAP             list the clones of a snapshot
  map [--output=human|json] NAME[:SNAP]  allocated extents (json: qemu-img map's shape)
  compare [-s] A B               compare two images (VDIs or files): exit 0 identical,
                                 1 different, 2 error; -s: a size mismatch is a difference
  check NAME[:SNAP]              verify every copy of every object the VDI reads (checksums,
                                 replicas) and repair as the scrub does; exit 2 if any is
                                 left bad
  bench [-t read|write] [-s SIZE] [-q DEPTH] [-c COUNT] [--pattern seq|rand] NAME[:SNAP]
                                 I/O benchmark (default: read, 4K, depth 64, 10000 requests,
                                 seq); writes pattern 0xa5; last line: ops= ops/s= bytes/s=
                                 elapsed=
  du [--json] [NAME[:SNAP]]      space per VDI and snapshot, as rbd du: PROVISIONED (size),
                                 USED (objects it owns), SHARED (read from its parent
                                 snapshot); cluster totals last
${DIFF_USAGE}

VDI names: NAME, NAME:SNAP, sheepdog:NAME[:SNAP], sheepdog://HOST:PORT/NAME[#SNAP]
Options:
  --cluster HOST:PORT   a sheep of the cluster (default: $SHEEPDOG_CLUSTER or 127.0.0.1:7000)
  --key-file FILE       the cluster key (default: $SHEEPDOG_KEY_FILE, else the key of the
                        sheep on this host at that port); resize needs it`;

function checkFormat(format: string | undefined, allowed: string[], flag: string): void {
  if (format !== undefined && !allowed.includes(format)) {
    throw new UsageError(`Unknown format '${format}' for ${flag}: use ${allowed.join(" or ")}`);
  }
}

async function create(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    format: { type: "string", short: "f" },
    backing: { type: "string", short: "b" },
  });
  checkFormat(values.format, ["sheepdog"], "-f");
  const [target, sizeText] = positionals;
  if (!target || positionals.length > 2) throw new UsageError("create takes NAME and SIZE");
  if (!values.backing && !sizeText) throw new UsageError("create needs a SIZE (e.g. 256G)");
  const sizeBytes = sizeText === undefined ? undefined : parseSize(sizeText);
  await withAdmin(target, values, async (admin, name) => {
    if (values.backing) {
      await admin.clone(parseVdiAddress(values.backing).vdi, name, sizeBytes);
      print(`Cloned '${values.backing}' as '${name}'`);
    } else {
      await admin.createVdi({ name, sizeBytes: sizeBytes! });
      print(`Formatting '${name}', fmt=sheepdog size=${sizeBytes}`);
    }
  });
}

/** The qcow2 version `-o compat=...` asks for (qemu-img's names: 0.10 is v2, 1.1 is v3). */
function qcow2Version(options: string | undefined, outputFormat: string | undefined): 2 | 3 {
  if (options === undefined) return 3;
  if (outputFormat !== "qcow2") throw new UsageError("-o takes effect only with -O qcow2");
  let version: 2 | 3 = 3;
  for (const option of options.split(",")) {
    if (option === "compat=0.10" || option === "compat=v2") version = 2;
    else if (option === "compat=1.1" || option === "compat=v3") version = 3;
    else throw new UsageError(`Unknown -o option '${option}': use compat=0.10 or compat=1.1`);
  }
  return version;
}

async function convert(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    format: { type: "string", short: "f" },
    "output-format": { type: "string", short: "O" },
    options: { type: "string", short: "o" },
    "skip-create": { type: "boolean", short: "n", default: false },
    progress: { type: "boolean", short: "p", default: false },
  });
  checkFormat(values.format, ["raw", "qcow2", "sheepdog"], "-f");
  checkFormat(values["output-format"], ["raw", "qcow2", "sheepdog"], "-O");
  const version = qcow2Version(values.options, values["output-format"]);
  if (positionals.length !== 2) throw new UsageError("convert takes SOURCE and TARGET");
  // A missing source that looks like a path is a missing file, anything else a VDI name.
  const sourceText = positionals[0]!;
  const looksLikePath = /[/\\]|\.(raw|img|bin|iso|qcow2?|vmdk|vdi|vhdx?|qed|dmg)$/i.test(
    sourceText,
  );
  const source = await imageEnd(sourceText, values.format, looksLikePath ? "file" : "vdi");
  if (source.kind === "file" && !(await fsp.stat(source.path).catch(() => undefined))) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Cannot open '${source.path}': no such file`);
  }
  // Raw in, VDI out; VDI in, raw out, unless -O says otherwise.
  const target = await imageEnd(
    positionals[1]!,
    values["output-format"],
    source.kind === "file" ? "vdi" : "file",
  );
  if (target.kind === "file" && target.format === "qcow2") {
    if (values["skip-create"]) {
      throw new UsageError("-n writes into an existing VDI; a qcow2 target is always created");
    }
    target.qcow2Version = version;
  }
  const onProgress = progressReporter(values.progress);
  const summary = await convertImage({
    source,
    target,
    createTarget: !values["skip-create"],
    cluster: clusterAddress(values),
    onProgress,
  });
  endProgress(onProgress);
  if (values.progress) {
    print(
      `${formatSize(summary.bytes)} in ${(summary.ms / 1000).toFixed(2)} s, ${
        formatSize(summary.writtenBytes)
      } written (zero runs skipped)`,
    );
  }
}

async function snapshot(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    create: { type: "string", short: "c" },
    list: { type: "boolean", short: "l", default: false },
    delete: { type: "string", short: "d" },
    apply: { type: "string", short: "a" },
  });
  const modes = [values.create, values.list || undefined, values.delete, values.apply];
  const chosen = modes.filter((mode) => mode !== undefined).length;
  if (chosen !== 1) {
    throw new UsageError("snapshot needs exactly one of -c TAG, -l, -d SNAP, -a SNAP");
  }
  if (positionals.length !== 1) throw new UsageError("snapshot takes one VDI name");
  await withAdmin(positionals[0]!, values, async (admin, name) => {
    if (values.create !== undefined) {
      const tag = values.create;
      if (tag === "") throw new UsageError("snapshot -c needs a tag");
      // The snapshot keeps the working VDI's id; the id printed is the one stored.
      const vid = await admin.snapshot(name, tag);
      const snap = (await admin.vdis()).find((r) => r.vid === vid);
      print(`Snapshot '${tag}' of '${name}' taken (snap id ${snap?.snapId ?? "?"})`);
    } else if (values.list) {
      const all = await admin.vdis();
      const rows = all.filter((r) => r.name === name && r.snapshot);
      if (rows.length === 0 && !all.some((r) => r.name === name)) {
        throw new SheepdogError(ResultCode.NO_VDI, `Cannot find VDI '${name}': no such VDI`);
      }
      print("Snapshot list:\nID        TAG                 VM SIZE                DATE");
      for (const row of rows) {
        print(
          `${String(row.snapId).padEnd(10)}${row.tag.padEnd(20)}${
            formatSize(row.allocatedBytes).padStart(7)
          } ${formatTime(row.snapshotMs).padStart(24)}`,
        );
      }
    } else if (values.apply !== undefined) {
      await admin.rollback(`${name}:${values.apply}`);
      print(`'${name}' reverted to snapshot '${values.apply}'`);
    } else {
      await admin.deleteVdi(`${name}:${values.delete}`);
      print(`Deleted snapshot '${values.delete}' of '${name}'`);
    }
  });
}

async function info(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    json: { type: "boolean", default: false },
  });
  if (positionals.length !== 1) throw new UsageError("info takes one VDI name");
  await withAdmin(positionals[0]!, values, async (admin, vdi) => {
    const rows = await admin.vdis();
    const row = await admin.vdi(vdi, rows);
    const family = rows.filter((r) => r.name === row.name && r.snapshot);
    if (values.json) return printJson({ ...row, snapshots: family });
    print(`image: ${row.name}${row.snapshot ? `:${row.snapId}` : ""}`);
    print("file format: sheepdog");
    print(`virtual size: ${formatSize(row.sizeBytes)} (${row.sizeBytes} bytes)`);
    print(
      `disk size: ${formatSize(row.allocatedBytes)} (shared with snapshots: ${
        formatSize(row.sharedBytes)
      })`,
    );
    print(
      `vdi id: ${row.vid.toString(16)}, copies: ${row.copies}, object size: ${
        formatSize(2 ** row.blockSizeShift)
      }`,
    );
    print(`created: ${formatTime(row.createdMs)}${row.snapshot ? ", read-only snapshot" : ""}`);
    if (row.attachedTo) print(`attached: running on ${row.attachedTo}`);
    if (family.length > 0) {
      print("Snapshot list:\nID        TAG                 DATE");
      for (const s of family) {
        print(`${String(s.snapId).padEnd(10)}${s.tag.padEnd(20)}${formatTime(s.snapshotMs)}`);
      }
    }
  });
}

async function resize(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    shrink: { type: "boolean", default: false },
  });
  if (positionals.length !== 2) throw new UsageError("resize takes NAME and SIZE");
  const sizeText = positionals[1]!;
  await withAdmin(positionals[0]!, values, async (admin, name) => {
    const current = await admin.vdi(name);
    const size = sizeText.startsWith("+")
      ? current.sizeBytes + parseSize(sizeText.slice(1))
      : sizeText.startsWith("-")
      ? current.sizeBytes - parseSize(sizeText.slice(1))
      : parseSize(sizeText);
    if (size < current.sizeBytes && !values.shrink) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot shrink '${name}' to ${formatSize(size)}: use --shrink (the data past the new ` +
          "end is lost)",
      );
    }
    await admin.resize(name, size, { shrink: values.shrink });
    print(`Image resized to ${formatSize(size)}`);
  });
}

async function du(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    json: { type: "boolean", default: false },
  });
  if (positionals.length > 1) throw new UsageError("du takes at most one VDI name");
  const show = async (admin: AdminService, vdi?: string) => {
    const report = await admin.du(vdi);
    if (values.json) printJson(report);
    else print(report.vdis.length === 0 ? "No VDIs" : formatDu(report));
  };
  if (positionals[0] === undefined) {
    const admin = connect(clusterAddress(values));
    try {
      await show(admin);
    } finally {
      await admin.client.close();
    }
    return;
  }
  await withAdmin(positionals[0], values, show);
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  create,
  convert,
  snapshot,
  info,
  resize,
  ...DIFF_COMMANDS,
  ...COPY_COMMANDS,
  ...INSPECT_COMMANDS,
  du,
};

export function imgMain(args: string[]): Promise<number> {
  return runSubcommand("img", IMG_USAGE, COMMANDS, args);
}
