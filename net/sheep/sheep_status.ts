/**
 * What a sheep is doing, as `shepherd info -t cluster` and the request handlers see it.
 *
 * @module
 */

export type SheepStatus =
  | "waiting-for-format"
  | "waiting-for-nodes"
  | "running"
  | "minority"
  /** Out of its cluster on its own (it could not persist its epoch log): refuses clients. */
  | "left"
  | "stopped";
