/**
 * What every subcommand shares: flag parsing with usage errors (exit 2), reaching the cluster
 * (`--cluster`, then SHEEPDOG_CLUSTER, then 127.0.0.1:7000), and one-line error reports.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { SheepdogError } from "../core/errors.ts";
import { OBJECT_PORT_DEFAULT } from "../core/limits.ts";
import { ObjectClient } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";
import { AdminService } from "../net/admin/admin_service.ts";
import { findClientKey } from "../net/auth/cluster_key.ts";
import { SecretFileError } from "../net/auth/secret_file.ts";

export const VERSION = "0.1.0";

/** A usage error: printed with a hint, exit status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** parseArgs with strict checking; unknown flags and missing values become UsageErrors. */
export function parseFlags<T extends Options>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: true, allowNegative: true });
  } catch (error) {
    throw new UsageError(flagErrorText(error as NodeJS.ErrnoException));
  }
}

/** parseArgs's errors in the product's words (its own ones explain '--' and positionals). */
function flagErrorText(error: NodeJS.ErrnoException): string {
  const option = /'(-[^' ]*)/.exec(error.message)?.[1];
  switch (error.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `Unknown option ${option ?? error.message}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (/argument missing/.test(error.message)) return `Option ${option} needs a value`;
      // A value starting with a dash (`--zone -1`) is taken for another flag.
      if (/ambiguous/.test(error.message)) {
        return `Option ${option} needs a value (one starting with '-' as ${option}=VALUE)`;
      }
      return `Option ${option} takes no value`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `Unexpected argument ${/'([^']*)'/.exec(error.message)?.[1] ?? ""}`.trim();
    default:
      return error.message.split("\n")[0]!;
  }
}

/** The flags every cluster client takes. */
export const CLUSTER_FLAG = {
  cluster: { type: "string" },
  "key-file": { type: "string" },
} as const satisfies Options;

/** Where a command reaches the cluster, and the key file it was told to use, if any. */
export interface ClusterAddress {
  host: string;
  port: number;
  keyFile?: string;
}

/** Splits "HOST:PORT" (or "HOST", or ":PORT"). */
export function parseHostPort(
  text: string,
  defaultPort = OBJECT_PORT_DEFAULT,
): { host: string; port: number } {
  const match = /^\[?([^\]]*?)\]?(?::(\d+))?$/.exec(text.trim());
  const port = match?.[2] === undefined ? defaultPort : Number(match[2]);
  if (!match || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError(`Invalid address '${text}': use HOST:PORT`);
  }
  return { host: match[1] || "127.0.0.1", port };
}

/** Where the cluster is: --cluster, else SHEEPDOG_CLUSTER, else 127.0.0.1:7000. */
export function clusterAddress(
  flags: { cluster?: string; "key-file"?: string },
): ClusterAddress {
  const address = parseHostPort(
    flags.cluster ?? process.env.SHEEPDOG_CLUSTER ?? `127.0.0.1:${OBJECT_PORT_DEFAULT}`,
  );
  return flags["key-file"] === undefined ? address : { ...address, keyFile: flags["key-file"] };
}

/**
 * A client of the sheep at `address`, authenticated with the cluster key when one is found
 * (net/auth/cluster_key.ts `findClientKey`): administrative requests need it; the public
 * requests of VDI I/O work without it from this host.
 */
export function connect(address: ClusterAddress): AdminService {
  const key = findClientKey(address.keyFile, address);
  return new AdminService(
    new ObjectClient(new TcpTransport({ host: address.host, port: address.port, key })),
  );
}

/**
 * A command's own exit status (`img compare` answers 1 for "different", 2 for an error, as
 * qemu-img does); its message, if any, is printed as a failure is.
 */
export class CommandExit extends Error {
  override name = "CommandExit";
  readonly status: number;
  constructor(status: number, message = "") {
    super(message);
    this.status = status;
  }
}

/** Runs a command body, printing failures as one line; returns the exit status. */
export async function runCommand(
  name: string,
  usage: string,
  body: () => Promise<void>,
): Promise<number> {
  try {
    await body();
    return 0;
  } catch (error) {
    if (error instanceof CommandExit) {
      if (error.message !== "") process.stderr.write(`${name}: ${error.message}\n`);
      return error.status;
    }
    if (error instanceof UsageError) {
      process.stderr.write(`${name}: ${error.message}\n${usage}\n`);
      return 2;
    }
    if (
      error instanceof SheepdogError || error instanceof RangeError ||
      error instanceof SecretFileError
    ) {
      process.stderr.write(`${name}: ${error.message}\n`);
      return 1;
    }
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`${name}: ${message}\n`);
    if (process.env.SHEEPDOG_DEBUG) console.error(error);
    return 1;
  }
}

export function print(text: string): void {
  process.stdout.write(text.endsWith("\n") ? text : text + "\n");
}

export function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/** True inside the single executable, where argv[1] is the executable itself, not a script. */
export function isSingleExecutable(): boolean {
  const first = process.argv[1];
  if (process.versions.deno || first === undefined) return false;
  try {
    return fs.realpathSync(path.resolve(first)) === fs.realpathSync(process.execPath);
  } catch {
    return false;
  }
}

/** The program's own arguments, whether run by deno, node or as the single executable. */
export function programArguments(): string[] {
  return process.argv.slice(2);
}

/** An integer flag in [min, max], or undefined when not given; anything else is a UsageError. */
export function integerFlag(
  value: string | undefined,
  name: string,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`Invalid --${name} '${value}': use ${min}..${max}`);
  }
  return n;
}

/**
 * Moves the cluster flags given before the subcommand (`shepherd --cluster H:P info -t vdi`)
 * to the end, where the subcommand parses them: global flags are accepted anywhere.
 */
export function hoistClusterFlags(args: string[]): string[] {
  const hoisted: string[] = [];
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i]!;
    const name = arg.replace(/^--/, "").split("=")[0]!;
    if (!arg.startsWith("--") || !(name in CLUSTER_FLAG)) break;
    if (arg.includes("=")) hoisted.push(arg);
    else {
      if (i + 1 >= args.length) throw new UsageError(`Option --${name} needs a value`);
      hoisted.push(arg, args[++i]!);
    }
  }
  return i === 0 ? args : [...args.slice(i), ...hoisted];
}

/**
 * Runs `COMMAND args...` from a table of subcommands: `help`, `-h` and `--help` print the
 * usage; an unknown command is a UsageError.
 */
export function runSubcommand(
  name: string,
  usage: string,
  commands: Record<string, (args: string[]) => Promise<void>>,
  args: string[],
): Promise<number> {
  return runCommand(name, usage, async () => {
    const [command, ...rest] = hoistClusterFlags(args);
    if (command === undefined || command === "-h" || command === "--help" || command === "help") {
      return print(usage);
    }
    const run = commands[command];
    if (!run) throw new UsageError(`Unknown command '${command}'`);
    if (rest.includes("-h") || rest.includes("--help")) return print(usage);
    await run(rest);
  });
}
