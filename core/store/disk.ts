/**
 * The disk seam under the object store: the few file operations it needs, so the store runs on
 * the real file system (`fsDisk`) or on a simulated disk that models what survives a crash
 * (`MemDisk`). Errors are Node-shaped (`code: "ENOENT" | "ENOSPC" | "EIO" | ...`) on both.
 *
 * @module
 */

/**
 * How to open a file: an existing one to read, or to read and write; a new one (fails if it
 * exists); or create-or-truncate.
 */
export type OpenMode = "r" | "r+" | "wx+" | "w+";

/** An open file with positional I/O. */
export interface DiskFile {
  /** Reads into `buffer` from `position`; returns bytes read (short only at the end of file). */
  read(buffer: Uint8Array, position: number): Promise<number>;
  /**
   * `read` on the calling thread, when this disk allows it now (a small read while reads are
   * fast); undefined when it must go through `read`. Throws where `read` would reject.
   */
  readNow?(buffer: Uint8Array, position: number): number | undefined;
  /** Writes `data` at `position`; returns bytes written (a short count means retry the rest). */
  write(data: Uint8Array, position: number): Promise<number>;
  /** Makes every completed write to this file durable (not its directory entry). */
  datasync(): Promise<void>;
  truncate(length: number): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
}

/** Length and space taken by a file (sparse files take less than their length). */
export interface DiskStat {
  size: number;
  allocatedBytes: number;
}

/** Space on the file system holding a directory. */
export interface DiskSpace {
  totalBytes: number;
  freeBytes: number;
}

/** File system operations. Renames, unlinks and creates are durable once `syncDir` resolves. */
export interface Disk {
  open(path: string, mode: OpenMode): Promise<DiskFile>;
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; ENOENT when it does not exist. */
  unlink(path: string): Promise<void>;
  readdir(directory: string): Promise<string[]>;
  /** Creates `directory` and its parents; no error when it exists. */
  mkdir(directory: string): Promise<void>;
  /** Makes the directory's entries (creates, renames, unlinks) durable. */
  syncDir(directory: string): Promise<void>;
  /** ENOENT when the file does not exist. */
  stat(path: string): Promise<DiskStat>;
  space(directory: string): Promise<DiskSpace>;
}

/** An error shaped like Node's file system errors. */
export interface DiskError extends Error {
  code: string;
  syscall?: string;
  path?: string;
}

/** Makes a Node-shaped error, for simulated disks. */
export function diskError(code: string, syscall: string, path: string): DiskError {
  const text = DESCRIPTIONS[code] ?? "error";
  const error = new Error(`${code}: ${text}, ${syscall} '${path}'`) as DiskError;
  error.code = code;
  error.syscall = syscall;
  error.path = path;
  return error;
}

const DESCRIPTIONS: Record<string, string> = {
  ENOENT: "no such file or directory",
  EEXIST: "file already exists",
  ENOSPC: "no space left on device",
  EIO: "i/o error",
  EBADF: "bad file descriptor",
};

/** The `code` of a Node-shaped error, if any. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/** Writes all of `data` at `position`, retrying short writes. */
export async function writeAll(file: DiskFile, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const written = await file.write(data.subarray(done), position + done);
    if (written <= 0) throw diskError("EIO", "write", "(a write made no progress)");
    done += written;
  }
}

/**
 * The first `size` bytes of `file` in chunks of at most `chunkBytes`, in order, each with its
 * position; bytes past the file's end read as zeros. One buffer serves every chunk: a chunk is
 * valid until the next is asked for.
 */
export async function* fileChunks(
  file: DiskFile,
  size: number,
  chunkBytes: number,
): AsyncGenerator<{ start: number; chunk: Uint8Array }> {
  const buffer = new Uint8Array(Math.min(chunkBytes, size));
  for (let start = 0; start < size; start += chunkBytes) {
    const chunk = buffer.subarray(0, Math.min(chunkBytes, size - start));
    await readFully(file, chunk, start);
    yield { start, chunk };
  }
}

/**
 * `readFully` on the calling thread (`DiskFile.readNow`): the bytes read, the rest of `buffer`
 * zeroed; undefined when the file will not read on the calling thread now (the caller then uses
 * `readFully`, which reads again whatever this read).
 */
export function readFullyNow(
  file: DiskFile,
  buffer: Uint8Array,
  position: number,
): number | undefined {
  let done = 0;
  while (done < buffer.length) {
    const read = file.readNow?.(done === 0 ? buffer : buffer.subarray(done), position + done);
    if (read === undefined) return undefined;
    if (read === 0) break;
    done += read;
  }
  if (done < buffer.length) buffer.fill(0, done);
  return done;
}

/**
 * Reads up to `buffer.length` bytes at `position`; returns how many (fewer only at the end).
 * The rest of `buffer`, past the end of the file, is zeroed: so a buffer from `unfilledBytes`
 * (core/bytes.ts), which starts with whatever the heap held, never hands out bytes the file did
 * not give.
 */
export async function readFully(
  file: DiskFile,
  buffer: Uint8Array,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < buffer.length) {
    // (No view for the first read: one per call was measurable on a 4 KiB read.)
    const read = await file.read(done === 0 ? buffer : buffer.subarray(done), position + done);
    if (read === 0) break;
    done += read;
  }
  if (done < buffer.length) buffer.fill(0, done);
  return done;
}

/**
 * The whole of `path` on `disk` (as long as it is when opened), or undefined when there is no
 * such file: what the small files a sheep keeps beside its objects are read with.
 */
export async function readWholeFile(disk: Disk, path: string): Promise<Uint8Array | undefined> {
  let file: DiskFile;
  try {
    file = await disk.open(path, "r");
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    throw error;
  }
  try {
    const bytes = new Uint8Array(await file.size());
    return bytes.subarray(0, await readFully(file, bytes, 0));
  } finally {
    await file.close();
  }
}
