/**
 * `sheepdog dog`: the group-membership daemon of the 2009 design.
 *
 * @module
 */

import { print, runCommand, UsageError } from "./cli.ts";

export const DOG_USAGE = `Usage: sheepdog dog [options]

Runs the group-membership daemon alone: a member with no storage that counts toward quorum.`;

export function dogMain(args: string[]): Promise<number> {
  return runCommand("dog", DOG_USAGE, () => {
    if (args.includes("-h") || args.includes("--help")) return Promise.resolve(print(DOG_USAGE));
    throw new UsageError(
      "dog is not available yet in this build: the cluster membership layer is in progress",
    );
  });
}
