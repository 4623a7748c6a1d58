/**
 * A sheep on each host of a {@link Hosts} network, started as an operator would on N machines:
 * `./sheepdog sheep DIR --key-file K` and default flags otherwise (port 7000, multicast
 * discovery, the default-route address), plus the commands an operator runs on a host and the
 * waits a test needs (polls of the CLI's JSON with a deadline, never fixed sleeps).
 *
 * Only processes started here are signalled, by the pid each sheep writes to DIR/sheep.pid.
 * The directories live in the shared file system (namespaces share it), so logs and objects
 * are read directly.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { writeNewKeyFile } from "../../net/auth/cluster_key.ts";
import { EXECUTABLE, requireExecutable } from "../e2e/cli.ts";
import { type ClusterInfo, eventually, procState, type RecoveryRow, running } from "../e2e/herd.ts";
import { Hosts } from "./hosts.ts";
import { removeStale, type Run } from "./ip.ts";

/** The object port: the default, since every host has a network stack of its own. */
export const PORT = 7000;

/** One row of `shepherd info -t node --json`. */
export interface NodeRow {
  id: string;
  host: string;
  port: number;
}

/** Whose key a command uses: the cluster's, another file, or none at all. */
export type KeyChoice = "cluster" | "none" | { file: string };

export class HostSheep {
  readonly hosts: Hosts;
  /** The temporary directory holding the key and every host's DIR. */
  readonly root: string;
  /** The cluster key every sheep is started with unless told otherwise. */
  readonly keyFile: string;
  /** Host number -> pid of the sheep we started there, while we believe it runs. */
  readonly #pids = new Map<number, number>();

  private constructor(hosts: Hosts, root: string) {
    this.hosts = hosts;
    this.root = root;
    this.keyFile = path.join(root, "cluster.key");
    writeNewKeyFile(this.keyFile);
  }

  /**
   * Makes `count` hosts (after removing what a crashed earlier run left), runs `test`, and
   * always removes everything; on failure prints the tail of every sheep's log first.
   */
  static async with(count: number, test: (herd: HostSheep) => Promise<void>): Promise<void> {
    requireExecutable();
    const stale = await removeStale();
    if (stale.length > 0) console.log(`removed what an earlier run left: ${stale.join(", ")}`);
    const hosts = await Hosts.create(count);
    let herd: HostSheep | undefined;
    try {
      // Named after the hosts' tag, so a crashed run's directory is found as stale too.
      herd = new HostSheep(hosts, await fsp.mkdtemp(path.join(os.tmpdir(), `${hosts.tag}-`)));
      await test(herd);
    } catch (error) {
      if (herd) console.error(herd.logTails());
      throw error;
    } finally {
      await herd?.stopAll();
      await hosts.destroy();
      if (herd) await fsp.rm(herd.root, { recursive: true, force: true });
    }
  }

  /** The sheep id of host n ("10.77.0.n:7000"). */
  id(n: number): string {
    return `${this.hosts.address(n)}:${PORT}`;
  }

  dir(n: number): string {
    return path.join(this.root, `h${n}`);
  }

  /** Starts the sheep of host n with `--key-file` and `flags`; records its pid. */
  async startSheep(n: number, flags: string[] = [], keyFile = this.keyFile): Promise<void> {
    assert.equal(this.#pids.get(n), undefined, `the sheep of host ${n} runs already`);
    const result = await this.sheepdog(n, ["sheep", this.dir(n), "--key-file", keyFile, ...flags]);
    // Record the pid even when the start reported a failure, so that cleanup stops it.
    const pidFile = path.join(this.dir(n), "sheep.pid");
    const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, "utf8").trim()) : NaN;
    if (Number.isInteger(pid) && pid > 0 && running(pid)) this.#pids.set(n, pid);
    assert.equal(result.code, 0, `starting the sheep of host ${n} failed: ${result.stderr}`);
    assert.ok(this.#pids.has(n), `the sheep of host ${n} started but ${pidFile} names no process`);
  }

