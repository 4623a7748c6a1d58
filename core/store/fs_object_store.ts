/**
 * `ObjectStore` on a local file system: one file per object under `DIR/obj/`, named by the oid in
 * 16 lowercase hex digits (Sheepdog's "plain" store). Creates go through a temporary file, a data
 * sync, a rename and a directory sync. Writes are positional (pwrite), never a read-modify-write
 * of the object; files are sparse, so unwritten ranges take no space and read as zeros.
 *
 * @module
 */

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { OPEN_FILES_MAX } from "../limits.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import { type Oid, oidFromHex, oidToHex } from "../vdi/oid.ts";
import type { ObjectStore, StoreSpace } from "./object_store.ts";

/** Maps a file system error to a Sheepdog operating error naming what failed. */
function storeError(error: unknown, action: string): SheepdogError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new SheepdogError(ResultCode.NO_OBJ, `${action}: no such object`);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new SheepdogError(ResultCode.NO_SPACE, `${action}: the disk is full`, { cause: error });
  }
  const text = error instanceof Error ? error.message : String(error);
  return new SheepdogError(ResultCode.EIO, `${action}: ${text}`, { cause: error });
}

/** Objects as files under `objectDir`. */
export class FsObjectStore implements ObjectStore {
  readonly objectDir: string;
  #handles = new Map<Oid, Promise<fsp.FileHandle>>(); // insertion order = LRU order
  #dirty = new Set<Oid>();
  #tempCounter = 0;

  constructor(objectDir: string) {
    this.objectDir = objectDir;
  }

  /** Creates the object directory and removes temporary files a crash left behind. */
  async open(): Promise<void> {
    await fsp.mkdir(this.objectDir, { recursive: true });
    for (const name of await fsp.readdir(this.objectDir)) {
      if (name.endsWith(".tmp")) await fsp.rm(path.join(this.objectDir, name), { force: true });
    }
  }

  #path(oid: Oid): string {
    return path.join(this.objectDir, oidToHex(oid));
  }

  async #handle(oid: Oid): Promise<fsp.FileHandle> {
    const cached = this.#handles.get(oid);
    if (cached) {
      this.#handles.delete(oid);
      this.#handles.set(oid, cached);
      return cached;
    }
    const opening = fsp.open(this.#path(oid), "r+");
    this.#handles.set(oid, opening);
    opening.catch(() => this.#handles.delete(oid));
    await this.#evictBeyondLimit();
    return opening;
  }

  async #evictBeyondLimit(): Promise<void> {
    while (this.#handles.size > OPEN_FILES_MAX) {
      const [oldest, handle] = this.#handles.entries().next().value!;
      this.#handles.delete(oldest);
      const file = await handle.catch(() => undefined);
      if (!file) continue;
      // A dirty file is synced before its handle goes, so `flush` never misses it.
      if (this.#dirty.delete(oldest)) await file.datasync().catch(() => undefined);
      await file.close().catch(() => undefined);
    }
  }

  async #dropHandle(oid: Oid): Promise<void> {
    const handle = this.#handles.get(oid);
    if (!handle) return;
    this.#handles.delete(oid);
    this.#dirty.delete(oid);
    const file = await handle.catch(() => undefined);
    await file?.close().catch(() => undefined);
  }

  async create(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    const action = `Cannot create object ${oidToHex(oid)}`;
    const temp = `${this.#path(oid)}.${process.pid}.${this.#tempCounter++}.tmp`;
    try {
      const file = await fsp.open(temp, "wx");
      try {
        await writeAll(file, data, offset);
        await file.datasync();
      } finally {
        await file.close();
      }
      await this.#dropHandle(oid);
      await fsp.rename(temp, this.#path(oid));
      await syncDirectory(this.objectDir);
    } catch (error) {
      await fsp.rm(temp, { force: true }).catch(() => undefined);
      throw storeError(error, action);
    }
  }

  async write(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    try {
      const file = await this.#handle(oid);
      await writeAll(file, data, offset);
      this.#dirty.add(oid);
    } catch (error) {
      throw storeError(error, `Cannot write object ${oidToHex(oid)}`);
    }
  }

  async read(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    try {
      const file = await this.#handle(oid);
      const buffer = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await file.read(buffer, done, length - done, offset + done);
        if (bytesRead === 0) break; // Past the end of a sparse object: the rest stays zero.
        done += bytesRead;
      }
      return buffer;
    } catch (error) {
      throw storeError(error, `Cannot read object ${oidToHex(oid)}`);
    }
  }

  async exists(oid: Oid): Promise<boolean> {
    if (this.#handles.has(oid)) return true;
    try {
      await fsp.access(this.#path(oid));
      return true;
    } catch {
      return false;
    }
  }

  async remove(oid: Oid): Promise<void> {
    await this.#dropHandle(oid);
    try {
      await fsp.rm(this.#path(oid), { force: true });
    } catch (error) {
      throw storeError(error, `Cannot remove object ${oidToHex(oid)}`);
    }
  }

  async list(): Promise<Oid[]> {
    const oids: Oid[] = [];
    for (const name of await fsp.readdir(this.objectDir)) {
      const oid = oidFromHex(name);
      if (oid !== undefined) oids.push(oid);
    }
    return oids;
  }

  async flush(): Promise<void> {
    const dirty = [...this.#dirty];
    this.#dirty.clear();
    await Promise.all(dirty.map(async (oid) => {
      const handle = this.#handles.get(oid);
      if (!handle) return; // Evicted handles were synced on eviction.
      try {
        await (await handle).datasync();
      } catch (error) {
        this.#dirty.add(oid);
        throw storeError(error, `Cannot sync object ${oidToHex(oid)}`);
      }
    }));
  }

  async space(): Promise<StoreSpace> {
    const stats = await fsp.statfs(this.objectDir);
    const totalBytes = stats.blocks * stats.bsize;
    const freeBytes = stats.bavail * stats.bsize;
    let usedBytes = 0;
    for (const name of await fsp.readdir(this.objectDir)) {
      if (oidFromHex(name) === undefined) continue;
      const stat = await fsp.stat(path.join(this.objectDir, name)).catch(() => undefined);
      usedBytes += stat ? stat.blocks * 512 : 0;
    }
    return { usedBytes, freeBytes, totalBytes };
  }

  async close(): Promise<void> {
    await this.flush().catch(() => undefined);
    const handles = [...this.#handles.values()];
    this.#handles.clear();
    for (const handle of handles) {
      const file = await handle.catch(() => undefined);
      await file?.close().catch(() => undefined);
    }
  }
}

async function writeAll(file: fsp.FileHandle, data: Uint8Array, offset: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await file.write(data, done, data.length - done, offset + done);
    done += bytesWritten;
  }
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
