/**
 * The floor object data stops at: a store admits a create or write only while the file system
 * would keep at least `reserveBytes` free after it (METADATA_RESERVE_BYTES in core/limits.ts),
 * so what the sheep must write durably beside its objects (the epoch log above all: a sheep that
 * cannot persist it leaves the group) always finds room, however full the clients make the disk.
 *
 * A look at the file system (statfs) costs a trip through the thread pool, so it is not taken per
 * write. The floor keeps the free space of its last look and charges every admitted write
 * against it (a write may allocate at most the pages it touches); it admits at once while the
 * charges since the last look stay within half the headroom that look saw, and looks again
 * before deciding otherwise, so near the reserve every create or write is decided on a fresh
 * look (concurrent ones share it). Far from it, a look older than `recheckMs` is taken in the
 * background: other sheep or processes on the same file system use space too. Charges for
 * writes still in flight when a look starts are kept after it (the look may not see them yet):
 * the estimate errs on the full side and the next look corrects it.
 *
 * @module
 */

import { assert } from "../assert.ts";
import type { DiskSpace } from "./disk.ts";

/** How a floor is set. */
export interface SpaceFloorOptions {
  /** Free bytes data must leave; 0 turns the floor off (only the disk itself refuses). */
  readonly reserveBytes: number;
  /** A look older than this is taken again in the background (ms). */
  readonly recheckMs: number;
  readonly now: () => number;
}

/** Admits object data while the file system keeps the reserve free. */
export class SpaceFloor {
  readonly reserveBytes: number;
  readonly #look: () => Promise<DiskSpace>;
  readonly #recheckMs: number;
  readonly #now: () => number;
  /** Free bytes at the last look; undefined before the first (or while looks fail). */
  #free: number | undefined;
  #lookedAtMs = -Infinity;
  /** Bytes admitted that the last look may not have seen. */
  #charged = 0;
  /** Bytes admitted whose writes have not finished. */
  #inFlight = 0;
  /** Bytes ever admitted: a look charges what was admitted after it started. */
  #admittedTotal = 0;
  #looking: Promise<void> | undefined;

  constructor(look: () => Promise<DiskSpace>, options: SpaceFloorOptions) {
    assert(Number.isSafeInteger(options.reserveBytes) && options.reserveBytes >= 0, "reserve");
    assert(options.recheckMs > 0, "recheck interval");
    this.#look = look;
    this.reserveBytes = options.reserveBytes;
    this.#recheckMs = options.recheckMs;
    this.#now = options.now;
  }

  /**
   * Whether a write that may allocate `bytes` may go ahead: true at once when far from the
   * reserve, else after a fresh look. Each admitted write must call `done(bytes)` when it ends,
   * whether it succeeded or not. A look that fails admits (the disk says itself when it is full).
   */
  admit(bytes: number): boolean | Promise<boolean> {
    assert(Number.isSafeInteger(bytes) && bytes >= 0, "admit: bytes");
    if (this.reserveBytes === 0) return true;
    if (this.#free !== undefined && this.#far(bytes)) {
      if (this.#now() - this.#lookedAtMs >= this.#recheckMs) {
        void this.#lookAgain(); // never rejects
      }
      this.#charge(bytes);
      return true;
    }
    return this.#lookAgain().then(() => {
      if (this.#free !== undefined && this.#free - this.#charged - bytes < this.reserveBytes) {
        return false;
      }
      this.#charge(bytes);
      return true;
    });
  }

  /** An admitted write of `bytes` ended (done or failed). */
  done(bytes: number): void {
    if (this.reserveBytes === 0) return;
    this.#inFlight -= bytes;
    assert(this.#inFlight >= 0, "done: more than was admitted");
  }

  /** The charges since the last look stay within half the headroom it saw. */
  #far(bytes: number): boolean {
    const headroom = this.#free! - this.reserveBytes;
    return this.#charged + bytes <= headroom / 2;
  }

  #charge(bytes: number): void {
    this.#charged += bytes;
    this.#inFlight += bytes;
    this.#admittedTotal += bytes;
  }

  /** Looks at the file system (one look at a time; callers meanwhile share it). */
  #lookAgain(): Promise<void> {
    this.#looking ??= this.#lookOnce().finally(() => {
      this.#looking = undefined;
    });
    return this.#looking;
  }

  async #lookOnce(): Promise<void> {
    const startedMs = this.#now();
    const admittedBefore = this.#admittedTotal;
    const inFlight = this.#inFlight;
    try {
      const { freeBytes } = await this.#look();
      this.#free = freeBytes;
      this.#charged = inFlight + (this.#admittedTotal - admittedBefore);
    } catch {
      this.#free = undefined;
    }
    this.#lookedAtMs = startedMs;
  }
}
