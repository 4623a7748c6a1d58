/**
 * Numbers at scale (issue 13), in three parts:
 *  1. placement on simulated rings of 100 and 1,000 nodes (core/hash/ring.ts): the spread of
 *     copies per node, the copies that move when one node joins or leaves (against the ideal
 *     1/N), and what a node twice the size holds with capacity-weighted vnodes;
 *  2. the built-in group with 50 to 200 simulated members (tests/sim/group_scale.ts, virtual
 *     time, production timing): time to form, time to install a view after a crash, datagrams
 *     per member at rest;
 *  3. real processes: 5 and 20 ./sheepdog sheep on 127.0.0.1 started at once, on each cluster
 *     driver: the time until `shepherd info -t node` lists them all, their memory and CPU at
 *     rest.
 *
 *   deno run -A scripts/bench_scale.ts [--only=placement,group,real] [--objects=N]
 *     [--members=50,64,100,200] [--group-seeds=5,5,3,2] [--sheep=5,20]
 *     [--sheep-args="--flag value ..."] [--no-write]
 *
 * Part 3 runs on the built-in group and on a three-member etcd started on loopback
 * (etcd-server); `--sheep-args` runs it on these arguments instead of the built-in group's
 * seeds (another driver), the row labelled with them. The section of BENCHMARKS.md is written
 * only when all three parts ran (and not with --no-write). Every process started here is
 * stopped by its PID.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { parseArgs } from "node:util";
import {
  buildRing,
  defaultZone,
  type Ring,
  type RingNode,
  weighByCapacity,
} from "../core/hash/ring.ts";
import { copiesPerNode, movedFraction, spreadOf } from "../core/hash/placement_stats.ts";
import { dataOid } from "../core/vdi/oid.ts";
import { vidHash } from "../core/vdi/vid.ts";
import { membersMax } from "../net/group/mod.ts";
import { type GroupScaleReport, measureGroupScale } from "../tests/sim/group_scale.ts";
import { EtcdTestCluster } from "../tests/etcd_harness.ts";
import {
  exe,
  planCluster,
  run,
  sheepArgs,
  sheepPid,
  stopCluster,
  writeSection,
} from "./bench_cluster.ts";

const SECTION = "## Scale: placement, the built-in group, 20 sheep";
const { values } = parseArgs({
  options: {
    only: { type: "string", default: "placement,group,real" },
    objects: { type: "string", default: "1000000" },
    members: { type: "string", default: "50,64,100,200" },
    "group-seeds": { type: "string", default: "5,5,3,2" },
    sheep: { type: "string", default: "5,20" },
    "sheep-args": { type: "string" },
    "no-write": { type: "boolean", default: false },
  },
});
const parts = new Set(values.only!.split(","));
const COPIES = 3;
const TB = 1e12;

// ---------------------------------------------------------------------------------------------
// 1. Placement.

/** Node i of a simulated ring: its own address (hence zone), 128 vnodes for `space`. */
function simNode(i: number, space: number): RingNode {
  const host = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  return {
    id: `${host}:7000`,
    host,
    port: 7000,
    zone: defaultZone(host, 7000),
    vnodes: 128,
    space,
  };
}

function ring(nodes: RingNode[]): Ring {
  return buildRing(weighByCapacity(nodes));
}

/** `count` data objects spread over four VDIs, as four busy disks would have them. */
function objectIds(count: number): bigint[] {
  const vids = ["alice", "bob", "charlie", "dora"].map((name) => vidHash(name));
  return Array.from({ length: count }, (_, i) => dataOid(vids[i % 4]!, Math.floor(i / 4)));
}

interface PlacementRow {
  nodes: number;
  maxOverMean: number;
  minOverMean: number;
  joinRatio: number;
  leaveRatio: number;
  /** Copies on a node twice the size ÷ the mean of the others. */
  twice: number;
}

function placementRow(n: number, oids: bigint[]): PlacementRow {
  const nodes = Array.from({ length: n }, (_, i) => simNode(i, 4 * TB));
  const base = ring(nodes);
  const spread = spreadOf([...copiesPerNode(base, oids, COPIES).values()]);
  const joined = ring([...nodes, simNode(n, 4 * TB)]);
  const left = ring(nodes.slice(1));
  const joinRatio = movedFraction(base, joined, oids, COPIES) / (1 / (n + 1));
  const leaveRatio = movedFraction(base, left, oids, COPIES) / (1 / n);
  const big = [simNode(0, 8 * TB), ...nodes.slice(1)];
  const counts = copiesPerNode(ring(big), oids, COPIES);
  const others = [...counts].filter(([id]) => id !== big[0]!.id).map(([, c]) => c);
  const twice = counts.get(big[0]!.id)! / spreadOf(others).mean;
  return { nodes: n, ...spread, joinRatio, leaveRatio, twice };
}

