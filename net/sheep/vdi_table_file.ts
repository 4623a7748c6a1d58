/**
 * The VDI table a sheep knew, kept in its directory (`DIR/vdi-table`), so that at its next start
 * it knows the VDIs whose inodes it does not hold.
 *
 * A sheep rebuilds its table from its own inode copies at start and learns the rest from its
 * peers (net/sheep/DURABILITY.md). After a full stop whose last view lacked the only holders of
 * some inodes (copies=1 and a node stopped first, say), the nodes that come back first knew
 * those VDIs before the stop but not after: a create of such a name took the VDI's vid and, once
 * the holder was back, recovery replaced the VDI's inode with the new one, and with it the table
 * of every object it had written. With this file they still know them: the name is taken, the
 * vid is not reused, and an open says the copies are away, not that the VDI does not exist.
 *
 * The file is rewritten whole (`writeFileDurably`) shortly after the table takes in headers (an
 * event, a merge, a "found" event: the state machine's `remember-vdis`), and read at start beside the inodes, the newer header of a
 * vid winning (`compareHeaders`, as a merge). Each header is stored as it is in the inode, its
 * zero tail left out, with its block checksums: a file that fails them is not used at all, and
 * the sheep starts as it did before this file existed.
 *
 * @module
 */

import * as path from "node:path";
import { Buffer } from "node:buffer";
import { blockChecksums } from "../../core/store/block_checksum.ts";
import { type Disk, errorCode, readWholeFile } from "../../core/store/disk.ts";
import { fsDisk, writeFileDurably } from "../../core/store/fs_disk.ts";
import { trimTrailingZeros } from "../../core/bytes.ts";
import { CHECKSUM_BLOCK_BYTES, VDI_TABLE_WRITE_DELAY_MS } from "../../core/limits.ts";
import {
  decodeInodeHeader,
  encodeInodeHeader,
  INODE_HEADER_SIZE,
  type InodeHeader,
} from "../../core/vdi/inode.ts";

const MAGIC = "SDVT1\n";

export interface VdiTableFileOptions {
  disk?: Disk;
  /** The table as it is now: what a write due writes. */
  table: () => readonly InodeHeader[];
  /** Says, in one line, that a write failed. */
  warn: (line: string) => void;
  /** The clock writes are spaced by (ms; the sheep's, which a simulation runs on virtual time). */
  now?: () => number;
}

export class VdiTableFile {
  readonly #dir: string;
  readonly #file: string;
  readonly #disk: Disk;
  readonly #options: VdiTableFileOptions;
  /** Writes and removals of the file, one at a time, in order: a removal is never overtaken. */
  #ops: Promise<void> = Promise.resolve();
  /** The write due (at once, or `VDI_TABLE_WRITE_DELAY_MS` after the last): changes share it. */
  #due: ReturnType<typeof setTimeout> | undefined;
  /** When the last write started (`#now`). */
  #lastWriteMs = -Infinity;
  readonly #now: () => number;

