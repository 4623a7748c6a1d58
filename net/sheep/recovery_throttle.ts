/**
 * Recovery yields to clients. A sheep whose clients are busy (a client request arrived within
 * the last CLIENT_QUIET_MS: a VM's NBD request, an object-protocol read or write, or a replica
 * write another node's gateway sends on a client's behalf) paces the recovery traffic it takes
 * part in at `--recovery-rate` bytes per second: the objects it pulls, and the copies it reads for
 * other nodes' pulls (`Flag.BACKGROUND`). With no client about, recovery runs at full speed.
 *
 * Each node judges by its own clients, so the node serving a VM is the one that holds back, and a
 * node without clients still serves and pulls at full speed. Pacing starts afresh each time
 * clients get busy: bytes moved while they were quiet are no debt.
 *
 * @module
 */

import { type LimiterClock, RateLimiter } from "./rate_limiter.ts";
import { sameCopy } from "../../core/cluster/copy_choice.ts";

export interface RecoveryThrottleOptions {
  /** Recovery bytes per second while clients are busy; 0: never paced. */
  bytesPerSecond: number;
  /** Clients count as busy this long after their last request. */
  quietMs: number;
}

export class RecoveryThrottle {
  readonly #options: RecoveryThrottleOptions;
  readonly #clock: LimiterClock;
  #lastClientMs = -Infinity;
  /** Paces while clients are busy; dropped when they are quiet (a fresh start next time). */
  #limiter: RateLimiter | undefined;

  constructor(options: RecoveryThrottleOptions, clock: LimiterClock) {
    if (!(options.bytesPerSecond >= 0)) {
      throw new RangeError(`Invalid recovery rate ${options.bytesPerSecond}`);
    }
    this.#options = options;
    this.#clock = clock;
  }

  /** A client request arrived. On every request's path: one clock read, nothing else. */
  client(): void {
    this.#lastClientMs = this.#clock.now();
  }

  /**
   * True while recovery yields here: a client request arrived within the quiet time (and
   * recovery is paced at all: a rate of 0 never yields).
   */
  get yielding(): boolean {
    return this.#options.bytesPerSecond > 0 &&
      this.#clock.now() - this.#lastClientMs < this.#options.quietMs;
  }

  /** Waits, before `bytes` of recovery traffic, as long as the rate asks while clients are busy. */
  async take(bytes: number): Promise<void> {
    if (!this.yielding) {
      this.#limiter = undefined;
      return;
    }
    this.#limiter ??= new RateLimiter(this.#options.bytesPerSecond, this.#clock);
    await this.#limiter.take(bytes);
  }
}

/**
 * The holders that said their clients are busy (`Flag.BUSY` on a reply to recovery's read), each
 * remembered for `avoidMs`: recovery takes copies from the others meanwhile.
 */
export class BusyHolders {
  readonly #avoidMs: number;
  readonly #now: () => number;
  readonly #until = new Map<string, number>();

  constructor(avoidMs: number, now: () => number) {
    this.#avoidMs = avoidMs;
    this.#now = now;
  }

  /** `node` answered a recovery read with its clients busy. */
  busy(node: string): void {
    this.#until.set(node, this.#now() + this.#avoidMs);
  }

  has(node: string): boolean {
    const until = this.#until.get(node);
    if (until === undefined) return false;
    if (until > this.#now()) return true;
    this.#until.delete(node);
    return false;
  }
}

/**
 * `candidates` (best first) with, among holders of the same copy (equal version, digest and
 * verification, so equal bytes), those whose clients are quiet first; the order is otherwise
 * kept: a busy holder still serves when it alone has a copy, or the best one.
 */
export function preferQuiet<
  C extends {
    node: { id: string };
    meta: { version: number; digest: string; verified: boolean };
  },
>(candidates: readonly C[], busy: (node: string) => boolean): C[] {
  const same = (a: C, b: C) =>
    sameCopy(a.meta, b.meta) &&
    a.meta.verified === b.meta.verified;
  const ordered: C[] = [];
  for (let start = 0; start < candidates.length;) {
    let end = start + 1;
    while (end < candidates.length && same(candidates[start]!, candidates[end]!)) end++;
    const run = candidates.slice(start, end);
    ordered.push(
      ...run.filter((c) => !busy(c.node.id)),
      ...run.filter((c) => busy(c.node.id)),
    );
    start = end;
  }
  return ordered;
}
