/**
 * Memory, start-up and recovery under client I/O (issue 11's targets other than NBD speed):
 *
 *   deno run -A scripts/bench_ops.ts [--runs=N] [--fio-seconds=S] [--only=memory,ready,recovery]
 *                                    [--no-write]
 *
 * 1. Memory: one sheep (copies=1, a few VDIs): its RSS (VmRSS of /proc/PID/status) idle after
 *    start; its peak RSS, sampled every 200 ms, under fio's nbd engine (random 4 KiB and 1 MiB
 *    writes and 1 MiB reads at QD32) and under a client that pipelines 3,000 reads of a 4 MiB
 *    object on the object port and never reads the replies; and its RSS once that client left.
 * 2. Ready time: the same sheep stopped and started `runs` times (default 10), each time from
 *    spawning `./sheepdog sheep DIR ...` to the first VDI read a client gets an answer to.
 * 3. Recovery under client I/O: three sheep, three copies, a 1 GiB VDI written through NBD. fio
 *    reads 4 KiB blocks at random through NBD on sheep 0 while sheep 2 is killed (-9) and started
 *    again on an empty directory, so it pulls the whole GiB: time until every node reports the
 *    epoch recovered, and fio's IOPS over that time against the same job on the idle cluster.
 *
 * Writes the section "## Memory, start-up, recovery under client I/O" of BENCHMARKS.md unless
 * --no-write. Every process started here is stopped by its PID.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { ObjectClient, requestHeader } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";
import { Opcode } from "../net/object/ops.ts";
import { AdminService, type RecoveryRow } from "../net/admin/admin_service.ts";
import { readKeyFile } from "../net/auth/cluster_key.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { dataOid } from "../core/vdi/oid.ts";
import {
  type ClusterLayout,
  exe,
  run,
  sheepArgs,
  startCluster,
  stopCluster,
  writeSection,
} from "./bench_cluster.ts";
import { fioArgs, type Job, prefill, waitForExit } from "./bench_nbd.ts";

type FioJob = Pick<Job, "rw" | "bs" | "iodepth">;

const SECTION = "## Memory, start-up, recovery under client I/O";
const MiB = 1 << 20;
const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "10" },
    "fio-seconds": { type: "string", default: "20" },
    only: { type: "string", default: "memory,ready,recovery" },
    "recovery-rate": { type: "string" },
    "recovery-runs": { type: "string", default: "3" },
    "no-write": { type: "boolean", default: false },
  },
});
const runs = Number(values.runs);
const fioSeconds = Number(values["fio-seconds"]);
const recoveryRuns = Number(values["recovery-runs"]);
const only = new Set(values.only!.split(","));
/**
 * The `sheep --recovery-rate` values the recovery part runs with: the given one (default: the
 * sheep's own default), then "off" to compare with recovery that never yields.
 */
const rates = [values["recovery-rate"] ?? "default", ...values["recovery-rate"] ? [] : ["off"]];
const rateArgs = (rate: string) => rate === "default" ? [] : ["--recovery-rate", rate];

// --- helpers -------------------------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function pidOf(dir: string): number {
  return Number(fs.readFileSync(path.join(dir, "sheep.pid"), "utf8"));
}

/** Resident set size of `pid` in bytes (VmRSS), or 0 once it is gone. */
function rss(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) `pid` has used so far, or 0 once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
  } catch {
    return 0;
  }
}

/** Samples the RSS of `pid` every 200 ms until stopped; gives the peak. */
function sampleRss(pid: number): { stop(): number } {
  let peak = rss(pid);
  const timer = setInterval(() => peak = Math.max(peak, rss(pid)), 200);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rss(pid));
    },
  };
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function execOut(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { timeout: timeoutMs, maxBuffer: 64 * MiB, encoding: "utf8" },
      (e, out, err) => {
        if (e) reject(new Error(`${cmd} ${args.join(" ")}: ${e.message}\n${err}`));
        else resolve(out);
      },
    );
  });
}

