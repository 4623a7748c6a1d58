// `npm run bench`: measures the built ./sheepdog as a user runs it and writes BENCHMARKS.md.
//  1. import and export of a 1 GiB raw image, one sheep, one copy;
//  2. the same import into three sheep with three copies (write MB/s, 3 copies vs 1);
//  3. a four-sheep cluster holding 1 GiB with three copies: kill -9 one sheep, time until the
//     survivors install a new epoch (failure detection) and until recovery is done everywhere;
//  then listings at 1,000 VDIs (scripts/bench_listing.ts), memory, start-up and recovery under
//  client I/O (scripts/bench_ops.ts), the NBD comparison with qemu-nbd (scripts/bench_nbd.ts),
//  three copies against one over NBD (scripts/bench_copies.ts), block checksum costs
//  (scripts/bench_checksum.ts) and the numbers at scale (scripts/bench_scale.ts: placement at
//  100 and 1,000 nodes, the built-in group at 50 to 200 members, 20 real sheep) add their own
//  sections.
// Every server binds 127.0.0.1; every process started here is stopped by its PID.
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { exe, root, run, startCluster, stopCluster, writeSection } from "./bench_cluster.ts";

const GiB = 1 << 30;

function timed(args: string[]): number {
  const started = performance.now();
  run(args);
  return (performance.now() - started) / 1000;
}

function clusterJson(port: number): { nodes: string[]; epoch: number } {
  return JSON.parse(
    run(["shepherd", "info", "-t", "cluster", "--json", "--cluster", `127.0.0.1:${port}`]),
  );
}

async function until(check: () => boolean, timeoutMs: number): Promise<number> {
  const started = performance.now();
  while (!check()) {
    if (performance.now() - started > timeoutMs) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return (performance.now() - started) / 1000;
}

if (!fs.existsSync(exe)) throw new Error("build first: npm run build");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "sd-bench-"));
const raw = path.join(work, "image.raw");
execFileSync("head", ["-c", String(GiB), "/dev/urandom"], {
  stdio: ["ignore", fs.openSync(raw, "w"), "inherit"],
});
const lines: string[] = [];
try {
  // 1. One sheep, one copy.
  const one = startCluster(path.join(work, "one"), 1);
  const c1 = ["--cluster", `127.0.0.1:${one.ports[0]}`];
  run(["shepherd", "mkfs", "--copies=1", ...c1]);
  const import1 = timed(["img", "convert", raw, "bench", ...c1]);
  const exportPath = path.join(work, "out.raw");
  const export1 = timed(["img", "convert", "-O", "raw", "bench", exportPath, ...c1]);
  const identical = spawnSync("cmp", [raw, exportPath]).status === 0;
  await stopCluster(one.dirs);
  fs.rmSync(exportPath);

  // 2. Three sheep, three copies.
  const three = startCluster(path.join(work, "three"), 3);
  const c3 = ["--cluster", `127.0.0.1:${three.ports[0]}`];
  run(["shepherd", "mkfs", "--copies=3", ...c3]);
  const import3 = timed(["img", "convert", raw, "bench", ...c3]);
  await stopCluster(three.dirs);

  // 3. Four sheep, three copies, 1 GiB: lose one.
  const four = startCluster(path.join(work, "four"), 4);
  const c4 = ["--cluster", `127.0.0.1:${four.ports[0]}`];
  run(["shepherd", "mkfs", "--copies=3", ...c4]);
  run(["img", "convert", raw, "bench", ...c4]);
  const epoch = clusterJson(four.ports[0]!).epoch;
  process.kill(Number(fs.readFileSync(path.join(four.dirs[3]!, "sheep.pid"), "utf8")), "SIGKILL");
  const detect = await until(() => clusterJson(four.ports[0]!).epoch > epoch, 60_000);
  const newEpoch = clusterJson(four.ports[0]!).epoch;
  const restore = detect + await until(() => {
    const { nodes } = JSON.parse(run(["shepherd", "info", "-t", "recovery", "--json", ...c4])) as {
      nodes: { phase: string; epoch: number }[];
    };
    return nodes.length === 3 && nodes.every((r) => r.phase === "done" && r.epoch >= newEpoch);
  }, 600_000);
  await stopCluster(four.dirs);

  const mbps = (seconds: number) => (GiB / 2 ** 20 / seconds).toFixed(0);
  lines.push(
    "## Import, export, replication, recovery",
    "",
    `Machine: ${os.cpus()[0]?.model ?? "?"}, ${os.cpus().length} cores, ${
      (os.totalmem() / GiB).toFixed(0)
    } GiB; ` +
      `${
        new Date().toISOString().slice(0, 10)
      }; ./sheepdog processes on 127.0.0.1, objects on ${os.tmpdir()}.`,
    "",
    "| measurement | result |",
    "|---|---|",
    `| import 1 GiB random raw, 1 sheep, 1 copy | ${import1.toFixed(1)} s, ${mbps(import1)} MB/s |`,
    `| export 1 GiB to raw, 1 sheep, 1 copy | ${export1.toFixed(1)} s, ${
      mbps(export1)
    } MB/s (byte-identical: ${identical}) |`,
    `| import 1 GiB, 3 sheep, 3 copies | ${import3.toFixed(1)} s, ${mbps(import3)} MB/s (${
      (import1 / import3).toFixed(2)
    }× the 1-copy rate) |`,
    `| failed node detected (kill -9 → new epoch), 5 s timeout | ${detect.toFixed(1)} s |`,
    `| redundancy restored for 1 GiB after the loss (kill -9 → recovery done everywhere) | ${
      restore.toFixed(1)
    } s |`,
    "",
  );
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}

writeSection("## Import, export, replication, recovery", lines.join("\n"));
console.log(lines.join("\n"));

/** Runs one of the other benchmark scripts; each writes its own section. */
function runScript(name: string, ...args: string[]): void {
  execFileSync(path.join(root, "node_modules", ".bin", "deno"), [
    "run",
    "-A",
    path.join(root, "scripts", name),
    ...args,
  ], { stdio: "inherit" });
}

// Listings at 1,000 VDIs (info -t vdi, info -t vm, img du).
runScript("bench_listing.ts");
// Memory, start-up and recovery under client I/O.
runScript("bench_ops.ts");
// NBD against qemu-nbd; then what verifying reads costs (issue 8): on ÷ off, side by side.
runScript("bench_nbd.ts");
runScript("bench_nbd.ts", "--verify-cost");
// Three copies on three sheep against one copy, over NBD.
runScript("bench_copies.ts");
// Block checksums: their cost (and CRC-32's, for comparison) and the hand-off to checksum workers, under Node.
runScript("bench_checksum.ts");
// Placement, the group and 20 sheep at scale.
runScript("bench_scale.ts");
