/**
 * The one retry policy of the data path: which results mean "the cluster is changing" (wait for
 * the view to settle and resend) and for how long a request may stall before its client sees an
 * error. The gateway applies it; nothing else on the path retries on its own.
 *
 * @module
 */

import { ResultCode } from "../../core/errors.ts";

/** Results that mean "the cluster is changing": wait for the view to settle and resend. */
export const RETRYABLE: readonly number[] = [
  ResultCode.NETWORK_ERROR,
  ResultCode.OLD_NODE_VER,
  ResultCode.NEW_NODE_VER,
  ResultCode.WAIT_FOR_JOIN,
];
/** How long a request may stall on a membership change before the client sees an error. */
export const RETRY_FOR_MS = 30_000;
/** How long to wait between attempts. */
export const RETRY_INTERVAL_MS = 200;
/**
 * Rounds of one repair (the gateway's reconcile) started again because a target's copy took a
 * write meanwhile: each such write makes progress, so a repair that loses this often gives up
 * (the object stays marked diverged, the next write or read repairs it).
 */
export const RECONCILE_ROUNDS_MAX = 5;
/**
 * An object left with fewer copies than targets because a target's disk refused one (full or
 * failing) is restored in the background (copy_restorer.ts): first tried this long after, then
 * at doubling intervals up to the maximum while targets keep refusing.
 */
export const COPY_RESTORE_FIRST_MS = 100;
export const COPY_RESTORE_MAX_MS = 30_000;
/** Objects waiting for a copy to be restored; beyond this the scrub finds the rest. */
export const COPY_RESTORE_PENDING_MAX = 10_000;
/** Failed repairs of one object before the restorer leaves it to the scrub (about 10 minutes). */
export const COPY_RESTORE_TRIES_MAX = 30;
