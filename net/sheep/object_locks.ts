/**
 * The one per-object lock of a sheep. Client writes to an object take it shared (they may run
 * side by side: they touch disjoint or idempotent ranges, and every replica applies each of
 * them); work that replaces a whole copy (a recovery pull, a repair) takes it exclusive, so no
 * write lands on a copy while it is being replaced and none is lost under it.
 *
 * @module
 */

import { promiseOf } from "../../core/errors.ts";

interface Entry {
  shared: number;
  exclusive: boolean;
  waiters: { exclusive: boolean; wake: () => void }[];
}

export class ObjectLocks<K> {
  #entries = new Map<K, Entry>();

  /** Runs `work` holding the lock of `key` shared. */
  shared<T>(key: K, work: () => Promise<T>): Promise<T> {
    return this.#with(key, false, work);
  }

  /** Runs `work` holding the lock of `key` alone. */
  exclusive<T>(key: K, work: () => Promise<T>): Promise<T> {
    return this.#with(key, true, work);
  }

  /** True while anyone holds or waits for `key`. */
  busy(key: K): boolean {
    return this.#entries.has(key);
  }

  #with<T>(key: K, exclusive: boolean, work: () => Promise<T>): Promise<T> {
    // A free lock is taken at once, without a turn of the microtask queue (every client write
    // takes one: the hot path).
    if (this.#tryAcquire(key, exclusive)) return this.#holding(key, exclusive, work);
    return new Promise<void>((wake) => this.#entries.get(key)!.waiters.push({ exclusive, wake }))
      .then(() => this.#holding(key, exclusive, work));
  }

  /** Runs `work` with the lock taken; releases it once `work` settles (or throws). */
  #holding<T>(key: K, exclusive: boolean, work: () => Promise<T>): Promise<T> {
    return promiseOf(work).then((value) => {
      this.#release(key, exclusive);
      return value;
    }, (error) => {
      this.#release(key, exclusive);
      throw error;
    });
  }

  /** Takes the lock if it is free for this request now; else makes sure its entry exists. */
  #tryAcquire(key: K, exclusive: boolean): boolean {
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = { shared: 0, exclusive: false, waiters: [] };
      this.#entries.set(key, entry);
    }
    // First come, first served: a queued exclusive request holds back later shared ones.
    if (entry.waiters.length === 0 && grantable(entry, exclusive)) {
      take(entry, exclusive);
      return true;
    }
    return false;
  }

  #release(key: K, exclusive: boolean): void {
    const entry = this.#entries.get(key)!;
    if (exclusive) entry.exclusive = false;
    else entry.shared--;
    while (entry.waiters.length > 0 && grantable(entry, entry.waiters[0]!.exclusive)) {
      const next = entry.waiters.shift()!;
      take(entry, next.exclusive);
      next.wake();
    }
    if (!entry.exclusive && entry.shared === 0 && entry.waiters.length === 0) {
      this.#entries.delete(key);
    }
  }
}

function grantable(entry: Entry, exclusive: boolean): boolean {
  return exclusive ? !entry.exclusive && entry.shared === 0 : !entry.exclusive;
}

function take(entry: Entry, exclusive: boolean): void {
  if (exclusive) entry.exclusive = true;
  else entry.shared++;
}
