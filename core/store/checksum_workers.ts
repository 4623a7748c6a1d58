/**
 * A `BlockHasher` that computes the checksums of large reads in worker threads, so a sheep
 * serving big reads spends its main thread on I/O and replies, not on checksum arithmetic
 * (BENCHMARKS.md, "Block checksums: where the time goes": a 1 MiB read's checksums cost the main
 * thread 0.3-0.8 ms inline as CRC-32s, about 0.13 ms as block_checksum.ts's, a few tens of µs to
 * hand to a worker).
 *
 * Zero-copy: the buffer a large read was read into is transferred to the worker (moved, not
 * copied: the calling thread's view of it goes empty) and transferred back with the checksum of each
 * 4 KiB block, which the store compares with its checksum file as it does inline checksums. While
 * the worker holds the bytes nobody else can see them, so nothing unverified can be served.
 * Not shared memory: posting a SharedArrayBuffer costs about what moving a buffer does, but
 * the bytes a read returns would then stay shared, visible to the worker after the answer, and
 * slow for V8 to handle (a 1 MiB `fill` is about 30 times slower on one; measured in the same
 * section). Only a view of a whole buffer moves (other views of it would go with it); small
 * reads stay on the calling thread: below CHECKSUM_OFFLOAD_BYTES_MIN the hand-off costs more
 * than the checksum.
 *
 * Failure never costs a verification: a worker that exits (a crash, `terminate`) or stays
 * silent for CHECKSUM_WORKER_STALL_MS is gone with the bytes it held, and its pending jobs
 * answer "lost", on which the store reads the blocks again and hashes them itself; a wrong
 * answer is not taken either. The next large read starts a new worker in its place. Workers
 * that keep dying before answering anything (more than CHECKSUM_WORKER_DEATHS_MAX in a row)
 * leave every checksum on the calling thread from then on.
 *
 * Workers start on first use, hold the process open only while they have jobs (a pool nobody
 * closed cannot hang an exit), and are terminated by `close` (their pending jobs answer
 * "lost"). The worker is a script given as text (`eval`), so it runs the same in the single
 * executable, where no file beside the bundle exists, and under Deno in tests. Under Deno it is
 * correct but slow: Deno's `node:worker_threads` takes about 150 ms to pass 1 MiB either way
 * (Node: 40 µs), so tests use workers only where workers are the point.
 *
 * @module
 */

import { availableParallelism } from "node:os";
import { clearTimeout, setTimeout } from "node:timers";
import { Worker } from "node:worker_threads";
import {
  CHECKSUM_BLOCK_BYTES,
  CHECKSUM_OFFLOAD_BYTES_MIN,
  CHECKSUM_WORKER_DEATHS_MAX,
  CHECKSUM_WORKER_JOBS_MAX,
  CHECKSUM_WORKER_STALL_MS,
  CHECKSUM_WORKERS_MAX,
} from "../limits.ts";
import { blockChecksums, blockChecksumWasm, checksummer } from "./block_checksum.ts";
import type { BlockHasher, Hashed } from "./block_hasher.ts";

/**
 * The worker: for each `{ id, bytes }`, the checksum of each block of `bytes`, sent back with the
 * bytes as `{ id, checksums, bytes }`. It runs block_checksum.ts's own `checksummer` (its source
 * text) on the module's bytes given as `workerData.wasm`: the same arithmetic as `blockChecksum`.
 */
export const CHECKSUM_WORKER_SOURCE = `"use strict";
const { parentPort, workerData } = require("node:worker_threads");
const makeChecksummer = (${checksummer.toString()});
const checksummer = makeChecksummer(workerData.wasm, ${CHECKSUM_BLOCK_BYTES});
parentPort.on("message", ({ id, bytes }) => {
  const checksums = checksummer.each(bytes);
  parentPort.postMessage({ id, checksums, bytes }, [checksums.buffer, bytes.buffer]);
});
`;

/**
 * Workers for a process on this machine: none on two cores or fewer, else one per core but two
 * (the main thread's, and one for the kernel and the clients). Since block checksums cost about
 * 0.2 ms per MiB (block_checksum.ts), the hand-off to a worker on a 2-core host costs more CPU
 * than it takes off the main thread: 1 MiB reads used 1,077 µs of CPU per MiB with a worker and
 * 834 on the main thread alone (BENCHMARKS.md, "What verifying checksums costs").
 */
