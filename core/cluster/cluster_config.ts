/**
 * The cluster configuration every node holds (set by `mkfs`) and its 40-byte on-disk layout,
 * Sheepdog's (SHEEPDOG_REFERENCE.md §8.1). Pure: `net/sheep/cluster_config.ts` reads and writes
 * the file.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../errors.ts";
import { BLOCK_SIZE_SHIFT_MAX, BLOCK_SIZE_SHIFT_MIN, COPIES_MAX } from "../limits.ts";
import { sheepTimeToMs } from "../vdi/inode.ts";

const CONFIG_SIZE = 40;
const CONFIG_VERSION = 0x0006;
/** Flag bit: refuse writes when fewer zones than copies are alive (`mkfs --strict`). */
export const FLAG_STRICT = 0x0004;

export interface ClusterConfig {
  /** Format time, ms since 1970; identifies the cluster. */
  ctimeMs: number;
  flags: number;
  copies: number;
  blockSizeShift: number;
  shutdown: boolean;
}

export function encodeConfig(config: ClusterConfig): Uint8Array {
  const bytes = new Uint8Array(CONFIG_SIZE);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(config.ctimeMs), true);
  view.setUint16(8, config.flags, true);
  view.setUint8(10, config.copies);
  bytes.set(new TextEncoder().encode("plain"), 11);
  view.setUint8(27, config.shutdown ? 1 : 0);
  view.setUint8(28, 0);
  view.setUint8(29, config.blockSizeShift);
  view.setUint16(30, CONFIG_VERSION, true);
  return bytes;
}

export function decodeConfig(bytes: Uint8Array, file: string): ClusterConfig {
  const corrupt = (why: string) =>
    new SheepdogError(
      ResultCode.EIO,
      `Cannot read cluster config ${file}: ${why} (every node of a cluster holds the same one: ` +
        "copy another node's in its place)",
    );
  if (bytes.length !== CONFIG_SIZE) throw corrupt(`${bytes.length} bytes, expected ${CONFIG_SIZE}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, CONFIG_SIZE);
  if (view.getUint16(30, true) !== CONFIG_VERSION) throw corrupt("unknown format version");
  const config = {
    ctimeMs: Number(view.getBigUint64(0, true)),
    flags: view.getUint16(8, true),
    copies: view.getUint8(10),
    blockSizeShift: view.getUint8(29),
    shutdown: view.getUint8(27) !== 0,
  };
  if (config.copies < 1 || config.copies > COPIES_MAX) throw corrupt(`bad copies ${config.copies}`);
  if (
    config.blockSizeShift < BLOCK_SIZE_SHIFT_MIN || config.blockSizeShift > BLOCK_SIZE_SHIFT_MAX
  ) {
    throw corrupt(`bad block size shift ${config.blockSizeShift}`);
  }
  return config;
}

/**
 * How a peer's format stands to this node's: "same", or which of the two is older. A format
 * (`mkfs`, `--force` again) gives the cluster a new `ctimeMs`; a node away at the time keeps the
 * old one with its old objects and VDIs, and nothing of one format may mix with the other's.
 * The older is the one that missed a format: it takes no part (net/sheep/sheep.ts). Without a
 * config on either side there is nothing to compare ("same": a fresh node takes the cluster's).
 */
export function compareFormats(
  mine: ClusterConfig | undefined | null,
  theirs: ClusterConfig | undefined | null,
): "same" | "mine older" | "theirs older" {
  if (!mine || !theirs || mine.ctimeMs === theirs.ctimeMs) return "same";
  return mine.ctimeMs < theirs.ctimeMs ? "mine older" : "theirs older";
}

/**
 * True when an inode created at `createTime` (Sheepdog time) is older than the format made at
 * `formatMs` (`ClusterConfig.ctimeMs`; undefined: not formatted): a copy of a VDI that format
 * erased (one a copy in flight brought back after the erase, or a node that missed the format
 * kept). Every VDI of a format is created after it: a create, snapshot, clone or rollback never
 * dates its inode at or before the format's time (`vdiTimeMs`), whatever the nodes' clocks.
 */
export function predatesFormat(createTime: bigint, formatMs: number | undefined): boolean {
  return formatMs !== undefined && sheepTimeToMs(createTime) <= formatMs;
}

/** The time a VDI change dates its inodes with: now, but always after the format. */
export function vdiTimeMs(nowMs: number, formatMs: number | undefined): number {
  return formatMs === undefined ? nowMs : Math.max(nowMs, formatMs + 1);
}
