/**
 * Three copies on three local sheep against one copy on one sheep, over NBD, in the same run
 * (issue 11's replication targets: 4k random writes >= 0.30x the one-copy figure, since three
 * writes share one disk and two cores; reads >= 0.95x at QD32).
 *
 *   deno run -A scripts/bench_copies.ts [--runtime=SECONDS] [--size=MIB] [--rounds=N] [--no-write]
 *
 * Each round starts a fresh one-sheep cluster (copies=1) and a fresh three-sheep cluster (zones
 * 1-3, copies=3), each with a VDI served over NBD by its first sheep, prefilled, then runs every
 * job against both, one after the other, so the two sides of a ratio see the same machine
 * load. Every process started here listens on 127.0.0.1 and is stopped by its PID.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import {
  type ClusterLayout,
  planCluster,
  run,
  sheepArgs,
  stopCluster,
  writeSection,
} from "./bench_cluster.ts";
import { fio, type Job, prefill, type Result } from "./bench_nbd.ts";

const SECTION = "## Three copies vs one copy over NBD";

const JOBS: (Job & { target: string })[] = [
  { name: "4k randwrite QD32", rw: "randwrite", bs: "4k", iodepth: 32, target: ">= 0.30" },
  { name: "4k randwrite QD1", rw: "randwrite", bs: "4k", iodepth: 1, target: "" },
  { name: "4k randread QD32", rw: "randread", bs: "4k", iodepth: 32, target: ">= 0.95" },
  { name: "4k randread QD1", rw: "randread", bs: "4k", iodepth: 1, target: "" },
  { name: "1M seq write QD8", rw: "write", bs: "1M", iodepth: 8, target: "" },
  { name: "1M seq read QD8", rw: "read", bs: "1M", iodepth: 8, target: "" },
];

let nextNbdPort = 42000 + Math.floor(Math.random() * 10000);

/** A formatted cluster of `count` sheep (copies = count) whose first sheep serves NBD. */
function startServing(dir: string, count: number): { layout: ClusterLayout; uri: string } {
  const layout = planCluster(dir, count);
  const nbdPort = nextNbdPort++;
  for (let i = 0; i < count; i++) {
    const args = sheepArgs(layout, i);
    // The first serves NBD. --nbd-force-shared: each fio job reconnects while the last one's
    // connection may still be releasing the one-writer lock.
    const serving = args.filter((arg) => arg !== "--no-nbd");
    run(i === 0 ? [...serving, "--nbd-port", String(nbdPort), "--nbd-force-shared"] : args);
  }
  const cluster = ["--cluster", `127.0.0.1:${layout.ports[0]}`, "--key-file", layout.keyFile];
  waitForMembers(cluster, count);
  run(["shepherd", "mkfs", `--copies=${count}`, ...cluster]);
  return { layout, uri: `nbd://127.0.0.1:${nbdPort}/bench` };
}

/** Waits (up to 30 s) until the first sheep lists `count` members. */
function waitForMembers(cluster: string[], count: number): void {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const nodes = JSON.parse(run(["shepherd", "info", "-t", "node", "--json", ...cluster]));
    if (Array.isArray(nodes) && nodes.length >= count) return;
    if (Date.now() > deadline) throw new Error(`only ${nodes.length} of ${count} sheep joined`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runtime: { type: "string", default: "8" },
      size: { type: "string", default: "512" },
      rounds: { type: "string", default: "2" },
      "no-write": { type: "boolean", default: false },
    },
  });
  const runtime = Number(values.runtime);
  const sizeMiB = Number(values.size);
  const rounds = Number(values.rounds);
  if (!(runtime > 0) || !(sizeMiB > 0) || !(rounds > 0)) {
    throw new Error("--runtime, --size and --rounds must be positive");
  }
  const loadBefore = os.loadavg()[0]!;
  const ratios: number[][] = JOBS.map(() => []);
  const figures: { one: Result; three: Result }[][] = JOBS.map(() => []);
  for (let round = 1; round <= rounds; round++) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sd-bench-copies-"));
    const sides: { layout: ClusterLayout; uri: string }[] = [];
    try {
      sides.push(startServing(path.join(dir, "one"), 1));
      sides.push(startServing(path.join(dir, "three"), 3));
      for (const side of sides) {
        const cluster = ["--cluster", `127.0.0.1:${side.layout.ports[0]}`];
        run([
          "img",
          "create",
          "bench",
          `${sizeMiB}M`,
          ...cluster,
          "--key-file",
          side.layout.keyFile,
        ]);
        await prefill(side.uri, sizeMiB);
      }
      for (const [i, job] of JOBS.entries()) {
        const one = await fio(sides[0]!.uri, job, sizeMiB, runtime);
        const three = await fio(sides[1]!.uri, job, sizeMiB, runtime);
        figures[i]!.push({ one, three });
        ratios[i]!.push(three.iops / one.iops);
        console.error(
          `round ${round}: ${job.name}: 1 copy ${Math.round(one.iops)} IOPS, 3 copies ` +
            `${Math.round(three.iops)} IOPS, ratio ${(three.iops / one.iops).toFixed(2)}`,
        );
      }
    } finally {
      for (const side of sides) await stopCluster(side.layout.dirs);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const cpus = os.cpus();
  const iops = (r: Result) => Math.round(r.iops).toLocaleString("en-US");
  const lines = [
    SECTION,
    "",
    `Machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, ${os.platform()} ` +
    `${os.release()}. Date: ${new Date().toISOString()}. Load average (1 min) before/after: ` +
    `${loadBefore.toFixed(1)}/${os.loadavg()[0]!.toFixed(1)}.`,
    "",
    `fio's nbd engine, one connection, ${runtime} s per job after a 1 s ramp, a ${sizeMiB} MiB ` +
    "VDI prefilled. One copy: one sheep, copies=1. Three copies: three sheep on this machine " +
    "(zones 1-3, one disk, two cores), copies=3, NBD served by the first. In each round the two " +
    "clusters run each job one after the other; ratio = three copies ÷ one copy (IOPS), one " +
    "figure per round. Reproduce: `deno run -A scripts/bench_copies.ts` (part of `npm run bench`).",
    "",
    "| job | 1 copy IOPS | 3 copies IOPS | ratio per round | target |",
    "|---|---:|---:|---:|---:|",
    ...JOBS.map((job, i) => {
      const last = figures[i]!.at(-1)!;
      return `| ${job.name} | ${iops(last.one)} | ${iops(last.three)} | ${
        ratios[i]!.map((r) => r.toFixed(2)).join(", ")
      } | ${job.target} |`;
    }),
    "",
    "IOPS columns: the last round.",
  ];
  const section = lines.join("\n");
  console.log(`\n${section}\n`);
  if (!values["no-write"]) writeSection(SECTION, section);
}

await main();
