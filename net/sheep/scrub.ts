/**
 * Scrub: a pass over everything a node holds, off the client path and rate limited.
 *
 * 1. Every local copy is read whole and its blocks checked against their checksums
 *    (`ObjectStore.verify`). A copy with bad blocks is checked again while no client writes it
 *    (so a write half-applied under the first read is not taken for rot), then replaced by a good
 *    replica through the gateway (`repair(oid, {self})`: this copy is a suspect even if its digest
 *    looks right) and verified once more: "repaired" means it now reads clean.
 * 2. For the objects this node is the *first target* of (so each object is compared by exactly
 *    one node per pass), the copies of every target are compared by version and digest, from one
 *    listing per node (GET_OBJ_LIST), not one request per object. A missing copy or one that
 *    differs from the best is confirmed with fresh metas twice, a moment apart (a write in flight
 *    is not a fault), and then reconciled (`repair(oid)`).
 *
 * Verification is limited to `bytesPerSecond` and yields to the event loop between objects.
 * A pass waits while recovery runs (recovery compares every copy itself) and drops its
 * comparisons when the view changes under it. One pass runs at a time: a second request,
 * manual or background, joins the running one. Everything the Scrubber needs comes through
 * `ScrubContext`; `scrubContextOf` builds it from a sheep.
 *
 * @module
 */

