/**
 * Virtual time for simulations of code that sleeps with the global `setTimeout` (the gateway's
 * retries, recovery's backoff, the epoch wait of peer requests). While installed, `setTimeout`
 * and `clearTimeout` queue timers on a virtual clock; nothing fires by itself. The driver lets
 * every runnable promise settle (one real macrotask drains the microtask queue), and only then
 * fires the earliest timer, ordered by (time, sequence number). A run is thus a function of its
 * inputs: no real time passes between timers, and sleeping 5 s costs nothing.
 *
 * Real I/O (a sheep's config and lock files) is awaited outside `run`/`advance`, so no virtual
 * timer fires while it is pending: what other code does meanwhile is microtasks only, which run to
 * completion before each real completion, whatever its timing.
 *
 * @module
 */

import { setImmediate } from "node:timers";

interface Timer {
  id: number;
  at: number;
  seq: number;
  fn: () => void;
}

/** The outcome of a promise driven by `run`. */
export type Outcome<T> =
  | { kind: "ok"; value: T }
  | { kind: "error"; error: unknown }
  | { kind: "hung"; why: string };

/** Steps one `run` may take before it is declared stuck (a timer loop with no progress). */
const RUN_STEPS_MAX = 200_000;

/** Where virtual time starts: a fixed instant, so versions and times replay too. */
export const VIRTUAL_START_MS = 1_800_000_000_000;

export class VirtualTime {
  /** Virtual milliseconds since the epoch (a fixed start, so versions replay too). */
  now: number;
  #timers = new Map<number, Timer>();
  #seq = 0;
  #saved: { setTimeout: typeof setTimeout; clearTimeout: typeof clearTimeout } | undefined;

  constructor(startMs = VIRTUAL_START_MS) {
    this.now = startMs;
  }

  /** Replaces the global timer functions (until `uninstall`). */
  install(): void {
    if (this.#saved) throw new Error("VirtualTime is installed already");
    this.#saved = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout };
    const add = (fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]): number => {
      const id = ++this.#seq;
      const delay = Math.max(0, Number(ms) || 0);
      this.#timers.set(id, { id, at: this.now + delay, seq: id, fn: () => fn(...args) });
      return id;
    };
    globalThis.setTimeout = add as unknown as typeof setTimeout;
    globalThis.clearTimeout = ((id: number | undefined) => {
      if (id !== undefined) this.#timers.delete(id);
    }) as typeof clearTimeout;
  }

  uninstall(): void {
    if (!this.#saved) return;
    globalThis.setTimeout = this.#saved.setTimeout;
    globalThis.clearTimeout = this.#saved.clearTimeout;
    this.#saved = undefined;
    this.#timers.clear();
  }

  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** Lets every runnable promise settle (a real macrotask runs after the microtask queue). */
  quiesce(): Promise<void> {
    return new Promise((resolve) => setImmediate(resolve));
  }

  #earliest(): Timer | undefined {
    let best: Timer | undefined;
    for (const timer of this.#timers.values()) {
      if (!best || timer.at < best.at || (timer.at === best.at && timer.seq < best.seq)) {
        best = timer;
      }
    }
    return best;
  }

  #fire(timer: Timer): void {
    this.#timers.delete(timer.id);
    this.now = Math.max(this.now, timer.at);
    timer.fn();
  }

  /** Drives `promise` to completion, firing timers, for at most `limitMs` of virtual time. */
  async run<T>(promise: Promise<T>, limitMs: number): Promise<Outcome<T>> {
    let outcome: Outcome<T> | undefined;
    promise.then(
      (value) => outcome = { kind: "ok", value },
      (error) => outcome = { kind: "error", error },
    );
    const deadline = this.now + limitMs;
    for (let step = 0; step < RUN_STEPS_MAX; step++) {
      await this.quiesce();
      if (outcome) return outcome;
      const timer = this.#earliest();
      if (!timer) return { kind: "hung", why: "nothing left to run: it waits forever" };
      if (timer.at > deadline) {
        return { kind: "hung", why: `not done after ${limitMs} ms of virtual time` };
      }
      this.#fire(timer);
    }
    return { kind: "hung", why: `not done after ${RUN_STEPS_MAX} timer steps` };
  }

  /** Lets `ms` of virtual time pass, firing what falls due. */
  async advance(ms: number): Promise<void> {
    const until = this.now + ms;
    for (let step = 0; step < RUN_STEPS_MAX; step++) {
      await this.quiesce();
      const timer = this.#earliest();
      if (!timer || timer.at > until) break;
      this.#fire(timer);
    }
    this.now = until;
    await this.quiesce();
  }

  /** Runs time forward until `done()` holds (checked after each timer) or `limitMs` passes. */
  async until(done: () => boolean, limitMs: number): Promise<boolean> {
    const deadline = this.now + limitMs;
    for (let step = 0; step < RUN_STEPS_MAX; step++) {
      await this.quiesce();
      if (done()) return true;
      const timer = this.#earliest();
      if (!timer || timer.at > deadline) return false;
      this.#fire(timer);
    }
    return false;
  }
}
