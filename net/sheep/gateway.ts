/**
 * The gateway: any sheep maps an object to its replicas under the current view, writes all of
 * them in parallel and acknowledges only when every one has it; reads use the local replica if
 * there is one and fall over to the next replica on error. Copy-on-write happens here: a COW
 * create reads the source object once and creates the new one with the client's bytes on top.
 *
 * Copies never stay apart. Every write carries a version from this node's `VersionClock`, so
 * the newest copy is known. When a write fails on some replicas, or a read finds a copy that
 * fails its checksums or is missing, the object is *reconciled* before anything else is
 * acknowledged on it: the newest good copy is pushed whole to every target that differs, and a
 * target that cannot take it (its disk is full or failing) loses its copy instead of keeping a
 * wrong one. A target that cannot be reached keeps the object marked diverged: the next write
 * reconciles first, and reads prefer the copy that last took a write.
 *
 * @module
 */

import { isResult, promiseOf, ResultCode, SheepdogError } from "../../core/errors.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import {
  CHECKSUM_BLOCK_BYTES,
  CLOCK_AHEAD_WARN_MS,
  CLOCK_WARN_INTERVAL_MS,
  LEFTOVER_REMOVALS_MAX,
  objectSize,
} from "../../core/limits.ts";
import { LogThrottle } from "../log/log_throttle.ts";
import { blockChecksum } from "../../core/store/block_checksum.ts";
import { type ClusterView, targetsOf } from "../../core/cluster/view.ts";
import { type Adoption, VersionClock } from "../../core/cluster/version_clock.ts";
import type {
  CreateOptions,
  HealedBlock,
  ObjectMeta,
  SalvagedCopy,
  SalvageOptions,
} from "../../core/store/object_store.ts";
import { INODE_SIZE, isSnapshot } from "../../core/vdi/inode.ts";
import { isDataOid, isVdiOid, type Oid, oidToHex, oidToVid, vdiOid } from "../../core/vdi/oid.ts";
import type { VdiRegistry } from "../../core/vdi/registry.ts";
import { Header } from "../object/header.ts";
import { Flag, Opcode } from "../object/ops.ts";
import { requestHeader } from "../object/client.ts";
import type { Peers } from "./peers.ts";
import { ObjectLocks } from "./object_locks.ts";
import { CopyRestorer } from "./copy_restorer.ts";
import {
  RECONCILE_ROUNDS_MAX,
  RETRY_FOR_MS,
  RETRY_INTERVAL_MS,
  RETRYABLE,
} from "./retry_policy.ts";
import type { Changes } from "./changes.ts";
import { sameCopy, sortCopies, targetRank } from "../../core/cluster/copy_choice.ts";
import { fetchBestCopy, type FetchedCopy } from "./copy_fetch.ts";
import { decodeSalvaged, encodeSalvaged, type ReplacedCopy } from "./salvaged_copy.ts";
import { decodeHealed, encodeHealBlocks } from "./healed_blocks.ts";

/** This node's own replicas: the store, behind recovery (a missing object may be on its way). */
export interface LocalObjects {
  /** Reads a copy a client may see: waits for recovery to bring it up to date first. */
  read(oid: Oid, offset: number, length: number): Promise<Uint8Array>;
  /**
   * `read` answered on the calling thread when it can be at once (no recovery under way, the
   * store's `readNow`): undefined otherwise, and nothing was done. It throws what `read` would
   * (a copy held after a crash).
   */
  readNow(oid: Oid, offset: number, length: number): Uint8Array | undefined;
  /**
   * Reads the copy as it is, without waiting for recovery: what recovery and repairs copy (they
   * choose by version and digest; waiting there could deadlock two nodes pulling from each other).
   */
  readCopy(oid: Oid, offset: number, length: number): Promise<Uint8Array>;
  /** Resolves with the version the copy had before. */
  write(oid: Oid, data: Uint8Array, offset: number, version: number): Promise<number>;
  /**
   * `ObjectStore.create` (resolves with the replaced copy's version). With `replacing` (a
   * repair's copy), only in place of that copy, checked with writes to the object held off: AGAIN
   * if the copy is another one by then.
   */
  create(
    oid: Oid,
    data: Uint8Array,
    offset: number,
    options: CreateOptions & { replacing?: ReplacedCopy },
  ): Promise<number>;
  /** `ObjectStore.remove` (resolves with the removed copy's version). */
  remove(oid: Oid): Promise<number>;
  /** `ObjectStore.healBlocks`: blocks rewritten in place with the bytes their checksums name. */
  healBlocks(oid: Oid, blocks: readonly HealedBlock[]): Promise<number[]>;
  /** The copy's version, size and digest as it is (no waiting for recovery). */
  meta(oid: Oid): Promise<ObjectMeta | undefined>;
  /** The copy as it is, bad blocks as zeros and named (no waiting for recovery). */
  salvage(oid: Oid, options?: SalvageOptions): Promise<SalvagedCopy>;
  flush(vid?: number): Promise<void>;
}

/** Objects whose placement the gateway remembers per view. */
const TARGET_CACHE_MAX = 65_536;

/** What the gateway needs from its sheep. */
export interface GatewayContext {
  readonly selfId: string;
  readonly local: LocalObjects;
  readonly registry: VdiRegistry;
  readonly peers: Peers;
  view(): ClusterView;
  /** Throws when this node may not accept writes now (minority side, strict and short of zones). */
  admitWrite(): void;
  defaultCopies(): number;
  defaultBlockSizeShift(): number;
  /** The wall clock: object versions (see `VersionClock`). */
  now(): number;
  /** A clock nobody sets, for the retry deadline (`SheepOptions.monotonic`). */
  monotonic(): number;
  /** Notified at every new view. */
  readonly viewChanges: Changes;
  /** A copy was found bad or missing and replaced by a good one (or removed, when it could not be). */
  repaired(oid: Oid, node: string, detail: string): void;
  /** A line for the log (a clock far off). */
  warn(line: string): void;
  /** A client's read, write or create arrived (recovery yields to clients meanwhile). */
  clientRequest(): void;
}

