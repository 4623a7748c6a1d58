/**
 * The bytes a server holds for its clients, in one count: request payloads being handled, the
 * replies those requests will make, and replies queued for clients that have not read them.
 * Connections charge it and stop reading while it is spent (per connection and in total), so a
 * client that pipelines thousands of large reads and never reads the replies costs a bounded
 * amount of memory, not gigabytes.
 *
 * @module
 */

/** A shared byte budget; waiters are woken when bytes come back. */
export class BufferBudget {
  readonly limit: number;
  #used = 0;
  readonly #waiters = new Set<() => void>();

  constructor(limit: number) {
    this.limit = limit;
  }

  get used(): number {
    return this.#used;
  }

  /** True while the budget is spent. */
  get spent(): boolean {
    return this.#used >= this.limit;
  }

  charge(bytes: number): void {
    this.#used += bytes;
  }

  release(bytes: number): void {
    const wasSpent = this.spent;
    this.#used -= bytes;
    if (wasSpent && !this.spent) { for (const wake of [...this.#waiters]) wake(); }
  }

  /** Calls `wake` whenever the budget stops being spent, until the returned function is called. */
  onRelease(wake: () => void): () => void {
    this.#waiters.add(wake);
    return () => this.#waiters.delete(wake);
  }
}
