/**
 * A byte-rate limiter: background work (a scrub, recovery while clients are busy) accounts for
 * what it moves and waits until its average is back under the rate.
 *
 * @module
 */

/** A limiter lets work catch up on at most this much lost time (a burst bound). */
const RATE_CREDIT_MAX_MS = 1_000;

/** What a limiter waits with: injected, so tests run on virtual time. */
export interface LimiterClock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * Paces work at `bytesPerSecond` on average (a scrub's verification, recovery while clients are
 * busy), and yields to the event loop at every `take` even when ahead of time, so client
 * requests are never starved.
 */
export class RateLimiter {
  readonly #bytesPerSecond: number;
  readonly #now: () => number;
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  #startMs: number;
  #bytes = 0;

  constructor(bytesPerSecond: number, clock: LimiterClock) {
    if (!(bytesPerSecond > 0)) throw new RangeError(`Invalid rate ${bytesPerSecond}`);
    this.#bytesPerSecond = bytesPerSecond;
    this.#now = () => clock.now();
    this.#sleep = (ms, signal) => clock.sleep(ms, signal);
    this.#startMs = this.#now();
  }

  /** Accounts for `bytes` (just moved, or about to be); waits until the average is back under the rate. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    this.#bytes += bytes;
    const now = this.#now();
    const dueMs = this.#startMs + (this.#bytes * 1000) / this.#bytesPerSecond;
    if (dueMs < now - RATE_CREDIT_MAX_MS) {
      // Far behind (slow disk, a pause): start counting afresh rather than burst to catch up.
      this.#startMs = now;
      this.#bytes = 0;
    }
    // Whole milliseconds, rounded up (never early): the clock and the timers are the sheep's
    // (`Sheep.now` and the global setTimeout), which a simulation runs on integer virtual time.
    await this.#sleep(Math.max(0, Math.ceil(dueMs - now)), signal);
  }
}
