/**
 * Object versions, issued by the writer (the gateway). A version is a hybrid logical clock:
 * milliseconds since the epoch times 1024 plus a counter, never going backwards on one node and
 * pushed forward by every version it sees from others (the gateway shows it the version each
 * write finds, and writes again under a higher one when a copy's was not below its own). So a
 * write issued later, even on another node or after the object was removed and created again,
 * carries a higher version than what a replica that missed it keeps; replicas that applied the
 * same writes hold the same version.
 *
 * @module
 */

/** Versions per millisecond before the clock runs ahead of wall time. */
const TICKS_PER_MS = 1024;

export class VersionClock {
  readonly #now: () => number;
  #last = 0;

  constructor(now: () => number) {
    this.#now = now;
  }

  /** A version higher than every one issued or observed so far. Stays below 2^53 until 2248. */
  next(): number {
    this.#last = Math.max(this.#last + 1, Math.floor(this.#now()) * TICKS_PER_MS);
    return this.#last;
  }

  /** Takes note of a version seen elsewhere, so the next one issued is higher. */
  observe(version: number): void {
    if (Number.isSafeInteger(version) && version > this.#last) this.#last = version;
  }

  /** How far the wall-clock part of `version` is ahead of this clock now (negative: behind). */
  aheadMs(version: number): number {
    return Math.floor(version / TICKS_PER_MS) - Math.floor(this.#now());
  }
}
