/**
 * The `ip` tool (iproute2) and the network namespaces a test run makes with it: whether this
 * machine can make them at all, running commands with a clean environment, and removing the
 * namespaces of an earlier run that crashed before it could clean up.
 *
 * Every namespace of a run is named `sdnt<pid>-<random>-...` (`newRunTag`): the pid says whose
 * it is, so a later run removes only those whose test process is gone, and two runs at once
 * (two worktrees, or `deno test --parallel`) never touch each other's.
 *
 * @module
 */

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { keyNotePath } from "../../net/auth/cluster_key.ts";
import { runTool, type ToolRun } from "../e2e/herd.ts";

/** What every namespace (and temporary directory) of these tests is named after. */
export const PREFIX = "sdnt";

/** A tool's exit status and output. */
/** A finished command: its status and output. */
export type Run = ToolRun;

/** PATH for the commands we run: `ip` lives in /usr/sbin or /sbin on Debian. */
const PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Runs `command ARGS` with PATH plus `env` alone (so nothing of the test's own environment,
 * such as SHEEPDOG_KEY_FILE, leaks into a command that must run without it).
 */
export function run(
  command: string,
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Run> {
  return runTool(command, args, {
    env: { PATH, ...options.env },
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
  });
}

/** The path of `ip`, if installed (looked up once: every step of the harness runs it). */
const IP = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].find((p) => fs.existsSync(p));

/** Runs `ip ARGS`, which must succeed; returns its output. */
export async function ip(args: string[]): Promise<string> {
  if (IP === undefined) throw new Error("ip (iproute2) is not installed");
  const result = await run(IP, args, { timeoutMs: 20_000 });
  if (result.code !== 0) {
    throw new Error(`ip ${args.join(" ")} failed (${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout;
}

/** Runs `command ARGS` inside namespace `ns` (`ip netns exec`). */
export function execIn(
  ns: string,
  command: string,
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Run> {
  if (IP === undefined) throw new Error("ip (iproute2) is not installed");
  return run(IP, ["netns", "exec", ns, command, ...args], options);
}

/** A fresh tag for one set of namespaces: the prefix, our pid, and a random part. */
export function newRunTag(): string {
  return `${PREFIX}${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
}

let availability: Promise<string | undefined> | undefined;

/**
 * Why network namespaces cannot be made here (one line), or undefined when they can: tried
 * once per test module, by making and deleting a namespace, since being root is not enough
 * (a container may forbid it).
 */
export function namespacesUnavailable(): Promise<string | undefined> {
  availability ??= (async () => {
    if (process.getuid?.() !== 0) return "not root";
    if (IP === undefined) return "ip (iproute2) is not installed";
    const probe = `${newRunTag()}-probe`;
    try {
      await ip(["netns", "add", probe]);
    } catch (error) {
      return `ip netns add fails: ${(error as Error).message.split("\n")[0]}`;
    }
    await ip(["netns", "del", probe]).catch(() => undefined);
    return undefined;
  })();
  return availability;
}

/** The namespaces that exist, by name. */
async function namespaces(): Promise<string[]> {
  // Lines look like "name (id: 3)" or just "name".
  return (await ip(["netns", "list"])).split("\n").map((line) => line.split(" ")[0]!)
    .filter((name) => name !== "");
}

/** The test process that made `name` (from its tag), if the name is one of ours. */
function ownerOf(name: string): number | undefined {
  const match = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
  return match ? Number(match[1]) : undefined;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Deletes namespace `ns`, first killing (by pid) whatever still runs in it: only processes a
 * run of this harness started can be in one of its namespaces, and a namespace with a live
 * process in it outlives `ip netns del` (it only loses its name).
 */
export async function deleteNamespace(ns: string): Promise<void> {
  const pids = (await ip(["netns", "pids", ns]).catch(() => "")).split(/\s+/)
    .filter((p) => /^\d+$/.test(p)).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch { /* gone meanwhile */ }
  }
  await ip(["netns", "del", ns]).catch(() => undefined);
}

/**
 * Removes what a crashed earlier run left: namespaces (and their processes), temporary
 * directories of our prefix whose test process no longer exists, and the key notes of its
 * sheep. Returns the namespaces and directories removed.
 */
export async function removeStale(): Promise<string[]> {
  const stale = (await namespaces()).filter((name) => {
    const owner = ownerOf(name);
    return owner !== undefined && owner !== process.pid && !processExists(owner);
  });
  for (const ns of stale) await deleteNamespace(ns);
  const tmp = os.tmpdir();
  const dirs: string[] = [];
  for (const entry of await fsp.readdir(tmp)) {
    const owner = ownerOf(entry);
    if (owner === undefined || owner === process.pid || processExists(owner)) continue;
    await fsp.rm(path.join(tmp, entry), { recursive: true, force: true });
    dirs.push(path.join(tmp, entry));
  }
  await removeKeyNotesInto(dirs);
  return [...stale, ...dirs];
}

/**
 * Removes the notes (net/auth/cluster_key.ts `keyNotePath`) that sheep killed with their run
 * left, naming key files in `dirs`: a sheep removes its note only when it stops cleanly.
 */
async function removeKeyNotesInto(dirs: string[]): Promise<void> {
  if (dirs.length === 0) return;
  const notes = path.dirname(keyNotePath(0));
  const names = await fsp.readdir(notes).catch(() => [] as string[]);
  for (const name of names.filter((n) => n.startsWith("key-file."))) {
    const note = path.join(notes, name);
    const keyFile = await fsp.readFile(note, "utf8").then((t) => t.trim(), () => "");
    if (dirs.some((dir) => keyFile.startsWith(`${dir}/`))) await fsp.rm(note, { force: true });
  }
}
