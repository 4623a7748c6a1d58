/**
 * NBD export vs qemu-nbd, measured in the same run with fio's nbd engine.
 *
 *   deno run -A scripts/bench_nbd.ts [--runtime=SECONDS] [--size=MIB] [--no-write]
 *
 * Starts a sheep on a temporary directory (mkfs copies=1), creates a VDI, serves it over NBD on
 * 127.0.0.1, prefills it so reads hit data, and runs 4 KiB random read/write at queue depth 1
 * and 32 and 1 MiB sequential read/write. Then the same jobs against `qemu-nbd` serving a raw
 * file in the same temporary directory (same disk). Prints a table and writes the section
 * "## NBD vs qemu-nbd" of BENCHMARKS.md (replacing an older one) unless --no-write.
 */
import { execFile } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

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

export async function fio(
  uri: string,
  job: Job,
  sizeMiB: number,
  runtime: number,
): Promise<Result> {
  const args = [
    "--name=bench",
    "--ioengine=nbd",
    `--uri=${uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--size=${sizeMiB}M`,
    `--runtime=${runtime}`,
    "--time_based",
    "--ramp_time=1",
    "--randrepeat=0",
    "--output-format=json",
  ];
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
async function waitForExit(pid: number, ms: number): Promise<void> {
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

async function runAll(
  label: string,
  uri: string,
  sizeMiB: number,
  runtime: number,
  /** Resolves once the server has let go of the last connection. */
  idle: () => Promise<void> = () => Promise.resolve(),
): Promise<Result[]> {
  console.error(`${label}: prefilling ${sizeMiB} MiB`);
  await prefill(uri, sizeMiB);
  const results: Result[] = [];
  for (const job of JOBS) {
    await idle();
    const result = await fio(uri, job, sizeMiB, runtime);
    console.error(`${label}: ${job.name}: ${fmtIops(result.iops)} IOPS, ${fmtMBps(result)} MB/s`);
    results.push(result);
  }
  return results;
}

function fmtIops(iops: number): string {
  return Math.round(iops).toLocaleString("en-US");
}

function fmtMBps(result: Result): string {
  return (result.bytesPerSec / 1e6).toFixed(1);
}

function table(ours: Result[], unverified: Result[], theirs: Result[]): string {
  const lines = [
    "| job | sheepdog IOPS | sheepdog MB/s | verify off IOPS | qemu-nbd IOPS | qemu-nbd MB/s | ratio | verify on ÷ off |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  const ratio = (a: number, b: number) => b > 0 ? (a / b).toFixed(2) : "n/a";
  JOBS.forEach((job, i) => {
    const a = ours[i]!;
    const off = unverified[i]!;
    const b = theirs[i]!;
    lines.push(
      `| ${job.name} | ${fmtIops(a.iops)} | ${fmtMBps(a)} | ${fmtIops(off.iops)} | ${
        fmtIops(b.iops)
      } | ${fmtMBps(b)} | ${ratio(a.iops, b.iops)} | ${ratio(a.iops, off.iops)} |`,
    );
  });
  return lines.join("\n");
}

async function writeSection(file: string, body: string): Promise<void> {
  let text = "";
  try {
    text = await fsp.readFile(file, "utf8");
  } catch {
    text = "# Benchmarks\n";
  }
  const start = text.indexOf(`\n${SECTION}\n`);
  const section = `${SECTION}\n\n${body.trim()}\n`;
  if (start < 0) {
    text = `${text.trimEnd()}\n\n${section}`;
  } else {
    const next = text.indexOf("\n## ", start + 1);
    const rest = next < 0 ? "" : text.slice(next + 1);
    text = `${text.slice(0, start + 1)}${section}${rest === "" ? "" : `\n${rest}`}`;
  }
  await fsp.writeFile(file, text);
}

/** One sheep (copies=1) with a VDI over NBD, measured with every job; stopped afterwards. */
async function runSheepdog(
  exe: string,
  sheepDir: string,
  sizeMiB: number,
  runtime: number,
  env: Record<string, string>,
): Promise<Result[]> {
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
    ],
    60_000,
    env,
  );
  const pid = Number((await fsp.readFile(path.join(sheepDir, "sheep.pid"), "utf8")).trim());
  try {
    await exec(exe, ["shepherd", "mkfs", "--copies=1", ...cluster], 60_000);
    await exec(exe, ["img", "create", "bench", `${sizeMiB}M`, ...cluster], 60_000);
    const label = env.SHEEPDOG_VERIFY_READS === "0" ? "sheepdog (verify off)" : "sheepdog";
    return await runAll(label, `nbd://127.0.0.1:${nbdPort}/bench`, sizeMiB, runtime);
  } finally {
    process.kill(pid, "SIGTERM");
    await waitForExit(pid, 30_000);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runtime: { type: "string", default: "10" },
      size: { type: "string", default: "1024" },
      "no-write": { type: "boolean", default: false },
    },
  });
  const runtime = Number(values.runtime);
  const sizeMiB = Number(values.size);
  if (!(runtime > 0) || !(sizeMiB > 0)) throw new Error("--runtime and --size must be positive");

  // Other work on the machine skews absolute numbers (both servers run under the same load).
  const loadBefore = os.loadavg()[0]!;
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-bench-nbd-"));
  let qemuPid: number | undefined;
  try {
    // Sheepdog: the built ./sheepdog (as users run it, on Node), one sheep, copies=1, a VDI
    // served over NBD; run twice, reads verified against their checksums and not.
    const exe = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "sheepdog");
    const ours = await runSheepdog(exe, path.join(dir, "verified"), sizeMiB, runtime, {});
    const unverified = await runSheepdog(exe, path.join(dir, "unverified"), sizeMiB, runtime, {
      SHEEPDOG_VERIFY_READS: "0",
    });

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
    const theirs = await runAll("qemu-nbd", `nbd://127.0.0.1:${port}/`, sizeMiB, runtime);

    const cpus = os.cpus();
    const body = [
      `Machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, ${os.platform()} ` +
      `${os.release()}. Date: ${new Date().toISOString()}. Load average (1 min) before/after: ` +
      `${loadBefore.toFixed(1)}/${os.loadavg()[0]!.toFixed(1)}.`,
      "",
      `fio ${(await exec("fio", ["--version"], 10_000)).trim()} with the nbd engine, one ` +
      `connection, ${runtime} s per job after a 1 s ramp, over a ${sizeMiB} MiB volume ` +
      "prefilled with data. sheepdog: the built ./sheepdog (Node), one sheep, copies=1, 4 MiB " +
      "objects, NBD export inside the sheep, every 4 KiB block checksummed (CRC-32) and verified " +
      'on read. "verify off": the same build with `SHEEPDOG_VERIFY_READS=0` (checksums still ' +
      "kept on writes, not checked on reads). qemu-nbd: `qemu-nbd -f raw -t` of a raw file on " +
      "the same disk. Ratio = sheepdog / qemu-nbd (IOPS). Reproduce: `npm run bench`.",
      "",
      table(ours, unverified, theirs),
    ].join("\n");
    console.log(`\n${body}\n`);
    if (!values["no-write"]) {
      const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
      await writeSection(path.join(root, "BENCHMARKS.md"), body);
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
