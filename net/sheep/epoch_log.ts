/**
 * The epoch log: every installed view, one file per epoch under `DIR/epoch/` (Sheepdog's
 * `epoch/%08u`), written durably before the view is acted on. Restart reads the last record.
 *
 * A sheep that cannot write it leaves the group (net/group/driver.ts): the object store keeps
 * METADATA_RESERVE_BYTES (core/limits.ts) of the file system free of object data so that a disk
 * filled by clients never gets that far.
 *
 * @module
 */

import * as path from "node:path";
import type { EpochRecord } from "../group/mod.ts";
import { type Disk, diskError, readWholeFile } from "../../core/store/disk.ts";
import { fsDisk, writeFileDurably } from "../../core/store/fs_disk.ts";

/** A record as stored: the view plus when it was installed. */
export interface StoredEpoch extends EpochRecord {
  readonly timeMs: number;
}

export class EpochLog {
  readonly dir: string;
  readonly #disk: Disk;
  /** Said about each record that cannot be read (once per file). */
  readonly #warn: (line: string) => void;
  readonly #unreadable = new Set<string>();

  /** The log under `baseDir`, on `disk` (default the real file system). */
  constructor(baseDir: string, disk: Disk = fsDisk, warn: (line: string) => void = () => {}) {
    this.dir = path.join(baseDir, "epoch");
    this.#disk = disk;
    this.#warn = warn;
  }

  /** Appends records durably (temp, sync, rename, directory sync). */
  async append(records: readonly EpochRecord[], nowMs: number): Promise<void> {
    await this.#disk.mkdir(this.dir);
    for (const record of records) {
      const file = path.join(this.dir, String(record.epoch).padStart(8, "0"));
      await writeFileDurably(file, JSON.stringify({ ...record, timeMs: nowMs }), this.#disk);
    }
  }

  /** Every record, newest first; unreadable files are skipped. */
  async list(): Promise<StoredEpoch[]> {
    const names = await this.#disk.readdir(this.dir).catch(() => [] as string[]);
    const records: StoredEpoch[] = [];
    for (const name of names.filter((n) => /^\d{8}$/.test(n)).sort().reverse()) {
      const file = path.join(this.dir, name);
      try {
        records.push(parseRecord(await this.#readText(file)));
      } catch (error) {
        // Written whole (temp, sync, rename), so not a torn write: the disk lost or changed it.
        if (this.#unreadable.has(file)) continue;
        this.#unreadable.add(file);
        this.#warn(
          `epoch record ${file} cannot be read (${(error as Error).message}): skipped, this ` +
            "node's history goes on from the record before it",
        );
      }
    }
    return records;
  }

  async last(): Promise<StoredEpoch | null> {
    return (await this.list())[0] ?? null;
  }

  async #readText(file: string): Promise<string> {
    const bytes = await readWholeFile(this.#disk, file);
    if (bytes === undefined) throw diskError("ENOENT", "open", file); // listed, then gone
    return new TextDecoder().decode(bytes);
  }
}

/** One record's text as a record; throws if it is not one. */
function parseRecord(text: string): StoredEpoch {
  let record: StoredEpoch;
  try {
    record = JSON.parse(text) as StoredEpoch;
  } catch {
    throw new Error("not an epoch record: not JSON"); // the parser's text quotes the garbage
  }
  if (
    typeof record !== "object" || record === null || !Number.isInteger(record.epoch) ||
    !Array.isArray(record.members)
  ) {
    throw new Error("not an epoch record");
  }
  return record;
}
