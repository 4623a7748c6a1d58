/**
 * The one per-object lock of a sheep. Client writes to an object take it shared (they may run
 * side by side: they touch disjoint or idempotent ranges, and every replica applies each of
 * them); work that replaces a whole copy (a recovery pull, a repair) takes it exclusive, so no
 * write lands on a copy while it is being replaced and none is lost under it.
 *
 * @module
 */

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

  async #with<T>(key: K, exclusive: boolean, work: () => Promise<T>): Promise<T> {
    await this.#acquire(key, exclusive);
    try {
      return await work();
    } finally {
      this.#release(key, exclusive);
    }
  }

  #acquire(key: K, exclusive: boolean): Promise<void> {
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = { shared: 0, exclusive: false, waiters: [] };
      this.#entries.set(key, entry);
    }
    // First come, first served: a queued exclusive request holds back later shared ones.
    if (entry.waiters.length === 0 && grantable(entry, exclusive)) {
      take(entry, exclusive);
      return Promise.resolve();
    }
    return new Promise((wake) => entry.waiters.push({ exclusive, wake }));
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
