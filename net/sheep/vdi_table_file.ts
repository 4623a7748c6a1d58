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
 * The file is rewritten whole (`writeFileDurably`) whenever the table takes in headers (an
 * event, a merge, a "found" event), and read at start beside the inodes, the newer header of a
 * vid winning (`compareHeaders`, as a merge). Each header is stored as it is in the inode, its
 * zero tail left out, with its block checksums: a file that fails them is not used at all, and
 * the sheep starts as it did before this file existed.
 *
 * @module
 */

import * as path from "node:path";
import { Buffer } from "node:buffer";
import { blockChecksums } from "../../core/store/block_checksum.ts";
import type { Disk } from "../../core/store/disk.ts";
import { fsDisk, writeFileDurably } from "../../core/store/fs_disk.ts";
import { trimTrailingZeros } from "../../core/bytes.ts";
import { CHECKSUM_BLOCK_BYTES } from "../../core/limits.ts";
import {
  decodeInodeHeader,
  encodeInodeHeader,
  INODE_HEADER_SIZE,
  type InodeHeader,
} from "../../core/vdi/inode.ts";

const MAGIC = "SDVT1\n";

export class VdiTableFile {
  readonly #file: string;
  readonly #disk: Disk;

  constructor(dir: string, disk: Disk = fsDisk) {
    this.#file = path.join(dir, "vdi-table");
    this.#disk = disk;
  }

  /** Writes `headers` (the whole table) in place of the file, durably. */
  async write(headers: readonly InodeHeader[]): Promise<void> {
    await writeFileDurably(this.#file, encodeTable(headers), this.#disk);
  }

  /** The headers the file holds; none if there is no file. Throws if it is not whole. */
  async read(): Promise<InodeHeader[]> {
    let handle;
    try {
      handle = await this.#disk.open(this.#file, "r");
    } catch (error) {
      if ((error as { code?: string }).code === "ENOENT") return [];
      throw error;
    }
    try {
      const bytes = new Uint8Array(await handle.size());
      let at = 0;
      while (at < bytes.length) {
        const read = await handle.read(bytes.subarray(at), at);
        if (read === 0) break;
        at += read;
      }
      return decodeTable(bytes.subarray(0, at), this.#file);
    } finally {
      await handle.close();
    }
  }

  /** Removes the file (a forced format forgets the VDIs). */
  async remove(): Promise<void> {
    await this.#disk.unlink(this.#file).catch((error) => {
      if ((error as { code?: string }).code !== "ENOENT") throw error;
    });
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
