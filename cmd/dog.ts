/**
 * `sheepdog dog`: the group-membership daemon of the 2009 design, on its own: a member with no
 * storage that counts toward quorum (a witness, e.g. the third vote of a two-sheep cluster),
 * printing membership events as they happen.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { GroupDriver } from "../net/group/mod.ts";
import { EpochLog } from "../net/sheep/epoch_log.ts";
import { defaultHostAddress } from "../net/sheep/host_address.ts";
import { readKeyFile } from "../net/auth/cluster_key.ts";
import { DatagramSeal } from "../net/auth/datagram_seal.ts";
import { Refusals } from "../net/auth/refusals.ts";
import { parseFlags, parseHostPort, print, runCommand, UsageError } from "./cli.ts";

export const DOG_USAGE = `Usage: sheepdog dog [options]

Runs the group-membership daemon alone: a witness that stores nothing but counts toward the
majority a new view needs, and prints membership events as they happen. Stays in the
foreground; Ctrl-C leaves the group.

Options:
  --address HOST:PORT   where to listen for the group (UDP; default: this host's address, as a
                        sheep advertises it, port 7900)
  --key-file FILE       the cluster key (default $SHEEPDOG_KEY_FILE); required
  --seed HOST:PORT      a sheep of the cluster (repeatable)
  --multicast G:P       multicast group and port (default 239.10.10.10:7400); 'off' for seeds only
  --dir DIR             where to keep the epoch log (default: none, a fresh member each start)
  -h, --help            show this help`;

function timestamp(): string {
  return new Date().toISOString().replace("T", " ").slice(0, 19);
}

export function dogMain(args: string[]): Promise<number> {
  return runCommand("dog", DOG_USAGE, async () => {
    const { values, positionals } = parseFlags(args, {
      address: { type: "string" },
      "key-file": { type: "string" },
      seed: { type: "string", multiple: true },
      multicast: { type: "string", default: "239.10.10.10:7400" },
      dir: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    });
    if (values.help) return print(DOG_USAGE);
    if (positionals.length > 0) throw new UsageError(`dog takes no arguments: '${positionals[0]}'`);
    const keyFile = values["key-file"] ?? process.env.SHEEPDOG_KEY_FILE;
    if (keyFile === undefined || keyFile === "") {
      throw new UsageError("dog needs the cluster key: --key-file FILE (or $SHEEPDOG_KEY_FILE)");
    }
    const key = readKeyFile(path.resolve(keyFile));
    const refusals = new Refusals({ log: (line) => process.stderr.write(`dog: ${line}\n`) });
    const address = parseHostPort(
      values.address ?? `${defaultHostAddress()?.address ?? "127.0.0.1"}:7900`,
    );
    const seeds = values.seed ?? [];
    for (const seed of seeds) parseHostPort(seed);
    const multicast = values.multicast === "off" ? false : parseHostPort(values.multicast!);
    const log = values.dir ? new EpochLog(path.resolve(values.dir)) : undefined;
    if (values.dir) await fsp.mkdir(values.dir, { recursive: true });
    const driver = new GroupDriver({
      address: `${address.host}:${address.port}`,
      witness: true,
      seal: new DatagramSeal(key),
      onRefusal: (reason, sender) => refusals.reportDatagram(reason, sender),
      persisted: log ? await log.last() : null,
      persist: (records) => log ? log.append(records, Date.now()) : Promise.resolve(),
      seeds,
      multicast: multicast && { group: multicast.host, port: multicast.port },
      onView: (view) => {
        const members = view.members.map((m) => m.witness ? `${m.id} (witness)` : m.id).join(", ");
        print(`${timestamp()} epoch ${view.epoch}${view.primary ? "" : " (minority)"}: ${members}`);
      },
      onStatus: (status) =>
        print(`${timestamp()} ${status.state}${status.master ? `, master ${status.master}` : ""}`),
      onError: (error) => process.stderr.write(`dog: ${error.message}\n`),
    });
    await driver.start();
    print(`${timestamp()} dog ${driver.id} listening (witness)`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        driver.leave();
        setTimeout(() => void driver.stop().then(resolve), 200);
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
  });
}