/** 100 nodes of 1, 2 and 4 TB; a 2 TB node joins: moved ÷ its share of the capacity. */
function mixedJoinRatio(oids: bigint[]): number {
  const sizes = [1, 2, 4];
  const nodes = Array.from({ length: 100 }, (_, i) => simNode(i, sizes[i % 3]! * TB));
  const total = nodes.reduce((a, n) => a + n.space!, 0);
  const newcomer = simNode(100, 2 * TB);
  const moved = movedFraction(ring(nodes), ring([...nodes, newcomer]), oids, COPIES);
  return moved / (newcomer.space! / (total + newcomer.space!));
}

function placementLines(): string[] {
  const started = performance.now();
  const oids = objectIds(Number(values.objects));
  const rows = [100, 1000].map((n) => placementRow(n, oids));
  const mixed = mixedJoinRatio(oids);
  const seconds = (performance.now() - started) / 1000;
  const f = (x: number) => x.toFixed(2);
  const lines = [
    "### Placement (simulated rings, core/hash/ring.ts)",
    "",
    `${oids.length.toLocaleString("en")} data objects of four VDIs, ${COPIES} copies, ` +
    "128 vnodes for a node of average capacity, every node its own zone; 4 TB nodes. " +
    "Spread: copies per node ÷ the mean. Moved: copies placed on a node that did not hold " +
    "them before, as a fraction of all copies, ÷ the ideal 1/N (N counted with the node). " +
    `Twice the size: an 8 TB node among 4 TB ones, its copies ÷ the others' mean. ` +
    `(${seconds.toFixed(0)} s)`,
    "",
    "| nodes | max ÷ mean | min ÷ mean | one joins: moved ÷ 1/N | one leaves: moved ÷ 1/N | 8 TB node holds |",
    "|---:|---:|---:|---:|---:|---:|",
    ...rows.map((r) =>
      `| ${r.nodes.toLocaleString("en")} | ${f(r.maxOverMean)} | ${f(r.minOverMean)} | ` +
      `${f(r.joinRatio)} | ${f(r.leaveRatio)} | ${f(r.twice)}× (others ${f(r.minOverMean)}–` +
      `${f(r.maxOverMean)}× the mean) |`
    ),
    "",
    `Mixed capacities (100 nodes of 1, 2 and 4 TB, a 2 TB node joins): moved ÷ the ideal ` +
    `(the newcomer's share of the capacity) = ${f(mixed)}; the newcomer changes the average, ` +
    "so every node's vnode count is rounded anew and a few vnodes move besides the new ones.",
    "",
  ];
  console.log(lines.join("\n"));
  return lines;
}

// ---------------------------------------------------------------------------------------------
// 2. The built-in group, simulated.

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function summary(
  reports: GroupScaleReport[],
  pick: (r: GroupScaleReport) => number | null,
): string {
  const got = reports.map(pick).filter((x): x is number => x !== null);
  const missing = reports.length - got.length;
  if (got.length === 0) return "never";
  const range = got.length > 1
    ? ` (${Math.min(...got).toFixed(1)}–${Math.max(...got).toFixed(1)})`
    : "";
  return `${median(got).toFixed(1)} s${range}${missing > 0 ? `, never in ${missing}` : ""}`;
}

