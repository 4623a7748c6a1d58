/**
 * The byte plumbing of `img export-diff` and `img import-diff`: a diff file read sequentially
 * through a read-ahead buffer (a diff is mostly 17-byte records: one system call each would
 * dominate), an output that batches small writes and waits when a pipe is full, and standard
 * input spooled to a private temporary file so it can be checked whole before it is applied.
 *
 * @module
 */

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { pipeline } from "node:stream/promises";
import { ResultCode, SheepdogError, systemErrorText } from "../core/errors.ts";
import type { DiffSource } from "../core/format/rbd_diff.ts";

/** Reads served from one read-ahead of this size; larger reads go straight to the file. */
const READ_AHEAD_BYTES = 1 << 20;
/** Small writes are gathered up to this size before they are written. */
const WRITE_BATCH_BYTES = 1 << 20;

/** A diff file, read from its start; `close` when done. */
export interface DiffFile extends DiffSource {
  close(): Promise<void>;
}

/** Opens `file` (a regular file) as a DiffSource; a missing or unreadable file is one line. */
export async function openDiffFile(file: string): Promise<DiffFile> {
  const handle = await fsp.open(file, "r").catch((error) => {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Cannot read '${file}': ${systemErrorText(error)}`,
    );
  });
  let position = 0;
  let buffered = new Uint8Array(0);
  const readAt = async (target: Uint8Array, at: number): Promise<number> => {
    let done = 0;
    while (done < target.length) {
      const { bytesRead } = await handle.read(target, done, target.length - done, at + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  };
  return {
    async read(length) {
      if (length > buffered.length && length <= READ_AHEAD_BYTES) {
        const ahead = new Uint8Array(READ_AHEAD_BYTES);
        ahead.set(buffered);
        const got = await readAt(ahead.subarray(buffered.length), position + buffered.length);
        buffered = ahead.subarray(0, buffered.length + got);
      }
      if (length <= buffered.length) {
        const part = buffered.slice(0, length);
        buffered = buffered.subarray(length);
        position += length;
        return part;
      }
      const whole = new Uint8Array(length);
      whole.set(buffered);
      const got = await readAt(whole.subarray(buffered.length), position + buffered.length);
      const total = buffered.length + got;
      buffered = new Uint8Array(0);
      position += total;
      return whole.subarray(0, total);
    },
    async skip(length) {
      if (length <= buffered.length) {
        buffered = buffered.subarray(length);
        position += length;
        return length;
      }
      const size = (await handle.stat()).size;
      const moved = Math.min(length, size - position);
      buffered = new Uint8Array(0);
      position += moved;
      return moved;
    },
    close: () => handle.close(),
  };
}

/** Where an export goes: `write` in order, then `finish(true)`, or `finish(false)` after a failure. */
export interface DiffSink {
  write(chunk: Uint8Array): Promise<void>;
  finish(completed: boolean): Promise<void>;
}

function batched(writeOut: (chunk: Uint8Array) => Promise<void>) {
  let batch = new Uint8Array(WRITE_BATCH_BYTES);
  let filled = 0;
  const flush = async () => {
    if (filled === 0) return;
    const out = batch.subarray(0, filled);
    batch = new Uint8Array(WRITE_BATCH_BYTES); // the old one may still be in a write
    filled = 0;
    await writeOut(out);
  };
  return {
    async write(chunk: Uint8Array) {
      if (filled + chunk.length > batch.length) await flush();
      if (chunk.length >= batch.length / 4) return await writeOut(chunk);
      batch.set(chunk, filled);
      filled += chunk.length;
    },
    flush,
  };
}

/**
 * A new file `file` (an existing one is refused, as `rbd export-diff` does: a backup is not
 * overwritten by mistake). A failed export removes what it wrote: a partial diff is no backup.
 */
export async function createDiffFile(file: string): Promise<DiffSink> {
  const handle = await fsp.open(file, "wx", 0o644).catch((error) => {
    const why = (error as NodeJS.ErrnoException).code === "EEXIST"
      ? "it exists already (remove it, or choose another name)"
      : systemErrorText(error);
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Cannot write '${file}': ${why}`);
  });
  const out = batched(async (chunk) => {
    let done = 0;
    while (done < chunk.length) {
      done += (await handle.write(chunk, done, chunk.length - done)).bytesWritten;
    }
  });
  return {
    write: out.write,
    async finish(completed) {
      try {
        if (completed) {
          await out.flush();
          await handle.sync();
        }
      } finally {
        await handle.close();
        if (!completed) await fsp.rm(file, { force: true });
      }
    },
  };
}

/** Standard output; refused on a terminal (a diff is binary). */
export function stdoutDiffSink(): DiffSink {
  if (process.stdout.isTTY) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      "Cannot write a diff to a terminal: redirect standard output or name a FILE",
    );
  }
  // A reader that goes away (EPIPE) fails the write's callback below; without a listener the
  // same error would also crash the process.
  process.stdout.on("error", () => undefined);
  // Each write waits until it is handed on: a slow reader slows the export, memory stays bounded.
  const out = batched((chunk) =>
    new Promise<void>((resolve, reject) => {
      process.stdout.write(chunk, (error) => error ? reject(error) : resolve());
    })
  );
  return {
    write: out.write,
    async finish(completed) {
      if (completed) await out.flush();
    },
  };
}

/**
 * Copies standard input into a file only this user can read, in a new directory under the OS
 * temporary directory; resolves with its path and a `remove` for when it has been used.
 */
export async function spoolStdin(): Promise<{ file: string; remove: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "sheepdog-import-diff-"));
  const remove = () => fsp.rm(dir, { recursive: true, force: true });
  const file = path.join(dir, "stdin.diff");
  try {
    await pipeline(process.stdin, fs.createWriteStream(file, { mode: 0o600 }));
  } catch (error) {
    await remove();
    throw new SheepdogError(
      ResultCode.EIO,
      `Cannot spool standard input to ${dir}: ${systemErrorText(error)}`,
    );
  }
  return { file, remove };
}