/** A whole copy of an object and its version. */
interface WholeCopy {
  data: Uint8Array;
  version: number;
}

/** Why an object's copies may differ, and who took the last write. */
interface Divergence {
  /** Targets that acknowledged the failed write: they hold its bytes. */
  good: string[];
  /**
   * The newest version those targets had before the write (unknown for creates). A target whose
   * disk refused the write and still holds a copy at least that new holds everything but the
   * failed write: the copies may all go back to it.
   */
  before?: number;
  /**
   * Set by the reconcile that brought the copies back to one (`#settle`): the target whose copy
   * won and whether every target holds it. The write that failed reads its outcome here: another
   * reconcile (the copy restorer's, a read's repair, the next write's) may run before its own,
   * and by then the copies are equal and the one its own reconcile names says nothing about
   * whether they hold the write (a rollback leaves them all at the refused copy).
   */
  settled?: { source: string | undefined; whole: boolean };
}

export class Gateway {
  readonly #context: GatewayContext;
  readonly #clock: VersionClock;
  readonly #locks = new ObjectLocks<Oid>();
  #diverged = new Map<Oid, Divergence>();
  /** The divergences of failed writes still waiting for their outcome, per object. */
  #awaiting = new Map<Oid, Set<Divergence>>();
  /** Removals of leftover copies in flight (`#removeLeftovers`). */
  #leftoverRemovals = 0;
  #cachedView: ClusterView | undefined;
  #targetCache = new Map<Oid, { copies: number; targets: RingNode[] }>();
  /** Objects a refusing disk left short of a copy, repaired again in the background. */
  readonly #restorer = new CopyRestorer((oid) =>
    this.#reconcile(oid).then((outcome) => outcome.whole)
  );

  constructor(context: GatewayContext) {
    this.#context = context;
    this.#clock = new VersionClock(() => context.now(), () => context.monotonic());
  }

  /** Objects waiting for a copy a full or failing disk refused (copy_restorer.ts). */
  get restoresPending(): number {
    return this.#restorer.size;
  }

  /** Stops background repairs (the sheep is stopping). */
  close(): void {
    this.#restorer.close();
  }

  /** Copies for `oid`: its VDI's `nr_copies`, else the cluster default. */
  copiesOf(oid: Oid): number {
    const header = this.#context.registry.get(oidToVid(oid));
    return header && header.nrCopies > 0 ? header.nrCopies : this.#context.defaultCopies();
  }

  /** The largest valid size of `oid`: an inode, or a data object of its VDI's object size. */
  objectLimit(oid: Oid): number {
    if (isVdiOid(oid)) return INODE_SIZE;
    const header = this.#context.registry.get(oidToVid(oid));
    return objectSize(header?.blockSizeShift ?? this.#context.defaultBlockSizeShift());
  }

  /** Throws INVALID_PARMS unless [offset, offset+length) lies inside `oid`. */
  checkRange(oid: Oid, offset: number, length: number): void {
    const limit = this.objectLimit(oid);
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 ||
      length < 0 || offset + length > limit
    ) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Range ${offset}+${length} is outside object ${oidToHex(oid)} (${limit} bytes)`,
      );
    }
  }

  /** The CLOCK_AHEAD_WARN_MS warning, said at most once per CLOCK_WARN_INTERVAL_MS. */
  readonly #clockWarning = new LogThrottle(CLOCK_WARN_INTERVAL_MS);

  /** A version newer than any this node issued or saw (recovery and repairs keep theirs). */
  nextVersion(): number {
    return this.#clock.next();
  }

  /** The cluster's time as this node knows it (`VersionClock.timelineMs`; GET_CLOCK answers it). */
  timelineMs(): number {
    return this.#clock.timelineMs();
  }

  /** The highest version this node issued or saw (GET_CLOCK answers it). */
  lastVersion(): number {
    return this.#clock.last;
  }

  /** Takes a peer's timeline (net/sheep/clock_probe.ts). */
  adoptTimeline(timelineMs: number): Adoption {
    return this.#clock.adoptTimeline(timelineMs);
  }

  /**
   * Takes note of a version seen on a replica, so later writes outrank it; one issued far ahead
   * of this node's clock is said (CLOCK_AHEAD_WARN_MS), once in a while.
   */
  observeVersion(version: number, oid?: Oid): void {
    this.#clock.observe(version);
    const ahead = this.#clock.aheadMs(version);
    if (ahead <= CLOCK_AHEAD_WARN_MS) return;
    if (this.#clockWarning.say(this.#context.monotonic()) === undefined) return;
    this.#context.warn(
      `${oid === undefined ? "a copy" : `a copy of ${oidToHex(oid)}`} carries a version issued ` +
        `${ahead} ms ahead of this node's clock: a node's clock is ahead, or this one's behind. ` +
        `Writes are ordered by the clocks of the nodes they go through: keep them in sync (NTP)`,
    );
  }

  /** Writes to a snapshot's objects are refused: the client must reload its inode. */
  #checkWritable(oid: Oid): void {
    if (!isVdiOid(oid) && !isDataOid(oid)) return;
    const header = this.#context.registry.get(oidToVid(oid));
    if (header && isSnapshot(header)) {
      throw new SheepdogError(ResultCode.READONLY, `Object ${oidToHex(oid)} belongs to a snapshot`);
    }
  }

  /** The replicas of `oid` under the current view. */
  targets(oid: Oid): RingNode[] {
    return [...this.#cachedTargets(oid)];
  }

  /** `targets`, not copied: the cache's own array, for callers that only look. */
  #cachedTargets(oid: Oid): readonly RingNode[] {
    // Placement hashes the oid and walks the ring: cache it per view (views are immutable).
    const view = this.#context.view();
    if (this.#cachedView !== view || this.#targetCache.size >= TARGET_CACHE_MAX) {
      this.#cachedView = view;
      this.#targetCache.clear();
    }
    const copies = this.copiesOf(oid);
    let cached = this.#targetCache.get(oid);
    if (!cached || cached.copies !== copies) {
      cached = { copies, targets: targetsOf(view, oid, copies) };
      this.#targetCache.set(oid, cached);
    }
    const targets = cached.targets;
    if (targets.length === 0) {
      throw new SheepdogError(ResultCode.HALT, "No storage node is alive to hold the object");
    }
    return targets;
  }

  /**
   * Runs `attempt` until it succeeds, fails for good, or the cluster has been changing for
   * longer than RETRY_FOR_MS: a VM sees a stall, not an error, while membership changes.
   */
  #retrying<T>(attempt: () => Promise<T>): Promise<T> {
    // The first attempt without a wrapper (the hot path: nearly every request succeeds at once).
    const deadline = this.#context.monotonic() + RETRY_FOR_MS;
    return promiseOf(attempt).catch((error) => this.#retryAfter(error, attempt, deadline));
  }

  async #retryAfter<T>(failure: unknown, attempt: () => Promise<T>, deadline: number): Promise<T> {
    let error = failure;
    for (;;) {
      if (!isResult(error, ...RETRYABLE) || this.#context.monotonic() > deadline) throw error;
      // Resend as soon as a new view is in (the usual cure), else after the retry interval
      // (a lost connection may come back within one view).
      const epoch = this.#context.view().epoch;
      await this.#context.viewChanges.until(
        () => this.#context.view().epoch !== epoch,
        RETRY_INTERVAL_MS,
      );
      try {
        return await attempt();
      } catch (next) {
        error = next;
      }
    }
  }

  read(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    this.#context.clientRequest();
    this.checkRange(oid, offset, length);
    return this.#retrying(() => this.#readOnce(oid, offset, length));
  }

  /**
   * `read` answered on the calling thread (the NBD session's short reads): when this node's copy
   * is the one to read first and `LocalObjects.readNow` has it at once. Undefined otherwise, with
   * nothing done: `read` takes it (and a failure, with its retries, other copies and repairs).
   */
  readNow(oid: Oid, offset: number, length: number): Uint8Array | undefined {
    if (!this.#readsHereFirst(oid)) return undefined;
    this.checkRange(oid, offset, length);
    const data = this.#context.local.readNow(oid, offset, length);
    if (data !== undefined) this.#context.clientRequest();
    return data;
  }

  /**
   * Whether `#readOrder` would read this node's copy first, without building the order (every
   * short client read asks). False in the rare order it cannot tell at once: the read then goes
   * the usual way.
   */
  #readsHereFirst(oid: Oid): boolean {
    const self = this.#context.selfId;
    return this.#preferredReader(oid) === self &&
      this.#cachedTargets(oid).some((n) => n.id === self);
  }

  /** The node read first when it holds a copy: the one that took the last write, else this one. */
  #preferredReader(oid: Oid): string {
    return this.#diverged.get(oid)?.good[0] ?? this.#context.selfId;
  }

  /** Targets in the order to read them: the copy that took the last write, else this node first. */
  #readOrder(oid: Oid): RingNode[] {
    const targets = this.targets(oid);
    const preferred = this.#preferredReader(oid);
    const first = targets.findIndex((n) => n.id === preferred);
    if (first > 0) targets.unshift(...targets.splice(first, 1));
    return targets;
  }

  async #readOnce(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    const failed: { node: RingNode; error: unknown }[] = [];
    for (const node of this.#readOrder(oid)) {
      try {
        const data = await this.#readFrom(node, oid, offset, length);
        const bad = failed.filter((f) => isResult(f.error, ResultCode.EIO, ResultCode.NO_OBJ));
        if (bad.length > 0) this.#repairInBackground(oid, bad);
        return data;
      } catch (error) {
        failed.push({ node, error });
      }
    }
    // No copy could be read: the client gets the error, never bytes we cannot vouch for.
    const corrupt = failed.find((f) => isResult(f.error, ResultCode.EIO));
    if (corrupt) throw corrupt.error;
    // Readers ask for objects that were written (a table entry names each): when every node
    // that should hold one has none, its holders are down or away, and "no such object" would
    // send the operator looking for a bug.
    if (failed.every((f) => isResult(f.error, ResultCode.NO_OBJ))) {
      throw noCopyPresent("read", oid, failed.map((f) => f.node), failed[0]!.error);
    }
    throw failed[failed.length - 1]!.error;
  }

  #readFrom(node: RingNode, oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    if (node.id === this.#context.selfId) return this.#context.local.read(oid, offset, length);
    const header = this.#peerHeader(Opcode.READ_PEER, oid, offset);
    header.dataLength = length;
    return this.#sendPeer(node, header).then((response) => response.data);
  }

  #peerHeader(opcode: number, oid: Oid, offset: number): Header {
    const header = requestHeader(opcode, { internal: true });
    header.oid = oid;
    header.offset = offset;
    header.epoch = this.#context.view().epoch;
    return header;
  }

  async #sendPeer(
    node: RingNode,
    header: Header,
    data?: Uint8Array,
  ): Promise<{ header: Header; data: Uint8Array }> {
    return await this.#context.peers.get(node).send(header, data);
  }

  async write(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    this.#context.clientRequest();
    this.checkRange(oid, offset, data.length);
    this.#checkWritable(oid);
    this.#context.admitWrite();
    await this.writeAt(oid, data, offset);
  }

  /** Writes on every target without the read-only check (VDI administration). */
  async writeAt(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    await this.#replicate(oid, async (node, version) => {
      if (node.id === this.#context.selfId) {
        return await this.#context.local.write(oid, data, offset, version);
      }
      const header = this.#peerHeader(Opcode.WRITE_PEER, oid, offset);
      header.objVersion = version;
      return (await this.#sendPeer(node, header, data)).header.rspObjVersion;
    });
  }

  async create(oid: Oid, data: Uint8Array, offset: number, cowFrom?: Oid): Promise<void> {
    this.#context.clientRequest();
    this.checkRange(oid, offset, data.length);
    this.#checkWritable(oid);
    this.#context.admitWrite();
    let payload = data;
    let payloadOffset = offset;
    if (cowFrom !== undefined) {
      const size = this.objectLimit(oid);
      // The source is an object a table entry names, so it was written: when no node here holds
      // it, its holders are away, and zeros in its place would be wrong bytes for good (the new
      // object replaces it for this VDI). The write fails until the source is back.
      const source = await this.read(cowFrom, 0, size).catch((error) => {
        if (!isResult(error, ResultCode.NO_OBJ)) throw error;
        throw new SheepdogError(
          ResultCode.NO_OBJ,
          `Cannot copy-on-write object ${oidToHex(oid)}: ${error.message}`,
          { cause: error },
        );
      });
      source.set(data, offset);
      payload = source;
      payloadOffset = 0;
    }
    await this.createAt(oid, payload, payloadOffset);
  }

  /** Creates the object on every target (no COW, no read-only check: VDI administration). */
  async createAt(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    const size = this.objectLimit(oid);
    await this.#replicate(
      oid,
      (node, version) => this.#createOn(node, oid, data, offset, size, version),
      "create",
    );
  }

  #createOn(
    node: RingNode,
    oid: Oid,
    data: Uint8Array,
    offset: number,
    size: number,
    version: number,
    salvaged?: Omit<SalvagedCopy, "data"> & { meta?: ObjectMeta },
    replacing?: ReplacedCopy,
  ): Promise<number> {
    const badBlocks = salvaged?.badBlocks ?? [];
    const unverified = salvaged?.meta !== undefined && !salvaged.meta.verified;
    // A copy of a crash-suspect copy stays suspect with the source's uncertain blocks, as
    // recovery's pulls do (else every block counts as uncertain, and a merge after a later crash
    // prefers any other copy's older bytes to the writes this copy takes meanwhile).
    const changed = unverified ? salvaged!.meta!.changed : undefined;
    if (node.id === this.#context.selfId) {
      return this.#context.local.create(oid, data, offset, {
        size,
        version,
        badBlocks,
        expected: salvaged?.expected ?? [],
        unverified,
        ...(changed ? { changed } : {}),
        ...(replacing !== undefined ? { replacing } : {}),
      });
    }
    if (badBlocks.length > 0 || changed !== undefined || replacing !== undefined) {
      // Its bad blocks (they stay bad), uncertain blocks and the copy it replaces travel with it.
      const header = this.#peerHeader(Opcode.PUT_SALVAGED_PEER, oid, 0);
      header.objVersion = version;
      header.objSize = size;
      if (unverified) header.flags |= Flag.UNVERIFIED;
      const salvagedCopy = encodeSalvaged({
        badBlocks,
        expected: salvaged?.expected ?? [],
        data,
        ...(changed ? { changed } : {}),
        ...(replacing !== undefined ? { replacing } : {}),
      });
      return this.#sendPeer(node, header, salvagedCopy).then((r) => r.header.rspObjVersion);
    }
    const header = this.#peerHeader(Opcode.CREATE_AND_WRITE_PEER, oid, offset);
    header.objVersion = version;
    header.objSize = size;
    if (unverified) header.flags |= Flag.UNVERIFIED;
    return this.#sendPeer(node, header, data).then((r) => r.header.rspObjVersion);
  }

  async remove(oid: Oid): Promise<void> {
    await this.#retrying(async () => {
      const results = await Promise.allSettled(
        this.targets(oid).map((node) => this.#removeOn(node, oid, true)),
      );
      // The removed copies' versions: an object created again under this oid (a write after a
      // discard) must outrank a copy that missed the removal (its node away), or recovery brings
      // that copy back over the new one (found by hand on the skewed-clock simulation: a create
      // through a node an hour behind the removed copy's writer).
      for (const r of results) if (r.status === "fulfilled") this.observeVersion(r.value, oid);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
    });
    this.#diverged.delete(oid);
    this.#removeLeftovers(oid);
  }

  /**
   * After the targets removed `oid`: the other members remove any copy they hold too. A purge
   * keeps a leftover copy while it may hold blocks the targets' copies lost; once the targets'
   * copies are gone, the next recovery would find the object held by that leftover alone and
   * bring it back, an object nothing names (found by the simulation with discards, seed 814).
   * Best effort, not waited for (a member that does not answer must not hold up a client's
   * discard or a delete): one that cannot be reached keeps its copy; past LEFTOVER_REMOVALS_MAX
   * in flight none are sent. Removing a missing object is not an error, so the members that
   * never held one just answer. Epoch-checked: a removal that arrives after a view change that
   * made its member a target is refused.
   */
  #removeLeftovers(oid: Oid): void {
    const targets = new Set(this.targets(oid).map((node) => node.id));
    for (const node of this.#context.view().nodes) {
      if (this.#leftoverRemovals >= LEFTOVER_REMOVALS_MAX) break;
      if (targets.has(node.id)) continue;
      this.#leftoverRemovals++;
      this.#removeOn(node, oid, true).then((version) => this.observeVersion(version, oid))
        .catch(() => undefined).finally(() => this.#leftoverRemovals--);
    }
  }

  /**
   * Runs one mutation on every target under a fresh version. If some targets fail, the object
   * is reconciled before the error (or, once every copy has the write, the success) is reported.
   */
  #replicate(
    oid: Oid,
    send: (node: RingNode, version: number) => Promise<number>,
    kind: "write" | "create" = "write",
  ): Promise<void> {
    return this.#retrying(async () => {
      if (this.#diverged.has(oid)) await this.#reconcile(oid);
      const failed = await this.#locks.shared(oid, async () => {
        let version = this.#clock.next();
        const targets = this.targets(oid);
        let results = await sendAll(targets, (node) => send(node, version));
        // A write answers with the version each copy had before it. One not below this write's
        // means the write did not raise it (another gateway's clock is ahead, or issued the same
        // version in the same millisecond): the copies would look no newer than one that missed
        // the write, and a tie may go to that one. Learn the version and write the same bytes
        // again under a higher one.
        let answered = 0;
        let behind = false;
        for (const r of results) {
          if (r.status !== "fulfilled") continue;
          this.observeVersion(r.value, oid);
          answered++;
          if (r.value >= version) behind = true;
        }
        if (answered === targets.length && behind) {
          version = this.#clock.next();
          results = await sendAll(targets, (node) => send(node, version));
        }
        if (results.every((r) => r.status === "fulfilled")) return undefined;
        const failed = results.flatMap((r) => r.status === "rejected" ? [r.reason] : []);
        const good = targets.filter((_, i) => results[i]!.status === "fulfilled").map((n) => n.id);
        const previous = results.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
        // Creates answer too (for the version check above), but a create's "before" is no copy a
        // refuser's may be gone back to: kept unknown, as it always was.
        const before = kind === "write" && good.length > 0 ? Math.max(...previous) : undefined;
        const divergence: Divergence = before === undefined ? { good } : { good, before };
        this.#diverged.set(oid, divergence);
        this.#await(oid, divergence, true);
        const missing = failed.length === targets.length &&
          failed.every((e) => isResult(e, ResultCode.NO_OBJ));
        const failure: unknown = missing
          ? noCopyPresent("write", oid, targets, failed[0])
          : failed[0];
        return { failure, divergence };
      });
      if (failed === undefined) return;
      const { failure, divergence } = failed;
      // Bring the copies back to one value. If every target now holds the copy of a target that
      // took the write, the write stands; otherwise the client hears the failure (an
      // unacknowledged write may land or not, but every copy ends up the same). The outcome is
      // that of the reconcile that settled this write's divergence, which may have run before
      // this one (sim seed 7091: the copy restorer rolled the copies back to the refused copy,
      // then this reconcile found them equal and named a target that took the write).
      try {
        const outcome = await this.#reconcile(oid).catch(() => undefined);
        const verdict = divergence.settled ?? outcome;
        if (
          verdict?.whole && verdict.source !== undefined && divergence.good.includes(verdict.source)
        ) return;
      } finally {
        this.#await(oid, divergence, false);
      }
      throw failure;
    });
  }

  /** Registers (or drops) a failed write's divergence as waiting for its outcome. */
  #await(oid: Oid, divergence: Divergence, waiting: boolean): void {
    let set = this.#awaiting.get(oid);
    if (waiting) {
      if (!set) this.#awaiting.set(oid, set = new Set());
      set.add(divergence);
      return;
    }
    set?.delete(divergence);
    if (set?.size === 0) this.#awaiting.delete(oid);
  }

  /**
   * The copies of `oid` are one again (or gone): every failed write waiting for its outcome
   * learns which copy won, and the object is no longer diverged.
   */
  #settle(oid: Oid, settled: { source: string | undefined; whole: boolean }): void {
    for (const divergence of this.#awaiting.get(oid) ?? []) divergence.settled ??= settled;
    this.#diverged.delete(oid);
  }

  /**
   * Makes every target of `oid` hold the newest good copy. Resolves with the node whose copy won
   * and whether every target now has it (false when a copy had to be removed instead: its node
   * cannot take it); rejects when a target cannot be reached (the object stays marked diverged).
   */
  #reconcile(
    oid: Oid,
    suspects: ReadonlySet<string> = new Set(),
  ): Promise<{ source: string | undefined; whole: boolean }> {
    return this.#locks.exclusive(oid, async () => {
      for (let round = 1;; round++) {
        try {
          return await this.#reconcileOnce(oid, suspects);
        } catch (error) {
          // A target's copy took a write while the repair ran (another gateway's: its lock does
          // not exclude this one), so the target refused the copy read before it: start again
          // from the copies as they are now.
          if (!isResult(error, ResultCode.AGAIN) || round >= RECONCILE_ROUNDS_MAX) throw error;
        }
      }
    });
  }

  async #reconcileOnce(
    oid: Oid,
    suspects: ReadonlySet<string>,
  ): Promise<{ source: string | undefined; whole: boolean }> {
    const targets = this.targets(oid);
    const metas = await Promise.all(targets.map((node) => this.#metaOf(node, oid)));
    const preferred = this.#diverged.get(oid)?.good ?? [];
    const listed = targets.map((node, i) => ({ node, meta: metas[i] }))
      .filter((c): c is { node: RingNode; meta: ObjectMeta } =>
        c.meta !== undefined && c.meta !== "unreachable"
      );
    // Recovery's order of quality; among equals the copies that took the failed write first
    // and the copies a read found bad last (a bad copy is only salvaged, see copy_fetch.ts).
    const sorted = sortCopies(
      listed,
      (c) => c.node.id,
      targetRank(targets),
    );
    const order = sorted.map((c, i) => ({ c, i })).sort((a, b) =>
      rankKey(a.c.meta) - rankKey(b.c.meta) ||
      Number(preferred.includes(b.c.node.id)) - Number(preferred.includes(a.c.node.id)) ||
      Number(suspects.has(a.c.node.id)) - Number(suspects.has(b.c.node.id)) ||
      a.i - b.i
    ).map(({ c }) => c);
    const source = await fetchBestCopy(oid, order, {
      whole: (node, id, size) => this.#fetchWhole(node, id, size),
      salvage: (node, id) => this.#fetchSalvage(node, id),
      range: (node, id, offset, length) => this.#readRange(node, id, offset, length),
    });
    if (!source) {
      if (metas.some((m) => m === "unreachable")) {
        throw new SheepdogError(
          ResultCode.NETWORK_ERROR,
          `No copy of ${oidToHex(oid)} reachable`,
        );
      }
      // Nothing readable anywhere: the object is gone (never written, or lost); nothing to do.
      const whole = metas.every((m) => m === undefined);
      this.#settle(oid, { source: undefined, whole });
      return { source: undefined, whole };
    }
    const silent = targets.filter((_, i) => metas[i] === "unreachable");
    if (silent.length > 0 && source.badBlocks.length > 0) {
      // A node that did not answer may hold the object whole: never salvage around it.
      throw new SheepdogError(
        ResultCode.NETWORK_ERROR,
        `${silent[0]!.id} did not answer for ${oidToHex(oid)}`,
      );
    }
    // Forward: every target gets the best copy. A target whose disk cannot take it (full,
    // failing) would be left behind, so then every copy goes back to that target's copy
    // instead (the failed write does not land anywhere), and only a target that cannot take
    // even that loses its copy: a wrong copy is worse than none.
    const forward = await this.#pushAll(oid, targets, metas, source, suspects);
    if (forward.changed !== undefined) throw forward.changed;
    let winner: FetchedCopy = source;
    let outcome = forward;
    /** A refused copy was kept: the copies still differ. */
    let kept = false;
    const refuser = forward.refused[0];
    if (refuser !== undefined) {
      const index = targets.findIndex((n) => n.id === refuser.id);
      const meta = metas[index];
      // Only a copy that holds every write but the failed one may be gone back to (a stale
      // copy would lose acknowledged writes): verified, and as new as the others were.
      const before = this.#diverged.get(oid)?.before;
      const current = meta && meta !== "unreachable" && meta.verified &&
        before !== undefined && meta.version >= before;
      const copy = current
        ? await this.#fetchWhole(refuser, oid, meta.size).catch(() => undefined)
        : undefined;
      if (copy && meta && meta !== "unreachable") {
        winner = { node: refuser, meta, ...copy, badBlocks: [], expected: [] };
        const current = await Promise.all(targets.map((node) => this.#metaOf(node, oid)));
        outcome = await this.#pushAll(oid, targets, current, winner, new Set(), "rolled back");
        if (outcome.changed !== undefined) throw outcome.changed;
      }
      // A copy is removed only once the copy that won is stored somewhere (on its own node, or
      // pushed): a salvaged winner is not what its node holds, and if every node refused it,
      // a refused copy may hold the only good version of a block the winner lost. Then nothing
      // is removed: the copies stay diverged and the write fails.
      if (outcome.holders.length === 0) {
        throw outcome.unreachable ?? outcome.refusal ?? new SheepdogError(
          ResultCode.EIO,
          `No target of ${oidToHex(oid)} could store its repaired copy`,
        );
      }
      // Fencing never touches the copy that won: at least that one stays. Nor a copy whose
      // every block is not vouched for by the winner or provably older: one as new as the
      // winner but different (a rollback's refuser holds the failed write), or any copy while the
      // winner has blocks left bad (the copy's block may be the only version of one). Such a
      // copy stays and the object stays diverged (reads go to the copies that took the write).
      for (const node of outcome.refused.filter((n) => n.id !== winner.node.id)) {
        const meta = await this.#metaOf(node, oid);
        if (meta === undefined) continue;
        if (meta === "unreachable") {
          outcome.unreachable ??= new SheepdogError(
            ResultCode.NETWORK_ERROR,
            `${node.id} did not answer`,
          );
          continue;
        }
        const older = meta.version < winner.meta.version;
        const same = sameCopy(meta, winner.meta);
        if (winner.badBlocks.length > 0 || !(older || same)) {
          kept = true;
          continue;
        }
        await this.#removeOn(node, oid).then(
          () => this.#context.repaired(oid, node.id, "its disk cannot take the object: removed"),
          (error) => (outcome.unreachable ??= error),
        );
      }
    }
    // A refused target is short of a copy now, or holds a different one: tried again later.
    if (outcome.refused.length > 0) this.#restorer.add(oid);
    if (outcome.unreachable !== undefined) throw outcome.unreachable;
    const settled = { source: winner.node.id, whole: outcome.refused.length === 0 };
    if (!kept) this.#settle(oid, settled);
    return settled;
  }

  /**
   * Gives every target that differs from `source` (or is suspect, or when the source was
   * salvaged) a copy of it, in place of the copy `metas` says it has (a target whose copy changed
   * since refuses: AGAIN). Returns the targets whose disk refused it and, if any target could not
   * be reached or had a changed copy, that error.
   */
  async #pushAll(
    oid: Oid,
    targets: RingNode[],
    metas: (ObjectMeta | undefined | "unreachable")[],
    source: FetchedCopy,
    suspects: ReadonlySet<string>,
    why?: string,
  ): Promise<
    {
      refused: RingNode[];
      holders: RingNode[];
      refusal?: unknown;
      unreachable?: unknown;
      changed?: unknown;
    }
  > {
    const refused: RingNode[] = [];
    /** Targets that hold `source`'s bytes afterwards. */
    const holders: RingNode[] = [];
    let refusal: unknown;
    let unreachable: unknown;
    let changed: unknown;
    // A salvaged source (even one whose bad blocks were all filled from other copies) is not
    // what its node holds: that node gets it too.
    const salvaged = source.salvaged === true || source.badBlocks.length > 0 ||
      suspects.has(source.node.id);
    await Promise.all(targets.map(async (node, i) => {
      const meta = metas[i];
      if (meta === "unreachable") {
        // What it holds is unknown (maybe newer): it is not overwritten blind.
        unreachable = new SheepdogError(ResultCode.NETWORK_ERROR, `${node.id} did not answer`);
        return;
      }
      if (node.id === source.node.id && !salvaged) return void holders.push(node);
      if (
        !salvaged && meta !== undefined && !suspects.has(node.id) &&
        sameCopy(meta, source.meta)
      ) return void holders.push(node);
      const reason = why ??
        (meta === undefined
          ? "copy missing"
          : suspects.has(node.id)
          ? "copy unreadable"
          : salvaged && source.badBlocks.length > 0
          ? `salvaged: ${source.badBlocks.length} block(s) of the newest copy are lost`
          : salvaged
          ? "salvaged: its bad blocks were taken from other copies"
          : `copy at version ${meta.version}, newest ${source.meta.version}`);
      const replacing = meta === undefined ? null : { version: meta.version, digest: meta.digest };
      try {
        await this.#createOn(
          node,
          oid,
          source.data,
          0,
          source.meta.size,
          source.version,
          source,
          replacing,
        );
        this.#context.repaired(oid, node.id, reason);
        holders.push(node);
      } catch (error) {
        if (isResult(error, ResultCode.AGAIN)) changed ??= error;
        else if (isResult(error, ...RETRYABLE)) unreachable = error;
        else {
          refused.push(node);
          refusal ??= error;
        }
      }
    }));
    return {
      refused,
      holders,
      refusal,
      ...(unreachable === undefined ? {} : { unreachable }),
      ...(changed === undefined ? {} : { changed }),
    };
  }

  /**
   * Repairs copies a read found bad or missing, off the client's path: bad copies are healed in
   * place first (`heal`: a reconcile of an object clients keep writing may give up), and only
   * what that leaves (a missing copy, a block no target has) is reconciled.
   */
  #repairInBackground(oid: Oid, bad: { node: RingNode; error: unknown }[]): void {
    const corrupt = bad.filter((b) => isResult(b.error, ResultCode.EIO)).map((b) => b.node);
    const suspects = new Set(corrupt.map((node) => node.id));
    const healed = corrupt.length === bad.length
      ? Promise.all(corrupt.map((node) => this.heal(oid, node))).catch(() => [-1])
      : Promise.resolve([-1]);
    void healed.then((left) =>
      left.every((n) => n === 0) ? undefined : this.#reconcile(oid, suspects)
    )
      .catch(() => undefined);
  }

  /**
   * Heals `node`'s copy of `oid` in place: each block that fails its checksum gets the bytes
   * another target holds whose checksum is the one that copy records for it (the bytes of the
   * last write to it, as the store checks under the block's lock). No copy is replaced and no
   * version moves, so a write racing it is never undone and never makes it start again: a
   * whole-copy repair (`repair`) of a busy object loses to every write that reaches the copy
   * while it fetches the source, and gives up. Resolves with the number of blocks still bad
   * (blocks recorded lost, and blocks whose bytes no other target has, are left to `repair`);
   * NO_OBJ when `node` holds no copy.
   */
  async heal(oid: Oid, node: RingNode): Promise<number> {
    const meta = await this.#metaOf(node, oid);
    if (meta === "unreachable") {
      throw new SheepdogError(ResultCode.NETWORK_ERROR, `${node.id} did not answer`);
    }
    if (meta === undefined) {
      throw new SheepdogError(ResultCode.NO_OBJ, `No copy of ${oidToHex(oid)} on ${node.id}`);
    }
    const salvaged = await this.#fetchSalvage(node, oid);
    const lost = new Set(meta.lostBlocks ?? []);
    const others = this.targets(oid).filter((n) => n.id !== node.id);
    const found: HealedBlock[] = [];
    for (const [i, index] of salvaged.badBlocks.entries()) {
      const expected = salvaged.expected[i];
      if (expected === undefined || lost.has(index) || !meta.verified) continue;
      const offset = index * CHECKSUM_BLOCK_BYTES;
      const length = Math.min(CHECKSUM_BLOCK_BYTES, meta.size - offset);
      for (const other of others) {
        const bytes = await this.#readRange(other, oid, offset, length).catch(() => undefined);
        if (bytes === undefined || blockChecksum(bytes) !== expected) continue;
        found.push({ index, data: bytes });
        break;
      }
    }
    const healed = found.length === 0 ? [] : await this.#healOn(node, oid, found);
    for (const index of healed) {
      this.#context.repaired(oid, node.id, `block ${index} healed in place`);
    }
    return salvaged.badBlocks.length - healed.length;
  }

  /** `heal` of this node's own copy (the scrub's first step). */
  healLocal(oid: Oid): Promise<number> {
    const self = this.#context.view().nodes.find((n) => n.id === this.#context.selfId);
    if (self === undefined) {
      return Promise.reject(
        new SheepdogError(ResultCode.NETWORK_ERROR, `${this.#context.selfId} is not in the view`),
      );
    }
    return this.heal(oid, self);
  }

  #healOn(node: RingNode, oid: Oid, blocks: HealedBlock[]): Promise<number[]> {
    if (node.id === this.#context.selfId) return this.#context.local.healBlocks(oid, blocks);
    const header = this.#peerHeader(Opcode.HEAL_BLOCKS_PEER, oid, 0);
    header.flags |= Flag.RECOVERY;
    return this.#sendPeer(node, header, encodeHealBlocks(blocks))
      .then((response) => decodeHealed(response.data));
  }

  /** Brings every copy of `oid` to the newest good one (scrub and operators use this). */
  async repair(oid: Oid, suspects: ReadonlySet<string> = new Set()): Promise<boolean> {
    return (await this.#retrying(() => this.#reconcile(oid, suspects))).whole;
  }

  async #metaOf(node: RingNode, oid: Oid): Promise<ObjectMeta | undefined | "unreachable"> {
    try {
      if (node.id === this.#context.selfId) return await this.#context.local.meta(oid);
      const header = this.#peerHeader(Opcode.GET_OBJ_META, oid, 0);
      header.flags |= Flag.RECOVERY;
      const response = await this.#sendPeer(node, header);
      const meta = JSON.parse(new TextDecoder().decode(response.data)) as ObjectMeta | null;
      return meta ?? undefined;
    } catch (error) {
      if (isResult(error, ResultCode.NO_OBJ)) return undefined;
      return "unreachable";
    }
  }

  /** Reads a whole copy from one node (its checksums verified there) with its version. */
  async #fetchWhole(node: RingNode, oid: Oid, size: number): Promise<WholeCopy> {
    if (node.id === this.#context.selfId) {
      const meta = await this.#context.local.meta(oid);
      const data = await this.#context.local.readCopy(oid, 0, size);
      return { data, version: meta?.version ?? 0 };
    }
    const header = this.#peerHeader(Opcode.READ_PEER, oid, 0);
    header.flags |= Flag.RECOVERY;
    header.dataLength = size;
    const response = await this.#sendPeer(node, header);
    this.observeVersion(response.header.rspObjVersion, oid);
    return { data: response.data, version: response.header.rspObjVersion };
  }

  /** A checked range of one node's copy, as it is (recovery's way of reading). */
  async #readRange(node: RingNode, oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    if (node.id === this.#context.selfId) {
      return await this.#context.local.readCopy(oid, offset, length);
    }
    const header = this.#peerHeader(Opcode.READ_PEER, oid, offset);
    header.flags |= Flag.RECOVERY;
    header.dataLength = length;
    return (await this.#sendPeer(node, header)).data;
  }

  /** Reads a copy without failing on bad blocks (see `ObjectStore.salvage`). */
  async #fetchSalvage(node: RingNode, oid: Oid): Promise<SalvagedCopy & { version: number }> {
    if (node.id === this.#context.selfId) {
      const meta = await this.#context.local.meta(oid);
      return { ...await this.#context.local.salvage(oid), version: meta?.version ?? 0 };
    }
    const header = this.#peerHeader(Opcode.GET_OBJ_SALVAGE, oid, 0);
    header.flags |= Flag.RECOVERY;
    const response = await this.#sendPeer(node, header);
    return { ...decodeSalvaged(response.data), version: response.header.rspObjVersion };
  }

  /**
   * Removes the copy of `oid` on `node`. `checked`: a client's removal, which the peer refuses
   * when it was routed with another view (a repair's is not: it acts on the copies it listed).
   */
  #removeOn(node: RingNode, oid: Oid, checked = false): Promise<number> {
    if (node.id === this.#context.selfId) return this.#context.local.remove(oid);
    const header = this.#peerHeader(Opcode.REMOVE_PEER, oid, 0);
    if (!checked) header.flags |= Flag.RECOVERY;
    return this.#sendPeer(node, header).then((r) => r.header.rspObjVersion);
  }

  /**
   * Makes acknowledged writes durable on every node of the view: with `vid`, the writes to that
   * VDI (its data objects and inode) only.
   */
  async flush(vid?: number): Promise<void> {
    // A node that died meanwhile fails its part: once the view has dropped it, flush the nodes
    // that are left (they hold every acknowledged write; recovery copies durably).
    await this.#retrying(async () => {
      const nodes = this.#context.view().nodes;
      if (nodes.length === 0) return await this.#context.local.flush(vid);
      await Promise.all(nodes.map((node) => {
        if (node.id === this.#context.selfId) return this.#context.local.flush(vid);
        const header = requestHeader(Opcode.FLUSH_PEER, { internal: true });
        if (vid !== undefined) header.oid = vdiOid(vid);
        return this.#sendPeer(node, header);
      }));
    });
  }
}