/** Runs one fio job, no ramp; gives its IOPS (reads or writes, whichever the job does). */
async function fio(uri: string, job: FioJob, seconds: number, sizeMiB: number): Promise<number> {
  const args = fioArgs(uri, job, sizeMiB, seconds, 0);
  const out = await execOut("fio", args, (seconds + 120) * 1000);
  const report = JSON.parse(out.slice(out.indexOf("{")));
  const side = job.rw.includes("read") ? report.jobs[0].read : report.jobs[0].write;
  return side.iops;
}

function client(port: number, keyFile: string, timeoutMs?: number): ObjectClient {
  return new ObjectClient(
    new TcpTransport({
      host: "127.0.0.1",
      port,
      key: readKeyFile(keyFile),
      ...(timeoutMs ? { timeoutMs } : {}),
    }),
  );
}

async function stopSheep(dir: string): Promise<void> {
  const pid = pidOf(dir);
  process.kill(pid, "SIGTERM");
  await waitForExit(pid, 30_000);
}

const machine = () => {
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? "?"}, ${cpus.length} cores, ${
    (os.totalmem() / 2 ** 30).toFixed(0)
  } GiB, linux ${os.release()}`;
};
const load = () => os.loadavg()[0]!.toFixed(1);

// --- 1. memory -------------------------------------------------------------------------------

interface MemoryResult {
  idle: number;
  jobs: { name: string; peak: number; iops: number }[];
  stalled: { peak: number; after: number; handled: string };
  hwm: number;
  load: string;
}

/**
 * A raw connection sends 3,000 READ_OBJ requests for a 4 MiB object and reads no reply; gives
 * the peak RSS meanwhile and the RSS a few seconds after the connection is gone.
 */
async function stalledReader(
  pid: number,
  port: number,
  oid: bigint,
): Promise<{ peak: number; after: number; closedBy: string }> {
  const socket = net.connect({ host: "127.0.0.1", port });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  let closedBy = "the client, after 10 s";
  socket.once("close", () => closedBy = "the server");
  socket.on("error", () => undefined);
  socket.pause(); // never read a reply
  const sampler = sampleRss(pid);
  const requests = new Uint8Array(3000 * 48);
  for (let i = 0; i < 3000; i++) {
    const header = requestHeader(Opcode.READ_OBJ);
    header.id = i + 1;
    header.oid = oid;
    header.dataLength = 4 * MiB;
    requests.set(header.bytes, i * 48);
  }
  socket.write(requests);
  await sleep(10_000);
  socket.removeAllListeners("close");
  socket.destroy();
  const peak = sampler.stop();
  await sleep(5_000);
  return { peak, after: rss(pid), closedBy };
}

/** The one-sheep cluster the memory and ready-time parts use. */
interface OneSheep {
  dir: string;
  port: number;
  keyFile: string;
  /** Its `./sheepdog sheep` command line (NBD served). */
  args: string[];
  nbdPort: number;
}

/** One sheep, formatted (copies=1), with four 1 GiB VDIs: vm1..vm3 and "load". */
function oneSheep(work: string): OneSheep {
  const cluster = startCluster(path.join(work, "one"), 1, { nbd: true });
  const port = cluster.ports[0]!;
  const args = ["--cluster", `127.0.0.1:${port}`, "--key-file", cluster.keyFile];
  run(["shepherd", "mkfs", "--copies=1", ...args]);
  for (const name of ["vm1", "vm2", "vm3", "load"]) run(["img", "create", name, "1G", ...args]);
  return {
    dir: cluster.dirs[0]!,
    port,
    keyFile: cluster.keyFile,
    args: sheepArgs(cluster, 0),
    nbdPort: cluster.nbdPorts[0]!,
  };
}

/** Restarts the sheep, then measures its memory idle and under load; leaves it running. */
async function memory(one: OneSheep): Promise<MemoryResult> {
  await stopSheep(one.dir);
  run(one.args);
  const uri = `nbd://127.0.0.1:${one.nbdPort}/load`;
  const pid = pidOf(one.dir);
  await sleep(3_000);
  const idle = rss(pid);
  console.error(`memory: idle RSS ${mb(idle)}`);
  const jobs: (FioJob & { name: string })[] = [
    { name: "4k randwrite QD32", rw: "randwrite", bs: "4k", iodepth: 32 },
    { name: "1M randwrite QD32", rw: "randwrite", bs: "1M", iodepth: 32 },
    { name: "1M randread QD32", rw: "randread", bs: "1M", iodepth: 32 },
  ];
  const measured = [];
  for (const job of jobs) {
    const sampler = sampleRss(pid);
    const iops = await fio(uri, job, fioSeconds, 1024);
    const peak = sampler.stop();
    console.error(`memory: ${job.name}: peak RSS ${mb(peak)} (${iops.toFixed(0)} IOPS)`);
    measured.push({ name: job.name, peak, iops });
  }
  // The stalled reader reads a data object fio wrote.
  const c = client(one.port, one.keyFile);
  const vid = await c.lookupVdi("load");
  await c.close();
  const stalled = await stalledReader(pid, one.port, dataOid(vid, 0));
  console.error(`memory: stalled reader: peak ${mb(stalled.peak)}, after ${mb(stalled.after)}`);
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const hwm = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
  return {
    idle,
    jobs: measured,
    stalled: { peak: stalled.peak, after: stalled.after, handled: stalled.closedBy },
    hwm,
    load: load(),
  };
}

