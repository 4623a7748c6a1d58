/**
 * The command lines of `img`'s day-two verbs (rename, cp, flatten, children, map, compare,
 * check, bench): flags in, one call to the verb's module, output out. The logic is in
 * img_copy.ts, img_inspect.ts and img_bench.ts.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import { ResultCode, SheepdogError } from "../core/errors.ts";
import { formatSize, formatTime, parseSize } from "../net/admin/format.ts";
import {
  CLUSTER_FLAG,
  clusterAddress,
  CommandExit,
  integerFlag,
  parseFlags,
  print,
  printJson,
  UsageError,
} from "./cli.ts";
import { withAdmin } from "./vdi_address.ts";
import { imageEnd } from "./img_convert.ts";
import { endProgress, progressReporter } from "./progress.ts";
import { childrenOf, copyVdi, flattenVdi } from "./img_copy.ts";
import { checkVdi, compareImages, formatMapHuman, formatMapJson, mapVdi } from "./img_inspect.ts";
import { type BenchOptions, benchVdi, formatBenchResult } from "./img_bench.ts";
import { waitForScrub } from "./shepherd.ts";

type Command = (args: string[]) => Promise<void>;

async function rename(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, CLUSTER_FLAG);
  if (positionals.length !== 2) throw new UsageError("rename takes OLD and NEW");
  const [from, to] = positionals as [string, string];
  await withAdmin(from, values, async (admin, name) => {
    await admin.rename(name, to);
    print(`Renamed '${name}' to '${to}' (its snapshots follow)`);
  });
}

async function cp(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    deep: { type: "boolean", default: false },
    progress: { type: "boolean", short: "p", default: false },
  });
  if (positionals.length !== 2) throw new UsageError("cp takes SRC[:SNAP] and DST");
  await withAdmin(positionals[0]!, values, async (admin, source) => {
    const onProgress = progressReporter(values.progress);
    const summary = await copyVdi(admin, {
      source,
      target: positionals[1]!,
      deep: values.deep,
      onProgress,
    });
    endProgress(onProgress);
    print(
      `Copied '${source}' to '${positionals[1]}': ${formatSize(summary.bytes)}, ${
        formatSize(summary.writtenBytes)
      } written (zero runs skipped)` +
        (values.deep ? `, ${summary.snapshots} snapshots` : "") +
        ` in ${(summary.ms / 1000).toFixed(2)} s`,
    );
  });
}

async function flatten(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    progress: { type: "boolean", short: "p", default: false },
  });
  if (positionals.length !== 1) throw new UsageError("flatten takes one VDI name");
  await withAdmin(positionals[0]!, values, async (admin, name) => {
    const onProgress = progressReporter(values.progress);
    const result = await flattenVdi(admin, name, onProgress);
    endProgress(onProgress);
    print(
      `Flattened '${name}': ${result.copied} objects copied from '${result.base}', ` +
        `${result.dropped} zero ones dropped` +
        (result.detached
          ? "; it stands alone"
          : `; its own snapshots still read from '${result.base}'`),
    );
  });
}

async function children(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    json: { type: "boolean", default: false },
  });
  if (positionals.length !== 1) throw new UsageError("children takes one NAME:SNAP");
  await withAdmin(positionals[0]!, values, async (admin, vdi) => {
    const rows = await childrenOf(admin, vdi);
    if (values.json) return printJson(rows);
    for (const row of rows) print(`${row.name}  (created ${formatTime(row.createdMs)})`);
  });
}

async function map(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    output: { type: "string", default: "human" },
  });
  if (values.output !== "human" && values.output !== "json") {
    throw new UsageError(`Unknown --output '${values.output}': use human or json`);
  }
  if (positionals.length !== 1) throw new UsageError("map takes one VDI name");
  await withAdmin(positionals[0]!, values, async (admin, vdi) => {
    const extents = await mapVdi(admin, vdi);
    print(values.output === "json" ? formatMapJson(extents) : formatMapHuman(extents));
  });
}

/** Exit 0 identical, 1 different, 2 on any error, as qemu-img compare. */
async function compare(args: string[]): Promise<void> {
  let result;
  try {
    const { values, positionals } = parseFlags(args, {
      ...CLUSTER_FLAG,
      strict: { type: "boolean", short: "s", default: false },
    });
    if (positionals.length !== 2) throw new UsageError("compare takes two images");
    const ends = [];
    for (const text of positionals) {
      // A name that is no file is a VDI; `sheepdog:` makes one explicit.
      const exists = await fsp.stat(text).then(() => true, () => false);
      ends.push(await imageEnd(text, undefined, exists ? "file" : "vdi"));
    }
    result = await compareImages(ends[0]!, ends[1]!, clusterAddress(values), values.strict);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new CommandExit(2, error instanceof Error ? error.message : String(error));
  }
  // As qemu-img: the common part first; the size warning only once that matched.
  if (result.sizeMismatch && result.mismatchAt === undefined && !result.identical) {
    print("Strict mode: Image size mismatch!");
  } else if (result.sizeMismatch && (result.mismatchAt ?? Infinity) >= result.common) {
    print("Warning: Image size mismatch!");
  }
  if (result.mismatchAt !== undefined) print(`Content mismatch at offset ${result.mismatchAt}!`);
  if (result.identical) print("Images are identical.");
  else throw new CommandExit(1);
}