function groupLines(): string[] {
  const members = values.members!.split(",").map(Number);
  const seedCounts = values["group-seeds"]!.split(",").map(Number);
  const rows: string[] = [];
  const notes: string[] = [];
  let wall = 0;
  members.forEach((n, index) => {
    const seeds = seedCounts[index] ?? seedCounts.at(-1)!;
    const reports: GroupScaleReport[] = [];
    for (let seed = 1; seed <= seeds; seed++) {
      const report = measureGroupScale({ members: n, seed, formTicksMax: 300 });
      console.log(JSON.stringify(report));
      reports.push(report);
      wall += report.wallSeconds;
    }
    const rest = (pick: (r: GroupScaleReport) => number) =>
      reports.reduce((a, r) => a + pick(r), 0) / reports.length;
    const largest = Math.min(...reports.map((r) => r.largestView));
    const outside = reports[0]!.outside;
    const outsideText = Object.keys(outside).length === 0
      ? ""
      : `; ${Object.entries(outside).map(([s, c]) => `${c} ${s}`).join(", ")}`;
    rows.push(
      `| ${n} | ${seeds} | ${summary(reports, (r) => r.formSeconds)} | ` +
        `${summary(reports, (r) => r.fullViewSeconds)}, ${largest} members${outsideText} | ` +
        `${summary(reports, (r) => r.memberFailureSeconds)} | ` +
        `${summary(reports, (r) => r.masterFailureSeconds)} | ` +
        `${rest((r) => r.rest.sentPerSecond).toFixed(0)} / ` +
        `${rest((r) => r.rest.receivedPerSecond).toFixed(0)} | ` +
        `${(rest((r) => r.rest.meanBytes) / 1024).toFixed(1)} KiB (max ${
          (Math.max(...reports.map((r) => r.rest.maxBytes)) / 1024).toFixed(1)
        }) | ${(rest((r) => r.rest.sentBytesPerSecond) / 2 ** 20).toFixed(2)} MiB/s |`,
    );
    const types = reports[0]!.rest.byType;
    if (Object.keys(types).some((t) => t !== "hello")) {
      notes.push(
        `At ${n} members the datagrams at rest are ${
          Object.entries(types).map(([t, c]) => `${c.toLocaleString("en")} ${t}`).join(", ")
        } over 5 s (the ${n - largest} members outside the view keep asking for entries).`,
      );
    }
  });
  const lines = [
    "### The built-in group (simulated, tests/sim/group_scale.ts)",
    "",
    "Seeded runs of the group's state machine (`net/group/membership.ts`) on the simulated " +
    "network of tests/sim, in virtual time with the production timing: a tick of 100 ms, " +
    "hellos every 500 ms, a member silent for 5 s is suspected, a fresh node listens 3 s " +
    "before forming. Seeds only (no multicast: every member knows every other), no loss, " +
    "each hop one tick (100 ms, the simulation's shortest delay, so protocol rounds are " +
    "slower than on a LAN). The members start within the first second. Times are medians " +
    "(range) over the seeds; traffic is per member, averaged over 5 s at rest after forming; " +
    `sizes are encoded datagrams (a sample of 1 in 10). Views hold at most ${membersMax} ` +
    `members (net/group/limits.ts: a view and a hello must fit one datagram). ` +
    `(${wall.toFixed(0)} s of simulation)`,
    "",
    "| members | seeds | all in one view | first view of min(N, 64) | view after a member dies | view after the master dies | datagrams/s sent / received | datagram size | bytes/s sent |",
    "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    ...(notes.length > 0 ? [...notes, ""] : []),
  ];
  console.log(lines.join("\n"));
  return lines;
}

// ---------------------------------------------------------------------------------------------
// 3. Real processes.

const execFileAsync = promisify(execFile);

/**
 * A way to hold the sheep of part 3 together: its label, and what each sheep is started with
 * (undefined: the built-in group through seeds), with whatever it needs running meanwhile.
 */
interface RealDriver {
  name: string;
  start(): Promise<{ driverArgs: string[] | undefined; stop(): Promise<void> }>;
}

function drivers(): RealDriver[] {
  const extra = values["sheep-args"];
  if (extra !== undefined) {
    const args = extra.split(/\s+/).filter((a) => a !== "");
    return [{
      name: `\`${args.join(" ")}\``,
      start: () => Promise.resolve({ driverArgs: args, stop: () => Promise.resolve() }),
    }];
  }
  return [
    {
      name: "built-in group (seeds, no multicast)",
      start: () => Promise.resolve({ driverArgs: undefined, stop: () => Promise.resolve() }),
    },
    {
      name: "etcd (three members on loopback)",
      start: async () => {
        // The test suite's etcd: three members on free loopback ports, each stopped by its PID.
        const etcd = await EtcdTestCluster.start(3);
        return {
          driverArgs: ["--cluster-driver", `etcd://${etcd.endpoints.join(",")}`],
          stop: () => etcd.stop(),
        };
      },
    },
  ];
}

/** Resident memory (KiB) and CPU ticks used so far of process `pid`. */
function processUse(pid: number): { rssKiB: number; cpuTicks: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  // Fields 14 and 15 of /proc/PID/stat (utime, stime) follow the ")" that ends the name.
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { rssKiB, cpuTicks: Number(fields[11]) + Number(fields[12]) };
}

const CLOCK_TICKS_PER_SECOND = 100;
const IDLE_SECONDS = 10;

interface RealRow {
  driver: string;
  sheep: number;
  launchSeconds: number;
  formSeconds: number;
  rssMiB: { min: number; median: number; max: number };
  cpuPercent: number;
}