// --- 2. ready time ---------------------------------------------------------------------------

/** True once a client can read the first block of `name` through `port`. */
async function serves(port: number, keyFile: string, name: string): Promise<boolean> {
  const c = client(port, keyFile, 2_000);
  try {
    const io = await VdiIo.open(c, name);
    await io.read(0, 4096);
    return true;
  } catch {
    return false;
  } finally {
    await c.close().catch(() => undefined);
  }
}

interface ReadyResult {
  daemon: number[];
  foreground: number[];
  /** The fastest of `runs` starts of a bare `node -e 0`: what the runtime itself costs here. */
  nodeStart: number;
  load: string;
}

/**
 * Starts the sheep of `dir` (formatted, alone) `runs` times each way, as a daemon and in the
 * foreground: seconds from spawn to the first answered read.
 */
async function ready(dir: string, port: number, keyFile: string): Promise<ReadyResult> {
  const base = [
    "sheep",
    dir,
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "--key-file",
    keyFile,
    "--multicast",
    "off",
    "--no-http",
    "--no-nbd",
  ];
  const result: ReadyResult = { daemon: [], foreground: [], nodeStart: Infinity, load: load() };
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await execOut("node", ["-e", "0"], 30_000);
    result.nodeStart = Math.min(result.nodeStart, (performance.now() - started) / 1000);
  }
  for (const foreground of [false, true]) {
    for (let i = 0; i < runs; i++) {
      const started = performance.now();
      const child: ChildProcess = spawn(exe, foreground ? [...base, "--foreground"] : base, {
        stdio: "ignore",
        env: { PATH: "/usr/bin:/bin" },
      });
      while (!await serves(port, keyFile, "vm1")) {
        if (child.exitCode !== null && child.exitCode !== 0) throw new Error("sheep exited");
        if (performance.now() - started > 60_000) throw new Error("sheep not ready in 60 s");
        await sleep(5);
      }
      const seconds = (performance.now() - started) / 1000;
      (foreground ? result.foreground : result.daemon).push(seconds);
      console.error(
        `ready: ${foreground ? "foreground" : "daemon"} run ${i + 1}: ${seconds.toFixed(3)} s`,
      );
      // The daemon's parent exits once the child said it is ready; the pid file is written then.
      if (!foreground) {
        await new Promise((resolve) =>
          child.exitCode !== null ? resolve(0) : child.once("exit", resolve)
        );
      }
      while (!fs.existsSync(path.join(dir, "sheep.pid"))) await sleep(5);
      await stopSheep(dir);
    }
  }
  return result;
}

// --- 3. recovery under client I/O ------------------------------------------------------------

