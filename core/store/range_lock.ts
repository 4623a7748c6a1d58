/**
 * Locks on ranges of checksum blocks of one object. A write changes a block's bytes and then its
 * checksum, so a read of that block in between would see a mismatch that is not rot, and two
 * writes to one block could leave the checksum of the older; both wait for each other here.
 * Reads share; writes exclude. Writes to different blocks of an object still run in parallel.
 *
 * @module
 */

interface Held {
  first: number;
  last: number;
  exclusive: boolean;
  /** Wakes those waiting for this holder: made only when someone waits. */
  wake: (() => void) | null;
  released: Promise<void> | null;
}

/** Shared/exclusive locks over inclusive ranges of block indexes. */
export class RangeLock {
  #held: Held[] = [];

  /** Waits for every conflicting holder, then holds [first, last]; call the result to release. */
  async lock(first: number, last: number, exclusive: boolean): Promise<() => void> {
    for (;;) {
      const conflict = this.#conflict(first, last, exclusive);
      if (conflict === undefined) return this.tryLock(first, last, exclusive)!;
      await releasedOf(conflict);
    }
  }

  /**
   * Holds [first, last] at once if nothing conflicts (the release), else undefined. The store's
   * fast path (`tryLock(...) ?? await lock(...)`): most reads never wait, and a promise and its
   * turn through the microtask queue were a fifth of a 4 KiB read's time in the store.
   */
  tryLock(first: number, last: number, exclusive: boolean): (() => void) | undefined {
    if (this.#conflict(first, last, exclusive) !== undefined) return undefined;
    const held: Held = { first, last, exclusive, wake: null, released: null };
    this.#held.push(held);
    return () => this.#release(held);
  }

  #conflict(first: number, last: number, exclusive: boolean): Held | undefined {
    for (const held of this.#held) {
      if (held.first <= last && first <= held.last && (exclusive || held.exclusive)) return held;
    }
    return undefined;
  }

  #release(held: Held): void {
    const index = this.#held.indexOf(held);
    if (index < 0) return; // released twice
    this.#held.splice(index, 1);
    held.wake?.();
  }

  get idle(): boolean {
    return this.#held.length === 0;
  }
}

function releasedOf(held: Held): Promise<void> {
  return held.released ??= new Promise((resolve) => held.wake = resolve);
}
