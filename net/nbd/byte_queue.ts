/**
 * The unparsed input of one connection: chunks as they arrived, consumed by exactly one reader
 * (the session loop) either synchronously (`tryTake`, the fast path when bytes are already
 * here) or by awaiting (`take`). No sockets here: the owner pushes chunks and is told, through
 * the hooks, when the reader wants more (resume the socket) or has consumed (maybe resume).
 */
import type { Buffer } from "node:buffer";
import { ReceivedBytes } from "../received_bytes.ts";

export interface ByteQueueHooks {
  /** A read is waiting for bytes that are not buffered yet. */
  onWant?: () => void;
  /** Bytes were consumed. */
  onConsume?: () => void;
}

interface Waiter {
  n: number;
  resolve: (data: Buffer | null) => void;
}

export class ByteQueue {
  readonly #bytes = new ReceivedBytes();
  #ended = false;
  #waiter: Waiter | null = null;
  /** Bytes still to discard as they arrive (an oversized payload being skipped). */
  #discard = 0;
  #discardDone: ((ok: boolean) => void) | null = null;
  readonly #hooks: ByteQueueHooks;

  constructor(hooks: ByteQueueHooks = {}) {
    this.#hooks = hooks;
  }

  /** Buffered bytes. */
  get length(): number {
    return this.#bytes.length;
  }

  /** Bytes the pending read needs in total (0 if nobody waits). */
  get wanted(): number {
    return this.#waiter?.n ?? (this.#discard > 0 ? 1 : 0);
  }

  get ended(): boolean {
    return this.#ended;
  }

  push(chunk: Uint8Array): void {
    if (this.#ended || chunk.length === 0) return;
    if (this.#discard > 0) {
      const drop = Math.min(this.#discard, chunk.length);
      this.#discard -= drop;
      chunk = chunk.subarray(drop);
      if (this.#discard === 0) this.#finishDiscard(true);
      if (chunk.length === 0) return;
    }
    this.#bytes.add(chunk);
    const w = this.#waiter;
    if (w !== null && this.#bytes.length >= w.n) {
      this.#waiter = null;
      w.resolve(this.#takeNow(w.n));
    }
  }

  /** End of input: a pending or later read that cannot be satisfied gets null. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    const w = this.#waiter;
    this.#waiter = null;
    w?.resolve(null);
    if (this.#discard > 0) this.#finishDiscard(false);
  }

  /** `n` bytes if buffered (a view when they sit in one chunk), else null. */
  tryTake(n: number): Buffer | null {
    if (this.#bytes.length < n || this.#waiter !== null || this.#discard > 0) return null;
    return this.#takeNow(n);
  }

  /** Exactly `n` bytes, or null if the input ends first. One read at a time. */
  take(n: number): Promise<Buffer | null> {
    if (this.#waiter !== null || this.#discard > 0) {
      return Promise.reject(new Error("ByteQueue: concurrent reads"));
    }
    if (this.#bytes.length >= n) return Promise.resolve(this.#takeNow(n));
    if (this.#ended) return Promise.resolve(null);
    this.#bytes.gather(n);
    return new Promise((resolve) => {
      this.#waiter = { n, resolve };
      this.#hooks.onWant?.();
    });
  }

  /** Discards `n` bytes without buffering them; false if the input ends first. */
  skip(n: number): Promise<boolean> {
    if (this.#waiter !== null || this.#discard > 0) {
      return Promise.reject(new Error("ByteQueue: concurrent reads"));
    }
    const now = Math.min(n, this.#bytes.length);
    this.#bytes.drop(now);
    if (now > 0) this.#hooks.onConsume?.();
    if (now === n) return Promise.resolve(true);
    if (this.#ended) return Promise.resolve(false);
    this.#discard = n - now;
    return new Promise((resolve) => {
      this.#discardDone = resolve;
      this.#hooks.onWant?.();
    });
  }

  #finishDiscard(ok: boolean): void {
    this.#discard = 0;
    const done = this.#discardDone;
    this.#discardDone = null;
    done?.(ok);
  }

  #takeNow(n: number): Buffer {
    const out = this.#bytes.take(n);
    this.#hooks.onConsume?.();
    return out;
  }
}
