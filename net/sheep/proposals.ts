/**
 * Proposals waiting for their delivery: a driver registers each one it sends under a key it
 * will recognise when the proposal comes back in the total order, and settles it with what
 * applying it gave on this node.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

export class Proposals<K> {
  readonly #pending = new Map<K, Pending>();

  /** A promise settled when the proposal under `key` is applied here. */
  expect<T>(key: K): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(key, { resolve: resolve as (value: unknown) => void, reject });
    });
  }

  /** Takes the proposal under `key` out, if this node is waiting for it. */
  take(key: K): Pending | undefined {
    const pending = this.#pending.get(key);
    if (pending) this.#pending.delete(key);
    return pending;
  }

  /** The proposal under `key` will not be delivered (its append failed). */
  fail(key: K, error: Error): void {
    this.take(key)?.reject(error);
  }

  /** The node stops: nothing it waits for will come. */
  shutdown(): void {
    for (const pending of this.#pending.values()) {
      pending.reject(new SheepdogError(ResultCode.SHUTDOWN, "The sheep is shutting down"));
    }
    this.#pending.clear();
  }
}