/** One loss and recovery, with fio reading throughout. */
interface RecoveryCycle {
  /** From the restart of the emptied sheep until every node reports the new epoch recovered. */
  seconds: number;
  /** From that restart until every node is in the new epoch. */
  joinSeconds: number;
  /** fio's IOPS over the 5 s before the kill and the 5 s after recovery, and during it. */
  idleIops: number;
  duringIops: number;
  objects: number;
  /** CPU seconds each sheep used during recovery (0 and 1 serve, 2 pulls). */
  cpu: number[];
}

interface RecoveryResult {
  cycles: RecoveryCycle[];
  load: string;
}

/** Every member's recovery rows; undefined while some member does not answer. */
async function recoveryRows(port: number, keyFile: string): Promise<RecoveryRow[] | undefined> {
  const c = client(port, keyFile, 5_000);
  try {
    return await new AdminService(c).recovery();
  } catch {
    return undefined;
  } finally {
    await c.close().catch(() => undefined);
  }
}

/** fio's IOPS log (`--write_iops_log`, averaged per `avgMs`) as [ms since its start, IOPS]. */
function iopsLog(file: string): [number, number][] {
  return fs.readFileSync(file, "utf8").trim().split("\n").map((line) => {
    const [ms, iops] = line.split(",").map((x) => Number(x.trim()));
    return [ms!, iops!];
  });
}

/** Mean IOPS of the log's entries in [fromMs, toMs). */
function meanIops(log: [number, number][], fromMs: number, toMs: number): number {
  const inside = log.filter(([ms]) => ms >= fromMs && ms < toMs);
  return inside.length === 0 ? NaN : inside.reduce((n, [, iops]) => n + iops, 0) / inside.length;
}

/** Idle time fio reads before the kill and after recovery: the same job, moments apart. */
const IDLE_WINDOW_MS = 5_000;

/**
 * fio reads through NBD on sheep 0 while sheep 2 is killed, emptied and started again; gives
 * the recovery's times and fio's IOPS before, during and after it, from fio's 250 ms log.
 */
async function recoveryCycle(
  rate: string,
  cluster: ClusterLayout,
  uri: string,
  log: string,
): Promise<RecoveryCycle> {
  const { ports, dirs, keyFile } = cluster;
  const reader = spawn("fio", [
    ...fioArgs(uri, { rw: "randread", bs: "4k", iodepth: 32 }, 1024, 600, 0),
    `--write_iops_log=${log}`,
    "--log_avg_msec=250",
  ], { stdio: "ignore" });
  const fioStarted = performance.now();
  try {
    await sleep(1_000 + IDLE_WINDOW_MS);
    const rows0 = await recoveryRows(ports[0]!, keyFile);
    const epoch0 = Math.max(...(rows0 ?? []).map((r) => r.epoch));
    const victim = pidOf(dirs[2]!);
    const killed = performance.now();
    process.kill(victim, "SIGKILL");
    await waitForExit(victim, 30_000); // its port is free again
    fs.rmSync(dirs[2]!, { recursive: true, force: true });
    const restarted = performance.now();
    run(sheepArgs(cluster, 2, { extraArgs: rateArgs(rate) }));
    const pids = [pidOf(dirs[0]!), pidOf(dirs[1]!), pidOf(dirs[2]!)];
    const cpuBefore = pids.map(cpuSeconds);
    let objects = 0;
    let joined = 0;
    for (;;) {
      const rows = await recoveryRows(ports[0]!, keyFile);
      const current = rows && rows.length === 3 && rows.every((r) => r.epoch > epoch0);
      if (current && !joined) joined = performance.now();
      if (current && rows.every((r) => r.state === "done")) {
        objects = rows.reduce((n, r) => n + r.total, 0);
        break;
      }
      if (performance.now() - restarted > 600_000) throw new Error("recovery timed out");
      await sleep(100);
    }
    const done = performance.now();
    const cpu = pids.map((pid, i) => cpuSeconds(pid) - cpuBefore[i]!);
    await sleep(IDLE_WINDOW_MS + 500);
    process.kill(reader.pid!, "SIGINT");
    await new Promise((resolve) =>
      reader.exitCode !== null ? resolve(0) : reader.once("exit", resolve)
    );
    const entries = iopsLog(`${log}_iops.1.log`);
    const at = (t: number) => t - fioStarted;
    const before = meanIops(entries, at(killed) - IDLE_WINDOW_MS, at(killed));
    const after = meanIops(entries, at(done) + 250, at(done) + 250 + IDLE_WINDOW_MS);
    const cycle = {
      seconds: (done - restarted) / 1000,
      joinSeconds: ((joined || done) - restarted) / 1000,
      idleIops: (before + after) / 2,
      duringIops: meanIops(entries, at(killed), at(done)),
      objects,
      cpu,
    };
    console.error(
      `recovery: ${cycle.seconds.toFixed(1)} s (joined ${cycle.joinSeconds.toFixed(1)} s, ` +
        `${objects} objects); fio ${before.toFixed(0)} IOPS before, ` +
        `${cycle.duringIops.toFixed(0)} during, ${after.toFixed(0)} after ` +
        `(${(100 * cycle.duringIops / cycle.idleIops).toFixed(0)}%); CPU s sheep0/1/2 ` +
        cpu.map((x) => x.toFixed(1)).join("/"),
    );
    return cycle;
  } finally {
    if (reader.exitCode === null) reader.kill("SIGKILL");
  }
}

