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
import {
  CHECKSUM_OFFLOAD_BYTES_MIN,
  CHECKSUM_WORKERS_MAX,
  CLIENT_QUIET_MS,
  HTTP_PORT_DEFAULT,
  MALLOC_MMAP_THRESHOLD_BYTES,
  NBD_PORT_DEFAULT,
  OBJECT_PORT_DEFAULT,
  OPEN_FILES_CAP,
  OPEN_FILES_MAX,
  RECOVERY_BYTES_PER_SECOND_BUSY,
} from "../core/limits.ts";

/** --recovery-rate's default as the flag spells it. */
const RECOVERY_RATE_DEFAULT = `${RECOVERY_BYTES_PER_SECOND_BUSY / 2 ** 20}M`;
/** The shortest read whose checksums go to a worker, in KiB for --help. */
const OFFLOAD_KIB = CHECKSUM_OFFLOAD_BYTES_MIN / 1024;
import { startNbdService } from "../net/sheep/vdi_exports.ts";
import { startHttpService } from "../net/http/mod.ts";
import { createLogger, parseLogLevel } from "../net/log/mod.ts";
import { parseSize } from "../net/admin/format.ts";
import type { ScrubOptions } from "../net/sheep/scrub.ts";
import { Sheep, type SheepOptions } from "../net/sheep/sheep.ts";
import { clusterIdOf, DRIVER_DEFAULT, EtcdDriver, parseDriverUri } from "../net/etcd/mod.ts";
import { defaultHostAddress } from "../net/sheep/host_address.ts";
import { ClientAddresses } from "../net/auth/client_addresses.ts";
import { checksumWorkersDefault } from "../core/store/checksum_workers.ts";
import { readKeyFile, removeKeyNote, sheepKey, writeKeyNote } from "../net/auth/cluster_key.ts";
import { readSecretFile } from "../net/auth/secret_file.ts";
import { NBD_TLS_FLAGS, NBD_TLS_USAGE, nbdTlsOf } from "./sheep_nbd_tls.ts";
import {
  integerFlag,
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
  --host ADDR       address to listen on and advertise (default: listen on every address
                    and advertise the one of the interface with the default route, else
                    the first non-loopback IPv4 address, else 127.0.0.1)
  --key-file FILE   the cluster key (make one with 'shepherd keygen FILE', copy it to every
                    host, mode 0600); group datagrams and sheep-to-sheep connections are
                    authenticated with it, and administrative requests need it. Default:
                    DIR/cluster.key, made on first start (enough for a one-host cluster)
  --allow-clients CIDR[,CIDR]  networks whose clients (QEMU's sheepdog driver, which cannot
                    authenticate) may read and write VDIs; loopback always may
  --zone N          failure zone (default: derived from the address)
  --vnodes N        fixed virtual nodes on the ring (default: 128 for a node of the
                    cluster's average capacity, scaled by the size of DIR's filesystem, so
                    a node twice the size holds twice the data)
  --cluster-driver D  what holds the cluster together: 'builtin' (default; the group,
                    found by multicast or --seed) or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]
                    (an etcd cluster's client ports; membership, epochs and cluster events
                    are kept there, under /PREFIX/, default /sheepdog/)
  --seed HOST:PORT  another sheep to find the cluster through (repeatable; for networks
                    without multicast; builtin driver)
  --multicast G:P   multicast group and port for discovery (default 239.10.10.10:7400);
                    'off' to discover through --seed addresses only (builtin driver)
  --failure-timeout MS  declare a silent node gone after MS ms (default 5000; with etcd,
                    the lease TTL, in whole seconds)
  --nbd-address A   NBD export address (default 127.0.0.1)
  --nbd-port N      NBD port (default ${NBD_PORT_DEFAULT})
  --nbd-socket PATH also serve NBD on a Unix socket
  --nbd-force-shared  let a second client attach a VDI writable (operator override)
