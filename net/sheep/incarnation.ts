/**
 * A sheep process's incarnation: the number that tells this start of a node from the ones
 * before. The built-in group ignores a node's messages under a lower incarnation than the last
 * it heard from it (a stale process's), and the etcd driver names its events by it.
 *
 * It was the wall clock at start, which does not always grow: a node restarted with its clock
 * set back (an NTP step, a disk moved to another machine, a board whose clock starts at 1970)
 * was a stale process to its peers until its clock passed the old number, out of the cluster
 * for as long as its clock had gone back. So it is the wall clock, or one above the last
 * incarnation this directory had, whichever is higher: the last one is kept in `DIR/incarnation`
 * (written durably before any peer hears the new one), and the epoch log's records name it too
 * (a directory from before that file, or with that file lost).
 *
 * @module
 */

import * as path from "node:path";
import { readWholeFile } from "../../core/store/disk.ts";
import { fsDisk, writeFileDurably } from "../../core/store/fs_disk.ts";
import type { MemberRef } from "../group/types.ts";

/** The file, in the sheep's directory, that keeps the last incarnation. */
export const INCARNATION_FILE = "incarnation";

/**
 * The incarnation of the process starting on `dir` (its id `selfId`): above every earlier one
 * the directory knows of (its file, and `records`, the epoch log's records, which the caller has
 * read for its start anyway), and the wall clock `nowMs` when that is higher. Kept before
 * returning. A file that cannot be read as a number is said in one line (`warn`) and replaced.
 */
export async function nextIncarnation(
  options: {
    dir: string;
    selfId: string;
    nowMs: number;
    records: readonly { readonly members: readonly MemberRef[] }[];
    warn: (line: string) => void;
  },
): Promise<number> {
  const file = path.join(options.dir, INCARNATION_FILE);
  const kept = await readKept(file, options.warn);
  const logged = lastLogged(options.records, options.selfId);
  const previous = Math.max(kept, logged);
  const next = Math.max(Math.floor(options.nowMs), previous + 1);
  if (previous >= Math.floor(options.nowMs)) {
    options.warn(
      `this node's clock (${new Date(options.nowMs).toISOString()}) is behind its last start's ` +
        `(${new Date(previous).toISOString()}): set back while it was down? It starts as ` +
        `incarnation ${next}, after the last, so its peers take it for the newer process`,
    );
  }
  await fsDisk.mkdir(options.dir);
  await writeFileDurably(file, `${next}\n`);
  return next;
}

/** The incarnation the file keeps; 0 when there is none or it cannot be read (said). */
async function readKept(file: string, warn: (line: string) => void): Promise<number> {
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readWholeFile(fsDisk, file);
  } catch (error) {
    warn(`${file} cannot be read (${(error as Error).message}): written again`);
    return 0;
  }
  if (bytes === undefined) return 0;
  const text = new TextDecoder().decode(bytes).trim();
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(value)) {
    warn(
      `${file} does not hold an incarnation (${JSON.stringify(text.slice(0, 40))}): written again`,
    );
    return 0;
  }
  return value;
}

/** The highest incarnation of `selfId` the epoch log's records name; 0 when none does. */
function lastLogged(
  records: readonly { readonly members: readonly MemberRef[] }[],
  selfId: string,
): number {
  let highest = 0;
  for (const record of records) {
    for (const member of record.members) {
      if (member.id === selfId && member.incarnation > highest) highest = member.incarnation;
    }
  }
  return highest;
}