import { setTimeout as delay } from "node:timers/promises";
import { isResult, ResultCode, SheepdogError } from "../../core/errors.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import { type ClusterView, targetsOf } from "../../core/cluster/view.ts";
import type { BadBlock, ObjectMeta, ObjectStore } from "../../core/store/object_store.ts";
import { isDataOid, type Oid, oidToHex, oidToVid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import { requestHeader } from "../object/client.ts";
import { Flag, Opcode } from "../object/ops.ts";
import type { Logger } from "./logger.ts";
import type { ObjectLocks } from "./object_locks.ts";
import { OrphanCheck, type OrphanSource } from "./orphans.ts";
import { RateLimiter } from "./rate_limiter.ts";
import type { Peers } from "./peers.ts";
import type { ListedCopy } from "./recovery.ts";
import { sortCopies, targetRank } from "../../core/cluster/copy_choice.ts";

/** Bytes verified per second by default: a fraction of one disk's sequential bandwidth. */
export const SCRUB_BYTES_PER_SECOND_DEFAULT = 64 * 2 ** 20;
/** Findings kept per pass (the newest); `findingsTotal` counts them all. */
export const SCRUB_FINDINGS_MAX = 50;
/** Pause between the two confirmations of a mismatch, so a write in flight can land. */
const SETTLE_MS = 200;
/** How often a pass looks whether recovery has finished. */
const RECOVERY_POLL_MS = 1_000;
/** Comparisons of matching listings between two yields to the event loop. */
const COMPARE_YIELD_EVERY = 256;
/** A background pass that finds the node not serving tries again this much later. */
const NOT_SERVING_RETRY_MS = 60_000;

/** How a sheep scrubs. */
export interface ScrubOptions {
  /** Start a background pass this often (ms); 0 = no background scrub. @default 0 */
  intervalMs?: number;
  /** Bytes verified per second at most. @default SCRUB_BYTES_PER_SECOND_DEFAULT */
  bytesPerSecond?: number;
}

/** What the Scrubber needs from its sheep. */
export interface ScrubContext {
  readonly selfId: string;
  readonly logger: Logger;
  /** Every oid the local store holds. */
  listLocal(): Promise<Oid[]>;
  /** The local copy's meta; undefined when it is gone. */
  meta(oid: Oid): Promise<ObjectMeta | undefined>;
  /** Reads the whole local copy; its bad blocks (NO_OBJ when it is gone). */
  verify(oid: Oid): Promise<BadBlock[]>;
  /** Runs `work` while no client write touches the local copy of `oid`. */
  exclusive<T>(oid: Oid, work: () => Promise<T>): Promise<T>;
  /** Every copy `node` holds, with its meta (one request per node). */
  listCopies(node: RingNode): Promise<ListedCopy[]>;
  /** The meta of `node`'s copy of `oid`, undefined when it has none; rejects when unreachable. */
  nodeMeta(node: RingNode, oid: Oid): Promise<ObjectMeta | undefined>;
  /** How many copies `oid` has. */
  copies(oid: Oid): number;
  /** Brings every copy of `oid` to the newest good one; false when a copy had to be removed. */
  repair(oid: Oid, suspects?: ReadonlySet<string>): Promise<boolean>;
  /**
   * Heals this node's copy of `oid` in place, block by block, from the other targets' copies
   * (`Gateway.healLocal`); resolves with the number of blocks still bad.
   */
  heal(oid: Oid): Promise<number>;
  /** A fresh orphan check for one pass (orphans.ts): true for an object no VDI can ever read. */
  orphans(): (oid: Oid) => Promise<boolean>;
  /** Removes every copy of `oid`. */
  remove(oid: Oid): Promise<void>;
  view(): ClusterView;
  /** True while recovery moves objects. */
  recovering(): boolean;
  /** True while the node serves I/O (formatted, in the primary component). */
  serving(): boolean;
  now(): number;
  /** Waits `ms` (0 = yield to the event loop); resolves early when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** Something wrong with one copy, and whether it was put right. */
export interface ScrubFinding {
  /** 16 hex digits. */
  oid: string;
  /** The node holding the bad (or missing) copy. */
  node: string;
  problem: string;
  repaired: boolean;
  timeMs: number;
}

export type ScrubState = "idle" | "running" | "done" | "failed";
export type ScrubPhase = "waiting-for-recovery" | "listing" | "verifying" | "comparing";

/** A node's scrub: its current (or last) pass, and totals since the sheep started. */
export interface ScrubStatus {
  state: ScrubState;
  /** Present while running. */
  phase?: ScrubPhase;
  /** Pass number on this node (1, 2, ...); 0 before the first. */
  pass: number;
  trigger?: "manual" | "background";
  /** The VDI the pass is limited to, if any. */
  vid?: Vid;
  startedMs: number;
  finishedMs: number;
  objectsChecked: number;
  objectsTotal: number;
  bytesVerified: number;
  badBlocks: number;
  /** Copies replaced by a good one (and checked). */
  repaired: number;
  /** Bad or missing copies that are still bad. */
  repairFailed: number;
  /** The newest findings of the pass, oldest first (at most SCRUB_FINDINGS_MAX). */
  findings: ScrubFinding[];
  findingsTotal: number;
  /** Nodes whose copies could not be listed: their objects were not compared. */
  unlisted: string[];
  /** Why the pass failed, or why its comparisons stopped. */
  error?: string;
  /** Background: every intervalMs (0 = off), the next pass at nextMs. */
  intervalMs: number;
  nextMs?: number;
  bytesPerSecond: number;
  /** Since the sheep started (metrics). */
  totals: ScrubTotals;
}

export interface ScrubTotals {
  passes: number;
  bytesVerified: number;
  badBlocks: number;
  repaired: number;
  repairFailed: number;
}

/** What `start` did: began a pass, or found one running (and joined it). */
export interface ScrubStart {
  started: boolean;
  status: ScrubStatus;
}

interface Pass {
  abort: AbortController;
  done: Promise<void>;
  filter: (oid: Oid) => boolean;
}

/** A copy that differs from the best one. */
interface Mismatch {
  node: string;
  problem: string;
}

/** The objects of VDI `vid`: its inode and its data objects. */
export function scrubFilter(vid: Vid | undefined): (oid: Oid) => boolean {
  if (vid === undefined) return () => true;
  const inode = vdiOid(vid);
  return (oid) => oid === inode || (isDataOid(oid) && oidToVid(oid) === vid);
}

function emptyTotals(): ScrubTotals {
  return { passes: 0, bytesVerified: 0, badBlocks: 0, repaired: 0, repairFailed: 0 };
}

function describeBadBlocks(bad: BadBlock[]): string {
  const first = bad[0]!;
  const count = bad.length === 1 ? "1 bad block" : `${bad.length} bad blocks`;
  return `${count} (block ${first.index}: ${first.reason})`;
}

export class Scrubber {
  readonly #context: ScrubContext;
  readonly #intervalMs: number;
  readonly #bytesPerSecond: number;
  #pass: Pass | undefined;
  #status: ScrubStatus;
  #background: { abort: AbortController; loop: Promise<void> } | undefined;
  #stopped = false;

  constructor(context: ScrubContext, options: ScrubOptions = {}) {
    const intervalMs = options.intervalMs ?? 0;
    const bytesPerSecond = options.bytesPerSecond ?? SCRUB_BYTES_PER_SECOND_DEFAULT;
    if (!Number.isFinite(intervalMs) || intervalMs < 0) {
      throw new RangeError(`Invalid scrub interval ${intervalMs} ms`);
    }
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) {
      throw new RangeError(`Invalid scrub rate ${bytesPerSecond} bytes/s`);
    }
    this.#context = context;
    this.#intervalMs = intervalMs;
    this.#bytesPerSecond = bytesPerSecond;
    this.#status = {
      state: "idle",
      pass: 0,
      startedMs: 0,
      finishedMs: 0,
      objectsChecked: 0,
      objectsTotal: 0,
      bytesVerified: 0,
      badBlocks: 0,
      repaired: 0,
      repairFailed: 0,
      findings: [],
      findingsTotal: 0,
      unlisted: [],
      intervalMs,
      bytesPerSecond,
      totals: emptyTotals(),
    };
  }

  /** A copy of the status (findings and totals copied too). */
  status(): ScrubStatus {
    const status = this.#status;
    return {
      ...status,
      findings: status.findings.map((f) => ({ ...f })),
      unlisted: [...status.unlisted],
      totals: { ...status.totals },
    };
  }

  get running(): boolean {
    return this.#pass !== undefined;
  }

  /**
   * Starts a pass (over the objects of `vid` only, when given), or joins the running one:
   * a manual and a background pass never run at once.
   */
  start(options: { vid?: Vid; trigger?: "manual" | "background" } = {}): ScrubStart {
    if (this.#pass) return { started: false, status: this.status() };
    if (this.#stopped) {
      throw new SheepdogError(ResultCode.SHUTDOWN, "Cannot scrub: the sheep is stopping");
    }
    const vid = options.vid;
    if (vid !== undefined && (!Number.isInteger(vid) || vid <= 0 || vid > 0xffffff)) {
      throw new RangeError(`Invalid VDI id ${vid}`);
    }
    const pass: Pass = {
      abort: new AbortController(),
      done: Promise.resolve(),
      filter: scrubFilter(vid),
    };
    const previous = this.#status;
    this.#status = {
      ...previous,
      state: "running",
      phase: "listing",
      pass: previous.pass + 1,
      trigger: options.trigger ?? "manual",
      startedMs: this.#context.now(),
      finishedMs: 0,
      objectsChecked: 0,
      objectsTotal: 0,
      bytesVerified: 0,
      badBlocks: 0,
      repaired: 0,
      repairFailed: 0,
      findings: [],
      findingsTotal: 0,
      unlisted: [],
      totals: { ...previous.totals, passes: previous.totals.passes + 1 },
    };
    delete this.#status.error;
    if (vid === undefined) delete this.#status.vid;
    else this.#status.vid = vid;
    this.#pass = pass;
    pass.done = this.#run(pass).finally(() => {
      if (this.#pass === pass) this.#pass = undefined;
    });
    return { started: true, status: this.status() };
  }

  /** Resolves when the running pass (if any) has finished. */
  async settled(): Promise<void> {
    await this.#pass?.done;
  }

  /** Starts the background passes, every `intervalMs` (nothing when it is 0). */
  startBackground(): void {
    if (this.#intervalMs === 0 || this.#background || this.#stopped) return;
    const abort = new AbortController();
    this.#background = { abort, loop: this.#backgroundLoop(abort.signal) };
  }

  /** Stops the background passes and the running pass, and waits for both. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const background = this.#background;
    this.#background = undefined;
    background?.abort.abort();
    this.#pass?.abort.abort();
    await Promise.all([background?.loop, this.#pass?.done]);
    delete this.#status.nextMs;
  }

  async #backgroundLoop(signal: AbortSignal): Promise<void> {
    const context = this.#context;
    let nextMs = context.now() + this.#intervalMs;
    while (!signal.aborted) {
      this.#status.nextMs = nextMs;
      await context.sleep(Math.max(0, nextMs - context.now()), signal);
      if (signal.aborted) break;
      if (this.#pass) {
        // A manual pass is running: it counts as this interval's pass.
        await this.#pass.done;
        nextMs = this.#status.startedMs + this.#intervalMs;
        continue;
      }
      if (!context.serving()) {
        context.logger.debug("background scrub postponed: the node does not serve I/O");
        nextMs = context.now() + Math.min(this.#intervalMs, NOT_SERVING_RETRY_MS);
        continue;
      }
      const { status } = this.start({ trigger: "background" });
      await this.settled();
      nextMs = status.startedMs + this.#intervalMs;
    }
  }

  async #run(pass: Pass): Promise<void> {
    const context = this.#context;
    const signal = pass.abort.signal;
    try {
      while (context.recovering() && !signal.aborted) {
        this.#status.phase = "waiting-for-recovery";
        await context.sleep(RECOVERY_POLL_MS, signal);
      }
      this.#status.phase = "listing";
      const view = context.view();
      const local = (await context.listLocal()).filter(pass.filter);
      const compared = await this.#comparable(view, pass);
      // Progress counts objects, each once: verified here, compared, or both.
      const verified = new Set(local);
      const elsewhere = compared.filter((item) => !verified.has(item.oid)).length;
      this.#status.objectsTotal = local.length + elsewhere;
      this.#status.phase = "verifying";
      const limiter = new RateLimiter(this.#bytesPerSecond, context);
      for (const oid of local) {
        if (signal.aborted) break;
        await this.#verifyOne(oid, limiter, signal);
      }
      this.#status.phase = "comparing";
      const isOrphan = context.orphans();
      let quiet = 0;
      for (const item of compared) {
        if (signal.aborted) break;
        if (context.view().epoch !== view.epoch) {
          this.#status.error = `view changed during the pass (epoch ${view.epoch} → ` +
            `${context.view().epoch}): comparisons stopped, recovery compares every copy`;
          break;
        }
        const talked = await this.#removeIfOrphan(item, isOrphan) ||
          await this.#compareOne(item, signal);
        if (!verified.has(item.oid)) this.#status.objectsChecked++;
        // Matching listings cost nothing to compare: yield after real work, or now and then.
        if (talked || ++quiet % COMPARE_YIELD_EVERY === 0) await context.sleep(0, signal);
      }
      this.#finish(signal.aborted ? "failed" : "done", signal.aborted ? "stopped" : undefined);
    } catch (error) {
      this.#finish("failed", (error as Error).message);
      context.logger.warn(`scrub pass ${this.#status.pass} failed: ${(error as Error).message}`);
    }
  }

  #finish(state: ScrubState, error?: string): void {
    const status = this.#status;
    status.state = state;
    delete status.phase;
    status.finishedMs = this.#context.now();
    if (error !== undefined) status.error = error;
    const text = `scrub pass ${status.pass} ${state}: ` +
      `${status.objectsChecked}/${status.objectsTotal} objects, ` +
      `${status.bytesVerified} bytes verified, ${status.badBlocks} bad blocks, ` +
      `${status.repaired} copies repaired, ${status.repairFailed} not repaired`;
    if (status.repairFailed > 0 || error !== undefined) this.#context.logger.warn(text);
    else this.#context.logger.info(text);
  }

  #note(finding: Omit<ScrubFinding, "timeMs">): void {
    const status = this.#status;
    status.findings.push({ ...finding, timeMs: this.#context.now() });
    if (status.findings.length > SCRUB_FINDINGS_MAX) status.findings.shift();
    status.findingsTotal++;
    if (finding.repaired) {
      status.repaired++;
      status.totals.repaired++;
    } else {
      status.repairFailed++;
      status.totals.repairFailed++;
    }
    const text = `scrub: ${finding.oid} on ${finding.node}: ${finding.problem}`;
    if (finding.repaired) this.#context.logger.warn(`${text} (repaired)`);
    else this.#context.logger.error(`${text} (NOT repaired)`);
  }

  /** Phase 1 for one local copy: verify, confirm, repair, check. */
  async #verifyOne(oid: Oid, limiter: RateLimiter, signal: AbortSignal): Promise<void> {
    const context = this.#context;
    const status = this.#status;
    const meta = await context.meta(oid).catch(() => undefined);
    let bad: BadBlock[] | undefined;
    let problem: string | undefined;
    try {
      bad = await context.verify(oid);
      if (bad.length > 0) bad = await context.exclusive(oid, () => context.verify(oid));
      if (bad.length > 0) problem = describeBadBlocks(bad);
    } catch (error) {
      if (!isResult(error, ResultCode.NO_OBJ)) {
        if (signal.aborted) return;
        // A copy that cannot be read at all is as bad as one that reads wrong.
        problem = `cannot be read: ${(error as Error).message}`;
      }
    }
    const size = meta?.size ?? 0;
    status.bytesVerified += size;
    status.totals.bytesVerified += size;
    if (bad && bad.length > 0) {
      status.badBlocks += bad.length;
      status.totals.badBlocks += bad.length;
    }
    if (problem !== undefined) await this.repairLocal(oid, problem);
    status.objectsChecked++;
    await limiter.take(size, signal);
  }

  /**
   * Replaces the bad local copy of `oid` by a good replica; then checks it reads clean. Also for
   * a copy found bad outside a pass (an inode that could not be read at start): `problem` says
   * what was wrong, and the finding is listed with the pass's.
   */
  async repairLocal(oid: Oid, problem: string): Promise<void> {
    const context = this.#context;
    const self = context.selfId;
    const hex = oidToHex(oid);
    const targets = targetsOf(context.view(), oid, context.copies(oid));
    if (!targets.some((n) => n.id === self)) {
      // A leftover of an earlier epoch: the purge removes it once its holders confirm theirs.
      this.#note({ oid: hex, node: self, problem: `${problem}; a leftover copy`, repaired: false });
      return;
    }
    let detail = "";
    try {
      // In place first: a whole-copy repair of an object that clients keep writing loses to every
      // write that reaches the copy while it runs, and gives up; healing a block does not.
      const left = await context.heal(oid).catch(() => undefined);
      const whole = left === 0 || await context.repair(oid, new Set([self]));
      const after = await context.verify(oid).catch((error) => {
        if (isResult(error, ResultCode.NO_OBJ)) return undefined;
        throw error;
      });
      if (after === undefined) detail = "; removed: no good copy could be placed here";
      else if (after.length > 0) {
        detail = whole ? "; still bad after repair" : "; no good copy to repair it from";
      }
    } catch (error) {
      detail = `; repair failed: ${(error as Error).message}`;
    }
    this.#note({ oid: hex, node: self, problem: problem + detail, repaired: detail === "" });
  }

  /**
   * The objects this node compares in this pass: those it is the first target of, each with
   * the listed metas of its targets. Objects with a target that could not be listed are left
   * out (and the node is named in `unlisted`).
   */
  async #comparable(
    view: ClusterView,
    pass: Pass,
  ): Promise<{ oid: Oid; targets: RingNode[]; listed: (ObjectMeta | undefined)[] }[]> {
    const context = this.#context;
    const self = context.selfId;
    if (!view.nodes.some((n) => n.id === self)) return [];
    const listings = await Promise.all(view.nodes.map(async (node) => {
      try {
        return { node, copies: await context.listCopies(node) };
      } catch (error) {
        context.logger.warn(
          `scrub: cannot list the copies of ${node.id}: ${(error as Error).message}`,
        );
        return { node, copies: undefined };
      }
    }));
    const unlisted = new Set(listings.filter((l) => !l.copies).map((l) => l.node.id));
    this.#status.unlisted = [...unlisted];
    const byNode = new Map<string, Map<Oid, ObjectMeta>>();
    const oids = new Set<Oid>();
    for (const { node, copies } of listings) {
      const metas = new Map<Oid, ObjectMeta>();
      for (const copy of copies ?? []) {
        if (!pass.filter(copy.oid)) continue;
        metas.set(copy.oid, copy.meta);
        oids.add(copy.oid);
      }
      byNode.set(node.id, metas);
    }
    const result = [];
    for (const oid of oids) {
      const targets = targetsOf(view, oid, context.copies(oid));
      if (targets[0]?.id !== self || targets.some((n) => unlisted.has(n.id))) continue;
      result.push({ oid, targets, listed: targets.map((n) => byNode.get(n.id)?.get(oid)) });
    }
    return result;
  }

  /**
   * Phase 2, first: an object of a deleted VDI that no VDI reads (orphans.ts) is removed from
   * every holder instead of compared (and restored where a copy is missing). True if it was one.
   */
  async #removeIfOrphan(
    item: { oid: Oid; targets: RingNode[]; listed: (ObjectMeta | undefined)[] },
    isOrphan: (oid: Oid) => Promise<boolean>,
  ): Promise<boolean> {
    const { oid } = item;
    if (!await isOrphan(oid).catch(() => false)) return false;
    const holders = item.targets.filter((_, i) => item.listed[i] !== undefined).map((n) => n.id);
    let problem = `orphan: VDI ${oidToVid(oid).toString(16)} is deleted and no VDI reads it`;
    let repaired = true;
    try {
      await this.#context.remove(oid);
    } catch (error) {
      problem += `; removing it failed: ${(error as Error).message}`;
      repaired = false;
    }
    this.#note({ oid: oidToHex(oid), node: holders.join(","), problem, repaired });
    return true;
  }

  /** Phase 2 for one object: compare the listed copies, confirm a mismatch, reconcile. */
  async #compareOne(
    item: { oid: Oid; targets: RingNode[]; listed: (ObjectMeta | undefined)[] },
    signal: AbortSignal,
  ): Promise<boolean> {
    const { oid, targets } = item;
    const context = this.#context;
    if (mismatches(targets, item.listed).length === 0) return false;
    // The listing is a snapshot taken node by node: confirm with fresh metas, twice.
    let confirmed: Mismatch[];
    try {
      const first = mismatches(targets, await this.#metas(oid, targets));
      if (first.length === 0) return true;
      await context.sleep(SETTLE_MS, signal);
      if (signal.aborted) return true;
      const second = mismatches(targets, await this.#metas(oid, targets));
      confirmed = second.filter((m) =>
        first.some((f) => f.node === m.node && f.problem === m.problem)
      );
    } catch (error) {
      context.logger.debug(`scrub: cannot compare ${oidToHex(oid)}: ${(error as Error).message}`);
      return true;
    }
    if (confirmed.length === 0) return true;
    let after: Mismatch[] = confirmed;
    let whole = true;
    let failure: string | undefined;
    try {
      whole = await context.repair(oid);
      after = mismatches(targets, await this.#metas(oid, targets));
    } catch (error) {
      failure = `; repair failed: ${(error as Error).message}`;
    }
    for (const mismatch of confirmed) {
      const repaired = failure === undefined && !after.some((m) => m.node === mismatch.node);
      const detail = repaired
        ? ""
        : failure ?? (whole ? "; still differs after repair" : "; its node cannot take a copy");
      this.#note({
        oid: oidToHex(oid),
        node: mismatch.node,
        problem: mismatch.problem + detail,
        repaired,
      });
    }
    return true;
  }

  #metas(oid: Oid, targets: RingNode[]): Promise<(ObjectMeta | undefined)[]> {
    return Promise.all(targets.map((node) => this.#context.nodeMeta(node, oid)));
  }
}

/**
 * The targets whose copy is missing or differs from the best one (the newest, then verified;
 * among equals the most common bytes, then the earliest target's: `sortCopies`, as recovery and
 * the gateway choose). None when no target has a copy (the object is gone).
 */
export function mismatches(targets: RingNode[], metas: (ObjectMeta | undefined)[]): Mismatch[] {
  const present = targets
    .map((node, rank) => ({ node, rank, meta: metas[rank] }))
    .filter((c): c is { node: RingNode; rank: number; meta: ObjectMeta } => c.meta !== undefined);
  if (present.length === 0) return [];
  const best = sortCopies(present, (c) => c.node.id, targetRank(targets))[0]!
    .meta;
  return targets.flatMap((node, i): Mismatch[] => {
    const meta = metas[i];
    if (meta === undefined) return [{ node: node.id, problem: "copy missing" }];
    if (meta.version !== best.version) {
      return [{
        node: node.id,
        problem: `copy at version ${meta.version}, newest ${best.version}`,
      }];
    }
    if (meta.digest !== best.digest) {
      return [{
        node: node.id,
        problem: `copy differs from the others at version ${meta.version}`,
      }];
    }
    return [];
  });
}

/** What `scrubContextOf` reads from a sheep (structurally: sheep.ts is not imported). */
export interface ScrubbedSheep {
  readonly id: string;
  readonly logger: Logger;
  readonly store: ObjectStore;
  readonly objectLocks: ObjectLocks<Oid>;
  readonly peers: Peers;
  readonly view: ClusterView;
  readonly status: string;
  readonly gateway: {
    copiesOf(oid: Oid): number;
    repair(oid: Oid, suspects?: ReadonlySet<string>): Promise<boolean>;
    healLocal(oid: Oid): Promise<number>;
    remove(oid: Oid): Promise<void>;
  };
  /** What the orphan check reads (the VDI table and live inodes). */
  readonly orphanSource: OrphanSource;
  readonly recovery: {
    readonly active: boolean;
    listCopies(node: RingNode): Promise<ListedCopy[]>;
  };
  now(): number;
}

/** Sleeps `ms`, resolving early (not rejecting) when `signal` aborts. */
export async function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return;
  await delay(ms, undefined, signal ? { signal } : {}).catch(() => undefined);
}