${NBD_TLS_USAGE}
  --no-nbd          no NBD export
  --http-address A  HTTP admin API and dashboard address (default 127.0.0.1)
  --http-port N     HTTP port (default ${HTTP_PORT_DEFAULT})
  --http-token T    token required for changes through HTTP (needed beyond loopback)
  --http-token-file FILE  the same, read from FILE (mode 0600), so it is not shown by ps
  --no-http         no HTTP admin API
  --scrub-interval S  start a background scrub every S seconds (default 86400: daily; 0 or
                    'off': never). A scrub verifies every block of every local copy against
                    its checksum, compares each object's copies across nodes and repairs
                    what differs; the first pass runs one interval after start
  --scrub-rate R    bytes per second a scrub reads at most, K/M/G suffixes (default 64M)
  --recovery-rate R bytes per second recovery moves through this sheep (objects it pulls,
                    copies it reads for others) while its clients are busy, K/M/G suffixes
                    (default ${RECOVERY_RATE_DEFAULT}; 'off': never held back); with no client request for
                    ${CLIENT_QUIET_MS} ms, recovery runs at full speed; an object whose newest
                    copy one node alone holds is never held back
  --checksum-workers N  worker threads that verify the checksums of reads of ${OFFLOAD_KIB} KiB and
                    more, so big reads do not hold up other clients (0 to ${CHECKSUM_WORKERS_MAX}; default: none on
                    2 cores or fewer, else one per core but two: here ${checksumWorkersDefault()}); 0: every
                    checksum on the main thread. SHEEPDOG_CHECKSUM_WORKERS=0 in the environment means 0 too; the
                    flag wins
  --log-level L     debug, info, warn or error (default info)
  --foreground      stay attached and log to stderr instead of DIR/sheep.log
  -h, --help        show this help`;

/** Where the builtin driver's sheep find each other by default. */
const MULTICAST_DEFAULT = "239.10.10.10:7400";

/** A day: background scrubs of a sheep started from the command line. */
const SCRUB_INTERVAL_DEFAULT_S = 86_400;

const FLAGS = {
  port: { type: "string", default: String(OBJECT_PORT_DEFAULT) },
  host: { type: "string" },
  "key-file": { type: "string" },
  "allow-clients": { type: "string" },
  zone: { type: "string" },
  vnodes: { type: "string" },
  seed: { type: "string", multiple: true },
  "cluster-driver": { type: "string", default: DRIVER_DEFAULT },
  nbd: { type: "boolean", default: true },
  "nbd-address": { type: "string", default: "127.0.0.1" },
  "nbd-port": { type: "string", default: String(NBD_PORT_DEFAULT) },
  "nbd-socket": { type: "string" },
  "nbd-force-shared": { type: "boolean", default: false },
  ...NBD_TLS_FLAGS,
  http: { type: "boolean", default: true },
  "http-address": { type: "string", default: "127.0.0.1" },
  "http-port": { type: "string", default: String(HTTP_PORT_DEFAULT) },
  "http-token": { type: "string" },
  "http-token-file": { type: "string" },
  multicast: { type: "string" },
  "failure-timeout": { type: "string", default: "5000" },
  "scrub-interval": { type: "string", default: String(SCRUB_INTERVAL_DEFAULT_S) },
  "scrub-rate": { type: "string", default: "64M" },
  "recovery-rate": { type: "string", default: RECOVERY_RATE_DEFAULT },
  "checksum-workers": { type: "string" },
  "log-level": { type: "string", default: "info" },
  foreground: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

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
    env: {
      // Memory a burst took goes back when it is freed (see MALLOC_MMAP_THRESHOLD_BYTES); a
      // value the user set wins. Set at spawn: glibc reads it once, at process start.
      MALLOC_MMAP_THRESHOLD_: String(MALLOC_MMAP_THRESHOLD_BYTES),
      ...process.env,
      SHEEPDOG_DAEMON: "1",
    },
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
      let reason = last.replace(/^sheep: /, "");
      try {
        reason = (JSON.parse(last) as { msg?: string }).msg ?? reason; // a pino line
      } catch {
        // A plain line, as runCommand prints.
      }
      reject(new Error(reason || `sheep exited with status ${code}`));
    });
  });
  child.disconnect();
  child.unref();
}

type Flags = ReturnType<typeof parseFlags<typeof FLAGS>>["values"];

/** --scrub-interval SECONDS|off and --scrub-rate SIZE as the sheep's scrub options. */
export function scrubSettings(interval: string, rate: string): Required<ScrubOptions> {
  const seconds = interval.trim() === "off"
    ? 0
    : integerFlag(interval, "scrub-interval", 0, 31_536_000)!;
  return { intervalMs: seconds * 1000, bytesPerSecond: rateFlag("scrub-rate", rate, "") };
}

/** --recovery-rate SIZE|off as bytes per second (0: never paced). */
export function recoveryRate(rate: string): number {
  return rate.trim() === "off" ? 0 : rateFlag("recovery-rate", rate, ", or off");
}

/**
 * --checksum-workers N, else the environment's SHEEPDOG_CHECKSUM_WORKERS=0 (what benchmarks
 * set to verify on the main thread), else one worker per core but one.
 */
export function checksumWorkers(flag: string | undefined, env: string | undefined): number {
  return integerFlag(flag, "checksum-workers", 0, CHECKSUM_WORKERS_MAX) ??
    (env === "0" ? 0 : checksumWorkersDefault());
}

/** A rate flag's SIZE[/s] (K/M/G suffixes) as bytes per second, at least 1M. */
function rateFlag(flag: string, rate: string, otherwise: string): number {
  let bytesPerSecond: number;
  try {
    bytesPerSecond = parseSize(rate.replace(/\/s$/i, ""));
  } catch (error) {
    throw new UsageError(`Invalid --${flag} '${rate}': ${(error as Error).message}`);
  }
  if (bytesPerSecond < 1024 * 1024) {
    throw new UsageError(
      `Invalid --${flag} '${rate}': use at least 1M (bytes per second)${otherwise}`,
    );
  }
  return bytesPerSecond;
}

/** Every flag parsed and checked: run before daemonising, so mistakes fail in the foreground. */
function settingsOf(values: Flags) {
  let logLevel;
  try {
    logLevel = parseLogLevel(values["log-level"]!);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  let driver;
  try {
    driver = parseDriverUri(values["cluster-driver"]!);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const seeds = values.seed ?? [];
  if (driver.kind === "etcd" && (seeds.length > 0 || values.multicast !== undefined)) {
    throw new UsageError(
      "--seed and --multicast are for the builtin cluster driver: with etcd, sheep find each " +
        "other through etcd",
    );
  }
  for (const seed of seeds) parseHostPort(seed);
  const multicastFlag = values.multicast ?? MULTICAST_DEFAULT;
  const multicast = multicastFlag === "off" ? false : parseHostPort(multicastFlag);
  let clients: ClientAddresses;
  try {
    clients = values["allow-clients"] === undefined
      ? ClientAddresses.loopbackOnly
      : ClientAddresses.parse(values["allow-clients"]);
  } catch (error) {
    throw new UsageError(`Invalid --allow-clients: ${(error as Error).message}`);
  }
  if (values["http-token"] !== undefined && values["http-token-file"] !== undefined) {
    throw new UsageError("Use --http-token or --http-token-file, not both");
  }
  // Secrets are checked here, in the foreground, so a bad file fails the command itself.
  const httpToken = values["http-token-file"] === undefined
    ? values["http-token"]
    : readSecretFile(path.resolve(values["http-token-file"]), "token file");
  if (values["key-file"] !== undefined) readKeyFile(path.resolve(values["key-file"]));
  return {
    logLevel,
    driver,
    seeds,
    ...addressesOf(values.host),
    clients,
    httpToken,
    multicast: multicast === false
      ? false as const
      : { group: multicast.host, port: multicast.port },
    zone: integerFlag(values.zone, "zone", 0, 0xffffffff),
    vnodes: integerFlag(values.vnodes, "vnodes", 0, 1024),
    failureTimeoutMs: integerFlag(values["failure-timeout"], "failure-timeout", 500, 600_000)!,
    port: integerFlag(values.port, "port", 0, 65535)!,
    nbdPort: integerFlag(values["nbd-port"], "nbd-port", 0, 65535)!,
    httpPort: integerFlag(values["http-port"], "http-port", 0, 65535)!,
    scrub: scrubSettings(values["scrub-interval"]!, values["scrub-rate"]!),
    recoveryRate: recoveryRate(values["recovery-rate"]!),
    checksumWorkers: checksumWorkers(
      values["checksum-workers"],
      process.env.SHEEPDOG_CHECKSUM_WORKERS,
    ),
    nbdTls: nbdTlsOf(values),
  };
}

/**
 * Where the object port listens and what the sheep advertises: --host for both; else every
 * address, advertising the host's own (host_address.ts); else loopback alone.
 */
function addressesOf(host: string | undefined) {
  if (host !== undefined) return { host, listenHost: host, hostReason: "--host" };
  const found = defaultHostAddress();
  if (found === undefined) {
    return { host: "127.0.0.1", listenHost: "127.0.0.1", hostReason: "no address but loopback" };
  }
  return { host: found.address, listenHost: "0.0.0.0", hostReason: found.reason };
}

/**
 * How many files the object store may keep open: a quarter of this process's open-files limit
 * (the rest is for sockets and everything else), between the default and OPEN_FILES_CAP.
 */
function storeOpenFiles(): number {
  try {
    const limits = fs.readFileSync("/proc/self/limits", "utf8");
    const soft = Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1]);
    if (Number.isSafeInteger(soft)) {
      return Math.min(OPEN_FILES_CAP, Math.max(OPEN_FILES_MAX, Math.floor(soft / 4)));
    }
  } catch {
    // Not Linux, or no /proc: the default.
  }
  return OPEN_FILES_MAX;
}

/** How the sheep joins its cluster: the built-in group's options, or an etcd driver. */
function membership(
  settings: ReturnType<typeof settingsOf>,
  key: Uint8Array,
): Pick<SheepOptions, "cluster" | "driver"> {
  const driver = settings.driver;
  if (driver.kind === "etcd") {
    return {
      driver: (host) =>
        new EtcdDriver(host, {
          endpoints: driver.endpoints,
          prefix: driver.prefix,
          clusterId: clusterIdOf(key),
          failureTimeoutMs: settings.failureTimeoutMs,
        }),
    };
  }
  return {
    cluster: {
      seeds: settings.seeds,
      multicast: settings.multicast,
      failureTimeoutMs: settings.failureTimeoutMs,
    },
  };
}

async function serve(dir: string, values: Flags): Promise<void> {
  const settings = settingsOf(values);
  // A daemon logs to DIR/sheep.log; in the foreground, lines go to stderr.
  const logger = createLogger({
    level: settings.logLevel,
    name: "sheep",
    ...(process.env.SHEEPDOG_DAEMON ? { file: path.join(dir, "sheep.log") } : {}),
  });
  const key = sheepKey(dir, values["key-file"]);
  const sheep = new Sheep({
    dir,
    host: settings.host,
    listenHost: settings.listenHost,
    security: { key: key.key, clients: settings.clients },
    ...membership(settings, key.key),
    port: settings.port,
    logger,
    // Benchmarks only (`npm run bench` measures what verifying checksums on reads costs).
    verifyReads: process.env.SHEEPDOG_VERIFY_READS !== "0",
    openFiles: storeOpenFiles(),
    checksumWorkers: settings.checksumWorkers,
    ...(settings.zone === undefined ? {} : { zone: settings.zone }),
    ...(settings.vnodes === undefined ? {} : { vnodes: settings.vnodes }),
    scrub: settings.scrub,
    recoveryRate: settings.recoveryRate,
  });
  await sheep.start();
  logger.info(
    `advertising ${sheep.id} (${settings.hostReason}); object port listening on ` +
      `${settings.listenHost === "0.0.0.0" ? "every address" : settings.listenHost}; ` +
      `clients without the key: ${settings.clients}`,
  );
  logger.info(
    key.created
      ? `made a cluster key in ${key.file}: to add sheep on other hosts, copy it there and ` +
        `start them with --key-file`
      : `cluster key: ${key.file}`,
  );
  try {
    writeKeyNote(sheep.port, key.file); // how local commands find the key
  } catch (error) {
    logger.warn(`Cannot note the key file for local commands: ${(error as Error).message}`);
  }
  const services: { close(): Promise<void> }[] = [];
  try {
    if (values.nbd) {
      const nbd = {
        forceShared: values["nbd-force-shared"]!,
        ...(settings.nbdTls ? { tls: settings.nbdTls } : {}),
      };
      const tls = settings.nbdTls ? ` (TLS required: ${settings.nbdTls.kind})` : "";
      const port = settings.nbdPort;
      const host = values["nbd-address"]!;
      services.push(
        await startNbdService(sheep, { host, port }, nbd).catch((error) => {
          const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
          throw new Error(
            `Cannot serve NBD on ${host}:${port}: ${code} (use --nbd-port or --no-nbd)`,
          );
        }),
      );
      logger.info(`NBD export on ${values["nbd-address"]}:${port}${tls}`);
      if (values["nbd-socket"]) {
        services.push(
          await startNbdService(sheep, { path: path.resolve(values["nbd-socket"]) }, nbd),
        );
        logger.info(`NBD export on ${values["nbd-socket"]}${tls}`);
      }
    }
    if (values.http) {
      services.push(
        await startHttpService(sheep, {
          host: values["http-address"]!,
          port: settings.httpPort,
          ...(settings.httpToken ? { token: settings.httpToken } : {}),
          logger,
        }),
      );
    }
  } catch (error) {
    await sheep.stop();
    throw error;
  }
  const pidFile = path.join(sheep.dir, "sheep.pid");
  await fsp.writeFile(pidFile, `${process.pid}\n`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info(`${signal}: stopping`);
    for (const service of services) await service.close().catch(() => undefined);
    await sheep.stop();
    removeKeyNote(sheep.port, key.file);
    await logger.close();
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
    if (values.foreground) {
      try {
        return await serve(dir, values);
      } catch (error) {
        // A start that failed half-way (a port taken after the object port was bound) must not
        // leave a process that holds nothing but a handle or two: it goes once it has said why.
        setTimeout(() => process.exit(1), 1_000);
        throw error;
      }
    }
    const settings = settingsOf(values); // A bad flag fails here, not in the detached child.
    await daemonise(dir, args);
    print(
      `sheep serving ${dir} on ${settings.host}:${settings.port} ` +
        `(log: ${path.join(dir, "sheep.log")})`,
    );
  });
}
