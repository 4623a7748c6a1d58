/**
 * NBD export vs qemu-nbd, measured in the same run with fio's nbd engine.
 *
 *   deno run -A scripts/bench_nbd.ts [--runs=N] [--runtime=SECONDS] [--size=MIB] [--no-write]
 *   deno run -A scripts/bench_nbd.ts --verify-cost [--runs=N] [--runtime=SECONDS] [--baseline=OTHER_EXECUTABLE] ...
 *
 * Starts a sheep on a temporary directory (mkfs copies=1) with a VDI served over NBD on
 * 127.0.0.1, the three floor servers of scripts/nbd_floor.ts (sheepdog's NBD session over a raw
 * file, the same over object files with block checksums, and a bare Node NBD server) and `qemu-nbd`, each on its
 * own raw file in the same directory (same disk); prefills each so reads hit data, and runs 4 KiB
 * random read/write at queue depth 1 and 32 and 1 MiB sequential read/write on all five in turn, N runs (see
 * `runInterleaved`). Prints a table and writes the section "## NBD vs qemu-nbd" of
 * BENCHMARKS.md (replacing an older one) unless --no-write.
 * With --verify-cost: only what verifying reads costs (issue 8's jobs, verify on ÷ off, N runs;
 * see `verifyCost`), in the section "## What verifying checksums costs (issue 8)".
 */
import { execFile, spawn } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { checksumWorkersDefault } from "../core/store/checksum_workers.ts";
import { root, writeSection } from "./bench_cluster.ts";

const MiB = 1024 * 1024;
const SECTION = "## NBD vs qemu-nbd";

export interface Job {
  name: string;
  rw: "randread" | "randwrite" | "read" | "write";
  bs: string;
  iodepth: number;
}

const JOBS: Job[] = [
  { name: "4k randread QD1", rw: "randread", bs: "4k", iodepth: 1 },
  { name: "4k randread QD32", rw: "randread", bs: "4k", iodepth: 32 },
  { name: "4k randwrite QD1", rw: "randwrite", bs: "4k", iodepth: 1 },
  { name: "4k randwrite QD32", rw: "randwrite", bs: "4k", iodepth: 32 },
  { name: "1M seq read QD8", rw: "read", bs: "1M", iodepth: 8 },
  { name: "1M seq write QD8", rw: "write", bs: "1M", iodepth: 8 },
];

export interface Result {
  iops: number;
  bytesPerSec: number;
}

