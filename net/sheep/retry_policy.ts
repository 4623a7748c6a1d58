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
