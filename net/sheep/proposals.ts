/**
 * Proposals waiting for their delivery: a driver registers each one it sends under a key it
 * will recognise when the proposal comes back in the total order, and settles it with what
 * applying it gave on this node.
 *
 * A node that missed history catches up with its peers' state (GET_CLUSTER_STATE) and skips
 * the deliveries that state already holds: a proposal of its own among them is never applied
 * here, so it is settled here instead, with {@link appliedElsewhere}. The driver says which:
 * by key (a delivery it skips), or by position (the proposals placed at or before the point
 * the state it fetched reflects, whose deliveries it will never see). So every proposal is
 * settled once: at its delivery, by one of these, when sending it fails, or at shutdown.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  /** Where the proposal is in the driver's order, once the driver knows. */
  position?: number;
}

/**
 * The answer to a proposal whose effect this node got with its peers' state rather than by
 * applying it: the change is made cluster-wide, but the result it gave (a new vid, a refusal)
 * was computed on the nodes that applied it, and is not in that state. Not a refusal (callers
 * keep what they wrote for it, as after a lost connection), and not a cue to propose the same
 * change again blindly: the caller reads the state back.
 */
export function appliedElsewhere(): SheepdogError {
  return new SheepdogError(
    ResultCode.NETWORK_ERROR,
    "The change was applied cluster-wide while this node was cut off (it caught up with its " +
      "peers' state, which holds it), so its result is not known here: read the state back " +
      "before retrying",
  );
}

export class Proposals<K> {
  readonly #pending = new Map<K, Pending>();

  /**
   * A promise settled when the proposal under `key` is applied here (or skipped, see above).
   * `position`: where it is in the order, if known already.
   */
  expect<T>(key: K, position?: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const pending: Pending = { resolve: resolve as (value: unknown) => void, reject };
      if (position !== undefined) pending.position = position;
      this.#pending.set(key, pending);
    });
  }

  /** The proposal under `key`, if still waiting, is at `position` in the order. */
  placed(key: K, position: number): void {
    const pending = this.#pending.get(key);
    if (pending) pending.position = position;
  }

  /** Takes the proposal under `key` out, if this node is waiting for it. */
  take(key: K): Pending | undefined {
    const pending = this.#pending.get(key);
    if (pending) this.#pending.delete(key);
    return pending;
  }

  /** The delivery of the proposal under `key` is skipped: the fetched state holds it. */
  skipped(key: K): void {
    this.take(key)?.reject(appliedElsewhere());
  }

  /**
   * Every proposal placed at or before `position` is in the state fetched from peers (its
   * delivery was skipped, or will never come).
   */
  skippedThrough(position: number): void {
    for (const [key, pending] of this.#pending) {
      if (pending.position !== undefined && pending.position <= position) this.skipped(key);
    }
  }

  /** The proposal under `key` will not be delivered (its append failed). */
  fail(key: K, error: Error): void {
    this.take(key)?.reject(error);
  }

  /** The node stops (or left its cluster: `error` says why): nothing it waits for will come. */
  shutdown(
    error: Error = new SheepdogError(ResultCode.SHUTDOWN, "The sheep is shutting down"),
  ): void {
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
  }
}
