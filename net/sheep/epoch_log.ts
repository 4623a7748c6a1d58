/**
 * The epoch log: every installed view, one file per epoch under `DIR/epoch/` (Sheepdog's
 * `epoch/%08u`), written durably before the view is acted on. Restart reads the last record.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import * as path from "node:path";
import type { EpochRecord } from "../group/mod.ts";
import { writeFileDurably } from "../../core/store/fs_disk.ts";

/** A record as stored: the view plus when it was installed. */
export interface StoredEpoch extends EpochRecord {
  readonly timeMs: number;
}

export class EpochLog {
  readonly dir: string;

  constructor(baseDir: string) {
    this.dir = path.join(baseDir, "epoch");
  }

  /** Appends records durably (temp, sync, rename, directory sync). */
  async append(records: readonly EpochRecord[], nowMs: number): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
    for (const record of records) {
      const file = path.join(this.dir, String(record.epoch).padStart(8, "0"));
      await writeFileDurably(file, JSON.stringify({ ...record, timeMs: nowMs }));
    }
  }

  /** Every record, newest first; unreadable files are skipped. */
  async list(): Promise<StoredEpoch[]> {
    const names = await fsp.readdir(this.dir).catch(() => [] as string[]);
    const records: StoredEpoch[] = [];
    for (const name of names.filter((n) => /^\d{8}$/.test(n)).sort().reverse()) {
      try {
        records.push(
          JSON.parse(await fsp.readFile(path.join(this.dir, name), "utf8")) as StoredEpoch,
        );
      } catch {
        // A torn file cannot be the last durable record: the rename makes writes atomic.
      }
    }
    return records;
  }

  async last(): Promise<StoredEpoch | null> {
    return (await this.list())[0] ?? null;
  }
}