export function checksumWorkersDefault(): number {
  return Math.max(0, Math.min(CHECKSUM_WORKERS_MAX, availableParallelism() - 2));
}

export interface ChecksumWorkersOptions {
  /** Worker threads at most (started as reads need them). */
  workers: number;
  /** Where a worker's death is reported. */
  warn?: (line: string) => void;
  /** The worker's script; tests give ones that misbehave. Default CHECKSUM_WORKER_SOURCE. */
  source?: string;
  /** How long a worker with jobs may stay silent (default CHECKSUM_WORKER_STALL_MS). */
  stallMs?: number;
  /** The shortest job for a worker (default CHECKSUM_OFFLOAD_BYTES_MIN; benchmarks vary it). */
  offloadBytesMin?: number;
  /** Jobs a worker holds at most (default CHECKSUM_WORKER_JOBS_MAX). */
  jobsMax?: number;
}

/** What the pool has done, for tests and benchmarks. */
export interface ChecksumWorkerStats {
  /** Workers alive now. */
  running: number;
  /** Jobs a worker answered. */
  answered: number;
  /** Jobs a worker took and did not answer right: lost with it, or hashed here after all. */
  fallbacks: number;
  /** Workers that exited or stalled other than by `close`. */
  deaths: number;
}

interface Job {
  readonly length: number;
  readonly resolve: (hashed: Hashed | undefined) => void;
}

interface Thread {
  readonly slot: number;
  readonly worker: Worker;
  readonly pending: Map<number, Job>;
  /** Armed while jobs are pending, pushed back by each answer: a silent worker is stuck. */
  watchdog: ReturnType<typeof setTimeout> | undefined;
  answered: boolean;
  gone: boolean;
}

export class ChecksumWorkers implements BlockHasher {
  readonly #threads: (Thread | undefined)[];
  readonly #warn: (line: string) => void;
  readonly #source: string;
  /** The checksum module's bytes, for each worker to instantiate. */
  readonly #wasm = blockChecksumWasm();
  readonly #stallMs: number;
  readonly #offloadBytesMin: number;
  readonly #jobsMax: number;
  #nextId = 1;
  /** Deaths since a worker last answered a job. */
  #deathsInARow = 0;
  #closed = false;
  #stats = { answered: 0, fallbacks: 0, deaths: 0 };

  constructor(options: ChecksumWorkersOptions) {
    this.#threads = new Array(Math.max(1, options.workers)).fill(undefined);
    this.#warn = options.warn ?? (() => {});
    this.#source = options.source ?? CHECKSUM_WORKER_SOURCE;
    this.#stallMs = options.stallMs ?? CHECKSUM_WORKER_STALL_MS;
    this.#offloadBytesMin = options.offloadBytesMin ?? CHECKSUM_OFFLOAD_BYTES_MIN;
    this.#jobsMax = Math.max(1, options.jobsMax ?? CHECKSUM_WORKER_JOBS_MAX);
  }

  get stats(): ChecksumWorkerStats {
    return { running: this.#threads.filter((t) => t !== undefined).length, ...this.#stats };
  }

  offload(bytes: Uint8Array): Promise<Hashed | undefined> | undefined {
    const thread = this.#offloads(bytes) ? this.#pick() : undefined;
    if (thread === undefined) return undefined;
    const id = this.#nextId++;
    const length = bytes.length; // the view goes empty once moved
    try {
      thread.worker.postMessage({ id, bytes }, [bytes.buffer as ArrayBuffer]);
    } catch {
      return undefined; // not transferable after all (nothing moved)
    }
    return new Promise((resolve) => {
      if (thread.pending.size === 0) {
        thread.worker.ref();
        thread.watchdog = setTimeout(() => this.#stalled(thread), this.#stallMs);
      }
      thread.pending.set(id, { length, resolve });
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#threads.map(async (thread) => {
      if (thread === undefined) return;
      await thread.worker.terminate();
      this.#gone(thread); // in case 'exit' comes later than terminate's answer
    }));
  }

  /** Whether `bytes` go to a worker: large, and a whole buffer of their own to move. */
  #offloads(bytes: Uint8Array): boolean {
    return !this.#closed && this.#deathsInARow <= CHECKSUM_WORKER_DEATHS_MAX &&
      bytes.length >= this.#offloadBytesMin && bytes.buffer instanceof ArrayBuffer &&
      bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  }

