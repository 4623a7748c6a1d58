/**
 * A herd of daemonised `./sheepdog sheep` processes on loopback ports, for process-level tests
 * that kill (-9) and restart sheep: start, kill, restart on the same DIR and ports, wait for the
 * cluster to agree and for recovery to finish, compare the replicas on disk, clean up.
 *
 * Only processes this module started are signalled, by the pid each sheep wrote when it started.
 *
 * @module
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { freePort, tempDir } from "../harness.ts";
import { requireExecutable, sheepdog } from "./cli.ts";
import { writeNewKeyFile } from "../../net/auth/cluster_key.ts";

export interface HerdOptions {
  /** Number of sheep (default 3). */
  nodes?: number;
  /** `mkfs --copies=N` (default 3). */
  copies?: number;
  /** `--failure-timeout` in ms (default 1500). */
  failureTimeoutMs?: number;
  /** Temp dir prefix. */
  prefix?: string;
  /** More flags for every sheep. */
  sheepArgs?: string[];
  /** Runs before any sheep starts (e.g. to put a sheep's DIR on a file system of its own). */
  prepare?: (herd: Herd) => Promise<void>;
}

/** A node's row of `info -t recovery --json` (net/admin/views.ts). */
export interface RecoveryRow {
  id: string;
  phase: string;
  epoch: number;
  total: number;
  done: number;
  error?: string;
}

export interface ClusterInfo {
  status: string;
  epoch: number;
  copies: number;
  nodes: string[];
}

/** Polls `check` every 100 ms until it holds; fails naming `what` (and the last state) after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 30_000,
  describe: () => Promise<string> | string = () => "",
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}. ${await describe()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The state letter of a process in /proc (R, S, D, Z...), or undefined once it is gone. */
export function procState(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return undefined;
  }
}

/** True while `pid` runs (a zombie does not run, but still holds its pid). */
export function running(pid: number): boolean {
  const state = procState(pid);
  return state !== undefined && state !== "Z";
}

/** A free loopback port below the ephemeral range (see `freePort`). */
export const quietPort = freePort;

export interface ToolRun {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs an external tool with a time limit; resolves with its status and output. */
export function runTool(
  cmd: string,
  args: string[],
  options: { timeoutMs?: number; cwd?: string; env?: Record<string, string> } = {},
): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        ...(options.env ? { env: options.env } : {}),
        timeout: options.timeoutMs ?? 60_000,
        killSignal: "SIGKILL",
        maxBuffer: 1 << 26,
        encoding: "utf8",
        cwd: options.cwd,
      },
      (error, stdout, stderr) => {
        if (error !== null && typeof error.code !== "number" && !error.killed) {
          reject(new Error(`${cmd} ${args.join(" ")}: ${error.message}\n${stderr}`));
          return;
        }
        resolve({
          code: error === null ? 0 : typeof error.code === "number" ? error.code : -1,
          stdout,
          stderr,
          timedOut: error !== null && error.killed === true,
        });
      },
    );
  });
}

export class Herd {
  readonly root: string;
  readonly dirs: string[];
  readonly ports: number[];
  readonly nbdPorts: number[];
  readonly copies: number;
  readonly failureTimeoutMs: number;
  readonly sheepArgs: string[];
  /** The pid of each sheep we started, while we believe it runs. */
  readonly pids: (number | undefined)[];
  /** The cluster key every sheep of the herd holds. */
  readonly keyFile: string;

  private constructor(root: string, ports: number[], nbdPorts: number[], options: HerdOptions) {
    this.root = root;
    this.ports = ports;
    this.nbdPorts = nbdPorts;
    this.dirs = ports.map((_, i) => path.join(root, `sheep${i}`));
    this.copies = options.copies ?? 3;
    this.failureTimeoutMs = options.failureTimeoutMs ?? 1500;
    this.sheepArgs = options.sheepArgs ?? [];
    this.pids = ports.map(() => undefined);
    this.keyFile = path.join(root, "cluster.key");
    writeNewKeyFile(this.keyFile);
  }

