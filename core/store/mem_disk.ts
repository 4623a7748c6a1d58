/**
 * A deterministic in-memory `Disk` that is honest about durability, for tests and seeded
 * simulations of the store.
 *
 * Every file has a durable image and a list of pending (unsynced) writes and truncates applied to
 * a current image that reads see, as a page cache would. `datasync` makes a file's pending writes
 * durable. Creates, renames and unlinks change the current namespace at once but reach the durable
 * one only when their directory is synced (`mkdir` is durable at once: the store makes its
 * directory once). `crash()` forgets everything unsynced; `crash(random)` first lets a random
 * subset of each file's pending writes reach the disk, in order, one of them torn at a 512-byte
 * sector boundary, and a random prefix of each directory's pending entries, as a journaling file
 * system would. Only `random` decides, so a seed replays a crash exactly.
 *
 * `attach()` gives one life of the disk's owner its own view of it, dead after the next crash.
 *
 * Faults: `rot` flips a stored byte, `failNextSync` makes one sync fail the way Linux does (EIO,
 * and the pending writes are dropped without reaching the disk while reads still see them),
 * `failReads` makes reads of a file fail with EIO, `setCapacity` makes writes that need more
 * space fail with ENOSPC, after writing the part that fits.
 *
 * @module
 */

import * as posix from "node:path/posix";
import { assert } from "../assert.ts";
import {
  type Disk,
  diskError,
  type DiskFile,
  type DiskSpace,
  type DiskStat,
  type OpenMode,
} from "./disk.ts";

const PAGE_BYTES = 4096;
const SECTOR_BYTES = 512;
/** Reported as the total size when no capacity is set. */
const UNLIMITED_BYTES = 2 ** 40;

/** File contents kept as 4 KiB pages; a missing page reads as zeros (a sparse file). */
class SparseBytes {
  length = 0;
  pages = new Map<number, Uint8Array>();

  clone(): SparseBytes {
    const copy = new SparseBytes();
    copy.length = this.length;
    for (const [index, page] of this.pages) copy.pages.set(index, page.slice());
    return copy;
  }

  read(buffer: Uint8Array, position: number): number {
    const count = Math.max(0, Math.min(buffer.length, this.length - position));
    buffer.fill(0, 0, count);
    for (let done = 0; done < count;) {
      const at = position + done;
      const inPage = at % PAGE_BYTES;
      const chunk = Math.min(count - done, PAGE_BYTES - inPage);
      const page = this.pages.get(Math.floor(at / PAGE_BYTES));
      if (page) buffer.set(page.subarray(inPage, inPage + chunk), done);
      done += chunk;
    }
    return count;
  }

  write(data: Uint8Array, position: number): void {
    for (let done = 0; done < data.length;) {
      const at = position + done;
      const inPage = at % PAGE_BYTES;
      const chunk = Math.min(data.length - done, PAGE_BYTES - inPage);
      this.#page(Math.floor(at / PAGE_BYTES)).set(data.subarray(done, done + chunk), inPage);
      done += chunk;
    }
    this.length = Math.max(this.length, position + data.length);
  }

  truncate(length: number): void {
    for (const index of [...this.pages.keys()]) {
      if (index * PAGE_BYTES >= length) this.pages.delete(index);
    }
    const tail = this.pages.get(Math.floor(length / PAGE_BYTES));
    tail?.fill(0, length % PAGE_BYTES);
    this.length = length;
  }

  /** Pages a write of `length` bytes at `position` would add. */
  newPages(position: number, length: number): number {
    let count = 0;
    const last = Math.floor((position + length - 1) / PAGE_BYTES);
    for (let index = Math.floor(position / PAGE_BYTES); index <= last; index++) {
      if (!this.pages.has(index)) count++;
    }
    return count;
  }

  flip(offset: number): void {
    const page = this.#page(Math.floor(offset / PAGE_BYTES));
    page[offset % PAGE_BYTES]! ^= 0xff;
  }

  #page(index: number): Uint8Array {
    let page = this.pages.get(index);
    if (!page) this.pages.set(index, page = new Uint8Array(PAGE_BYTES));
    return page;
  }
}

type FileOp =
  | { kind: "write"; position: number; data: Uint8Array }
  | { kind: "truncate"; length: number };

interface Inode {
  durable: SparseBytes;
  current: SparseBytes;
  pending: FileOp[];
  failReads: boolean;
}

