/**
 * The copy loop of `img convert`: a raw or qcow2 file or a VDI in, a raw or qcow2 file or a VDI
 * out, a window of chunks in flight, and runs of zeros never written (a VDI stays thin, an
 * exported file stays sparse or small). A source file's format is told from its magic, as
 * `qemu-img` does; formats we do not read are refused by name.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import { isResult, ResultCode, SheepdogError, systemErrorText } from "../core/errors.ts";
import { detectFormat, foreignFormatMessage, PROBE_BYTES } from "../core/format/detect.ts";
import { Qcow2Reader, type RandomAccessSource } from "../core/format/qcow2_reader.ts";
import { Qcow2Writer, WRITER_CLUSTER_BITS } from "../core/format/qcow2_writer.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { isZero } from "../core/bytes.ts";
import { parseVdiRef } from "../net/admin/admin_service.ts";
import type { ObjectClient } from "../net/object/client.ts";
import { type ClusterAddress, connect } from "./cli.ts";
import { isExplicitVdi, parseVdiAddress } from "./vdi_address.ts";

/** A file's format: for a source, undefined means "tell from its magic"; for a target, raw. */
export type FileFormat = "raw" | "qcow2";

export type ImageEnd =
  | {
    kind: "file";
    path: string;
    format?: FileFormat | undefined;
    /** qcow2 targets: version 3 (compat=1.1, the default) or 2 (compat=0.10). */
    qcow2Version?: 2 | 3 | undefined;
  }
  | { kind: "vdi"; vdi: string; cluster?: { host: string; port: number } };

export interface ConvertOptions {
  source: ImageEnd;
  target: ImageEnd;
  /** False for `-n`: the target VDI must exist already. */
  createTarget: boolean;
  cluster: ClusterAddress;
  onProgress?: ((doneBytes: number, totalBytes: number) => void) | undefined;
}

const CHUNK_BYTES = 4 * 1024 * 1024;
/** Zero detection granularity: runs of zeros this size or larger are skipped. */
const ZERO_BLOCK_BYTES = 64 * 1024;
const CHUNKS_IN_FLIGHT = 8;
// The qcow2 writer takes whole clusters: zero runs and chunks must fall on its cluster bounds.
if (ZERO_BLOCK_BYTES % 2 ** WRITER_CLUSTER_BITS !== 0 || CHUNK_BYTES % ZERO_BLOCK_BYTES !== 0) {
  throw new Error("img convert: zero blocks and chunks must be whole qcow2 clusters");
}

/** An image read by chunks (a file, or a VDI through `VdiIo`). */
export interface Reader {
  size: number;
  /** Undefined when the range is known to read as zeros. */
  read(offset: number, length: number): Promise<Uint8Array | undefined>;
  close(): Promise<void>;
}

/** Where a copy goes. */
export interface Writer {
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes [offset, offset+length) read as zeros where it might not already. */
  zero(offset: number, length: number): Promise<void>;
  /** Completes the target (`completed`) or leaves it after a failure; closes it either way. */
  finish(completed: boolean): Promise<void>;
}

function openClient(
  end: Extract<ImageEnd, { kind: "vdi" }>,
  cluster: ConvertOptions["cluster"],
): ObjectClient {
  return connect(end.cluster ? { ...cluster, ...end.cluster } : cluster).client;
}

