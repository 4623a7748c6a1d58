/**
 * The copy loop of `img convert`: raw file or VDI in, raw file or VDI out, a window of chunks in
 * flight, and runs of zeros never written (a VDI stays thin, an exported file stays sparse).
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import { isResult, ResultCode, SheepdogError, systemErrorText } from "../core/errors.ts";
import { Opcode } from "../net/object/ops.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { isZero } from "../core/bytes.ts";
import { parseVdiRef } from "../net/admin/admin_service.ts";
import type { ObjectClient } from "../net/object/client.ts";
import { type ClusterAddress, connect } from "./cli.ts";

export type ImageEnd =
  | { kind: "file"; path: string }
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

interface Reader {
  size: number;
  /** Undefined when the range is known to read as zeros. */
  read(offset: number, length: number): Promise<Uint8Array | undefined>;
  close(): Promise<void>;
}

interface Writer {
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes [offset, offset+length) read as zeros where it might not already. */
  zero(offset: number, length: number): Promise<void>;
  finish(): Promise<void>;
}

function openClient(
  end: Extract<ImageEnd, { kind: "vdi" }>,
  cluster: ConvertOptions["cluster"],
): ObjectClient {
  return connect(end.cluster ? { ...cluster, ...end.cluster } : cluster).client;
}

async function fileReader(path: string): Promise<Reader> {
  const refuse = (why: string) =>
    new SheepdogError(ResultCode.INVALID_PARMS, `Cannot read '${path}': ${why}`);
  const file = await fsp.open(path, "r").catch((error) => {
    throw refuse(systemErrorText(error));
  });
  const stat = await file.stat();
  if (!stat.isFile() && !stat.isBlockDevice()) {
    await file.close();
    // Convert reads the image at any offset (and must know its size first): a stream cannot.
    throw refuse(
      stat.isDirectory()
        ? "it is a directory"
        : "it is a pipe or a device, not a file convert can seek in; save it to a file first",
    );
  }
  const size = stat.isBlockDevice() ? await blockDeviceSize(file) : stat.size;
  return {
    size,
    async read(offset, length) {
      const buffer = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await file.read(buffer, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buffer;
    },
    close: () => file.close(),
  };
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

function vdiReader(io: VdiIo, client: ObjectClient): Reader {
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
    async write(offset, data) {
      let done = 0;
      while (done < data.length) {
        done += (await file.write(data, done, data.length - done, offset + done)).bytesWritten;
      }
    },
    zero: () => Promise.resolve(), // A fresh sparse file reads zeros already.
    async finish() {
      await file.sync();
      await file.close();
    },
  };
}

function vdiWriter(io: VdiIo, client: ObjectClient): Writer {
  return {
    write: (offset, data) => io.write(offset, data),
    async zero(offset, length) {
      if (io.allocation(offset, length).some((run) => run.allocated)) {
        await io.discard(offset, length, { zeroPartial: true });
      }
    },
    async finish() {
      await io.flush();
      await client.close();
    },
  };
}

async function openSource(options: ConvertOptions): Promise<Reader> {
  const source = options.source;
  if (source.kind === "file") return await fileReader(source.path);
  const client = openClient(source, options.cluster);
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
  if (target.kind === "file") return await fileWriter(target.path, size);
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
    else await refuseAttached(client, name);
    const io = await VdiIo.open(client, name);
    if (io.sizeBytes < size) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot convert into '${name}': it has ${io.sizeBytes} bytes, the source ${size}`,
      );
    }
    return vdiWriter(io, client);
  } catch (error) {
    await client.close();
    throw error;
  }
}

/**
 * One writer per VDI: `convert -n` into a VDI a client (a VM) has attached would write under
 * it. Refused, naming the holder. Without the cluster key the locks cannot be read: the writes
 * then go ahead, as an old client's would.
 */
async function refuseAttached(client: ObjectClient, name: string): Promise<void> {
  const vid = await client.lookupVdi(name);
  let locks: { vid: number; client: string }[];
  try {
    locks = await client.json(Opcode.LIST_LOCKS);
  } catch (error) {
    if (isResult(error, ResultCode.NOT_AUTHORIZED)) return;
    throw error;
  }
  const holder = locks.find((lock) => lock.vid === vid)?.client;
  if (holder !== undefined) {
    throw new SheepdogError(
      ResultCode.VDI_LOCKED,
      `Cannot write into '${name}': it is attached by ${holder}; detach it first`,
    );
  }
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

async function copyChunk(
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

/** Copies source to target; resolves with bytes copied, bytes written and the time taken. */
export async function convertImage(
  options: ConvertOptions,
): Promise<{ bytes: number; writtenBytes: number; ms: number }> {
  const started = performance.now();
  const reader = await openSource(options);
  let writtenBytes = 0;
  try {
    if (reader.size === 0) {
      throw new SheepdogError(ResultCode.INVALID_PARMS, "Cannot convert an empty image");
    }
    const writer = await openTarget(options, reader.size);
    let next = 0;
    let done = 0;
    const worker = async () => {
      while (next < reader.size) {
        const offset = next;
        const length = Math.min(CHUNK_BYTES, reader.size - offset);
        next += length;
        const written = await copyChunk(reader, writer, offset, length);
        writtenBytes += written;
        done += length;
        options.onProgress?.(done, reader.size);
      }
    };
    try {
      await Promise.all(Array.from({ length: CHUNKS_IN_FLIGHT }, worker));
    } finally {
      await writer.finish();
    }
  } finally {
    await reader.close();
  }
  return { bytes: reader.size, writtenBytes, ms: performance.now() - started };
}
