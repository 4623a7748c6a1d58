/**
 * The one executable: `sheepdog sheep|dog|shepherd|img ...`.
 *
 * @module
 */

import * as v8 from "node:v8";
import { HEAP_GROWING_PERCENT } from "./core/limits.ts";
import { programArguments, VERSION } from "./cmd/cli.ts";
import { sheepMain } from "./cmd/sheep.ts";
import { dogMain } from "./cmd/dog.ts";
import { shepherdMain } from "./cmd/shepherd.ts";
import { imgMain } from "./cmd/img.ts";

const USAGE = `Usage: sheepdog COMMAND [args]

Distributed block storage for virtual machines.

Commands:
  sheep DIR      run a storage node (daemon)
  dog            run the group-membership daemon
  shepherd ...   administer the cluster (mkfs, info -t vdi|vm|node|cluster, vdi delete)
  img ...        create, convert, snapshot and inspect volumes

Run 'sheepdog COMMAND --help' for a command's options. 'sheepdog --version' prints the version.`;

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  sheep: sheepMain,
  dog: dogMain,
  shepherd: shepherdMain,
  img: imgMain,
};

/** Runs the command line and returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === "--version" || command === "-V") {
    process.stdout.write(`sheepdog ${VERSION}\n`);
    return 0;
  }
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(USAGE + "\n");
    return command === undefined ? 2 : 0;
  }
  const run = COMMANDS[command];
  if (!run) {
    process.stderr.write(`sheepdog: unknown command '${command}'\n${USAGE}\n`);
    return 2;
  }
  return await run(args);
}

// A reader that goes away (`sheepdog img info X | head -1`) ends the command quietly: what it
// did not read, it did not want.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw error;
});

// Every command moves data through buffers (a sheep's sockets, `img convert`'s reads and writes):
// V8's default heap growth for a small heap made those bytes start a full collection every few
// MiB (see HEAP_GROWING_PERCENT). The flag is read at each collection, so setting it here, first,
// takes effect; a single executable ignores NODE_OPTIONS.
v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);

main(programArguments()).then((code) => {
  process.exitCode = code;
});
