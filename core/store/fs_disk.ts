/**
 * `Disk` on the real file system (`node:fs/promises`).
 *
 * @module
 */

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import type { Disk, DiskFile, DiskSpace, DiskStat, OpenMode } from "./disk.ts";

class FsFile implements DiskFile {
  readonly #handle: fsp.FileHandle;

  constructor(handle: fsp.FileHandle) {
    this.#handle = handle;
  }

  async read(buffer: Uint8Array, position: number): Promise<number> {
    const { bytesRead } = await this.#handle.read(buffer, 0, buffer.length, position);
    return bytesRead;
  }

  async write(data: Uint8Array, position: number): Promise<number> {
    const { bytesWritten } = await this.#handle.write(data, 0, data.length, position);
    return bytesWritten;
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

/** Makes a rename durable: the directory entry itself must reach the disk. */
export async function syncDirectory(directory: string): Promise<void> {
  const handle = await fsp.open(directory, fs.constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
