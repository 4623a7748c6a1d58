/**
 * What the benchmarks share: running the built ./sheepdog, and starting and stopping a cluster
 * of daemonised sheep on 127.0.0.1 (each stopped by its PID).
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

export const root = new URL("..", import.meta.url).pathname;
export const exe = path.join(root, "sheepdog");

/** Runs ./sheepdog with `args`; resolves with its stdout (throws on a non-zero exit). */
export function run(args: string[]): string {
  return execFileSync(exe, args, { encoding: "utf8", env: { PATH: "/usr/bin:/bin" } });
}

let nextPort = 21000 + Math.floor(Math.random() * 20000);
function ports(n: number): number[] {
  return Array.from({ length: n }, () => nextPort++);
}

/** Where the sheep of a benchmark cluster live: one port and directory each, one key. */
export interface ClusterLayout {
  ports: number[];
  dirs: string[];
  keyFile: string;
  /** NBD ports, one per sheep, when the cluster serves NBD; else empty. */
  nbdPorts: number[];
}

/** How the sheep of a benchmark cluster run. */
export interface ClusterOptions {
  /** Serve NBD on a port of each (`nbdPorts`), shared attach allowed (fio reconnects per job). */
  nbd?: boolean;
  /** In place of the built-in group's seeds, e.g. `--cluster-driver etcd://...`. */
  driverArgs?: string[];
  /** More flags for every sheep. */
  extraArgs?: string[];
}

/** Picks ports and directories for `count` sheep under `dir` and makes their cluster key. */
export function planCluster(
  dir: string,
  count: number,
  options: Pick<ClusterOptions, "nbd"> = {},
): ClusterLayout {
  const list = ports(count);
  const nbdPorts = options.nbd ? ports(count) : [];
  const dirs = list.map((_, i) => path.join(dir, `sheep${i}`));
  const keyFile = path.join(dir, "cluster.key");
  fs.mkdirSync(dir, { recursive: true });
  run(["shepherd", "keygen", keyFile]);
  return { ports: list, dirs, keyFile, nbdPorts };
}

/**
 * The `sheep` command line of sheep `i` (its own zone), joined by `driverArgs`: by default the
 * built-in group, every other sheep a seed and no multicast; e.g. `--cluster-driver etcd://...`.
 * With the layout's NBD ports, an NBD export there instead of none.
 */
export function sheepArgs(
  layout: ClusterLayout,
  i: number,
  options: Omit<ClusterOptions, "nbd"> = {},
): string[] {
  const port = layout.ports[i]!;
  const seeds = layout.ports.filter((p) => p !== port).flatMap((p) => [
    "--seed",
    `127.0.0.1:${p}`,
  ]);
  const nbdPort = layout.nbdPorts[i];
  const nbd = nbdPort === undefined
    ? ["--no-nbd"]
    : ["--nbd-port", String(nbdPort), "--nbd-force-shared"];
  return [
    "sheep",
    layout.dirs[i]!,
    "--port",
    String(port),
    "--host",
    "127.0.0.1",
    "--key-file",
    layout.keyFile,
    "--zone",
    String(i + 1),
    "--no-http",
    ...nbd,
    "--failure-timeout",
    "5000",
    ...(options.driverArgs ?? ["--multicast", "off", ...seeds]),
    ...(options.extraArgs ?? []),
  ];
}

/**
 * Starts `count` sheep under `dir`, one after the other (see {@link sheepArgs}), and waits for
 * one view of all of them: a format while views still merge may be refused ("formatted
 * already"), as it was under load.
 */
export function startCluster(
  dir: string,
  count: number,
  options: ClusterOptions = {},
): ClusterLayout {
  const layout = planCluster(dir, count, options);
  for (let i = 0; i < count; i++) run(sheepArgs(layout, i, options));
  const info = ["shepherd", "info", "-t", "cluster", "--json", "--cluster"];
  const deadline = Date.now() + 60_000;
  const members = () =>
    (JSON.parse(run([...info, `127.0.0.1:${layout.ports[0]}`, "--key-file", layout.keyFile])) as {
      nodes: string[];
    }).nodes.length;
  while (members() < count) {
    if (Date.now() > deadline) throw new Error(`the ${count} sheep did not form one view`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100); // a synchronous pause
  }
  return layout;
}

/** The PID a daemonised sheep wrote in its directory, or undefined. */
export function sheepPid(dir: string): number | undefined {
  try {
    return Number(fs.readFileSync(path.join(dir, "sheep.pid"), "utf8"));
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Stops the sheep of `dirs` by their PIDs and waits (up to 30 s) until they are gone. */
export async function stopCluster(dirs: string[]): Promise<void> {
  const pids: number[] = [];
  for (const d of dirs) {
    const pid = sheepPid(d);
    if (pid === undefined) continue; // never started
    try {
      process.kill(pid, "SIGTERM");
      pids.push(pid);
    } catch {
      // Already gone (a killed one).
    }
  }
  // Gone before their directories are: a stopping sheep may still write into them.
  const deadline = Date.now() + 30_000;
  while (pids.some(alive) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Writes `section` (it starts with its "## " title) into BENCHMARKS.md: in place of the section
 * of that title, or at the end.
 */
export function writeSection(title: string, section: string): void {
  const file = path.join(root, "BENCHMARKS.md");
  const previous = fs.existsSync(file)
    ? fs.readFileSync(file, "utf8")
    : "# Benchmarks\n\nWritten by `npm run bench`.\n\n";
  const escaped = title.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`${escaped}[\\s\\S]*?(?=\\n## |$)`);
  const next = previous.includes(title)
    ? previous.replace(pattern, () => section)
    : previous.trimEnd() + "\n\n" + section;
  fs.writeFileSync(file, next.trimEnd() + "\n");
}
