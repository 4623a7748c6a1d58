/**
 * `Disk` on the real file system (`node:fs/promises`).
 *
 * Small reads and writes run on the calling thread (`pread`/`pwrite` straight away) while they
 * are fast, instead of in libuv's thread pool. Measured on the 2-core VM of BENCHMARKS.md, per
 * 4 KiB operation: page-cache hit 1.3 µs read / 9 µs write on the calling thread, against 40 µs
 * read / 45 µs write through the pool (its hand-off and wake-up cost more than the copy); a
 * page-cache miss on that disk 56 µs; a write while the kernel writes back the file 32-64 µs.
 * A slow operation blocks every other client meanwhile, so the operations go to the pool while
 * the mean inline time is above `SLOW_MS` (each sample capped at `SAMPLE_CAP_MS`, so the odd
 * time slice lost to another process on a loaded host does not count as a slow disk): a slow
 * disk (misses of a millisecond or more) hands over after about 15 ms of them, for a while
 * that doubles each time the next try on the calling thread turns out slow again. Durability is
 * the same either way: both only reach the page cache until a sync.
 *
 * @module
 */

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import {
  type Disk,
  type DiskFile,
  type DiskSpace,
  type DiskStat,
  type OpenMode,
  writeAll,
} from "./disk.ts";

/** Largest read or write done on the calling thread; bigger ones gain little from it. */
const INLINE_MAX_BYTES = 64 * 1024;
/**
 * Writes longer than this go to the kernel in pieces of this size. Linux 6.x (measured on 6.18,
 * ext4) caches a file in folios as large as the `pwrite` that created them, up to some MiB, and
 * every later small write into such a folio walks all of its buffer heads: a 4 KiB overwrite of
 * data written in 1 MiB pieces costs 17-33 µs of kernel time, of data written in 64 KiB pieces
 * 5 µs (BENCHMARKS.md, "4 KiB writes at QD32"). Virtual disks are written sequentially (an
 * install, an import, recovery) and then overwritten in 4 KiB blocks, so the sheep keeps its
 * folios small; 1 MiB reads and writes measured no slower.
 */
export const WRITE_PIECE_BYTES = 64 * 1024;
/** The mean inline time (ms) beyond which operations go to the pool. */
const SLOW_MS = 0.2;
/** One sample counts for at most this much (ms) in the mean. */
const SAMPLE_CAP_MS = 1;
/** Weight of the newest sample in the mean. */
const SAMPLE_WEIGHT = 1 / 64;
/** How long operations stay in the pool after a slow spell: doubled on each slow retry. */
const POOL_FIRST_MS = 1_000;
const POOL_MAX_MS = 60_000;
/** Inline operations after which a spell counts as a good one (the pool's while starts over). */
const GOOD_SPELL_OPS = 10_000;

/** Decides whether a small operation may run on the calling thread now. */
class InlineGovernor {
  /** Mean inline time, ms. */
  #mean = 0;
  /** Inline operations since the last switch back from the pool. */
  #ops = 0;
  /** Until when (performance.now()) operations go to the pool; 0: they do not. */
  #poolUntil = 0;
  #poolMs = POOL_FIRST_MS;

