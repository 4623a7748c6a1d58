/**
 * Waiting for a condition on something that changes now and then (the view, the group state)
 * without polling: the owner calls `notify()` whenever it changes, and each waiter checks its
 * condition then, or gives up after its time limit.
 *
 * @module
 */

export class Changes {
  #waiters = new Set<() => void>();

  /** Wakes every waiter so it checks its condition again. */
  notify(): void {
    for (const check of [...this.#waiters]) check();
  }

  /** Resolves true as soon as `ready()` holds (checked now and at each change), false after `ms`. */
  until(ready: () => boolean, ms: number): Promise<boolean> {
    if (ready()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const finish = (value: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(value);
      };
      const check = () => {
        if (ready()) finish(true);
      };
      const timer = setTimeout(() => finish(false), ms);
      this.#waiters.add(check);
    });
  }
}
