/**
 * A `BlockHasher` that computes the checksums of large reads in worker threads, so a sheep
 * serving big reads spends its main thread on I/O and replies, not on CRC-32 arithmetic
 * (measured in BENCHMARKS.md, "Block checksums: where the time goes": a 1 MiB read's CRCs cost
 * the main thread about 0.3-0.8 ms inline, about 0.03 ms to hand to a worker).
 *
 * Zero-copy: a large read is read into shared memory (`allocate`), and the worker is sent a
 * view of it, not the bytes; it answers with the CRC of each 4 KiB block, which the store
 * compares with its checksum file as it does for inline CRCs. The store keeps the bytes to
 * itself until that answer: nothing unverified leaves it, and the worker only reads them.
 * Small reads stay on the calling thread: below CHECKSUM_OFFLOAD_BYTES_MIN the hand-off costs
 * more than the CRC.
 *
 * Failure never costs a verification: a worker that exits (a crash, `terminate`), that sends
 * something other than an answer, or that stays silent for CHECKSUM_WORKER_STALL_MS is gone,
 * and its pending jobs are computed on the calling thread from the bytes still in memory; the
 * next large read starts a new worker in its place. Workers that keep dying before answering anything (more than
 * CHECKSUM_WORKER_DEATHS_MAX in a row) leave every checksum on the calling thread from then on.
 *
 * Workers start on first use, hold the process open only while they have jobs (a pool nobody
 * closed cannot hang an exit), and are terminated by `close`. The worker is a script given as
 * text (`eval`), so it runs the same in the single executable, where no file beside the
 * bundle exists, and under Deno in tests.
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
  CHECKSUM_WORKER_STALL_MS,
  CHECKSUM_WORKERS_MAX,
} from "../limits.ts";
import { blockCrcsInline, type BlockHasher } from "./block_hasher.ts";

/**
 * The worker: for each `{ id, bytes }`, the CRC of each block of `bytes` (the same
 * `node:zlib` crc32 as `blockCrc`), sent back as `{ id, crcs }`.
 */
export const CHECKSUM_WORKER_SOURCE = `"use strict";
const { parentPort } = require("node:worker_threads");
const { crc32 } = require("node:zlib");
const B = ${CHECKSUM_BLOCK_BYTES};
parentPort.on("message", ({ id, bytes }) => {
  const crcs = new Uint32Array(Math.ceil(bytes.length / B));
  for (let at = 0, i = 0; at < bytes.length; at += B, i++) {
    crcs[i] = crc32(bytes.subarray(at, at + B));
  }
  parentPort.postMessage({ id, crcs }, [crcs.buffer]);
});
`;

/** Workers for a process on this machine: a core is left to the main thread. */
export function checksumWorkersDefault(): number {
  return Math.max(1, Math.min(CHECKSUM_WORKERS_MAX, availableParallelism() - 1));
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
}

/** What the pool has done, for tests and benchmarks. */
export interface ChecksumWorkerStats {
  /** Workers alive now. */
  running: number;
  /** Jobs a worker answered. */
  answered: number;
  /** Jobs handed to a worker that were computed on the calling thread after all. */
  fallbacks: number;
  /** Workers that exited or stalled other than by `close`. */
  deaths: number;
}

interface Job {
  readonly bytes: Uint8Array;
  readonly resolve: (crcs: Uint32Array) => void;
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
  readonly #stallMs: number;
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
  }

  get stats(): ChecksumWorkerStats {
    return { running: this.#threads.filter((t) => t !== undefined).length, ...this.#stats };
  }

  allocate(length: number): Uint8Array {
    return this.#offloads(length)
      ? new Uint8Array(new SharedArrayBuffer(length))
      : new Uint8Array(length);
  }

  blockCrcs(bytes: Uint8Array): Promise<Uint32Array> {
    // Only shared memory reaches a worker without a copy (and a copy costs what the CRC does).
    if (!(bytes.buffer instanceof SharedArrayBuffer) || !this.#offloads(bytes.length)) {
      return Promise.resolve(blockCrcsInline(bytes));
    }
    const thread = this.#pick();
    const id = this.#nextId++;
    return new Promise((resolve) => {
      if (thread.pending.size === 0) {
        thread.worker.ref();
        thread.watchdog = setTimeout(() => this.#stalled(thread), this.#stallMs);
      }
      thread.pending.set(id, { bytes, resolve });
      thread.worker.postMessage({ id, bytes });
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

  #offloads(length: number): boolean {
    return !this.#closed && this.#deathsInARow <= CHECKSUM_WORKER_DEATHS_MAX &&
      length >= CHECKSUM_OFFLOAD_BYTES_MIN;
  }

  /** The worker with the fewest pending jobs, starting one where a slot is empty. */
  #pick(): Thread {
    let best: Thread | undefined;
    for (let slot = 0; slot < this.#threads.length; slot++) {
      const thread = this.#threads[slot] ?? this.#spawn(slot);
      if (best === undefined || thread.pending.size < best.pending.size) best = thread;
      if (best.pending.size === 0) break;
    }
    return best!;
  }

  #spawn(slot: number): Thread {
    const worker = new Worker(this.#source, { eval: true });
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
    const { id, crcs } = (message ?? {}) as { id?: unknown; crcs?: unknown };
    const job = typeof id === "number" ? thread.pending.get(id) : undefined;
    if (job === undefined) return;
    thread.pending.delete(id as number);
    const blocks = Math.ceil(job.bytes.length / CHECKSUM_BLOCK_BYTES);
    if (crcs instanceof Uint32Array && crcs.length === blocks) {
      job.resolve(crcs);
      this.#stats.answered++;
      thread.answered = true;
      this.#deathsInARow = 0;
    } else {
      job.resolve(blockCrcsInline(job.bytes));
      this.#stats.fallbacks++;
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
   * Takes a worker out of its slot and computes its pending jobs here; false when that was done
   * already.
   */
  #gone(thread: Thread): boolean {
    if (thread.gone) return false;
    thread.gone = true;
    clearTimeout(thread.watchdog);
    if (this.#threads[thread.slot] === thread) this.#threads[thread.slot] = undefined;
    for (const job of thread.pending.values()) {
      job.resolve(blockCrcsInline(job.bytes));
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
      `checksum worker ${thread.slot} ${how}; its reads were verified on the main thread; ` +
        (giveUp
          ? "workers keep dying: checksums stay on the main thread from now on"
          : "a new worker takes its place"),
    );
  }
}
