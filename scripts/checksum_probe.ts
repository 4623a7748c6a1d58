/**
 * The measurements of scripts/bench_checksum.ts, run under Node (as the sheep runs: Deno's
 * `node:zlib` crc32 is another implementation, several times faster), printed as one JSON
 * object. Bundled for Node by bench_checksum.ts; not run directly.
 *
 * Every figure is the median of TRIALS trials of TRIAL_MS each, so another process taking the
 * shared cores for a moment moves one trial, not the result. Main-thread time is the event
 * loop's active time (`performance.eventLoopUtilization`), which for a sheep is what serves
 * every other client.
 *
 * @module
 */
import { closeSync, openSync, readSync } from "node:fs";
import { randomFillSync } from "node:crypto";
import { performance } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import { crc32 } from "node:zlib";
import { createCRC32, createXXHash3 } from "hash-wasm";
import { CHECKSUM_BLOCK_BYTES as B } from "../core/limits.ts";
import { blockChecksum, blockChecksums } from "../core/store/block_checksum.ts";
import { ChecksumWorkers } from "../core/store/checksum_workers.ts";

const MiB = 1 << 20;
const TRIALS = 5;
const TRIAL_MS = 400;
const CRC32C_POLYNOMIAL = 0x82f63b78;

/** µs per call of `fn`: the median over the trials. */
function perCall(fn: () => void): number {
  fn();
  const trials: number[] = [];
  for (let t = 0; t < TRIALS; t++) {
    const start = performance.now();
    let calls = 0;
    while (performance.now() - start < TRIAL_MS) {
      fn();
      calls++;
    }
    trials.push((performance.now() - start) * 1000 / calls);
  }
  return median(trials);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Each block of `bytes` in calls of `block` bytes to `hash`. */
function blocks(bytes: Uint8Array, block: number, hash: (b: Uint8Array) => unknown): void {
  for (let at = 0; at < bytes.length; at += block) hash(bytes.subarray(at, at + block));
}

/**
 * `depth` jobs of `length` bytes kept in flight through the pool (each job's bytes, back from
 * the worker, go out again as the next): µs of wall time and of main thread per job.
 */
async function offloaded(
  pool: ChecksumWorkers,
  length: number,
  depth: number,
): Promise<{ wallUs: number; mainUs: number }> {
  const lanes: Uint8Array[] = Array.from(
    { length: depth },
    () => randomFillSync(new Uint8Array(length)),
  );
  const once = async (lane: number) => {
    const hashed = await pool.offload(lanes[lane]!);
    if (hashed === undefined) throw new Error("a checksum worker lost a job");
    lanes[lane] = hashed.bytes;
  };
  await Promise.all(lanes.map((_, lane) => once(lane)));
  return await trials(depth, once);
}

/**
 * Runs `once(lane)` over and over on `depth` lanes at a time: µs of wall time and of main
 * thread per call (medians over the trials).
 */
async function trials(
  depth: number,
  once: (lane: number) => Promise<void>,
): Promise<{ wallUs: number; mainUs: number }> {
  const walls: number[] = [];
  const mains: number[] = [];
  for (let t = 0; t < TRIALS; t++) {
    const start = performance.now();
    const loop = performance.eventLoopUtilization();
    let calls = 0;
    await Promise.all(Array.from({ length: depth }, async (_, lane) => {
      while (performance.now() - start < TRIAL_MS) {
        await once(lane);
        calls++;
      }
    }));
    const busy = performance.eventLoopUtilization(loop);
    walls.push((performance.now() - start) * 1000 / calls);
    mains.push(busy.active * 1000 / calls);
  }
  return { wallUs: median(walls), mainUs: median(mains) };
}

/** Round trips of a shared 1 MiB view (not moved) through a worker that hashes it. */
async function sharedRoundTrip(depth: number): Promise<{ wallUs: number; mainUs: number }> {
  const worker = new Worker(
    `const { parentPort } = require("node:worker_threads");
const { crc32 } = require("node:zlib");
parentPort.on("message", ({ id, bytes }) => {
  const checksums = new Uint32Array(bytes.length / ${B});
  for (let i = 0; i < checksums.length; i++) checksums[i] = crc32(bytes.subarray(i * ${B}, (i + 1) * ${B}));
  parentPort.postMessage({ id, checksums }, [checksums.buffer]);
});`,
    { eval: true },
  );
  const waiting = new Map<number, () => void>();
  worker.on("message", ({ id }: { id: number }) => waiting.get(id)!());
  const lanes = Array.from({ length: depth }, () => {
    return randomFillSync(new Uint8Array(new SharedArrayBuffer(MiB)));
  });
  let next = 0;
  const once = (lane: number) =>
    new Promise<void>((resolve) => {
      const id = next++;
      waiting.set(id, () => {
        waiting.delete(id);
        resolve();
      });
      worker.postMessage({ id, bytes: lanes[lane] });
    });
  try {
    await once(0);
    return await trials(depth, once);
  } finally {
    await worker.terminate();
  }
}

async function main(): Promise<void> {
  const data = randomFillSync(new Uint8Array(64 * MiB));
  let at = 0;
  /** A different MiB each call, so the caches do not flatter the figures. */
  const nextMiB = () => data.subarray(at = (at + MiB) % data.length, at + MiB);

  const storeBlocksUs = perCall(() => blockChecksums(nextMiB()));
  const storePerBlockUs = perCall(() => blocks(nextMiB(), B, blockChecksum));
  const zlibBlocksUs = perCall(() => blocks(nextMiB(), B, crc32));
  const zlibWholeUs = perCall(() => crc32(nextMiB()));

  const crc32c = await createCRC32(CRC32C_POLYNOMIAL);
  const xxh3 = await createXXHash3();
  const wasm = (hasher: typeof xxh3) => (bytes: Uint8Array) => {
    hasher.init();
    hasher.update(bytes); // copies the bytes into the module's memory, then hashes them
    return hasher.digest("binary");
  };
  const crc32cBlocksUs = perCall(() => blocks(nextMiB(), B, wasm(crc32c)));
  const xxh3BlocksUs = perCall(() => blocks(nextMiB(), B, wasm(xxh3)));
  const xxh3WholeUs = perCall(() => wasm(xxh3)(nextMiB()));

  // What shared memory costs beside the CRC: a new 1 MiB buffer filled by a read (from
  // /dev/zero, as pread fills one), filling one in JS, and copying one out (`set`), each plain
  // and shared.
  const zero = openSync("/dev/zero", "r");
  const plain = randomFillSync(new Uint8Array(MiB));
  const shared = randomFillSync(new Uint8Array(new SharedArrayBuffer(MiB)));
  const target = new Uint8Array(MiB);
  const costs = {
    plainReadUs: perCall(() => readSync(zero, new Uint8Array(MiB))),
    sharedReadUs: perCall(() => readSync(zero, new Uint8Array(new SharedArrayBuffer(MiB)))),
    plainFillUs: perCall(() => plain.fill(1)),
    sharedFillUs: perCall(() => shared.fill(1)),
    plainCopyUs: perCall(() => target.set(plain)),
    sharedCopyUs: perCall(() => target.set(shared)),
  };
  closeSync(zero);
  const sharedQd1 = await sharedRoundTrip(1);

  // Every size handed over, the smallest (one block) showing the hand-off alone, and up to 8
  // jobs held, so QD8 measures the hand-off rather than hashing on the calling thread.
  const pool = new ChecksumWorkers({ workers: 1, offloadBytesMin: B, jobsMax: 8 });
  const sizes = [B, 64 * 1024, 128 * 1024, 256 * 1024, MiB, 4 * MiB];
  const offload = [];
  try {
    for (const length of sizes) {
      const inlineUs = perCall(() => blockChecksums(data.subarray(0, length)));
      const qd1 = await offloaded(pool, length, 1);
      const qd8 = await offloaded(pool, length, 8);
      offload.push({ length, inlineUs, qd1, qd8 });
    }
  } finally {
    await pool.close();
  }
  console.log(JSON.stringify({
    node: process.version,
    storeBlocksUs,
    storePerBlockUs,
    zlibBlocksUs,
    zlibWholeUs,
    crc32cBlocksUs,
    xxh3BlocksUs,
    xxh3WholeUs,
    ...costs,
    sharedQd1,
    offload,
    answered: pool.stats.answered,
    fallbacks: pool.stats.fallbacks,
  }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