/** A source file: raw, or qcow2 when its magic (or `-f qcow2`) says so; other formats refused. */
async function fileReader(path: string, format: FileFormat | undefined): Promise<Reader> {
  const refuse = (why: string) =>
    new SheepdogError(ResultCode.INVALID_PARMS, `Cannot read '${path}': ${why}`);
  const file = await fsp.open(path, "r").catch((error) => {
    throw refuse(systemErrorText(error));
  });
  try {
    const stat = await file.stat();
    if (!stat.isFile() && !stat.isBlockDevice()) {
      // Convert reads the image at any offset (and must know its size first): a stream cannot.
      throw refuse(
        stat.isDirectory()
          ? "it is a directory"
          : "it is a pipe or a device, not a file convert can seek in; save it to a file first",
      );
    }
    const size = stat.isBlockDevice() ? await blockDeviceSize(file) : stat.size;
    const source: RandomAccessSource = {
      size,
      async readInto(target, position) {
        let done = 0;
        while (done < target.length) {
          const { bytesRead } = await file.read(
            target,
            done,
            target.length - done,
            position + done,
          );
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return done;
      },
    };
    const close = () => file.close();
    const detected = format ?? await probe(source, path);
    if (detected === "qcow2") {
      const image = await Qcow2Reader.open(source, path);
      return { size: image.size, read: (offset, length) => image.read(offset, length), close };
    }
    return {
      size,
      async read(offset, length) {
        const buffer = new Uint8Array(length);
        await source.readInto(buffer, offset);
        return buffer;
      },
      close,
    };
  } catch (error) {
    await file.close();
    throw error;
  }
}

/** The format of a source file from its magic numbers; other known formats are refused. */
async function probe(source: RandomAccessSource, path: string): Promise<FileFormat> {
  const head = new Uint8Array(Math.min(source.size, PROBE_BYTES));
  await source.readInto(head, 0);
  const tail = new Uint8Array(source.size > PROBE_BYTES ? PROBE_BYTES : 0);
  await source.readInto(tail, source.size - tail.length);
  const detected = detectFormat(head, tail);
  if (detected.format === "foreign") {
    throw new SheepdogError(ResultCode.INVALID_PARMS, foreignFormatMessage(path, detected.name));
  }
  return detected.format;
}

/** A block device's size: stat says 0, so seek to its end by reading there. */
async function blockDeviceSize(file: fsp.FileHandle): Promise<number> {
  // Binary search for the last readable byte (no ioctl from JavaScript).
  let low = 0;
  let high = 2 ** 52;
  const byte = new Uint8Array(1);
  while (low < high) {
    const middle = Math.floor((low + high + 1) / 2);
    const { bytesRead } = await file.read(byte, 0, 1, middle - 1);
    if (bytesRead === 1) low = middle;
    else high = middle - 1;
  }
  return low;
}

export function vdiReader(io: VdiIo, client: ObjectClient): Reader {
  return {
    size: io.sizeBytes,
    async read(offset, length) {
      if (io.allocation(offset, length).every((run) => !run.allocated)) return undefined;
      return await io.read(offset, length);
    },
    close: () => client.close(),
  };
}

async function fileWriter(path: string, size: number): Promise<Writer> {
  const file = await fsp.open(path, "w").catch((error) => {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Cannot write '${path}': ${systemErrorText(error)}`,
    );
  });
  await file.truncate(size);
  return {
    write: (offset, data) => writeAll(file, data, offset),
    zero: () => Promise.resolve(), // A fresh sparse file reads zeros already.
    async finish() {
      await file.sync();
      await file.close();
    },
  };
}

async function writeAll(file: fsp.FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    done += (await file.write(data, done, data.length - done, position + done)).bytesWritten;
  }
}

/** A qcow2 target: data clusters appended as they come, metadata and header at the end. */
async function qcow2Writer(path: string, size: number, version: 2 | 3): Promise<Writer> {
  const file = await fsp.open(path, "w");
  let image: Qcow2Writer;
  try {
    image = new Qcow2Writer({
      write: (data, position) => writeAll(file, data, position),
      truncate: (length) => file.truncate(length),
    }, { size, version });
  } catch (error) {
    await file.close();
    throw error;
  }
  return {
    write: (offset, data) => image.write(offset, data),
    zero: () => Promise.resolve(), // Clusters never written stay unallocated: they read zeros.
    async finish(completed) {
      try {
        // Without a header the file is no qcow2 image: a failed export is not mistaken for one.
        if (completed) await image.finish();
        await file.sync();
      } finally {
        await file.close();
      }
    },
  };
}

/**
 * A target VDI; `created` names it when this convert made it (a failed one deletes it),
 * `attached` when this convert attached it for writing (detached at the end).
 */
export function vdiWriter(
  io: VdiIo,
  client: ObjectClient,
  created: string | undefined,
  attached: string | undefined,
): Writer {
  return {
    write: (offset, data) => io.write(offset, data),
    async zero(offset, length) {
      if (io.allocation(offset, length).some((run) => run.allocated)) {
        await io.discard(offset, length, { zeroPartial: true });
      }
    },
    async finish(completed) {
      try {
        if (completed || created === undefined) await io.flush();
        // A half-imported VDI would only be in the way of the next attempt.
        else await client.deleteVdi(created).catch(() => undefined);
      } finally {
        // Released before closing, so a client that attaches next finds it free; a command
        // killed before this has its lock released with its connection.
        if (attached !== undefined) await detach(client, attached);
        await client.close();
      }
    },
  };
}

/** Opens an image end for reading: a file (raw or qcow2) or a VDI (`NAME[:SNAP]`). */
export async function openReader(source: ImageEnd, cluster: ClusterAddress): Promise<Reader> {
  if (source.kind === "file") return await fileReader(source.path, source.format);
  const client = openClient(source, cluster);
  const { name, ref } = parseVdiRef(source.vdi);
  try {
    return vdiReader(await VdiIo.open(client, name, ref), client);
  } catch (error) {
    await client.close();
    throw error;
  }
}

async function openTarget(options: ConvertOptions, size: number): Promise<Writer> {
  const target = options.target;
  if (target.kind === "file") {
    return target.format === "qcow2"
      ? await qcow2Writer(target.path, size, target.qcow2Version ?? 3)
      : await fileWriter(target.path, size);
  }
  const client = openClient(target, options.cluster);
  try {
    const { name, ref } = parseVdiRef(target.vdi);
    if (ref !== undefined) {
      throw new SheepdogError(
        ResultCode.READONLY,
        `Cannot write to '${target.vdi}': it is a snapshot`,
      );
    }
    if (options.createTarget) await client.newVdi({ name, sizeBytes: size });
    const attached = options.createTarget ? undefined : name;
    if (attached !== undefined) await attachForWriting(client, attached);
    const created = options.createTarget ? name : undefined;
    const io = await VdiIo.open(client, name);
    if (io.sizeBytes < size) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot convert into '${name}': it has ${io.sizeBytes} bytes, the source ${size}`,
      );
    }
    return vdiWriter(io, client, created, attached);
  } catch (error) {
    await client.close();
    throw error;
  }
}

