/**
 * One timeline for object versions across the cluster. A sheep asks every member for its
 * timeline (GET_CLOCK: the latest clock it knows, and the highest version it issued or saw) at
 * every new view and every CLOCK_PROBE_INTERVAL_MS, and takes in what is ahead of its own
 * (core/cluster/version_clock.ts says why: versions ordered by wall clocks alone let a write
 * through a node whose clock is behind lose to an earlier one). A member whose clock is ahead of
 * this node's by more than CLOCK_AHEAD_WARN_MS is said in the log, at most once per
 * CLOCK_WARN_INTERVAL_MS: versions still work, but dates on VDIs and in logs disagree.
 *
 * @module
 */

import type { RingNode } from "../../core/hash/ring.ts";
import {
  CLOCK_ADOPT_MAX_MS,
  CLOCK_AHEAD_WARN_MS,
  CLOCK_PROBE_INTERVAL_MS,
  CLOCK_WARN_INTERVAL_MS,
} from "../../core/limits.ts";
import { LogThrottle } from "../log/log_throttle.ts";
import type { Adoption } from "../../core/cluster/version_clock.ts";
import { Opcode } from "../object/ops.ts";
import type { Peers } from "./peers.ts";

/** GET_CLOCK's answer (JSON). */
export interface ClockReading {
  /** The answering node's timeline (ms since the epoch), read just before it answered. */
  timelineMs: number;
  /** The highest version it issued or observed. */
  version: number;
}

/** Checks a GET_CLOCK answer; throws a one-line error for anything else. */
export function parseClockReading(value: unknown): ClockReading {
  const reading = value as Partial<ClockReading> | null;
  if (
    typeof reading !== "object" || reading === null ||
    typeof reading.timelineMs !== "number" || !Number.isSafeInteger(reading.timelineMs) ||
    typeof reading.version !== "number" || !Number.isSafeInteger(reading.version) ||
    reading.version < 0
  ) {
    throw new Error("not a clock reading ({timelineMs, version} as safe integers)");
  }
  return { timelineMs: reading.timelineMs, version: reading.version };
}

/** What the probe uses of its sheep. */
export interface ClockProbeHost {
  readonly id: string;
  /** The members of the current view. */
  members(): readonly RingNode[];
  readonly peers: Pick<Peers, "get">;
  /** The gateway's version clock: takes a peer's timeline and highest version. */
  adoptTimeline(timelineMs: number): Adoption;
  observeVersion(version: number): void;
  monotonic(): number;
  warn(line: string): void;
  debug(line: string): void;
}

export class ClockProbe {
  readonly #host: ClockProbeHost;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  /** Members asked whose answer has not come: not asked again meanwhile (one may hang). */
  readonly #asking = new Set<string>();
  readonly #warning = new LogThrottle(CLOCK_WARN_INTERVAL_MS);

  constructor(host: ClockProbeHost) {
    this.#host = host;
  }

  /** Probes now and every CLOCK_PROBE_INTERVAL_MS until `stop`; resolves once the first answers are in. */
  start(): Promise<void> {
    if (this.#running) return Promise.resolve();
    this.#running = true;
    this.#schedule();
    return this.probe();
  }

  stop(): void {
    this.#running = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Asks every other member for its timeline (at a new view: a member that joined may be
   * ahead), except those still to answer the last time. Resolves when the ones asked now have
   * answered or failed; never rejects.
   */
  probe(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    const asks = this.#host.members()
      .filter((node) => node.id !== this.#host.id && !this.#asking.has(node.id))
      .map((node) => {
        this.#asking.add(node.id);
        return this.#ask(node).finally(() => this.#asking.delete(node.id));
      });
    return Promise.all(asks).then(() => undefined);
  }

  // setTimeout rather than setInterval: a simulation runs the global setTimeout on virtual time.
  #schedule(): void {
    const timer = setTimeout(() => {
      if (!this.#running) return;
      this.#schedule();
      void this.probe();
    }, CLOCK_PROBE_INTERVAL_MS);
    // Node's timers keep the process alive; a probe must not (a simulation's are numbers).
    (timer as { unref?: () => void }).unref?.();
    this.#timer = timer;
  }

  async #ask(node: RingNode): Promise<void> {
    let reading: ClockReading;
    try {
      reading = parseClockReading(await this.#host.peers.get(node).json(Opcode.GET_CLOCK));
    } catch (error) {
      // A member that is down or partitioned: the next round (or view) asks again.
      this.#host.debug(`clock probe of ${node.id}: ${(error as Error).message}`);
      return;
    }
    // The timeline first: the version, issued on it, is then not "ahead" of this node's. A
    // timeline refused is not let in through its versions either (copies' versions still are).
    const adoption = this.#host.adoptTimeline(reading.timelineMs);
    if (!adoption.refused) this.#host.observeVersion(reading.version);
    this.#report(node, adoption);
  }

  #report(node: RingNode, { aheadOfWallMs, refused }: Adoption): void {
    if (!refused && aheadOfWallMs <= CLOCK_AHEAD_WARN_MS) return;
    if (this.#warning.say(this.#host.monotonic()) === undefined) return;
    this.#host.warn(
      refused
        ? `${node.id} reports a clock ${aheadOfWallMs} ms ahead of this node's (its own or one ` +
          `it heard of), more than ${CLOCK_ADOPT_MAX_MS} ms: not followed, so writes through a ` +
          `node that far ahead outrank later writes through this one. Set the clocks right (NTP)`
        : `${node.id} reports a clock ${aheadOfWallMs} ms ahead of this node's (its own or one ` +
          `it heard of): object versions follow the latest clock in the cluster, but dates ` +
          `differ. Keep the clocks in sync (NTP)`,
    );
  }
}
