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
  | "stopped";
