/**
 * The one queue a driver applies views, events and state syncs through: strictly one after
 * another, in delivery order, so every node changes its state in the cluster's order.
 *
 * @module
 */

import type { Logger } from "./logger.ts";

export class ApplyQueue {
  #tail: Promise<void> = Promise.resolve();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Runs `work` after everything queued before it; a failure is logged, the queue goes on. */
  enqueue(work: () => Promise<void>): void {
    this.#tail = this.#tail.then(work).catch((error) => {
      this.#logger.error(`applying a cluster change failed: ${(error as Error).message}`);
    });
  }

  /** Resolves once everything queued so far is applied. */
  drained(): Promise<void> {
    return this.#tail;
  }
}