  /** Stops the sheep of host n (SIGTERM, SIGKILL after 10 s) and waits until it is gone. */
  async stopSheep(n: number): Promise<void> {
    const pid = this.#pids.get(n);
    assert.ok(pid !== undefined, `the sheep of host ${n} is not running`);
    signal(pid, "SIGTERM");
    const deadline = Date.now() + 10_000;
    while (running(pid) && Date.now() < deadline) await delay(50);
    if (running(pid)) signal(pid, "SIGKILL");
    await this.#gone(n, pid);
  }

  /** `kill -9` the sheep of host n, and waits until its process is gone. */
  async kill9(n: number): Promise<void> {
    const pid = this.#pids.get(n);
    assert.ok(pid !== undefined, `the sheep of host ${n} is not running`);
    signal(pid, "SIGKILL");
    await this.#gone(n, pid);
  }

  /** Stops every sheep we started, by pid (cleanup: never throws). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.#pids.keys()].map((n) => this.stopSheep(n).catch(() => {})));
  }

  /**
   * Runs `./sheepdog ARGS` on host n. `key` decides SHEEPDOG_KEY_FILE: the cluster's key by
   * default, another file, or none (the command then finds no key but a note of the local
   * sheep, as a user's would).
   */
  sheepdog(n: number, args: string[], key: KeyChoice = "cluster"): Promise<Run> {
    const file = key === "cluster" ? this.keyFile : key === "none" ? undefined : key.file;
    return this.hosts.exec(n, EXECUTABLE, args, {
      env: file === undefined ? {} : { SHEEPDOG_KEY_FILE: file },
    });
  }