function exec(
  cmd: string,
  args: string[],
  timeoutMs: number,
  env: Record<string, string> = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        timeout: timeoutMs,
        maxBuffer: 64 * MiB,
        encoding: "utf8",
        env: { ...process.env, ...env },
      },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${cmd} ${args.join(" ")}: ${err.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

/** fio's nbd-engine arguments for one timed job (the ramp is not counted in the figures). */
export function fioArgs(
  uri: string,
  job: Pick<Job, "rw" | "bs" | "iodepth">,
  sizeMiB: number,
  runtime: number,
  rampSeconds = 1,
): string[] {
  return [
    "--name=bench",
    "--ioengine=nbd",
    `--uri=${uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--size=${sizeMiB}M`,
    `--runtime=${runtime}`,
    "--time_based",
    ...(rampSeconds > 0 ? [`--ramp_time=${rampSeconds}`] : []),
    "--randrepeat=0",
    "--output-format=json",
  ];
}

export async function fio(
  uri: string,
  job: Job,
  sizeMiB: number,
  runtime: number,
): Promise<Result> {
  const args = fioArgs(uri, job, sizeMiB, runtime);
  const out = await exec("fio", args, (runtime + 60) * 1000);
  const report = JSON.parse(out.slice(out.indexOf("{")));
  const side = job.rw.includes("read") ? report.jobs[0].read : report.jobs[0].write;
  return { iops: side.iops, bytesPerSec: side.bw_bytes };
}

/** Writes the whole volume once with 1 MiB requests so reads hit data. */
export async function prefill(uri: string, sizeMiB: number): Promise<void> {
  await exec("fio", [
    "--name=prefill",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=write",
    "--bs=1M",
    "--iodepth=8",
    `--size=${sizeMiB}M`,
  ], 600_000);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Waits until process `pid` is gone. */
export async function waitForExit(pid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    if (Date.now() > deadline) throw new Error(`process ${pid} did not exit`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function nodeVersion(): Promise<string> {
  return `Node ${(await exec("node", ["--version"], 10_000)).trim().replace(/^v/, "")}`;
}

function fmtIops(iops: number): string {
  return Math.round(iops).toLocaleString("en-US");
}

/**
 * The comparison's table: sheepdog (0), sheepdog's NBD session over a file (1), the same over
 * object files with the sheep's block checksums (2), a bare Node NBD server (3) and qemu-nbd (4).
 */
function table(rounds: Rounds): string {
  const qemu = 4;
  const lines = [
    "| job | sheepdog IOPS | sheepdog MB/s | NBD session only IOPS | session + checksums IOPS | bare Node IOPS | qemu-nbd IOPS | qemu-nbd MB/s | sheepdog ÷ qemu-nbd | per run | session only ÷ qemu-nbd | session + checksums ÷ qemu-nbd | bare Node ÷ qemu-nbd |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
  ];
  JOBS.forEach((job, j) => {
    const iops = (v: number) => fmtIops(median(rounds.iops[j]![v]!));
    const mbps = (v: number) => (median(rounds.bytesPerSec[j]![v]!) / 1e6).toFixed(1);
    const ratios = runRatios(rounds, j, 0, qemu);
    const ratio = (v: number) => median(runRatios(rounds, j, v, qemu)).toFixed(2);
    lines.push(
      `| ${job.name} | ${iops(0)} | ${mbps(0)} | ${iops(1)} | ${iops(2)} | ${iops(3)} | ${
        iops(qemu)
      } | ${mbps(qemu)} | ${median(ratios).toFixed(2)} | ${
        ratios.map((r) => r.toFixed(2)).join(", ")
      } | ${ratio(1)} | ${ratio(2)} | ${ratio(3)} |`,
    );
  });
  return lines.join("\n");
}

/**
 * Starts the floor servers of scripts/nbd_floor.ts on a raw file each, on the `node` that runs
 * `npm run build` (the one inside ./sheepdog); resolves once they listen.
 */
async function startFloorServers(dir: string, sizeMiB: number): Promise<Server[]> {
  const bundle = path.join(dir, "floor.mjs");
  await exec(path.join(root, "node_modules", ".bin", "deno"), [
    "bundle",
    "--quiet",
    "--format=esm",
    "--platform=node",
    "-o",
    bundle,
    path.join(root, "scripts", "nbd_floor.ts"),
  ], 120_000);
  const servers: Server[] = [];
  const modes = [
    ["session", "NBD session only"],
    ["checksummed", "session + checksums"],
    ["bare", "bare Node"],
  ];
  for (const [mode, name] of modes) {
    const file = path.join(dir, `${mode}.raw`);
    const handle = await fsp.open(file, "w");
    await handle.truncate(sizeMiB * MiB);
    await handle.close();
    const port = await freePort();
    const child = spawn("node", [bundle, mode!, file, String(port)], { stdio: "ignore" });
    servers.push({ name: name!, uri: `nbd://127.0.0.1:${port}/`, pid: child.pid });
    await listening(port, 10_000);
  }
  return servers;
}

/** Waits until something accepts connections on 127.0.0.1:`port`. */
async function listening(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Writes `body` as the section `title` of BENCHMARKS.md (in place of an older one). */
function writeBodySection(title: string, body: string): void {
  writeSection(title, `${title}\n\n${body.trim()}\n`);
}

interface BenchSheep {
  label: string;
  uri: string;
  pid: number;
  stop(): Promise<void>;
}

/** CPU seconds (user + system) process `pid` has used: all its threads, and its main thread. */
async function cpuSeconds(pid: number): Promise<{ all: number; main: number }> {
  // Fields 14 and 15 of /proc/.../stat, in clock ticks (100 per second on Linux), counted
  // after the command name, which is in parentheses and may hold spaces.
  const ticks = async (file: string) => {
    const fields = (await fsp.readFile(file, "utf8")).split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  };
  return {
    all: await ticks(`/proc/${pid}/stat`),
    main: await ticks(`/proc/${pid}/task/${pid}/stat`),
  };
}

/** Starts one sheep (copies=1) with a `sizeMiB` VDI served over NBD; `args`: more sheep flags. */
async function startSheep(
  exe: string,
  sheepDir: string,
  sizeMiB: number,
  env: Record<string, string>,
  args: string[] = [],
): Promise<BenchSheep> {
  const objectPort = await freePort();
  const nbdPort = await freePort();
  const cluster = ["--cluster", `127.0.0.1:${objectPort}`];
  // --nbd-force-shared: each fio job reconnects while the last one's connection may still be
  // releasing the one-writer lock.
  await exec(
    exe,
    [
      "sheep",
      sheepDir,
      "--port",
      String(objectPort),
      "--nbd-port",
      String(nbdPort),
      "--nbd-force-shared",
      "--host",
      "127.0.0.1",
      "--multicast",
      "off",
      "--no-http",
      ...args,
    ],
    60_000,
    env,
  );
  const pid = Number((await fsp.readFile(path.join(sheepDir, "sheep.pid"), "utf8")).trim());
  const stop = async () => {
    process.kill(pid, "SIGTERM");
    await waitForExit(pid, 30_000);
  };
  try {
    await exec(exe, ["shepherd", "mkfs", "--copies=1", ...cluster], 60_000);
    await exec(exe, ["img", "create", "bench", `${sizeMiB}M`, ...cluster], 60_000);
  } catch (error) {
    await stop();
    throw error;
  }
  const label = env.SHEEPDOG_VERIFY_READS === "0" ? "sheepdog (verify off)" : "sheepdog";
  return { label, uri: `nbd://127.0.0.1:${nbdPort}/bench`, pid, stop };
}

const VERIFY_SECTION = "## What verifying checksums costs (issue 8)";
/** Issue 8's jobs and targets: verify on ÷ off at least this. */
const VERIFY_TARGETS: [Job, number][] = [[JOBS[1]!, 0.9], [JOBS[4]!, 0.85]];

/** What the jobs run against: a sheep, or qemu-nbd (no `pid`: no CPU figures). */
interface Server {
  name: string;
  uri: string;
  pid?: number;
}

/** Per job, per server: one figure per run. */
interface Rounds {
  iops: number[][][];
  bytesPerSec: number[][][];
  /** The server's CPU µs per MiB moved, all threads and the main one (sheep only). */
  cpuAll: number[][][];
  cpuMain: number[][][];
  /** The 1-minute load average at the start of each run. */
  load: number[];
}

/**
 * Every job on every server, `runs` times: each job on each server in turn, the order rotating
 * from run to run so a drift in the machine's load favours none; every ratio is then taken
 * within a run and the median of the runs reported. Many short runs rather than a few long ones:
 * on a shared host the load moves over seconds, so jobs run back to back see more nearly the same
 * machine (6 runs of 10 s gave single ratios from 0.62 to 1.10 on this host, and qemu-nbd's own
 * figures moved 1.5-2.4x between whole-table runs an hour apart).
 */
async function runInterleaved(
  servers: Server[],
  jobs: Job[],
  sizeMiB: number,
  runtime: number,
  runs: number,
): Promise<Rounds> {
  for (const server of servers) {
    console.error(`${server.name}: prefilling ${sizeMiB} MiB`);
    await prefill(server.uri, sizeMiB);
  }
  // The prefills' dirty pages written back now, not during the first jobs.
  await exec("sync", [], 600_000);
  const perJob = () => jobs.map(() => servers.map(() => [] as number[]));
  const rounds: Rounds = {
    iops: perJob(),
    bytesPerSec: perJob(),
    cpuAll: perJob(),
    cpuMain: perJob(),
    load: [],
  };
  for (let run = 1; run <= runs; run++) {
    rounds.load.push(os.loadavg()[0]!);
    for (const [j, job] of jobs.entries()) {
      for (let k = 0; k < servers.length; k++) {
        const v = (k + run) % servers.length;
        const server = servers[v]!;
        const before = server.pid ? await cpuSeconds(server.pid) : undefined;
        const started = performance.now();
        const result = await fio(server.uri, job, sizeMiB, runtime);
        // CPU per MiB moved over the whole job (its ramp included): what each request costs the
        // server whatever else runs on the machine.
        const mib = result.bytesPerSec * (performance.now() - started) / 1000 / MiB;
        if (before) {
          const after = await cpuSeconds(server.pid!);
          rounds.cpuAll[j]![v]!.push((after.all - before.all) * 1e6 / mib);
          rounds.cpuMain[j]![v]!.push((after.main - before.main) * 1e6 / mib);
        }
        rounds.iops[j]![v]!.push(result.iops);
        rounds.bytesPerSec[j]![v]!.push(result.bytesPerSec);
        console.error(`run ${run}: ${server.name}: ${job.name}: ${fmtIops(result.iops)} IOPS`);
      }
    }
  }
  return rounds;
}

/** Server `a` ÷ server `b` (IOPS) of each run, for job `j`. */
function runRatios(rounds: Rounds, j: number, a: number, b: number): number[] {
  return rounds.iops[j]![a]!.map((iops, run) => iops / rounds.iops[j]![b]![run]!);
}

function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * Verify on ÷ off for issue 8's jobs: four sheep of the same build side by side, one verifying
 * large reads in a checksum worker (`--checksum-workers 1`), one verifying every read on its main
 * thread (`--checksum-workers 0`), one not verifying (`SHEEPDOG_VERIFY_READS=0`) and a control
 * that does not verify either, started first (the others in turn after it), whose ratio to "off"
 * shows what this method reads as a difference where there is none. Judged: the variant this host
 * runs by default (no worker on two cores or fewer).
 */
async function verifyCost(
  exe: string,
  dir: string,
  sizeMiB: number,
  runtime: number,
  runs: number,
  baseline?: string,
): Promise<string> {
  // Explicit worker counts: the default depends on the host's cores (none on two).
  const variants: [string, Record<string, string>, string, string[]][] = [
    ["off again", { SHEEPDOG_VERIFY_READS: "0" }, exe, []],
    ["workers", {}, exe, ["--checksum-workers", "1"]],
    ["main thread", {}, exe, ["--checksum-workers", "0"]],
    ["off", { SHEEPDOG_VERIFY_READS: "0" }, exe, []],
    ...(baseline ? [["baseline", {}, baseline, []] as typeof variants[number]] : []),
  ];
  const [CONTROL, WORKERS, INLINE, OFF, BASE] = [0, 1, 2, 3, 4];
  const jobs = VERIFY_TARGETS.map(([job]) => job);
  const sheep: BenchSheep[] = [];
  let rounds: Rounds;
  try {
    for (const [name, env, executable, args] of variants) {
      sheep.push(
        await startSheep(executable, path.join(dir, name.replace(" ", "-")), sizeMiB, env, args),
      );
    }
    const servers = sheep.map((one, i) => ({ name: variants[i]![0], uri: one.uri, pid: one.pid }));
    rounds = await runInterleaved(servers, jobs, sizeMiB, runtime, runs);
  } finally {
    for (const one of sheep) await one.stop();
  }
  const rows = rounds.load.map((load, run) => {
    const cells = jobs.flatMap((_, j) => {
      const iops = rounds.iops[j]!.map((perRun) => perRun[run]!);
      const shown = [WORKERS, INLINE, OFF, CONTROL, ...(baseline ? [BASE] : [])];
      return [
        shown.map((v) => fmtIops(iops[v]!)).join(" / "),
        ...[WORKERS, INLINE, CONTROL].map((v) => (iops[v]! / iops[OFF]!).toFixed(2)),
      ];
    });
    return `| ${run + 1} | ${load.toFixed(1)} | ${cells.join(" | ")} |`;
  });
  const cpus = os.cpus();
  const defaultWorkers = checksumWorkersDefault();
  return [
    `Machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores (shared with other ` +
    `work). Date: ${new Date().toISOString()}. Reproduce: ` +
    "`deno run -A scripts/bench_nbd.ts --verify-cost`.",
    "",
    `Four sheep of the built ./sheepdog side by side (copies=1, a ${sizeMiB} MiB VDI each, ` +
    "prefilled): **workers** verifies every block it reads, reads of 128 KiB and more in one " +
    "checksum worker thread (`--checksum-workers 1`; the default on hosts of more than two " +
    "cores is one per core but two), **main thread** verifies every read on the main thread " +
    "(`--checksum-workers 0`, the default on two cores), **off** does not verify " +
    "(`SHEEPDOG_VERIFY_READS=0`: checksums kept on writes, not checked on reads), and **off " +
    "again**, a second one that does not verify, started first: the control, whose ratio to off " +
    "is what the method shows where nothing differs. fio's nbd " +
    `engine, one connection, ${runtime} s per job after a 1 s ramp; each job on each sheep in ` +
    "turn, the order rotating by run. Load: the 1-minute load average at the start of the run.",
    "",
    ...(baseline
      ? [
        `**baseline**: another build (${baseline}), verifying as it does; its IOPS come last.`,
        "",
      ]
      : []),
    `| run | load | ${
      jobs.map((job) =>
        `${job.name} IOPS workers / main thread / off / off again${
          baseline ? " / baseline" : ""
        } | workers ÷ off | main thread ÷ off | off again ÷ off`
      ).join(" | ")
    } |`,
    `|---:|---:|${jobs.map(() => "---:|---:|---:|---:|").join("")}`,
    ...rows,
    "",
    ...VERIFY_TARGETS.map(([job, target], j) => {
      const [workers, inline, control] = [WORKERS, INLINE, CONTROL].map((v) =>
        median(runRatios(rounds, j, v, OFF))
      ) as [number, number, number];
      const judged = defaultWorkers > 0 ? workers : inline;
      return `- ${job.name}: verify on ÷ off, median of ${runs} runs: ${workers.toFixed(2)} ` +
        `with workers, ${inline.toFixed(2)} on the main thread; this host's default (${
          defaultWorkers > 0 ? "workers" : "main thread"
        }) against the target ≥ ${target.toFixed(2)}: ${
          judged >= target ? "met" : "not met"
        }. The control (off again ÷ off, no difference but the sheep): ${control.toFixed(2)}.`;
    }),
    "",
    "The sheep's CPU time per MiB read (user + system, from /proc; medians of the runs): what " +
    "verifying costs whatever else the machine runs, and on which thread.",
    "",
    `| job | ${variants.map(([name]) => `${name}: all threads / main thread µs`).join(" | ")} |`,
    `|---|${variants.map(() => "---:|").join("")}`,
    ...jobs.map((job, j) =>
      `| ${job.name} | ${
        variants.map((_, v) =>
          `${Math.round(median(rounds.cpuAll[j]![v]!)).toLocaleString("en-US")} / ${
            Math.round(median(rounds.cpuMain[j]![v]!)).toLocaleString("en-US")
          }`
        ).join(" | ")
      } |`
    ),
  ].join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runtime: { type: "string" },
      size: { type: "string", default: "1024" },
      "no-write": { type: "boolean", default: false },
      "verify-cost": { type: "boolean", default: false },
      baseline: { type: "string" },
      // Defaults: 5 runs; with --verify-cost 12.
      runs: { type: "string" },
    },
  });
  // Short jobs, many runs (see `runInterleaved`).
  const runtime = Number(values.runtime ?? 3);
  const runs = Number(values.runs ?? (values["verify-cost"] ? 12 : 5));
  const sizeMiB = Number(values.size);
  if (!(runtime > 0) || !(sizeMiB > 0) || !(runs > 0)) {
    throw new Error("--runtime, --size and --runs must be positive");
  }

  // Other work on the machine skews absolute numbers (both servers run under the same load).
  const loadBefore = os.loadavg()[0]!;
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-bench-nbd-"));
  let qemuPid: number | undefined;
  try {
    // Sheepdog: the built ./sheepdog (as users run it, on Node), one sheep, copies=1, a VDI
    // served over NBD.
    const exe = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "sheepdog");
    if (values["verify-cost"]) {
      const body = await verifyCost(
        exe,
        dir,
        sizeMiB,
        runtime,
        runs,
        values.baseline,
      );
      console.log(`\n${body}\n`);
      if (!values["no-write"]) {
        writeBodySection(VERIFY_SECTION, body);
      }
      return;
    }
    // qemu-nbd: a raw file in the same directory.
    const file = path.join(dir, "qemu.raw");
    const handle = await fsp.open(file, "w");
    await handle.truncate(sizeMiB * MiB);
    await handle.close();
    const port = await freePort();
    const pidFile = path.join(dir, "qemu-nbd.pid");
    // --fork: the command returns once the server listens; it is stopped by its PID below.
    await exec("qemu-nbd", [
      "-f",
      "raw",
      "-t",
      "-p",
      String(port),
      "-b",
      "127.0.0.1",
      "--fork",
      `--pid-file=${pidFile}`,
      file,
    ], 30_000);
    qemuPid = Number((await fsp.readFile(pidFile, "utf8")).trim());
    const sheep: BenchSheep[] = [];
    let floors: Server[] = [];
    let rounds: Rounds;
    try {
      sheep.push(await startSheep(exe, path.join(dir, "sheep"), sizeMiB, {}));
      floors = await startFloorServers(dir, sizeMiB);
      const servers: Server[] = [
        { name: sheep[0]!.label, uri: sheep[0]!.uri, pid: sheep[0]!.pid },
        ...floors,
        { name: "qemu-nbd", uri: `nbd://127.0.0.1:${port}/` },
      ];
      rounds = await runInterleaved(servers, JOBS, sizeMiB, runtime, runs);
    } finally {
      for (const one of sheep) await one.stop();
      for (const floor of floors) {
        process.kill(floor.pid!, "SIGTERM");
        await waitForExit(floor.pid!, 10_000);
      }
    }

    const cpus = os.cpus();
    const body = [
      `Machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, ${os.platform()} ` +
      `${os.release()}. Date: ${new Date().toISOString()}. Load average (1 min) before/after: ` +
      `${loadBefore.toFixed(1)}/${os.loadavg()[0]!.toFixed(1)}.`,
      "",
      `fio ${(await exec("fio", ["--version"], 10_000)).trim()} with the nbd engine, one ` +
      `connection, ${runtime} s per job after a 1 s ramp, over a ${sizeMiB} MiB volume ` +
      "prefilled with data. sheepdog: the built ./sheepdog (Node), one sheep, copies=1, 4 MiB " +
      "objects, NBD export inside the sheep, every 4 KiB block checksummed (XXH64, " +
      "block_checksum.ts) and verified on read. Where the time goes, three floors on the same " +
      `Node (${await nodeVersion()}) (scripts/nbd_floor.ts): "NBD session only" is sheepdog's ` +
      "NBD server (net/nbd) over an export that reads and writes a raw file directly (no VDI, " +
      'gateway, store or checksums); "session + checksums" is the same over the store\'s layout ' +
      "(one file per 4 MiB object, writes over 64 KiB in 64 KiB pieces) with the sheep's block " +
      "checksums (each written 4 KiB block hashed into a table in memory, each read block hashed " +
      'and compared): the least the layout and the checksums cost; "bare Node" is the ' +
      "least a Node NBD server does (one parse loop, pread/pwrite, replies written at once). " +
      "qemu-nbd: `qemu-nbd -f raw -t` of a raw file on the same disk. All five run side by side; " +
      `${runs} runs, in each every job on each server in turn (the order rotating by run). ` +
      "IOPS and MB/s: medians of the runs. Ratios: IOPS ÷ qemu-nbd's within each run, the " +
      "median of the runs (and each run's for sheepdog). Reproduce: `npm run bench`.",
      "",
      table(rounds),
    ].join("\n");
    console.log(`\n${body}\n`);
    if (!values["no-write"]) {
      writeBodySection(SECTION, body);
      console.error(`wrote "${SECTION}" in ${path.join(root, "BENCHMARKS.md")}`);
    }
  } finally {
    if (qemuPid !== undefined && qemuPid > 0) {
      process.kill(qemuPid, "SIGTERM");
      await waitForExit(qemuPid, 10_000);
    }
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

// Run as a script; bench_copies.ts imports fio and prefill from here.
if (import.meta.main) await main();