async function realCluster(driver: RealDriver, count: number): Promise<RealRow> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "sd-bench-scale-"));
  const layout = planCluster(work, count);
  const running = await driver.start();
  const cluster = ["--cluster", `127.0.0.1:${layout.ports[0]}`, "--key-file", layout.keyFile];
  try {
    const started = performance.now();
    // All at once, as a fleet would come up: each command returns once its sheep serves.
    const launches = layout.dirs.map((_, i) =>
      execFileAsync(exe, sheepArgs(layout, i, { driverArgs: running.driverArgs }), {
        env: { PATH: "/usr/bin:/bin" },
      })
    );
    let launchSeconds = NaN;
    void Promise.all(launches).then(() => launchSeconds = (performance.now() - started) / 1000);
    let listed = 0;
    while (listed < count) {
      if (performance.now() - started > 300_000) throw new Error(`only ${listed} nodes listed`);
      await new Promise((resolve) => setTimeout(resolve, 250));
      try {
        const out = await execFileAsync(exe, [
          "shepherd",
          "info",
          "-t",
          "node",
          "--json",
          ...cluster,
        ]);
        listed = (JSON.parse(out.stdout) as unknown[]).length;
      } catch {
        // Not serving yet.
      }
    }
    const formSeconds = (performance.now() - started) / 1000;
    await Promise.all(launches);
    // The last sheep sees the same cluster.
    const last = ["--cluster", `127.0.0.1:${layout.ports.at(-1)}`, "--key-file", layout.keyFile];
    const seen = JSON.parse(run(["shepherd", "info", "-t", "node", "--json", ...last])).length;
    if (seen !== count) throw new Error(`the last sheep lists ${seen} nodes`);
    const pids = layout.dirs.map((d) => sheepPid(d)!);
    const before = pids.map(processUse);
    await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
    const after = pids.map(processUse);
    const rss = after.map((u) => u.rssKiB / 1024).sort((a, b) => a - b);
    const cpu = after.map((u, i) => u.cpuTicks - before[i]!.cpuTicks)
      .reduce((a, b) => a + b, 0) / count / CLOCK_TICKS_PER_SECOND / IDLE_SECONDS * 100;
    return {
      driver: driver.name,
      sheep: count,
      launchSeconds,
      formSeconds,
      rssMiB: { min: rss[0]!, median: median(rss), max: rss.at(-1)! },
      cpuPercent: cpu,
    };
  } finally {
    await stopCluster(layout.dirs);
    await running.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

async function realLines(): Promise<string[]> {
  const counts = values.sheep!.split(",").map(Number);
  const loadBefore = os.loadavg()[0]!;
  const rows: RealRow[] = [];
  for (const driver of drivers()) {
    for (const n of counts) rows.push(await realCluster(driver, n));
  }
  const lines = [
    `### ${counts.join(" and ")} real sheep on one machine, per cluster driver`,
    "",
    `${
      counts.join(" and ")
    } ./sheepdog sheep daemons on 127.0.0.1 (different ports, no HTTP, no NBD, ` +
    "unformatted), started at the same time. Formed: from the " +
    `start until \`shepherd info -t node\` (a ./sheepdog process, polled every 250 ms) lists ` +
    `all of them. Memory: VmRSS of each sheep after forming; CPU: the sheep's average ` +
    `over ${IDLE_SECONDS} s at rest (etcd's own members are not counted). Load average (1 min) before and after: ${
      loadBefore.toFixed(1)
    } and ${os.loadavg()[0]!.toFixed(1)} (the machine is shared).`,
    "",
    "| driver | sheep | start commands returned | all listed by info -t node | RSS per sheep (min / median / max) | CPU per sheep at rest |",
    "|---|---:|---:|---:|---:|---:|",
    ...rows.map((r) =>
      `| ${r.driver} | ${r.sheep} | ${r.launchSeconds.toFixed(1)} s | ${
        r.formSeconds.toFixed(1)
      } s | ` +
      `${r.rssMiB.min.toFixed(0)} / ${r.rssMiB.median.toFixed(0)} / ${
        r.rssMiB.max.toFixed(0)
      } MiB | ` +
      `${r.cpuPercent.toFixed(1)}% |`
    ),
    "",
  ];
  console.log(lines.join("\n"));
  return lines;
}

// ---------------------------------------------------------------------------------------------

if (parts.has("real") && !fs.existsSync(exe)) throw new Error("build first: npm run build");
const body: string[] = [];
if (parts.has("placement")) body.push(...placementLines());
if (parts.has("group")) body.push(...groupLines());
if (parts.has("real")) body.push(...await realLines());
const all = ["placement", "group", "real"].every((p) => parts.has(p));
if (all && !values["no-write"]) {
  writeSection(
    SECTION,
    [
      SECTION,
      "",
      `Machine: ${os.cpus()[0]?.model ?? "?"}, ${os.cpus().length} cores, ${
        (os.totalmem() / 2 ** 30).toFixed(0)
      } GiB; ${new Date().toISOString().slice(0, 10)}. Reproduce: ` +
      "`deno run -A scripts/bench_scale.ts`.",
      "",
      ...body,
    ].join("\n"),
  );
}