  /** `./sheepdog ARGS` on host n, which must succeed; returns its output. */
  async ok(n: number, args: string[], key: KeyChoice = "cluster"): Promise<string> {
    const result = await this.sheepdog(n, args, key);
    assert.equal(result.code, 0, `host ${n}: sheepdog ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  }

  /** `shepherd info -t node --json` on host n, or undefined when it fails. */
  async nodes(n: number, key: KeyChoice = "cluster"): Promise<NodeRow[] | undefined> {
    const result = await this.sheepdog(n, ["shepherd", "info", "-t", "node", "--json"], key);
    return result.code === 0 ? JSON.parse(result.stdout) as NodeRow[] : undefined;
  }

  /** `shepherd info -t cluster --json` on host n, or undefined when it fails. */
  async cluster(n: number): Promise<ClusterInfo | undefined> {
    const result = await this.sheepdog(n, ["shepherd", "info", "-t", "cluster", "--json"]);
    return result.code === 0 ? JSON.parse(result.stdout) as ClusterInfo : undefined;
  }

  /**
   * Waits until every host in `members` sees a view of exactly those hosts, in one epoch, with
   * status `status`; returns the epoch.
   */
  async waitView(members: number[], status = "running", timeoutMs = 60_000): Promise<number> {
    const expected = members.map((n) => this.id(n)).sort();
    let last = "";
    return await eventually(
      `hosts [${members.join(", ")}] to see the view [${expected.join(", ")}] (${status})`,
      async () => {
        const infos = await Promise.all(members.map((n) => this.cluster(n)));
        last = JSON.stringify(infos.map((c) => c && [c.status, c.epoch, c.nodes]));
        const agree = infos.every((c) =>
          c !== undefined && c.status === status &&
          JSON.stringify([...c.nodes].sort()) === JSON.stringify(expected)
        );
        return agree && new Set(infos.map((c) => c!.epoch)).size === 1
          ? infos[0]!.epoch
          : undefined;
      },
      timeoutMs,
      () => `Last seen: ${last}`,
    );
  }

  /** Waits until every host in `which` reports cluster status `status`. */
  async waitStatus(which: number[], status: string, timeoutMs = 60_000): Promise<void> {
    let last = "";
    await eventually(
      `hosts [${which.join(", ")}] to report status ${status}`,
      async () => {
        const infos = await Promise.all(which.map((n) => this.cluster(n)));
        last = JSON.stringify(infos.map((c) => c && [c.status, c.epoch, c.nodes]));
        return infos.every((c) => c?.status === status);
      },
      timeoutMs,
      () => `Last seen: ${last}`,
    );
  }

  /**
   * Waits until `members` agree on a running view of themselves and every one reports
   * recovery done for its epoch; returns the epoch.
   */
  async waitRecovered(members: number[], timeoutMs = 60_000): Promise<number> {
    const epoch = await this.waitView(members, "running", timeoutMs);
    const ids = members.map((n) => this.id(n)).sort();
    let last = "";
    await eventually(
      `recovery done on [${ids.join(", ")}] for epoch ${epoch}`,
      async () => {
        const answers = await Promise.all(members.map((n) => this.#recovery(n)));
        last = JSON.stringify(answers);
        for (const rows of answers) {
          if (rows === undefined) return false;
          const failed = rows.find((r) => r.phase === "failed");
          if (failed) throw new Error(`recovery failed on ${failed.id}: ${failed.error ?? "?"}`);
          if (JSON.stringify(rows.map((r) => r.id).sort()) !== JSON.stringify(ids)) return false;
          if (!rows.every((r) => r.phase === "done" && r.epoch === epoch)) return false;
        }
        return true;
      },
      timeoutMs,
      () => `Last seen: ${last}`,
    );
    return epoch;
  }

  /** `shepherd info -t recovery --json` on host n, or undefined when it fails. */
  async #recovery(n: number): Promise<RecoveryRow[] | undefined> {
    const result = await this.sheepdog(n, ["shepherd", "info", "-t", "recovery", "--json"]);
    return result.code === 0
      ? (JSON.parse(result.stdout) as { nodes: RecoveryRow[] }).nodes
      : undefined;
  }

  /** The messages of host n's log (DIR/sheep.log, JSON lines), oldest first. */
  logMessages(n: number): string[] {
    let text: string;
    try {
      text = fs.readFileSync(path.join(this.dir(n), "sheep.log"), "utf8");
    } catch {
      return [];
    }
    return text.split("\n").filter((line) => line !== "").map((line) => {
      try {
        return (JSON.parse(line) as { msg?: string }).msg ?? line;
      } catch {
        return line; // a plain line (the daemon's stderr)
      }
    });
  }

  /** Waits until host n's log has a message matching `pattern`; returns it. */
  waitLog(n: number, pattern: RegExp, timeoutMs = 30_000): Promise<string> {
    return eventually(
      `host ${n}'s log to say ${pattern}`,
      () => Promise.resolve(this.logMessages(n).find((m) => pattern.test(m))),
      timeoutMs,
      () => `Its last lines:\n${this.logMessages(n).slice(-10).join("\n")}`,
    );
  }

  /** The object files (16 hex digits) under host n's DIR/obj. */
  objects(n: number): string[] {
    const dir = path.join(this.dir(n), "obj");
    if (!fs.existsSync(dir)) return [];
    return fs.readdirSync(dir).filter((name) => /^[0-9a-f]{16}$/.test(name)).sort();
  }

  /** The bytes of object `oid` as host n holds it. */
  object(n: number, oid: string): Uint8Array {
    return fs.readFileSync(path.join(this.dir(n), "obj", oid));
  }

  /** The last `lines` log messages of every host, for a failure report. */
  logTails(lines = 25): string {
    return this.hosts.numbers.map((n) =>
      `--- host ${n} (${this.id(n)}) ${this.dir(n)}/sheep.log:\n` +
      this.logMessages(n).slice(-lines).join("\n")
    ).join("\n");
  }

  /** Waits until `pid` (the sheep of host n) is gone for good: reaped, its DIR lock free. */
  async #gone(n: number, pid: number): Promise<void> {
    this.#pids.delete(n);
    await eventually(
      `the sheep of host ${n} (pid ${pid}) to be gone`,
      () => Promise.resolve(procState(pid) === undefined),
      20_000,
      () => `It is in state ${procState(pid)}`,
    );
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch { /* gone meanwhile */ }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
