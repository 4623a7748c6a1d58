/**
 * A sheep's lease: its member key lives as long as the lease, and the lease as long as the sheep
 * renews it through a member that has etcd's quorum. The renewals also tell the sheep whether
 * it is in touch: once a full TTL has passed since the last renewal that etcd confirmed was
 * sent, the lease may have lapsed and the others may have moved on without this sheep, so it
 * counts itself cut off and refuses writes (the primary-partition rule on etcd's quorum). It
 * stops before the others can have evicted it, because a lease never lapses sooner than a TTL
 * after a renewal.
 *
 * @module
 */

import type { EtcdClient } from "./etcd_client.ts";

export interface LeaseOptions {
  client: EtcdClient;
  ttlSeconds: number;
  now: () => number;
  /** The lease is gone (it lapsed while this sheep was cut off, or was revoked). */
  onLost: () => void;
  /** In touch with etcd's quorum, or not any more. */
  onTouch: (inTouch: boolean) => void;
}

export class EtcdLease {
  readonly #options: LeaseOptions;
  #id = "";
  #ttlMs = 0;
  /** When the last renewal that etcd confirmed was sent. */
  #confirmedAt = -Infinity;
  #inTouch = false;
  #stop = new AbortController();
  #loop: Promise<void> | undefined;
  /** Fires when the last confirmed renewal is a TTL old: out of touch unless renewed since. */
  #expiry: ReturnType<typeof setTimeout> | undefined;

  constructor(options: LeaseOptions) {
    this.#options = options;
  }

  get id(): string {
    return this.#id;
  }

  get ttlMs(): number {
    return this.#ttlMs;
  }

  get inTouch(): boolean {
    return this.#inTouch;
  }

  /** Grants a new lease (at start, and after the last one was lost). */
  async grant(): Promise<void> {
    const sent = this.#options.now();
    const granted = await this.#options.client.grant(this.#options.ttlSeconds);
    this.#id = granted.id;
    this.#ttlMs = granted.ttl * 1000;
    this.#confirmed(sent);
  }

  /** Starts renewing, three times per TTL. */
  start(): void {
    this.#loop ??= this.#renewLoop(this.#stop.signal);
  }

  /** Stops renewing; with `revoke`, the member key goes at once instead of after the TTL. */
  async stop(options: { revoke: boolean }): Promise<void> {
    this.#stop.abort();
    clearTimeout(this.#expiry);
    await this.#loop;
    this.#loop = undefined;
    if (options.revoke && this.#id) {
      await this.#options.client.revoke(this.#id, 1_000).catch(() => undefined);
    }
  }

  async #renewLoop(signal: AbortSignal): Promise<void> {
    const interval = Math.max(100, Math.floor(this.#ttlMs / 3));
    while (!signal.aborted) {
      await sleep(interval, signal);
      if (signal.aborted) return;
      const sent = this.#options.now();
      try {
        const ttl = await this.#options.client.keepAlive(this.#id, interval);
        if (signal.aborted) return;
        if (ttl > 0) {
          this.#confirmed(sent);
        } else {
          this.#options.onLost();
        }
      } catch {
        // Every member failed: the check below decides whether this sheep is still in touch.
      }
      this.#check();
    }
  }

  #confirmed(sentAt: number): void {
    this.#confirmedAt = Math.max(this.#confirmedAt, sentAt);
    this.#check();
    clearTimeout(this.#expiry);
    if (this.#stop.signal.aborted) return;
    // On a timer of its own: renewals that hang on every member must not delay the verdict.
    const left = this.#confirmedAt + this.#ttlMs - this.#options.now();
    this.#expiry = setTimeout(() => this.#check(), Math.max(0, left));
  }

  #check(): void {
    const inTouch = this.#options.now() < this.#confirmedAt + this.#ttlMs;
    if (inTouch === this.#inTouch) return;
    this.#inTouch = inTouch;
    this.#options.onTouch(inTouch);
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