  /**
   * The worker with the fewest pending jobs, starting one where a slot is empty; none when
   * every worker has CHECKSUM_WORKER_JOBS_MAX: the calling thread hashes the job itself rather
   * than queue it (a worker that falls behind, say on a host whose cores are all busy, then
   * costs a job no more than hashing it here would).
   */
  #pick(): Thread | undefined {
    let best: Thread | undefined;
    for (let slot = 0; slot < this.#threads.length; slot++) {
      const thread = this.#threads[slot] ?? this.#spawn(slot);
      if (best === undefined || thread.pending.size < best.pending.size) best = thread;
      if (best.pending.size === 0) break;
    }
    return best!.pending.size < this.#jobsMax ? best : undefined;
  }

  #spawn(slot: number): Thread {
    const worker = new Worker(this.#source, { eval: true, workerData: { wasm: this.#wasm } });
    worker.unref();
    const thread: Thread = {
      slot,
      worker,
      pending: new Map(),
      watchdog: undefined,
      answered: false,
      gone: false,
    };
    this.#threads[slot] = thread;
    worker.on("message", (message: unknown) => this.#answer(thread, message));
    worker.on("messageerror", () => void worker.terminate());
    worker.on("error", (error) => {
      this.#warn(`checksum worker ${slot} failed: ${error.message}`);
    });
    worker.once("exit", (code) => {
      if (this.#gone(thread) && !this.#closed) this.#died(thread, `exited with code ${code}`);
    });
    return thread;
  }

  #answer(thread: Thread, message: unknown): void {
    const { id, checksums, bytes } = (message ?? {}) as Record<string, unknown>;
    const job = typeof id === "number" ? thread.pending.get(id) : undefined;
    if (job === undefined) return;
    thread.pending.delete(id as number);
    if (!(bytes instanceof Uint8Array) || bytes.length !== job.length) {
      job.resolve(undefined); // the bytes did not come back: read them again
      this.#stats.fallbacks++;
    } else if (
      !(checksums instanceof Uint32Array) ||
      checksums.length !== Math.ceil(job.length / CHECKSUM_BLOCK_BYTES)
    ) {
      job.resolve({ bytes, checksums: blockChecksums(bytes) });
      this.#stats.fallbacks++;
    } else {
      job.resolve({ bytes, checksums });
      this.#stats.answered++;
      thread.answered = true;
      this.#deathsInARow = 0;
    }
    if (thread.pending.size > 0) thread.watchdog?.refresh();
    else {
      clearTimeout(thread.watchdog);
      thread.watchdog = undefined;
      thread.worker.unref();
    }
  }

  #stalled(thread: Thread): void {
    if (!this.#gone(thread)) return;
    void thread.worker.terminate();
    this.#died(thread, `answered nothing for ${this.#stallMs} ms`);
  }

  /**
   * Takes a worker out of its slot and answers its pending jobs "lost" (their bytes went with
   * it); false when that was done already.
   */
  #gone(thread: Thread): boolean {
    if (thread.gone) return false;
    thread.gone = true;
    clearTimeout(thread.watchdog);
    if (this.#threads[thread.slot] === thread) this.#threads[thread.slot] = undefined;
    for (const job of thread.pending.values()) {
      job.resolve(undefined);
      this.#stats.fallbacks++;
    }
    thread.pending.clear();
    return true;
  }

  /**
   * A worker died other than by `close`: counted and reported. Its slot is empty, so the next
   * large read starts a new one (not at once: a worker that dies at start would loop).
   */
  #died(thread: Thread, how: string): void {
    this.#stats.deaths++;
    if (!thread.answered) this.#deathsInARow++;
    const giveUp = this.#deathsInARow > CHECKSUM_WORKER_DEATHS_MAX;
    this.#warn(
      `checksum worker ${thread.slot} ${how}; its reads were read again and verified on the ` +
        "main thread; " +
        (giveUp
          ? "workers keep dying: checksums stay on the main thread from now on"
          : "the next large read starts a new one"),
    );
  }
}
