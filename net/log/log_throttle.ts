/**
 * A log line that a fault may repeat thousands of times (a full disk, a skewed clock, a client
 * retrying a failed request), said at most once per interval; the lines held back meanwhile are
 * counted, for the next one said to tell. One throttle per kind of line: a shared one would let
 * one warning silence another.
 *
 * @module
 */

export class LogThrottle {
  readonly #intervalMs: number;
  #saidAtMs = -Infinity;
  #heldBack = 0;

  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  /**
   * Whether the line is said at `nowMs` (any clock, the same one each call): the number of lines
   * held back since the last one said (0 for none) when it is, undefined when it is held back.
   */
  say(nowMs: number): number | undefined {
    if (nowMs - this.#saidAtMs < this.#intervalMs) {
      this.#heldBack++;
      return undefined;
    }
    const heldBack = this.#heldBack;
    this.#saidAtMs = nowMs;
    this.#heldBack = 0;
    return heldBack;
  }
}
