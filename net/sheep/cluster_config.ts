/**
 * The cluster configuration file `DIR/config` (the layout is in core/cluster/cluster_config.ts):
 * written atomically and read back with checks.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import * as path from "node:path";
import {
  type ClusterConfig,
  decodeConfig,
  encodeConfig,
} from "../../core/cluster/cluster_config.ts";
import { writeFileDurably } from "../../core/store/fs_disk.ts";

/** Reads `DIR/config`; undefined when the node was never formatted. */
export async function readConfig(dir: string): Promise<ClusterConfig | undefined> {
  const file = path.join(dir, "config");
  let bytes: Uint8Array;
  try {
    bytes = await fsp.readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  return decodeConfig(bytes, file);
}

/** Writes `DIR/config` atomically (temp, sync, rename, directory sync). */
export async function writeConfig(dir: string, config: ClusterConfig): Promise<void> {
  await writeFileDurably(path.join(dir, "config"), encodeConfig(config));
}