  /** Starts the sheep (seeds pointing at each other) and formats the cluster. */
  static async start(options: HerdOptions = {}): Promise<Herd> {
    requireExecutable();
    const n = options.nodes ?? 3;
    const root = await tempDir(options.prefix ?? "sd-e2e-herd-");
    const ports: number[] = [];
    const nbdPorts: number[] = [];
    const used = new Set<number>();
    while (ports.length + nbdPorts.length < 2 * n) {
      const port = await quietPort();
      if (used.has(port)) continue;
      used.add(port);
      (ports.length < n ? ports : nbdPorts).push(port);
    }
    const herd = new Herd(root, ports, nbdPorts, options);
    try {
      await options.prepare?.(herd);
      await Promise.all(ports.map((_, i) => herd.startSheep(i)));
      // Format once every sheep sees every other: mkfs while the group forms is another test.
      await herd.waitView(n, 30_000, "waiting-for-format");
      await herd.shepherd(["mkfs", `--copies=${herd.copies}`]);
      await herd.waitView(n);
    } catch (error) {
      console.error(herd.logTails());
      await herd.stop();
      throw error;
    }
    return herd;
  }

  /** Runs `test` on a new herd; on failure prints the tail of every sheep's log; always cleans up. */
  static async with(options: HerdOptions, test: (herd: Herd) => Promise<void>): Promise<void> {
    const herd = await Herd.start(options);
    try {
      await test(herd);
    } catch (error) {
      console.error(herd.logTails());
      herd.keep = Deno.env.get("SHEEPDOG_TEST_KEEP") === "1";
      throw error;
    } finally {
      await herd.stop();
    }
  }

  get size(): number {
    return this.ports.length;
  }

  id(i: number): string {
    return `127.0.0.1:${this.ports[i]}`;
  }

  nbdUri(i: number, name: string): string {
    return `nbd://127.0.0.1:${this.nbdPorts[i]}/${encodeURIComponent(name)}`;
  }

  log(i: number): string {
    return fs.readFileSync(path.join(this.dirs[i]!, "sheep.log"), "utf8");
  }

