/**
 * Assertions catch programmer errors; a failed one means a bug, and the process should stop.
 * Operating errors (bad input, missing VDI, full disk) are `SheepdogError`s instead.
 *
 * @module
 */

/** Raised when an invariant does not hold. */
export class AssertionError extends Error {
  override name = "AssertionError";
}

/** Throws an AssertionError when `condition` is false. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}
