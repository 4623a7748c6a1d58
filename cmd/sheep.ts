/**
 * `sheepdog sheep DIR`: the storage daemon. By default it daemonises: the parent starts a
 * detached child with `--foreground`, waits until the child says it is serving, then returns
 * (the pid is in DIR/sheep.pid, the log in DIR/sheep.log). `--foreground` stays attached.
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { OBJECT_PORT_DEFAULT } from "../core/limits.ts";
import { Sheep } from "../net/sheep/sheep.ts";
import type { Logger } from "../net/sheep/logger.ts";
import {
  isSingleExecutable,
  parseFlags,
  parseHostPort,
  print,
  runCommand,
  UsageError,
} from "./cli.ts";

export const SHEEP_USAGE = `Usage: sheepdog sheep DIR [options]

Runs a storage node that keeps its objects, config and log in DIR.

Options:
  --port N          object protocol port (default ${OBJECT_PORT_DEFAULT})
  --host ADDR       address to listen on and advertise (default 127.0.0.1)
  --zone N          failure zone (default: derived from the address)
  --vnodes N        virtual nodes on the ring (default 128)
  --seed HOST:PORT  another sheep to find the cluster through (repeatable; for networks
                    without multicast)
  --multicast G:P   multicast group and port for discovery (default 239.10.10.10:7400);
                    'off' to discover through --seed addresses only
  --failure-timeout MS  declare a silent node gone after MS ms (default 5000)
  --log-level L     debug, info, warn or error (default info)
  --foreground      stay attached and log to stderr instead of DIR/sheep.log
  -h, --help        show this help`;

const FLAGS = {
  port: { type: "string", default: String(OBJECT_PORT_DEFAULT) },
  host: { type: "string", default: "127.0.0.1" },
  zone: { type: "string" },
  vnodes: { type: "string" },
  seed: { type: "string", multiple: true },
  multicast: { type: "string", default: "239.10.10.10:7400" },
  "failure-timeout": { type: "string", default: "5000" },
  "log-level": { type: "string", default: "info" },
  foreground: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

const LEVELS = ["debug", "info", "warn", "error"] as const;

function integerFlag(
  value: string | undefined,
  name: string,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`Invalid --${name} '${value}': use ${min}..${max}`);
  }
  return n;
}

/** A plain levelled line logger to a stream (the HTTP/logging work may replace it). */
function streamLogger(stream: NodeJS.WritableStream, level: string): Logger {
  const threshold = LEVELS.indexOf(level as typeof LEVELS[number]);
  const line = (name: typeof LEVELS[number]) => (message: string) => {
    if (LEVELS.indexOf(name) >= threshold) {
      stream.write(`${new Date().toISOString()} ${name.toUpperCase()} ${message}\n`);
    }
  };
  return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
}

/** The command that re-runs this program (single executable, node script, or deno). */
function selfCommand(args: string[]): { command: string; args: string[] } {
  const script = process.argv[1]!;
  if (process.versions.deno) {
    return { command: process.execPath, args: ["run", "-A", script, ...args] };
  }
  return { command: process.execPath, args: isSingleExecutable() ? args : [script, ...args] };
}

async function daemonise(dir: string, args: string[]): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const logFile = path.join(dir, "sheep.log");
  const log = fs.openSync(logFile, "a");
  const self = selfCommand(["sheep", ...args, "--foreground"]);
  const child = spawn(self.command, self.args, {
    detached: true,
    stdio: ["ignore", log, log, "ipc"],
    env: { ...process.env, SHEEPDOG_DAEMON: "1" },
  });
  fs.closeSync(log);
  await new Promise<void>((resolve, reject) => {
    child.once("message", (message) => {
      if (message === "ready") resolve();
    });
    child.once("exit", async (code) => {
      const text = await fsp.readFile(logFile, "utf8").catch(() => "");
      const last = text.trim().split("\n").pop() ?? "";
      // The child's last line says why: "sheep: Cannot use DIR: ..." or a logged error.
      const reason = last.replace(/^\d{4}-\d\d-\d\dT\S+ \w+ /, "").replace(/^sheep: /, "");
      reject(new Error(reason || `sheep exited with status ${code}`));
    });
  });
  child.disconnect();
  child.unref();
}

async function serve(
  dir: string,
  values: ReturnType<typeof parseFlags<typeof FLAGS>>["values"],
): Promise<void> {
  const level = values["log-level"]!;
  if (!LEVELS.includes(level as typeof LEVELS[number])) {
    throw new UsageError(`Invalid --log-level '${level}'`);
  }
  const logger = streamLogger(process.stderr, level);
  const zone = integerFlag(values.zone, "zone", 0, 0xffffffff);
  const vnodes = integerFlag(values.vnodes, "vnodes", 0, 1024);
  const seeds = values.seed ?? [];
  for (const seed of seeds) parseHostPort(seed);
  const multicast = values.multicast === undefined || values.multicast === "off"
    ? false
    : parseHostPort(values.multicast);
  const sheep = new Sheep({
    dir,
    host: values.host!,
    cluster: {
      seeds,
      multicast: multicast && { group: multicast.host, port: multicast.port },
      failureTimeoutMs: integerFlag(values["failure-timeout"], "failure-timeout", 500, 600_000)!,
    },
    port: integerFlag(values.port, "port", 0, 65535)!,
    logger,
    ...(zone === undefined ? {} : { zone }),
    ...(vnodes === undefined ? {} : { vnodes }),
  });
  await sheep.start();
  const pidFile = path.join(sheep.dir, "sheep.pid");
  await fsp.writeFile(pidFile, `${process.pid}\n`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info(`${signal}: stopping`);
    await sheep.stop();
    await fsp.rm(pidFile, { force: true });
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
  if (process.send) process.send("ready");
  await new Promise(() => {}); // Serve until a signal.
}

export function sheepMain(args: string[]): Promise<number> {
  return runCommand("sheep", SHEEP_USAGE, async () => {
    const { values, positionals } = parseFlags(args, FLAGS);
    if (values.help) return print(SHEEP_USAGE);
    if (positionals.length !== 1) throw new UsageError("sheep takes one directory");
    const dir = path.resolve(positionals[0]!);
    if (values.foreground) return await serve(dir, values);
    await daemonise(dir, args);
    print(
      `sheep serving ${dir} on ${values.host}:${values.port} (log: ${path.join(dir, "sheep.log")})`,
    );
  });
}