  allowed(bytes: number): boolean {
    if (bytes > INLINE_MAX_BYTES) return false;
    if (this.#poolUntil === 0) return true;
    if (performance.now() < this.#poolUntil) return false;
    this.#poolUntil = 0;
    this.#mean = 0;
    this.#ops = 0;
    return true;
  }

  /** Takes note of how long an inline operation that started at `start` took. */
  took(start: number): void {
    const sample = Math.min(performance.now() - start, SAMPLE_CAP_MS);
    this.#mean += (sample - this.#mean) * SAMPLE_WEIGHT;
    this.#ops++;
    if (this.#mean <= SLOW_MS) return;
    if (this.#ops >= GOOD_SPELL_OPS) this.#poolMs = POOL_FIRST_MS;
    this.#poolUntil = performance.now() + this.#poolMs;
    this.#poolMs = Math.min(this.#poolMs * 2, POOL_MAX_MS);
  }
}

/**
 * One for the process, on purpose: what it guards is the event loop's thread, which every sheep
 * in the process (in-process test clusters run several) and every client shares.
 */
const inline = new InlineGovernor();

class FsFile implements DiskFile {
  readonly #handle: fsp.FileHandle;

  constructor(handle: fsp.FileHandle) {
    this.#handle = handle;
  }

  readNow(buffer: Uint8Array, position: number): number | undefined {
    if (!inline.allowed(buffer.length)) return undefined;
    const start = performance.now();
    try {
      return fs.readSync(this.#handle.fd, buffer, 0, buffer.length, position);
    } finally {
      inline.took(start);
    }
  }

  read(buffer: Uint8Array, position: number): Promise<number> {
    let now: number | undefined;
    try {
      now = this.readNow(buffer, position);
    } catch (error) {
      return Promise.reject(error);
    }
    if (now !== undefined) return Promise.resolve(now);
    return this.#handle.read(buffer, 0, buffer.length, position).then((r) => r.bytesRead);
  }

  write(data: Uint8Array, position: number): Promise<number> {
    if (data.length > WRITE_PIECE_BYTES) return this.#writePieces(data, position);
    if (inline.allowed(data.length)) {
      const start = performance.now();
      try {
        return Promise.resolve(fs.writeSync(this.#handle.fd, data, 0, data.length, position));
      } catch (error) {
        return Promise.reject(error);
      } finally {
        inline.took(start);
      }
    }
    return this.#handle.write(data, 0, data.length, position).then((r) => r.bytesWritten);
  }

  /**
   * A long write as pieces of `WRITE_PIECE_BYTES`, each its own `pwrite`, all in the pool at once:
   * the kernel sizes the page-cache folios it creates after each `pwrite` (see the constant).
   * Returns the bytes written from `position` on without a gap.
   */
  #writePieces(data: Uint8Array, position: number): Promise<number> {
    // Callbacks, not the FileHandle's promises: a piece is one request to the pool, without a
    // promise and a turn of the microtask queue of its own (16 per MiB).
    const fd = this.#handle.fd;
    // Closed (fd -1): the handle's own write says so, as every other operation does (EBADF).
    if (fd < 0) {
      return this.#handle.write(data, 0, data.length, position).then((r) => r.bytesWritten);
    }
    const count = Math.ceil(data.length / WRITE_PIECE_BYTES);
    const written = new Array<number>(count);
    let pending = count;
    let failure: unknown;
    return new Promise((resolve, reject) => {
      const settle = () => {
        if (--pending > 0) return;
        // Settled, not failed fast: the buffer and the handle stay in use until every piece is done.
        if (failure !== undefined) return reject(failure);
        let total = 0;
        for (const bytes of written) {
          total += bytes;
          if (bytes < WRITE_PIECE_BYTES) break; // a short piece (or the last): a gap after it
        }
        resolve(total);
      };
      for (let i = 0; i < count; i++) {
        const at = i * WRITE_PIECE_BYTES;
        const length = Math.min(WRITE_PIECE_BYTES, data.length - at);
        fs.write(fd, data, at, length, position + at, (error, bytes) => {
          if (error) failure ??= error;
          else written[i] = bytes;
          settle();
        });
      }
    });
  }

  datasync(): Promise<void> {
    return this.#handle.datasync();
  }

  truncate(length: number): Promise<void> {
    return this.#handle.truncate(length);
  }

  async size(): Promise<number> {
    return (await this.#handle.stat()).size;
  }

  close(): Promise<void> {
    return this.#handle.close();
  }
}

/** The real file system. */
export const fsDisk: Disk = {
  async open(path: string, mode: OpenMode): Promise<DiskFile> {
    return new FsFile(await fsp.open(path, mode));
  },
  rename: (from, to) => fsp.rename(from, to),
  unlink: (path) => fsp.unlink(path),
  readdir: (directory) => fsp.readdir(directory),
  async mkdir(directory: string): Promise<void> {
    await fsp.mkdir(directory, { recursive: true });
  },
  syncDir: syncDirectory,
  async stat(path: string): Promise<DiskStat> {
    const stats = await fsp.stat(path);
    return { size: stats.size, allocatedBytes: stats.blocks * 512 };
  },
  async space(directory: string): Promise<DiskSpace> {
    const stats = await fsp.statfs(directory);
    return { totalBytes: stats.blocks * stats.bsize, freeBytes: stats.bavail * stats.bsize };
  },
};

/**
 * Replaces `file` with `data` so that a crash leaves the old or the new content, never a mix:
 * a temporary file written and synced, renamed over it, the directory synced. The one way the
 * sheep writes its small state files (config, epoch log, forgotten nodes); on `disk` (default
 * the real file system), so a test can put them on the simulated disk of a store.
 */
export async function writeFileDurably(
  file: string,
  data: string | Uint8Array,
  disk: Disk = fsDisk,
): Promise<void> {
  const temp = `${file}.tmp`;
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const handle = await disk.open(temp, "w+");
  try {
    try {
      await writeAll(handle, bytes, 0);
      await handle.datasync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    // A part written (ENOSPC half-way) would hold on to space the next try needs.
    await disk.unlink(temp).catch(() => undefined);
    throw error;
  }
  await disk.rename(temp, file);
  await disk.syncDir(path.dirname(file));
}

/** Makes a rename durable: the directory entry itself must reach the disk. */
export async function syncDirectory(directory: string): Promise<void> {
  const handle = await fsp.open(directory, fs.constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