/**
 * `send` to every target, settled. One target (copies=1, or one left) is awaited alone: the
 * write path's common case without `allSettled`'s extra promises.
 */
function sendAll<T>(
  targets: readonly RingNode[],
  send: (node: RingNode) => Promise<T>,
): Promise<PromiseSettledResult<T>[]> {
  if (targets.length !== 1) return Promise.allSettled(targets.map(send));
  return promiseOf(() => send(targets[0]!)).then(
    (value) => [{ status: "fulfilled", value }],
    (reason) => [{ status: "rejected", reason }],
  );
}

/** Orders copies by rank (newer, then verified: `compareCopies`) before ties are broken. */
function rankKey(meta: ObjectMeta): number {
  return -(meta.version * 2 + (meta.verified ? 1 : 0));
}

/**
 * Every node that should hold `oid` answered that it has none. Clients read and write only
 * objects that were written (a table entry names each), so its holders are down or away, and
 * "no such object" would send the operator looking for a bug.
 */
function noCopyPresent(
  what: "read" | "write",
  oid: Oid,
  asked: readonly RingNode[],
  cause: unknown,
): SheepdogError {
  return new SheepdogError(
    ResultCode.NO_OBJ,
    `Cannot ${what} object ${oidToHex(oid)}: no node present holds a copy (asked ` +
      `${asked.map((node) => node.id).join(", ")}; the nodes holding it may be down or away: ` +
      "see `shepherd info -t recovery`)",
    { cause },
  );
}