  /** Starts (or restarts, on the same DIR and ports) sheep `i` and records its pid. */
  async startSheep(i: number): Promise<void> {
    assert.equal(this.pids[i], undefined, `sheep ${i} is running already`);
    const seeds = this.ports.filter((_, j) => j !== i).flatMap((p) => ["--seed", `127.0.0.1:${p}`]);
    const args = [
      ...["sheep", this.dirs[i]!, "--port", String(this.ports[i]), "--host", "127.0.0.1"],
      ...["--key-file", this.keyFile],
      ...["--zone", String(i + 1), "--multicast", "off", "--no-http"],
      ...[
        "--nbd-port",
        String(this.nbdPorts[i]),
        "--failure-timeout",
        String(this.failureTimeoutMs),
      ],
      ...seeds,
      ...this.sheepArgs,
    ];
    const result = await sheepdog(args);
    // Record the pid even if the start reported a failure, so cleanup can stop it.
    const pidFile = path.join(this.dirs[i]!, "sheep.pid");
    const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, "utf8").trim()) : NaN;
    if (Number.isInteger(pid) && pid > 0 && running(pid)) this.pids[i] = pid;
    assert.equal(result.code, 0, `starting sheep ${i} failed: ${result.stderr}`);
    assert.ok(
      this.pids[i] !== undefined,
      `sheep ${i} started but ${pidFile} names no live process`,
    );
  }

  /**
   * `kill -9` sheep `i`, then waits until its process is gone for good (reaped: a zombie still
   * holds the pid, and the DIR's lock counts the pid as its owner).
   */
  async kill9(i: number): Promise<void> {
    const pid = this.pids[i];
    assert.ok(pid !== undefined, `sheep ${i} is not running`);
    process.kill(pid, "SIGKILL");
    this.pids[i] = undefined;
    await eventually(
      `sheep ${i} (pid ${pid}) to be gone after kill -9`,
      () => Promise.resolve(procState(pid) === undefined),
      20_000,
      () => `It is in state ${procState(pid)} (a zombie nobody reaped?)`,
    );
  }

  /** The last `lines` lines of every sheep's log, for a failure report. */
  logTails(lines = 20): string {
    return this.dirs.map((dir, i) => {
      let text: string;
      try {
        text = fs.readFileSync(path.join(dir, "sheep.log"), "utf8");
      } catch (error) {
        text = `(${(error as Error).message})`;
      }
      return `--- sheep ${i} (${this.id(i)}) ${dir}/sheep.log:\n` +
        text.trimEnd().split("\n").slice(-lines).join("\n");
    }).join("\n");
  }

  /** Stops every sheep we started (SIGTERM, then SIGKILL after 10 s) and removes the dirs. */
  async stop(): Promise<void> {
    const live = this.pids.flatMap((pid) => (pid !== undefined && running(pid) ? [pid] : []));
    for (const pid of live) {
      try {
        process.kill(pid, "SIGTERM");
      } catch { /* gone meanwhile */ }
    }
    const deadline = Date.now() + 10_000;
    while (live.some(running) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    for (const pid of live.filter(running)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch { /* gone meanwhile */ }
    }
    this.pids.fill(undefined);
    if (this.keep) {
      console.error(`kept the failed test's sheep directories in ${this.root}`);
      return;
    }
    await fsp.rm(this.root, { recursive: true, force: true });
  }

  /** Set when a test failed and SHEEPDOG_TEST_KEEP=1: `stop` leaves the directories for a look. */
  keep = false;

  /** Runs `shepherd ARGS --cluster <sheep via>`, which must succeed; returns stdout. */
  async shepherd(args: string[], via = this.firstAlive()): Promise<string> {
    const result = await sheepdog(["shepherd", ...args, "--cluster", this.id(via)]);
    assert.equal(result.code, 0, `shepherd ${args.join(" ")} via sheep ${via}: ${result.stderr}`);
    return result.stdout;
  }

  /** Runs `img ARGS --cluster <sheep via>`, which must succeed; returns stdout. */
  async img(args: string[], via = this.firstAlive()): Promise<string> {
    const result = await sheepdog(["img", ...args, "--cluster", this.id(via)]);
    assert.equal(result.code, 0, `img ${args.join(" ")} via sheep ${via}: ${result.stderr}`);
    return result.stdout;
  }

  firstAlive(): number {
    const i = this.pids.findIndex((pid) => pid !== undefined);
    assert.ok(i >= 0, "no sheep is running");
    return i;
  }

  alive(): number[] {
    return this.pids.flatMap((pid, i) => (pid !== undefined ? [i] : []));
  }

  async cluster(via: number): Promise<ClusterInfo | undefined> {
    const result = await sheepdog([
      "shepherd",
      "info",
      "-t",
      "cluster",
      "--json",
      "--cluster",
      this.id(via),
    ]);
    if (result.code !== 0) return undefined;
    return JSON.parse(result.stdout) as ClusterInfo;
  }

  async recovery(via: number): Promise<RecoveryRow[] | undefined> {
    const result = await sheepdog([
      "shepherd",
      "info",
      "-t",
      "recovery",
      "--json",
      "--cluster",
      this.id(via),
    ]);
    if (result.code !== 0) return undefined;
    return (JSON.parse(result.stdout) as { nodes: RecoveryRow[] }).nodes;
  }

  /**
   * Waits until every running sheep sees the same view of exactly the running sheep (`count` of
   * them), with cluster status `status`; returns its epoch.
   */
  async waitView(
    count = this.alive().length,
    timeoutMs = 30_000,
    status = "running",
  ): Promise<number> {
    const expected = this.alive().map((i) => this.id(i)).sort();
    assert.equal(expected.length, count, "waitView: the herd runs a different number of sheep");
    let last = "";
    return await eventually(
      `every sheep to see the view [${expected.join(", ")}]`,
      async () => {
        const infos = await Promise.all(this.alive().map((i) => this.cluster(i)));
        last = JSON.stringify(
          infos.map((c) => c && { status: c.status, epoch: c.epoch, nodes: c.nodes }),
        );
        const epochs = new Set(infos.map((c) => c?.epoch));
        const agree = infos.every((c) =>
          c !== undefined && c.status === status &&
          JSON.stringify([...c.nodes].sort()) === JSON.stringify(expected)
        );
        return agree && epochs.size === 1 ? infos[0]!.epoch : undefined;
      },
      timeoutMs,
      () => `Last seen: ${last}`,
    );
  }

  /**
   * Waits until the view holds every running sheep and `info -t recovery` (asked of every
   * running sheep) reports each of them done for the current epoch. A "failed" row fails at once.
   */
  async waitRecovered(timeoutMs = 60_000): Promise<number> {
    const epoch = await this.waitView(this.alive().length, timeoutMs);
    const ids = this.alive().map((i) => this.id(i)).sort();
    let last = "";
    await eventually(
      `recovery done on every node for epoch ${epoch}`,
      async () => {
        for (const via of this.alive()) {
          const rows = await this.recovery(via);
          if (rows === undefined) return false;
          last = JSON.stringify(
            rows.map((r) => [r.id, r.phase, r.epoch, `${r.done}/${r.total}`]),
          );
          const failed = rows.find((r) => r.phase === "failed");
          if (failed) throw new Error(`recovery failed on ${failed.id}: ${failed.error ?? "?"}`);
          if (JSON.stringify(rows.map((r) => r.id).sort()) !== JSON.stringify(ids)) return false;
          if (!rows.every((r) => r.phase === "done" && r.epoch === epoch)) return false;
        }
        const now = await this.cluster(this.firstAlive());
        if (now?.epoch !== epoch) {
          throw new Error(`the view changed while recovering: ${epoch} -> ${now?.epoch}`);
        }
        return true;
      },
      timeoutMs,
      () => `Last seen: ${last}`,
    );
    return epoch;
  }

  /** The object files (16 hex digits) under DIR/obj of sheep `i`. */
  objects(i: number): string[] {
    const dir = path.join(this.dirs[i]!, "obj");
    if (!fs.existsSync(dir)) return [];
    return fs.readdirSync(dir).filter((name) => /^[0-9a-f]{16}$/.test(name)).sort();
  }

  objectPath(i: number, oid: string): string {
    return path.join(this.dirs[i]!, "obj", oid);
  }

  /**
   * Compares every object's replicas on disk: the files of one oid must be byte-identical on
   * every node that holds it, and (when every sheep is in the view and there are no more sheep
   * than copies) every node must hold it. Returns one line per problem.
   */
  replicaProblems(): string[] {
    const problems: string[] = [];
    const holders = new Map<string, number[]>();
    for (let i = 0; i < this.size; i++) {
      for (const oid of this.objects(i)) holders.set(oid, [...(holders.get(oid) ?? []), i]);
    }
    const everywhere = this.size <= this.copies;
    let differing = 0;
    for (const [oid, nodes] of [...holders].sort()) {
      if (everywhere && nodes.length !== this.size) {
        problems.push(`${oid}: held by sheep [${nodes.join(", ")}] only, want ${this.size} copies`);
      }
      const [first, ...rest] = nodes;
      const reference = fs.readFileSync(this.objectPath(first!, oid));
      for (const other of rest) {
        const bytes = fs.readFileSync(this.objectPath(other, oid));
        if (!reference.equals(bytes) && differing++ < 10) {
          problems.push(
            `${oid}: sheep ${first} and sheep ${other} differ (${describeDiff(reference, bytes)})`,
          );
        }
      }
    }
    if (differing > 10) problems.push(`... ${differing} differing replicas in all`);
    return problems;
  }
}

function describeDiff(a: Uint8Array, b: Uint8Array): string {
  if (a.length !== b.length) return `sizes ${a.length} and ${b.length}`;
  let first = -1;
  let count = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  return `${count} bytes differ, first at ${first}`;
}

/** A small seeded PRNG (mulberry32), so a failing random schedule can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of a randomised test: $SHEEPDOG_TEST_SEED, or a fresh one (printed by the caller). */
export function testSeed(): number {
  const given = Deno.env.get("SHEEPDOG_TEST_SEED");
  return given !== undefined ? Number(given) : Math.floor(Math.random() * 2 ** 31);
}