/** The Scrubber's context for a sheep. */
export function scrubContextOf(sheep: ScrubbedSheep): ScrubContext {
  return {
    selfId: sheep.id,
    logger: sheep.logger,
    listLocal: () => sheep.store.list(),
    meta: (oid) => sheep.store.meta(oid),
    verify: (oid) => sheep.store.verify(oid),
    exclusive: (oid, work) => sheep.objectLocks.exclusive(oid, work),
    listCopies: (node) => sheep.recovery.listCopies(node),
    nodeMeta: (node, oid) => nodeMeta(sheep, node, oid),
    copies: (oid) => sheep.gateway.copiesOf(oid),
    repair: (oid, suspects) => sheep.gateway.repair(oid, suspects),
    heal: (oid) => sheep.gateway.healLocal(oid),
    orphans: () => {
      const check = new OrphanCheck(sheep.orphanSource);
      return (oid) => check.isOrphan(oid);
    },
    remove: (oid) => sheep.gateway.remove(oid),
    view: () => sheep.view,
    recovering: () => sheep.recovery.active,
    serving: () => sheep.status === "running",
    now: () => sheep.now(),
    sleep: abortableSleep,
  };
}

/** GET_OBJ_META of `node`'s copy (the store directly for this node). */
async function nodeMeta(
  sheep: ScrubbedSheep,
  node: RingNode,
  oid: Oid,
): Promise<ObjectMeta | undefined> {
  if (node.id === sheep.id) return await sheep.store.meta(oid);
  const header = requestHeader(Opcode.GET_OBJ_META, { internal: true });
  header.flags |= Flag.RECOVERY;
  header.oid = oid;
  try {
    const response = await sheep.peers.get(node).send(header);
    const meta = JSON.parse(new TextDecoder().decode(response.data)) as ObjectMeta | null;
    return meta ?? undefined;
  } catch (error) {
    if (isResult(error, ResultCode.NO_OBJ)) return undefined;
    throw error;
  }
}
