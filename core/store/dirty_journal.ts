/**
 * The crash-detection journal: a file in the object directory listing every object that may hold
 * writes which were never synced. An object's entry is durable before its first unsynced write
 * is issued, so after a crash the store knows exactly which objects the crash may have left
 * half-written (see FsObjectStore's module doc for why this design).
 *
 * Entries are lines `<16 hex digits> <epoch>`: the object and the cluster epoch its entry was made
 * in (a lower bound of the epoch of its first unsynced write: recovery asks which nodes held the
 * object since then, see net/sheep/crash_holds.ts). Lines of older builds have no epoch (read as 0,
 * unknown). They are appended positionally and synced; appends that arrive while a sync runs share
 * the next one (group commit), so a burst of first-writes costs one sync.
 * The journal is rewritten (temp file, sync, rename, directory sync) to drop objects that have
 * been synced since. A torn append leaves a fragment that does not parse and is ignored.
 *
 * @module
 */

import * as path from "node:path";
import { ResultCode, SheepdogError } from "../errors.ts";
import { type Oid, oidFromHex, oidToHex } from "../vdi/oid.ts";
import { type Disk, type DiskFile, errorCode, readWholeFile, writeAll } from "./disk.ts";

interface Batch {
  entries: [Oid, number][];
  done: Promise<void>;
}

/** An entry: an oid, then (since entries carry one) a space and the epoch it was made in. */
const ENTRY = /([0-9a-f]{16})(?: (\d{1,15}))?\n/g;

/** Journaled objects, each with the epoch of its entry (0: unknown, an older build's line). */
export type JournalEntries = ReadonlyMap<Oid, number>;

/** The journal file of one object directory. */
export class DirtyJournal {
  readonly #disk: Disk;
  readonly #path: string;
  #file?: DiskFile;
  #end = 0;
  /** Oids with an entry in the current file: the promise resolves once it is durable. */
  #entries = new Map<Oid, Promise<void>>();
  /** The epoch each entry of the current file carries. */
  #epochs = new Map<Oid, number>();
  #batch?: Batch;
  /** The last queued append or rewrite; jobs run one at a time, in order. */
  #tail: Promise<void> = Promise.resolve();

  constructor(disk: Disk, journalPath: string) {
    this.#disk = disk;
    this.#path = journalPath;
  }

  /**
   * The oids an existing journal lists (none when there is no journal), each with the earliest
   * epoch its entries carry.
   */
  static async read(disk: Disk, journalPath: string): Promise<Map<Oid, number>> {
    const bytes = await readWholeFile(disk, journalPath);
    const entries = new Map<Oid, number>();
    if (!bytes) return entries;
    for (const match of new TextDecoder("latin1").decode(bytes).matchAll(ENTRY)) {
      const oid = oidFromHex(match[1]!)!;
      const epoch = Number(match[2] ?? 0);
      entries.set(oid, Math.min(epoch, entries.get(oid) ?? epoch));
    }
    return entries;
  }

  /**
   * Resolves once `oid` has a durable entry (at once when it already has one: its epoch stays
   * the earlier one, still a lower bound).
   */
  add(oid: Oid, epoch: number): Promise<void> {
    const known = this.#entries.get(oid);
    if (known) return known;
    let batch = this.#batch;
    if (!batch) {
      const entries: [Oid, number][] = [];
      const done = this.#tail.catch(() => undefined).then(() => {
        // Appends that come while this one runs go to the next batch.
        if (this.#batch?.entries === entries) this.#batch = undefined;
        return this.#append(entries);
      });
      batch = { entries, done };
      this.#batch = batch;
      this.#tail = done;
    }
    batch.entries.push([oid, epoch]);
    this.#track(oid, epoch, batch.done);
    return batch.done;
  }

  /** The epoch of `oid`'s entry, if it has one. */
  epochOf(oid: Oid): number | undefined {
    return this.#epochs.get(oid);
  }

  /** How many objects the journal lists. */
  get size(): number {
    return this.#entries.size;
  }

  /** True when the journal lists an object that `stillDirty` says no longer needs it. */
  hasStale(stillDirty: (oid: Oid) => boolean): boolean {
    for (const oid of this.#entries.keys()) if (!stillDirty(oid)) return true;
    return false;
  }

  /**
   * Replaces the journal with one listing only `keep`, each with the epoch given (or its entry's
   * now, else 0). The list is taken now, synchronously, and later `add`s wait for the new file, so
   * no object's entry is lost in the swap.
   */
  rewrite(keep: Iterable<Oid> | JournalEntries): Promise<void> {
    const entries: [Oid, number][] = keep instanceof Map
      ? [...keep]
      : [...keep as Iterable<Oid>].map((oid) => [oid, this.#epochs.get(oid) ?? 0]);
    this.#batch = undefined;
    this.#entries = new Map();
    this.#epochs = new Map();
    const done = this.#tail.catch(() => undefined).then(() => this.#replace(entries));
    this.#tail = done;
    for (const [oid, epoch] of entries) this.#track(oid, epoch, done);
    return done;
  }

  /**
   * Goes on with the journal file as it is, listing `oids` (what `read` returned): when it cannot
   * be rewritten (a full disk), its entries stay, which costs only re-checks after a crash.
   */
  async reopen(entries: JournalEntries): Promise<void> {
    await this.#tail.catch(() => undefined);
    const file = await this.#disk.open(this.#path, "r+").catch(async (error) => {
      if (errorCode(error) !== "ENOENT") throw error;
      return await this.#disk.open(this.#path, "wx+");
    });
    await this.#file?.close().catch(() => undefined);
    this.#file = file;
    this.#end = await file.size();
    this.#batch = undefined;
    this.#entries = new Map();
    this.#epochs = new Map(entries);
    for (const oid of entries.keys()) this.#entries.set(oid, Promise.resolve());
  }

  async close(): Promise<void> {
    await this.#tail.catch(() => undefined);
    await this.#file?.close().catch(() => undefined);
    this.#file = undefined;
  }

  #track(oid: Oid, epoch: number, done: Promise<void>): void {
    this.#entries.set(oid, done);
    this.#epochs.set(oid, epoch);
    // A failed append or rewrite leaves no entry: the next write tries again.
    done.catch(() => {
      if (this.#entries.get(oid) !== done) return;
      this.#entries.delete(oid);
      this.#epochs.delete(oid);
    });
  }

  async #append(entries: [Oid, number][]): Promise<void> {
    const file = this.#file;
    if (!file) {
      throw new SheepdogError(ResultCode.EIO, `The journal ${this.#path} is not open: call open()`);
    }
    const bytes = encode(entries);
    const at = this.#end;
    // Past a failed append too, so a fragment it left never prefixes the next entry.
    this.#end += bytes.length;
    await writeAll(file, bytes, at);
    await file.datasync();
  }

  async #replace(entries: [Oid, number][]): Promise<void> {
    const temp = `${this.#path}.tmp`;
    const bytes = encode(entries);
    const file = await this.#disk.open(temp, "w+");
    try {
      await writeAll(file, bytes, 0);
      await file.datasync();
      await this.#disk.rename(temp, this.#path);
      await this.#disk.syncDir(path.dirname(this.#path));
    } catch (error) {
      await file.close().catch(() => undefined);
      throw error;
    }
    await this.#file?.close().catch(() => undefined);
    this.#file = file;
    this.#end = bytes.length;
  }
}

function encode(entries: [Oid, number][]): Uint8Array {
  return new TextEncoder().encode(
    entries.map(([oid, epoch]) => `${oidToHex(oid)} ${epoch}\n`).join(""),
  );
}
