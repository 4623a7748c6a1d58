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

/** Puts `section` (starting with its "## " title line) into BENCHMARKS.md, replacing an older one. */
export function writeSection(section: string): void {
  const file = path.join(root, "BENCHMARKS.md");
  const title = section.slice(0, section.indexOf("\n"));
  const previous = fs.readFileSync(file, "utf8");
  const start = previous.indexOf(`${title}\n`);
  let next: string;
  if (start < 0) next = previous.trimEnd() + "\n\n" + section;
  else {
    const end = previous.indexOf("\n## ", start + 1);
    next = previous.slice(0, start) + section.trimEnd() + "\n" +
      (end < 0 ? "" : previous.slice(end));
  }
  fs.writeFileSync(file, next.trimEnd() + "\n");
}

/** Runs ./sheepdog with `args`; resolves with its stdout (throws on a non-zero exit). */
export function run(args: string[]): string {
  return execFileSync(exe, args, { encoding: "utf8", env: { PATH: "/usr/bin:/bin" } });
}

let nextPort = 21000 + Math.floor(Math.random() * 20000);
function ports(n: number): number[] {
  return Array.from({ length: n }, () => nextPort++);
}

/** How `startCluster` runs the sheep of a cluster. */
export interface ClusterOptions {
  /** Serve NBD on a port of each (`nbdPorts`), shared attach allowed (fio reconnects per job). */
  nbd?: boolean;
  /** More flags for every sheep. */
  extraArgs?: string[];
}

/** Starts `count` sheep under `dir` (each its own zone, one cluster key, seeds, no multicast). */
export function startCluster(
  dir: string,
  count: number,
  options: ClusterOptions = {},
): { ports: number[]; dirs: string[]; keyFile: string; nbdPorts: number[] } {
  const list = ports(count);
  const nbdPorts = options.nbd ? ports(count) : [];
  const dirs = list.map((_, i) => path.join(dir, `sheep${i}`));
  const keyFile = path.join(dir, "cluster.key");
  fs.mkdirSync(dir, { recursive: true });
  run(["shepherd", "keygen", keyFile]);
  for (let i = 0; i < count; i++) {
    run([...sheepArgs(dirs[i]!, list, i, keyFile, nbdPorts[i]), ...options.extraArgs ?? []]);
  }
  // One view of all of them before anyone formats: a format while views still merge may be
  // refused ("formatted already"), as it was under load.
  const info = ["shepherd", "info", "-t", "cluster", "--json", "--cluster"];
  const deadline = Date.now() + 60_000;
  while (
    (JSON.parse(run([...info, `127.0.0.1:${list[0]}`, "--key-file", keyFile])) as {
      nodes: string[];
    }).nodes.length < count
  ) {
    if (Date.now() > deadline) throw new Error(`the ${count} sheep did not form one view`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100); // a synchronous pause
  }
  return { ports: list, dirs, keyFile, nbdPorts };
}

/**
 * The `./sheepdog sheep` command line of sheep `i` of a cluster on `ports` (zone i + 1, the
 * others as seeds); with `nbdPort`, an NBD export there instead of none.
 */
export function sheepArgs(
  dir: string,
  ports: number[],
  i: number,
  keyFile: string,
  nbdPort?: number,
): string[] {
  const seeds = ports.filter((p) => p !== ports[i]).flatMap((p) => ["--seed", `127.0.0.1:${p}`]);
  const nbd = nbdPort === undefined
    ? ["--no-nbd"]
    : ["--nbd-port", String(nbdPort), "--nbd-force-shared"];
  return [
    "sheep",
    dir,
    "--port",
    String(ports[i]),
    "--host",
    "127.0.0.1",
    "--key-file",
    keyFile,
    "--zone",
    String(i + 1),
    "--multicast",
    "off",
    "--no-http",
    ...nbd,
    "--failure-timeout",
    "5000",
    ...seeds,
  ];
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
    try {
      const pid = Number(fs.readFileSync(path.join(d, "sheep.pid"), "utf8"));
      process.kill(pid, "SIGTERM");
      pids.push(pid);
    } catch {
      // Already gone (a killed one), or never started.
    }
  }
  // Gone before their directories are: a stopping sheep may still write into them.
  const deadline = Date.now() + 30_000;
  while (pids.some(alive) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