async function check(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    json: { type: "boolean", default: false },
  });
  if (positionals.length !== 1) throw new UsageError("check takes one VDI name");
  const report = await withAdmin(
    positionals[0]!,
    values,
    (admin, vdi) => checkVdi(admin, vdi, (admin, started) => waitForScrub(admin, started, true)),
  );
  if (values.json) printJson(report);
  else {
    print(
      `Checked ${report.vdis.join(", ")}: ${report.objectsChecked} object copies, ` +
        `${formatSize(report.bytesVerified)} verified`,
    );
    for (const finding of report.findings) print(finding);
    print(
      `${report.badBlocks} bad blocks; ${report.repaired} copies repaired, ` +
        `${report.repairFailed} could not be repaired`,
    );
    if (report.repairFailed === 0 && report.incomplete.length === 0) {
      print("No errors were found on the image.");
    }
  }
  if (report.incomplete.length > 0) {
    throw new Error(`Check did not complete on ${report.incomplete.join(", ")}`);
  }
  // qemu-img check's status for an image left corrupted.
  if (report.repairFailed > 0) {
    throw new CommandExit(2, `${report.repairFailed} bad copies could not be repaired`);
  }
}

/** Requests per run when -c is not given. */
const BENCH_COUNT_DEFAULT = 10_000;

async function bench(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    type: { type: "string", short: "t", default: "read" },
    size: { type: "string", short: "s", default: "4K" },
    depth: { type: "string", short: "q", default: "64" },
    count: { type: "string", short: "c" },
    pattern: { type: "string", default: "seq" },
  });
  if (values.type !== "read" && values.type !== "write") {
    throw new UsageError(`Unknown -t '${values.type}': use read or write`);
  }
  if (values.pattern !== "seq" && values.pattern !== "rand") {
    throw new UsageError(`Unknown --pattern '${values.pattern}': use seq or rand`);
  }
  if (positionals.length !== 1) throw new UsageError("bench takes one VDI name");
  const size = parseSize(values.size);
  if (size <= 0 || size > 64 << 20) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Invalid -s '${values.size}': 1 B to 64M`);
  }
  const options: BenchOptions = {
    type: values.type,
    size,
    depth: integerFlag(values.depth, "depth", 1, 1024)!,
    count: integerFlag(values.count, "count", 1, 2 ** 31) ?? BENCH_COUNT_DEFAULT,
    pattern: values.pattern,
  };
  await withAdmin(positionals[0]!, values, async (admin, vdi) => {
    print(
      `Sending ${options.count} ${options.type} requests, ${size} bytes each, ` +
        `${options.depth} in parallel, ${options.pattern === "seq" ? "sequential" : "random"}`,
    );
    const result = await benchVdi(admin, vdi, options);
    print(`Run completed in ${(result.elapsedMs / 1000).toFixed(3)} seconds.`);
    if (result.unallocatedReads > 0) {
      print(
        `(${result.unallocatedReads} reads were of unwritten space: answered as zeros without I/O)`,
      );
    }
    print(formatBenchResult(result));
  });
}

export const COPY_COMMANDS: Record<string, Command> = { rename, cp, flatten, children };
export const INSPECT_COMMANDS: Record<string, Command> = { map, compare, check, bench };
