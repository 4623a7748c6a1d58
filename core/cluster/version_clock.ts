/**
 * Object versions, issued by the writer (the gateway). A version is a hybrid logical clock:
 * milliseconds since the epoch times 1024 plus a counter, never going backwards on one node and
 * pushed forward by every version it sees from others (the gateway shows it the version each
 * write finds, and writes again under a higher one when a copy's was not below its own). So a
 * write issued later, even on another node or after the object was removed and created again,
 * carries a higher version than what a replica that missed it keeps; replicas that applied the
 * same writes hold the same version.
 *
 * The milliseconds are the cluster's timeline, not this node's wall clock alone: the latest
 * clock any peer reported (`adoptTimeline`, from net/sheep/clock_probe.ts), carried forward on
 * this node's monotonic clock. Wall clocks alone would order a write through a node whose clock
 * is behind below an earlier one through a node whose clock is ahead, and a copy of that earlier
 * write kept by a node that was down when the later one went out would win recovery: an
 * acknowledged write lost. On one timeline, a later write outranks it unless it follows within
 * the time a probe's answer takes to arrive.
 *
 * @module
 */

import { CLOCK_ADOPT_MAX_MS } from "../limits.ts";

/** Versions per millisecond before the clock runs ahead of wall time. */
const TICKS_PER_MS = 1024;

/** What a peer's timeline did to this clock (`VersionClock.adoptTimeline`). */
export interface Adoption {
  /** How far the peer's timeline was ahead of this node's wall clock (ms; negative: behind). */
  aheadOfWallMs: number;
  /** Whether it was ahead of this node's timeline and is now its own. */
  adopted: boolean;
  /** Refused: further ahead than CLOCK_ADOPT_MAX_MS (a broken clock, not a skewed one). */
  refused: boolean;
}

export class VersionClock {
  readonly #now: () => number;
  readonly #monotonic: () => number;
  #last = 0;
  /** The latest peer timeline adopted (ms) and this node's monotonic time when it arrived. */
  #adoptedMs = -Infinity;
  #adoptedAt = 0;

  /**
   * `now` is the wall clock (ms since the epoch); `monotonic` a clock nobody sets, which carries
   * an adopted timeline forward (default: `now`).
   */
  constructor(now: () => number, monotonic: () => number = now) {
    this.#now = now;
    this.#monotonic = monotonic;
  }

  /**
   * The cluster's time as this node knows it (ms): its wall clock, or the latest peer timeline
   * it adopted carried forward since, whichever is later.
   */
  timelineMs(): number {
    const wall = Math.floor(this.#now());
    if (this.#adoptedMs === -Infinity) return wall;
    return Math.max(wall, Math.floor(this.#adoptedMs + (this.#monotonic() - this.#adoptedAt)));
  }

  /** A version higher than every one issued or observed so far. Stays below 2^53 until 2248. */
  next(): number {
    this.#last = Math.max(this.#last + 1, this.timelineMs() * TICKS_PER_MS);
    return this.#last;
  }

  /** The highest version issued or observed so far (0: none). */
  get last(): number {
    return this.#last;
  }

  /** Takes note of a version seen elsewhere, so the next one issued is higher. */
  observe(version: number): void {
    if (Number.isSafeInteger(version) && version > this.#last) this.#last = version;
  }

  /**
   * Takes a peer's timeline, `peerMs` as it answered (its `timelineMs()`): when ahead of this
   * node's, it becomes this node's, carried forward from now. The answer was read before it was
   * sent, so the peer's timeline is at least that when it arrives: the timelines never run
   * ahead of the latest clock in the cluster, however often nodes adopt each other's.
   */
  adoptTimeline(peerMs: number): Adoption {
    const wall = this.#now();
    const aheadOfWallMs = Math.round(peerMs - wall);
    if (!Number.isFinite(peerMs) || aheadOfWallMs > CLOCK_ADOPT_MAX_MS) {
      return { aheadOfWallMs, adopted: false, refused: true };
    }
    if (peerMs <= this.timelineMs()) return { aheadOfWallMs, adopted: false, refused: false };
    this.#adoptedMs = peerMs;
    this.#adoptedAt = this.#monotonic();
    return { aheadOfWallMs, adopted: true, refused: false };
  }

  /** How far the time part of `version` is ahead of this node's timeline (negative: behind). */
  aheadMs(version: number): number {
    return Math.floor(version / TICKS_PER_MS) - this.timelineMs();
  }
}
