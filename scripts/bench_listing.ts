/**
 * Listings at 1,000 VDIs: how long `shepherd info -t vdi` and `img du` take, as a user runs
 * them (a ./sheepdog process each, process start included).
 *
 *   deno run -A scripts/bench_listing.ts [--vdis=N] [--runs=N] [--no-write]
 *
 * Starts three sheep (two copies) on a temporary directory and creates N VDIs (default 1,000)
 * through one admin connection, each with one 4 KiB write (one data object allocated, one
 * inode entry written), so the setup stays fast. Then runs each listing `runs` times (default 5)
 * and reports the median and the slowest. Writes the section "## Listings at 1,000 VDIs" of
 * BENCHMARKS.md unless --no-write. Every process started here is stopped by its PID.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { ObjectClient } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";
import { AdminService } from "../net/admin/admin_service.ts";
import { readKeyFile } from "../net/auth/cluster_key.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { exe, run, startCluster, stopCluster, writeSection } from "./bench_cluster.ts";

const SECTION = "## Listings at 1,000 VDIs";
const { values } = parseArgs({
  options: {
    vdis: { type: "string", default: "1000" },
    runs: { type: "string", default: "5" },
    "no-write": { type: "boolean", default: false },
  },
});
const count = Number(values.vdis);
const runs = Number(values.runs);

/** Median and maximum seconds of `runs` runs of `args`. */
function timed(args: string[]): { median: number; max: number } {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    run(args);
    times.push((performance.now() - started) / 1000);
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)]!, max: times[times.length - 1]! };
}

if (!fs.existsSync(exe)) throw new Error("build first: npm run build");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "sd-bench-listing-"));
let dirs: string[] = [];
try {
  const started = startCluster(work, 3);
  dirs = started.dirs;
  const ports = started.ports;
  const keyFile = started.keyFile;
  const cluster = ["--cluster", `127.0.0.1:${ports[0]}`, "--key-file", keyFile];
  run(["shepherd", "mkfs", "--copies=2", ...cluster]);

  const client = new ObjectClient(
    new TcpTransport({ host: "127.0.0.1", port: ports[0]!, key: readKeyFile(keyFile) }),
  );
  const admin = new AdminService(client);
  const setupStarted = performance.now();
  const block = new Uint8Array(4096).fill(0xab);
  for (let i = 0; i < count; i++) {
    const name = `vm-${String(i).padStart(4, "0")}`;
    await admin.createVdi({ name, sizeBytes: 1 << 30 });
    const io = await VdiIo.open(client, name);
    await io.write((i % 256) * (4 << 20), block);
  }
  await client.close();
  const setup = (performance.now() - setupStarted) / 1000;

  const info = timed(["shepherd", "info", "-t", "vdi", ...cluster]);
  const vm = timed(["shepherd", "info", "-t", "vm", ...cluster]);
  const du = timed(["img", "du", ...cluster]);
  const lines = run(["shepherd", "info", "-t", "vdi", ...cluster]).trim().split("\n").length;
  if (lines !== count) throw new Error(`info -t vdi listed ${lines} VDIs, expected ${count}`);

  const cell = (t: { median: number; max: number }) =>
    `${t.median.toFixed(2)} s (slowest ${t.max.toFixed(2)} s)`;
  const section = [
    SECTION,
    "",
    `Machine: ${os.cpus()[0]?.model ?? "?"}, ${os.cpus().length} cores, ${
      (os.totalmem() / 2 ** 30).toFixed(0)
    } GiB; ${new Date().toISOString().slice(0, 10)}; load average (1 min) ${
      os.loadavg()[0]!.toFixed(1)
    }; three ./sheepdog sheep on 127.0.0.1, two copies, objects on ${os.tmpdir()}.`,
    "",
    `${count} VDIs of 1 GiB, each with one 4 KiB write (created in ${setup.toFixed(0)} s). ` +
    `Each command is a ./sheepdog process (start included), run ${runs} times: median ` +
    "(slowest). Reproduce: `deno run -A scripts/bench_listing.ts`.",
    "",
    "| command | time |",
    "|---|---|",
    `| shepherd info -t vdi | ${cell(info)} |`,
    `| shepherd info -t vm | ${cell(vm)} |`,
    `| img du | ${cell(du)} |`,
    "",
  ].join("\n");
  console.log(section);
  if (!values["no-write"]) writeSection(section);
} finally {
  await stopCluster(dirs);
  fs.rmSync(work, { recursive: true, force: true });
}
