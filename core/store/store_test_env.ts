/**
 * Test helpers: a store on the real file system (a temp dir) or on a MemDisk, and ways to damage
 * it from outside, so one test body runs on both.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { CorruptionError, ResultCode, SheepdogError } from "../errors.ts";
import type { BlockHasher } from "./block_hasher.ts";
import { type Disk, readFully } from "./disk.ts";
import { fsDisk } from "./fs_disk.ts";
import { FsObjectStore } from "./fs_object_store.ts";
import { MemDisk } from "./mem_disk.ts";

/** A store with its directory and disk, and a way to start it again on the same disk. */
export interface StoreEnv {
  kind: "fs" | "mem";
  disk: Disk;
  dir: string;
  store: FsObjectStore;
  /** Closes the store and opens a new one on the same directory. */
  reopen(): Promise<FsObjectStore>;
  /** Flips every bit of one byte of a file, on disk. */
  flip(file: string, offset: number): Promise<void>;
}

export const KINDS = ["fs", "mem"] as const;

/**
 * Runs `fn` with a fresh opened store of `kind`, cleaning up after; each store (the first and
 * each reopened one) computes checksums with a new `hasher()` if given, else inline.
 */
export async function withEnv(
  kind: "fs" | "mem",
  fn: (env: StoreEnv) => Promise<void>,
  options: { hasher?: () => BlockHasher } = {},
): Promise<void> {
  const storeOptions = () => options.hasher ? { hasher: options.hasher() } : {};
  const root = kind === "fs" ? await fsp.mkdtemp(path.join(os.tmpdir(), "sd-store-")) : "/sd";
  const disk: Disk = kind === "fs" ? fsDisk : new MemDisk();
  const dir = path.join(root, "obj");
  const env: StoreEnv = {
    kind,
    disk,
    dir,
    store: new FsObjectStore(dir, disk, storeOptions()),
    async reopen() {
      await env.store.close();
      env.store = new FsObjectStore(dir, disk, storeOptions());
      await env.store.open();
      return env.store;
    },
    async flip(file, offset) {
      if (disk instanceof MemDisk) return disk.rot(path.join(dir, file), offset);
      const handle = await fsp.open(path.join(dir, file), "r+");
      const byte = new Uint8Array(1);
      await handle.read(byte, 0, 1, offset);
      byte[0]! ^= 0xff;
      await handle.write(byte, 0, 1, offset);
      await handle.close();
    },
  };
  await env.store.open();
  try {
    await fn(env);
  } finally {
    await env.store.close();
    if (kind === "fs") await fsp.rm(root, { recursive: true, force: true });
  }
}

/** The whole content of a file on `disk`. */
export async function fileBytes(disk: Disk, file: string): Promise<Uint8Array> {
  const handle = await disk.open(file, "r+");
  try {
    const bytes = new Uint8Array(await handle.size());
    await readFully(handle, bytes, 0);
    return bytes;
  } finally {
    await handle.close();
  }
}

/** Sets a file's length on disk (durably). */
export async function truncateFile(disk: Disk, file: string, length: number): Promise<void> {
  const handle = await disk.open(file, "r+");
  await handle.truncate(length);
  await handle.datasync();
  await handle.close();
}

/** A predicate for assert.rejects: a SheepdogError with `code` whose message matches. */
export function isError(code: number, pattern?: RegExp): (error: unknown) => boolean {
  return (error) =>
    error instanceof SheepdogError && error.code === code &&
    (pattern === undefined || pattern.test(error.message));
}

/** A predicate for assert.rejects: corruption of `oid` (blocks, when given) matching `pattern`. */
export function isCorrupt(
  oid: bigint,
  pattern: RegExp,
  blocks?: number[],
): (error: unknown) => boolean {
  return (error) =>
    error instanceof CorruptionError && error.code === ResultCode.EIO && error.oid === oid &&
    pattern.test(error.message) &&
    (blocks === undefined || JSON.stringify(error.blocks) === JSON.stringify(blocks));
}

/** Deterministic pseudo-random bytes. */
export function patternBytes(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return bytes;
}