/**
 * One writer per VDI: `convert -n` attaches the VDI for as long as it writes (its connection holds
 * the lock), so no VM attaches it meanwhile; one a client has attached is refused, naming the
 * holder. `detach` ends it.
 */
export async function attachForWriting(client: ObjectClient, name: string): Promise<void> {
  try {
    await client.lockVdi(name);
  } catch (error) {
    if (!isResult(error, ResultCode.VDI_LOCKED)) throw error;
    const holder = /in use by (.*)$/.exec((error as Error).message)?.[1] ?? "another client";
    throw new SheepdogError(
      ResultCode.VDI_LOCKED,
      `Cannot write into '${name}': it is attached by ${holder}; detach it first`,
    );
  }
}

/**
 * Ends `attachForWriting` before the command ends, so a client that attaches next finds the VDI
 * free. By name: a snapshot taken meanwhile moved the lock to the name's new working VDI (gone
 * if the VDI was undone). A command killed before this has its lock released with its connection.
 */
export async function detach(client: ObjectClient, name: string): Promise<void> {
  const vid = await client.lookupVdi(name).catch(() => undefined);
  if (vid !== undefined) await client.releaseVdi(vid).catch(() => undefined);
}

/** Runs of non-zero data in `data`, at ZERO_BLOCK_BYTES granularity. */
export function dataRuns(data: Uint8Array): { offset: number; length: number; zero: boolean }[] {
  const runs: { offset: number; length: number; zero: boolean }[] = [];
  for (let offset = 0; offset < data.length; offset += ZERO_BLOCK_BYTES) {
    const block = data.subarray(offset, Math.min(data.length, offset + ZERO_BLOCK_BYTES));
    const zero = isZero(block);
    const last = runs[runs.length - 1];
    if (last && last.zero === zero) last.length += block.length;
    else runs.push({ offset, length: block.length, zero });
  }
  return runs;
}

/** Copies one chunk; runs of zeros become `zero` (nothing stored). Resolves with bytes written. */
export async function copyChunk(
  reader: Reader,
  writer: Writer,
  offset: number,
  length: number,
): Promise<number> {
  const data = await reader.read(offset, length);
  if (!data) {
    await writer.zero(offset, length);
    return 0;
  }
  let written = 0;
  for (const run of dataRuns(data)) {
    if (run.zero) {
      await writer.zero(offset + run.offset, run.length);
    } else {
      await writer.write(offset + run.offset, data.subarray(run.offset, run.offset + run.length));
      written += run.length;
    }
  }
  return written;
}

/**
 * Decides whether a convert argument is a file or a VDI: `-f/-O` decide, then a `sheepdog:`
 * prefix; otherwise an existing file is a file (its format told from its magic when it is the
 * source, raw when it is the target), and `whenMissing` decides the rest.
 */
export async function imageEnd(
  text: string,
  format: string | undefined,
  whenMissing: "file" | "vdi",
): Promise<ImageEnd> {
  if (format === "raw" || format === "qcow2") {
    return { kind: "file", path: text, format: format as FileFormat };
  }
  if (format === "sheepdog" || isExplicitVdi(text)) {
    return { kind: "vdi", ...parseVdiAddress(text) };
  }
  const exists = await fsp.stat(text).then((s) => s.isFile() || s.isBlockDevice(), () => false);
  if (exists || whenMissing === "file") return { kind: "file", path: text };
  return { kind: "vdi", ...parseVdiAddress(text) };
}

/** Copies source to target; resolves with bytes copied, bytes written and the time taken. */
export async function convertImage(
  options: ConvertOptions,
): Promise<{ bytes: number; writtenBytes: number; ms: number }> {
  const started = performance.now();
  const reader = await openReader(options.source, options.cluster);
  let writtenBytes = 0;
  try {
    if (reader.size === 0) {
      throw new SheepdogError(ResultCode.INVALID_PARMS, "Cannot convert an empty image");
    }
    const writer = await openTarget(options, reader.size);
    let next = 0;
    let done = 0;
    let failed = false;
    const worker = async () => {
      while (next < reader.size && !failed) {
        const offset = next;
        const length = Math.min(CHUNK_BYTES, reader.size - offset);
        next += length;
        let written: number;
        try {
          written = await copyChunk(reader, writer, offset, length);
        } catch (error) {
          failed = true;
          throw error;
        }
        writtenBytes += written; // (not `+= await`: that would add to a stale total)
        done += length;
        options.onProgress?.(done, reader.size);
      }
    };
    // Every worker stops before the target is finished, so nothing writes to a closed file.
    const results = await Promise.allSettled(Array.from({ length: CHUNKS_IN_FLIGHT }, worker));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    const finishing = writer.finish(failure === undefined);
    if (failure) {
      await finishing.catch(() => undefined);
      throw failure.reason;
    }
    await finishing;
  } finally {
    await reader.close();
  }
  return { bytes: reader.size, writtenBytes, ms: performance.now() - started };
}
