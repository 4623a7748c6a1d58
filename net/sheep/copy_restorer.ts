/**
 * Gives objects back the copies a full or failing disk cost them. When a target's disk refuses
 * a repaired copy, the gateway removes that target's (wrong) copy and the object goes on with
 * fewer copies than targets: acknowledged data sits on fewer disks than the VDI asked for. Left
 * alone, that lasts until the next view change (recovery) or scrub pass; a crash of a remaining
 * holder meanwhile makes the object unreadable (simulation seed 8097).
 *
 * The restorer keeps those objects in a queue and retries their repair in the background: one
 * object at a time, so while the disk is still full only one object's repair is tried per
 * interval (each try may push a whole object at it), backing off from COPY_RESTORE_FIRST_MS to
 * COPY_RESTORE_MAX_MS; once a repair succeeds, the disk has room and the rest follow at once.
 * A repair that fails sends its object to the back of the queue, so one object that cannot be
 * made whole does not hold up the others; after COPY_RESTORE_TRIES_MAX failed tries it is left
 * to the scrub.
 *
 * @module
 */

import type { Oid } from "../../core/vdi/oid.ts";
import {
  COPY_RESTORE_FIRST_MS,
  COPY_RESTORE_MAX_MS,
  COPY_RESTORE_PENDING_MAX,
  COPY_RESTORE_TRIES_MAX,
} from "./retry_policy.ts";

export class CopyRestorer {
  /** Repairs `oid`; resolves true when every target holds a good copy afterwards. */
  readonly #restore: (oid: Oid) => Promise<boolean>;
  /** Waiting objects, oldest first, with the repairs of each that failed so far. */
  readonly #pending = new Map<Oid, number>();
  #delayMs = COPY_RESTORE_FIRST_MS;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #draining = false;
  #closed = false;

  constructor(restore: (oid: Oid) => Promise<boolean>) {
    this.#restore = restore;
  }

  /** Objects waiting for a copy. */
  get size(): number {
    return this.#pending.size;
  }

  /** Queues `oid` (once) for a background repair. */
  add(oid: Oid): void {
    if (this.#closed || this.#pending.has(oid)) return;
    if (this.#pending.size >= COPY_RESTORE_PENDING_MAX) return;
    this.#pending.set(oid, 0);
    this.#schedule();
  }

  /** Stops: pending repairs are dropped (recovery and the scrub find those objects later). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending.clear();
  }

  #schedule(): void {
    if (this.#closed || this.#draining || this.#timer !== undefined) return;
    if (this.#pending.size === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#drain();
    }, this.#delayMs);
  }

  /** Repairs waiting objects in order until one fails (then backs off) or none is left. */
  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      for (const [oid, failed] of this.#pending) {
        const whole = await this.#restore(oid).catch(() => false);
        if (this.#closed) return;
        this.#pending.delete(oid);
        if (!whole) {
          // To the back of the queue; after many tries the scrub's passes take it over.
          if (failed + 1 < COPY_RESTORE_TRIES_MAX) this.#pending.set(oid, failed + 1);
          this.#delayMs = Math.min(this.#delayMs * 2, COPY_RESTORE_MAX_MS);
          return;
        }
        this.#delayMs = COPY_RESTORE_FIRST_MS;
      }
    } finally {
      this.#draining = false;
      this.#schedule();
    }
  }
}