  constructor(dir: string, options: VdiTableFileOptions) {
    this.#dir = dir;
    this.#file = path.join(dir, "vdi-table");
    this.#disk = options.disk ?? fsDisk;
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * The table changed: it is written off the event queue (the file helps the next start; no
   * event waits for it), at once unless a write started less than `VDI_TABLE_WRITE_DELAY_MS`
   * ago, then that long after it, the changes meanwhile sharing one write. A lone change is on
   * disk a sync later, not a delay later (a crash in between loses it); a burst is written once
   * per delay: written at each change, its sync queued behind each next create's own
   * (BENCHMARKS.md).
   */
  changed(): void {
    if (this.#due !== undefined) return;
    const wait = Math.max(0, this.#lastWriteMs + VDI_TABLE_WRITE_DELAY_MS - this.#now());
    this.#due = setTimeout(() => void this.#writeDue(), wait);
  }

  /**
   * Stops writing: a write still due is done if `flush` (a clean stop; a crash loses it), and
   * one under way ends first, so no next start writes the file beside it.
   */
  async close(flush: boolean): Promise<void> {
    if (this.#due !== undefined) {
      if (flush) await this.#writeDue();
      else clearTimeout(this.#due);
    }
    await this.#ops;
  }

  /** Writes `headers` (the whole table) in place of the file, durably. */
  async write(headers: readonly InodeHeader[]): Promise<void> {
    await writeFileDurably(this.#file, encodeTable(headers), this.#disk);
  }

  /** The headers the file holds; none if there is no file. Throws if it is not whole. */
  async read(): Promise<InodeHeader[]> {
    const bytes = await readWholeFile(this.#disk, this.#file);
    return bytes === undefined ? [] : decodeTable(bytes, this.#file);
  }

  /** Removes the file (a forced format forgets the VDIs), after any write under way. */
  remove(): Promise<void> {
    return this.#then(() =>
      this.#disk.unlink(this.#file).catch((error) => {
        if (errorCode(error) !== "ENOENT") throw error;
      })
    );
  }

  #writeDue(): Promise<void> {
    clearTimeout(this.#due);
    this.#due = undefined;
    this.#lastWriteMs = this.#now();
    return this.#then(() => this.write(this.#options.table())).catch((error) =>
      this.#options.warn(
        `cannot keep the VDI table in ${this.#dir}: ${(error as Error).message} (the next start ` +
          "learns the VDIs this node holds no inode of from its peers only)",
      )
    );
  }

  /** Runs `op` on the file after those before it. */
  #then(op: () => Promise<void>): Promise<void> {
    const run = this.#ops.then(op);
    this.#ops = run.catch(() => undefined);
    return run;
  }
}

/** The file's bytes: the magic, then per header its length, its bytes and their checksums. */
export function encodeTable(headers: readonly InodeHeader[]): Uint8Array {
  const parts: Uint8Array[] = [new TextEncoder().encode(MAGIC)];
  for (const header of headers) {
    const bytes = trimTrailingZeros(encodeInodeHeader(header));
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, bytes.length, true);
    const sums = blockChecksums(bytes);
    parts.push(length, bytes, new Uint8Array(sums.buffer, sums.byteOffset, sums.byteLength));
  }
  return new Uint8Array(Buffer.concat(parts));
}

/** Parses `encodeTable`'s bytes; throws, naming `file`, at the first thing that is not whole. */
export function decodeTable(bytes: Uint8Array, file: string): InodeHeader[] {
  const magic = new TextEncoder().encode(MAGIC);
  const bad = (what: string) => new Error(`${file}: ${what}; not used`);
  if (bytes.length < magic.length || magic.some((byte, i) => bytes[i] !== byte)) {
    throw bad("not a VDI table file");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headers: InodeHeader[] = [];
  for (let at = magic.length; at < bytes.length;) {
    if (at + 4 > bytes.length) throw bad(`cut short at byte ${at}`);
    const length = view.getUint32(at, true);
    const blocks = Math.ceil(length / CHECKSUM_BLOCK_BYTES);
    const end = at + 4 + length + 4 * blocks;
    if (length === 0 || length > INODE_HEADER_SIZE) {
      throw bad(`a header of ${length} bytes at byte ${at}`);
    }
    if (end > bytes.length) {
      throw bad(`cut short: the header at byte ${at} ends past byte ${bytes.length}`);
    }
    const body = bytes.subarray(at + 4, at + 4 + length);
    const sums = blockChecksums(body);
    for (let i = 0; i < blocks; i++) {
      if (view.getUint32(at + 4 + length + 4 * i, true) !== sums[i]) {
        throw bad(`the header at byte ${at} fails its checksum`);
      }
    }
    const whole = new Uint8Array(INODE_HEADER_SIZE);
    whole.set(body);
    const header = decodeInodeHeader(whole);
    if (header.vdiId === 0) throw bad(`the header at byte ${at} names vid 0`);
    headers.push(header);
    at = end;
  }
  return headers;
}