type NameOp =
  | { kind: "link"; path: string; inode: Inode }
  | { kind: "unlink"; path: string }
  | { kind: "rename"; from: string; to: string };

class MemFile implements DiskFile {
  readonly #disk: MemDisk;
  readonly #inode: Inode;
  readonly #path: string;
  readonly #generation: number;
  #closed = false;

  constructor(disk: MemDisk, inode: Inode, path: string, generation: number) {
    this.#disk = disk;
    this.#inode = inode;
    this.#path = path;
    this.#generation = generation;
  }

  #check(syscall: string): Inode {
    // After a crash, handles opened before it are dead, like a process that did not survive.
    if (this.#closed || this.#disk.generation !== this.#generation) {
      throw diskError("EBADF", syscall, this.#path);
    }
    return this.#inode;
  }

  read(buffer: Uint8Array, position: number): Promise<number> {
    return attempt(() => this.readNow(buffer, position));
  }

  /** Memory always reads at once: the store's calling-thread path runs in simulations too. */
  readNow(buffer: Uint8Array, position: number): number {
    const inode = this.#check("read");
    if (inode.failReads) throw diskError("EIO", "read", this.#path);
    return inode.current.read(buffer, position);
  }

  write(data: Uint8Array, position: number): Promise<number> {
    return attempt(() => this.#disk.writeTo(this.#check("write"), data, position, this.#path));
  }

  datasync(): Promise<void> {
    return attempt(() => this.#disk.syncFile(this.#check("fdatasync"), this.#path));
  }

  truncate(length: number): Promise<void> {
    return attempt(() => {
      const inode = this.#check("ftruncate");
      inode.current.truncate(length);
      inode.pending.push({ kind: "truncate", length });
    });
  }

  size(): Promise<number> {
    return attempt(() => this.#check("fstat").current.length);
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}

/** The simulated disk. */
export class MemDisk implements Disk {
  /** Bumped by every crash; handles from an older generation fail with EBADF. */
  generation = 0;
  #current = new Map<string, Inode>();
  #durable = new Map<string, Inode>();
  #directoryOps = new Map<string, NameOp[]>();
  #directories = new Set<string>(["/"]);
  #capacity = Infinity;
  #failSync?: { path?: string };

  open(path: string, mode: OpenMode): Promise<DiskFile> {
    return attempt(() => this.#open(posix.normalize(path), mode));
  }

  #open(path: string, mode: OpenMode): DiskFile {
    let inode = this.#current.get(path);
    if (inode && mode === "wx+") throw diskError("EEXIST", "open", path);
    if (!inode && (mode === "r" || mode === "r+")) throw diskError("ENOENT", "open", path);
    if (inode && mode === "w+") {
      inode.current.truncate(0);
      inode.pending.push({ kind: "truncate", length: 0 });
    }
    if (!inode) {
      if (!this.#directories.has(posix.dirname(path))) throw diskError("ENOENT", "open", path);
      inode = {
        durable: new SparseBytes(),
        current: new SparseBytes(),
        pending: [],
        failReads: false,
      };
      this.#current.set(path, inode);
      this.#nameOp(path, { kind: "link", path, inode });
    }
    return new MemFile(this, inode, path, this.generation);
  }

  rename(from: string, to: string): Promise<void> {
    [from, to] = [posix.normalize(from), posix.normalize(to)];
    const inode = this.#current.get(from);
    if (!inode) return Promise.reject(diskError("ENOENT", "rename", from));
    assert(posix.dirname(from) === posix.dirname(to), "MemDisk renames within a directory");
    this.#current.delete(from);
    this.#current.set(to, inode);
    this.#nameOp(to, { kind: "rename", from, to });
    return Promise.resolve();
  }

  unlink(path: string): Promise<void> {
    path = posix.normalize(path);
    if (!this.#current.delete(path)) return Promise.reject(diskError("ENOENT", "unlink", path));
    this.#nameOp(path, { kind: "unlink", path });
    return Promise.resolve();
  }

  readdir(directory: string): Promise<string[]> {
    directory = posix.normalize(directory);
    if (!this.#directories.has(directory)) {
      return Promise.reject(diskError("ENOENT", "scandir", directory));
    }
    const names = [...this.#current.keys()].filter((path) => posix.dirname(path) === directory);
    return Promise.resolve(names.map((path) => posix.basename(path)).sort());
  }

  mkdir(directory: string): Promise<void> {
    for (let at = posix.normalize(directory); at !== "/"; at = posix.dirname(at)) {
      this.#directories.add(at);
    }
    return Promise.resolve();
  }

  syncDir(directory: string): Promise<void> {
    directory = posix.normalize(directory);
    const ops = this.#directoryOps.get(directory) ?? [];
    this.#directoryOps.delete(directory);
    if (this.#takeSyncFailure(directory)) {
      return Promise.reject(diskError("EIO", "fsync", directory));
    }
    for (const op of ops) this.#applyNameOp(op);
    return Promise.resolve();
  }

  stat(path: string): Promise<DiskStat> {
    const inode = this.#current.get(posix.normalize(path));
    if (!inode) return Promise.reject(diskError("ENOENT", "stat", path));
    const { length, pages } = inode.current;
    return Promise.resolve({ size: length, allocatedBytes: pages.size * PAGE_BYTES });
  }

  space(_directory: string): Promise<DiskSpace> {
    const total = this.#capacity === Infinity ? UNLIMITED_BYTES : this.#capacity;
    return Promise.resolve({
      totalBytes: total,
      freeBytes: Math.max(0, total - this.#usedBytes()),
    });
  }

  /** Applies a write to a file's current image, as much as fits (see `setCapacity`). */
  writeTo(inode: Inode, data: Uint8Array, position: number, path: string): number {
    let fits = data.length;
    if (this.#capacity !== Infinity) {
      let freePages = Math.floor((this.#capacity - this.#usedBytes()) / PAGE_BYTES);
      fits = 0;
      while (fits < data.length) {
        const at = position + fits;
        const chunk = Math.min(data.length - fits, PAGE_BYTES - (at % PAGE_BYTES));
        const needs = inode.current.newPages(at, chunk);
        if (needs > freePages) break;
        freePages -= needs;
        fits += chunk;
      }
      if (fits === 0 && data.length > 0) throw diskError("ENOSPC", "write", path);
    }
    const written = data.slice(0, fits);
    inode.current.write(written, position);
    inode.pending.push({ kind: "write", position, data: written });
    return fits;
  }

  /** Makes a file's pending writes durable, or fails as Linux does (see the module doc). */
  syncFile(inode: Inode, path: string): void {
    const pending = inode.pending;
    inode.pending = [];
    if (this.#takeSyncFailure(path, inode)) throw diskError("EIO", "fdatasync", path);
    for (const op of pending) applyFileOp(inode.durable, op);
  }

  /**
   * The disk as one life of its owner sees it: every call through the returned `Disk` fails with
   * EIO once this disk has crashed, so a process that did not survive the crash (a sheep being
   * torn down after it, whose store flushes on close) can neither make anything durable nor
   * change the namespace. Files it opened are dead already (EBADF); this covers new calls.
   */
  attach(): Disk {
    const generation = this.generation;
    const live = (syscall: string, path: string): void => {
      if (this.generation !== generation) throw diskError("EIO", syscall, path);
    };
    const guarded = <T>(syscall: string, path: string, call: () => Promise<T>): Promise<T> => {
      try {
        live(syscall, path);
      } catch (error) {
        return Promise.reject(error);
      }
      return call();
    };
    return {
      open: (path, mode) => guarded("open", path, () => this.open(path, mode)),
      rename: (from, to) => guarded("rename", from, () => this.rename(from, to)),
      unlink: (path) => guarded("unlink", path, () => this.unlink(path)),
      readdir: (directory) => guarded("scandir", directory, () => this.readdir(directory)),
      mkdir: (directory) => guarded("mkdir", directory, () => this.mkdir(directory)),
      syncDir: (directory) => guarded("fsync", directory, () => this.syncDir(directory)),
      stat: (path) => guarded("stat", path, () => this.stat(path)),
      space: (directory) => guarded("statfs", directory, () => this.space(directory)),
    };
  }

  /**
   * Loses everything unsynced; with `random`, lets a random part of it through (module doc);
   * with `reached`, every pending write of the files it names lands whole and the rest is lost
   * (a crash that took one file's writes and not another's, chosen by a test).
   */
  crash(random?: (() => number) | { reached: (path: string) => boolean }): void {
    if (random !== undefined && typeof random !== "function") {
      for (const [path, inode] of this.#current) {
        if (!random.reached(path)) continue;
        for (const op of inode.pending) applyFileOp(inode.durable, op);
        inode.pending = [];
      }
      random = undefined;
    }
    this.generation++;
    this.#failSync = undefined;
    for (const [directory, ops] of this.#directoryOps) {
      const survivors = random ? Math.floor(random() * (ops.length + 1)) : 0;
      for (const op of ops.slice(0, survivors)) this.#applyNameOp(op);
      this.#directoryOps.delete(directory);
    }
    const inodes = new Set([...this.#durable.values(), ...this.#current.values()]);
    for (const inode of inodes) {
      if (random) applyRandomSubset(inode, random);
      inode.pending = [];
      inode.current = inode.durable.clone();
    }
    this.#current = new Map(this.#durable);
  }

  /** Flips every bit of the byte at `offset` of `path`, on disk and in the cache. */
  rot(path: string, offset: number): void {
    const inode = this.#inode(path);
    assert(offset < inode.durable.length, `MemDisk.rot: offset ${offset} is past the end`);
    inode.durable.flip(offset);
    if (offset < inode.current.length) inode.current.flip(offset);
  }

  /** The next sync (of `path` only, when given) fails with EIO. */
  failNextSync(path?: string): void {
    this.#failSync = { path: path === undefined ? undefined : posix.normalize(path) };
  }

  /** Reads of `path` fail with EIO while `on`. */
  failReads(path: string, on: boolean): void {
    this.#inode(path).failReads = on;
  }

  /** Writes needing more than `bytes` in all fail with ENOSPC (Infinity to lift the limit). */
  setCapacity(bytes: number): void {
    this.#capacity = bytes;
  }

  /** Whether `path` exists in the durable namespace (what a crash now would keep). */
  isDurable(path: string): boolean {
    return this.#durable.has(posix.normalize(path));
  }

  #inode(path: string): Inode {
    const inode = this.#current.get(posix.normalize(path));
    assert(inode, `MemDisk: no file ${path}`);
    return inode;
  }

  #nameOp(path: string, op: NameOp): void {
    const directory = posix.dirname(path);
    const ops = this.#directoryOps.get(directory) ?? [];
    ops.push(op);
    this.#directoryOps.set(directory, ops);
  }

  #applyNameOp(op: NameOp): void {
    if (op.kind === "link") this.#durable.set(op.path, op.inode);
    if (op.kind === "unlink") this.#durable.delete(op.path);
    if (op.kind === "rename") {
      const inode = this.#durable.get(op.from);
      this.#durable.delete(op.from);
      if (inode) this.#durable.set(op.to, inode);
    }
  }

  #takeSyncFailure(path: string, inode?: Inode): boolean {
    const failure = this.#failSync;
    if (!failure) return false;
    const matches = failure.path === undefined || failure.path === path ||
      (inode !== undefined && this.#current.get(failure.path) === inode);
    if (matches) this.#failSync = undefined;
    return matches;
  }

  #usedBytes(): number {
    let pages = 0;
    for (const inode of new Set(this.#current.values())) pages += inode.current.pages.size;
    return pages * PAGE_BYTES;
  }
}

/** Runs `fn` as an I/O call: its result or its error, settled as a promise. */
function attempt<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (error) {
    return Promise.reject(error);
  }
}

function applyFileOp(bytes: SparseBytes, op: FileOp): void {
  if (op.kind === "write") bytes.write(op.data, op.position);
  else bytes.truncate(op.length);
}

/** Applies a random subset of `inode`'s pending ops to its durable image, one write torn. */
function applyRandomSubset(inode: Inode, random: () => number): void {
  const applied = inode.pending.filter(() => random() < 0.5);
  const writes = applied.filter((op) => op.kind === "write");
  const torn = writes.length > 0 ? writes[Math.floor(random() * writes.length)] : undefined;
  for (const op of applied) {
    if (op !== torn || op.kind !== "write") {
      applyFileOp(inode.durable, op);
      continue;
    }
    // Some whole sectors of the write reached the disk, the rest did not.
    const end = op.position + op.data.length;
    const boundaries = [];
    for (let at = op.position; at < end; at = (Math.floor(at / SECTOR_BYTES) + 1) * SECTOR_BYTES) {
      boundaries.push(at - op.position);
    }
    boundaries.push(op.data.length);
    const cut = boundaries[Math.floor(random() * boundaries.length)]!;
    if (cut > 0) inode.durable.write(op.data.subarray(0, cut), op.position);
  }
}

/** A small seeded random number generator (mulberry32) for replayable crashes. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