async function recovery(work: string, rate: string): Promise<RecoveryResult> {
  const dir = path.join(work, `recovery-${rate}`);
  const cluster = startCluster(dir, 3, { nbd: true, extraArgs: rateArgs(rate) });
  const { ports, dirs, keyFile, nbdPorts } = cluster;
  try {
    const args = ["--cluster", `127.0.0.1:${ports[0]}`, "--key-file", keyFile];
    run(["shepherd", "mkfs", "--copies=3", ...args]);
    run(["img", "create", "data", "1G", ...args]);
    const uri = `nbd://127.0.0.1:${nbdPorts[0]}/data`;
    console.error("recovery: writing 1 GiB (three copies)");
    await prefill(uri, 1024);
    // The 3 GiB just written reach the disk now, not under the first recovery's syncs.
    execFileSync("sync");
    const cycles: RecoveryCycle[] = [];
    for (let i = 0; i < recoveryRuns; i++) {
      cycles.push(await recoveryCycle(rate, cluster, uri, path.join(work, `fio-${i}-${rate}`)));
    }
    return { cycles, load: load() };
  } finally {
    await stopCluster(dirs);
  }
}

// --- main ------------------------------------------------------------------------------------

if (!fs.existsSync(exe)) throw new Error("build first: npm run build");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "sd-bench-ops-"));
const lines: string[] = [
  SECTION,
  "",
  `Machine: ${machine()}; ${new Date().toISOString().slice(0, 16)}Z; ./sheepdog sheep on ` +
  `127.0.0.1, objects on ${os.tmpdir()}. Load average (1 min) given per part: the machine is ` +
  "shared. Reproduce: `deno run -A scripts/bench_ops.ts`.",
  "",
];
let memoryDir: string | undefined;
try {
  if (only.has("memory") || only.has("ready")) {
    const one = oneSheep(work);
    memoryDir = one.dir;
    if (only.has("memory")) {
      const r = await memory(one);
      lines.push(
        `Memory (target: ≤ 150 MB idle, ≤ 300 MB under load; load average ${r.load}): one ` +
          "sheep, copies=1, four 1 GiB VDIs, restarted, then VmRSS sampled every 200 ms; " +
          `fio's nbd engine for ${fioSeconds} s per job over one VDI.`,
        "",
        "| sheep | RSS |",
        "|---|---:|",
        `| idle, 3 s after start | ${mb(r.idle)} |`,
        ...r.jobs.map((j) => `| peak, fio ${j.name} (${j.iops.toFixed(0)} IOPS) | ${mb(j.peak)} |`),
        `| peak, 3,000 pipelined 4 MiB READ_OBJ never read (10 s; closed by ${r.stalled.handled}) | ${
          mb(r.stalled.peak)
        } |`,
        `| 5 s after that client left | ${mb(r.stalled.after)} |`,
        `| VmHWM (kernel's peak) over the whole run | ${mb(r.hwm)} |`,
        "",
      );
    }
    if (only.has("ready")) {
      await stopSheep(one.dir);
      memoryDir = undefined;
      const r = await ready(one.dir, one.port, one.keyFile);
      const cell = (xs: number[]) =>
        `${Math.min(...xs).toFixed(2)} s | ${median(xs).toFixed(2)} s | ${
          Math.max(...xs).toFixed(2)
        } s`;
      lines.push(
        `Ready time (target ≤ 0.5 s; load average ${r.load}): the sheep above (formatted, ` +
          `alone, four VDIs) started ${runs} times each way; from spawning \`./sheepdog sheep ` +
          "DIR --host 127.0.0.1 --port P ...` to the first answered read of a VDI's first block " +
          "(a client connecting every 5 ms). For scale: `node -e 0` takes " +
          `${r.nodeStart.toFixed(2)} s (min of ${runs}) on this machine now.`,
        "",
        "| start | min | median | max |",
        "|---|---:|---:|---:|",
        `| daemon (the command returns once the sheep serves) | ${cell(r.daemon)} |`,
        `| --foreground | ${cell(r.foreground)} |`,
        "",
      );
    }
  }
  if (memoryDir) await stopSheep(memoryDir);
  memoryDir = undefined;
  if (only.has("recovery")) {
    const results = [];
    for (const rate of rates) results.push({ rate, result: await recovery(work, rate) });
    const ratio = (c: RecoveryCycle) => c.duringIops / c.idleIops;
    lines.push(
      `Recovery under client I/O (targets: ≤ 10 s, client IOPS ≥ 50% of idle; load average ${
        results.map((r) => r.result.load).join(", ")
      }): three sheep (zones 1-3), three copies, a 1 GiB VDI written in full. fio (nbd ` +
        "engine, 4k randread QD32) reads through sheep 0 throughout; sheep 2 is killed with -9 " +
        "and started again on an empty directory, so it pulls the whole GiB; " +
        `${recoveryRuns} times per \`--recovery-rate\` (every sheep). Idle IOPS: fio's 250 ms ` +
        `log over the ${IDLE_WINDOW_MS / 1000} s before the kill and after recovery (the same ` +
        "run, so the machine's other load is alike). CPU: what each sheep used during recovery " +
        "(sheep 0 also serves fio).",
      "",
      "| --recovery-rate | run | restart → recovered everywhere | of which joining | fio IOPS idle | during recovery | ratio | CPU s sheep 0 / 1 / 2 |",
      "|---|---|---:|---:|---:|---:|---:|---|",
    );
    for (const { rate, result } of results) {
      const med = (pick: (c: RecoveryCycle) => number) => median(result.cycles.map(pick));
      lines.push(
        ...result.cycles.map((c, i) =>
          `| ${rate} | ${i + 1} | ${c.seconds.toFixed(1)} s | ${c.joinSeconds.toFixed(1)} s | ${
            c.idleIops.toFixed(0)
          } | ${c.duringIops.toFixed(0)} | ${(100 * ratio(c)).toFixed(0)}% | ${
            c.cpu.map((x) => x.toFixed(1)).join(" / ")
          } |`
        ),
        `| **${rate}** | **median** | **${med((c) => c.seconds).toFixed(1)} s** | ${
          med((c) => c.joinSeconds).toFixed(1)
        } s | ${med((c) => c.idleIops).toFixed(0)} | ${med((c) => c.duringIops).toFixed(0)} | **${
          (100 * med(ratio)).toFixed(0)
        }%** | |`,
      );
    }
    lines.push("");
  }
} finally {
  if (memoryDir) await stopSheep(memoryDir).catch(() => undefined);
  fs.rmSync(work, { recursive: true, force: true });
}

const section = lines.join("\n");
console.log(section);
if (!values["no-write"]) writeSection(SECTION, section);
