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
  released: Promise<void>;
}

/** Shared/exclusive locks over inclusive ranges of block indexes. */
export class RangeLock {
  #held: Held[] = [];

  /** Waits for every conflicting holder, then holds [first, last]; call the result to release. */
  async lock(first: number, last: number, exclusive: boolean): Promise<() => void> {
    for (;;) {
      const conflict = this.#held.find((held) =>
        held.first <= last && first <= held.last && (exclusive || held.exclusive)
      );
      if (!conflict) break;
      await conflict.released;
    }
    let release!: () => void;
    const held: Held = {
      first,
      last,
      exclusive,
      released: new Promise((resolve) => release = resolve),
    };
    this.#held.push(held);
    return () => {
      this.#held = this.#held.filter((other) => other !== held);
      release();
    };
  }

  get idle(): boolean {
    return this.#held.length === 0;
  }
}
