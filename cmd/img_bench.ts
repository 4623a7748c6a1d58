/**
 * `img bench`: a VDI's I/O rate as `qemu-img bench` and `rbd bench` measure it: COUNT requests
 * of SIZE bytes, DEPTH in flight, at sequential or random offsets, through the same `VdiIo`
 * path as `img convert` and the NBD export. Ends with a line a script can parse.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../core/errors.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { type AdminService, parseVdiRef } from "../net/admin/admin_service.ts";

export interface BenchOptions {
  type: "read" | "write";
  /** Bytes per request. */
  size: number;
  /** Requests in flight. */
  depth: number;
  /** Requests in all. */
  count: number;
  pattern: "seq" | "rand";
}

export interface BenchResult {
  ops: number;
  bytes: number;
  elapsedMs: number;
  /** Reads of space never written: answered as zeros without any I/O. */
  unallocatedReads: number;
}

/** The pattern qemu-img bench writes (its `-P` default). */
const WRITE_BYTE = 0xa5;

/**
 * The offset of request `n`: sequential requests wrap at the end of the VDI, random ones are
 * SIZE-aligned anywhere in it.
 */
export function benchOffset(
  n: number,
  options: Pick<BenchOptions, "size" | "pattern">,
  sizeBytes: number,
  random: () => number = Math.random,
): number {
  const slots = Math.floor(sizeBytes / options.size);
  const slot = options.pattern === "seq" ? n % slots : Math.floor(random() * slots);
  return slot * options.size;
}

/** Runs the benchmark on `NAME[:SNAP]` (writes: the working VDI, not attached by anyone). */
export async function benchVdi(
  admin: AdminService,
  text: string,
  options: BenchOptions,
): Promise<BenchResult> {
  const { name, ref } = parseVdiRef(text);
  const io = await VdiIo.open(admin.client, name, ref);
  if (options.size > io.sizeBytes) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Cannot bench '${text}': requests of ${options.size} bytes do not fit in its ${io.sizeBytes}`,
    );
  }
  if (options.type === "write") {
    if (io.readOnly) {
      throw new SheepdogError(ResultCode.READONLY, `Cannot bench writes on '${text}': a snapshot`);
    }
    const row = await admin.vdi(text);
    if (row.attachedTo !== undefined) {
      throw new SheepdogError(
        ResultCode.VDI_LOCKED,
        `Cannot bench writes on '${text}': it is attached by ${row.attachedTo}; detach it first`,
      );
    }
  }
  const data = new Uint8Array(options.size).fill(WRITE_BYTE);
  let next = 0;
  let unallocatedReads = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < options.count) {
      const offset = benchOffset(next++, options, io.sizeBytes);
      if (options.type === "write") {
        await io.write(offset, data);
      } else {
        if (io.allocation(offset, options.size).every((run) => !run.allocated)) unallocatedReads++;
        await io.read(offset, options.size);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.depth, options.count) }, worker));
  if (options.type === "write") await io.flush();
  const elapsedMs = performance.now() - started;
  return { ops: options.count, bytes: options.count * options.size, elapsedMs, unallocatedReads };
}

/** The last line: `ops=… ops/s=… bytes/s=… elapsed=…` (seconds), for scripts. */
export function formatBenchResult(result: BenchResult): string {
  const seconds = result.elapsedMs / 1000;
  const rate = (n: number) => seconds > 0 ? n / seconds : 0;
  return `ops=${result.ops} ops/s=${rate(result.ops).toFixed(1)} bytes/s=${
    Math.round(rate(result.bytes))
  } elapsed=${seconds.toFixed(3)}`;
}
