/**
 * Recovery: after every view change each sheep learns what every member holds (each object's
 * version and digest), works out the objects the new ring puts on it, and makes its copy of each
 * equal to the newest good one: pulled when missing or older, left alone when it already matches.
 * Nothing is trusted for having been kept: a node back from a crash, a pause or a partition
 * compares every object like any other node, and a client touching an object that is still due
 * waits for it (`ensure`). A copy that matches the newest but has blocks recorded lost (salvaged
 * while no copy could vouch for them) looks for them again whenever another copy may hold them:
 * a node that was down then may be back with them, and its copy may be a leftover the purge
 * would remove. A failed pull is retried; the epoch is reported complete only once
 * every object this node must hold matches the newest copy.
 *
 * Copies that no longer belong here are removed only after every node reported the epoch
 * complete AND the object's current holders hold, by version and digest, the copy recovery picks
 * (`purge`): a leftover may be the last good copy.
 *
 * @module
 */

import { isResult, ResultCode, SheepdogError } from "../../core/errors.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import type {
  ChangedBlock,
  ObjectMeta,
  ObjectStore,
  SalvagedCopy,
} from "../../core/store/object_store.ts";
import { versionUnknown } from "../../core/store/object_store.ts";
import { sameCopy, sortCopies, targetRank } from "../../core/cluster/copy_choice.ts";
import { type ClusterView, targetsOf } from "../../core/cluster/view.ts";
import { isVdiOid, type Oid, oidToHex } from "../../core/vdi/oid.ts";
import { keepAllocations, keepNewestHeader } from "../../core/vdi/inode_merge.ts";
import { requestHeader } from "../object/client.ts";
import { BUSY_HOLDER_AVOID_MS, CHECKSUM_BLOCK_BYTES } from "../../core/limits.ts";
import { blockChecksum } from "../../core/store/block_checksum.ts";
import { type CopyReader, fetchBestCopy } from "./copy_fetch.ts";
import { RETRYABLE } from "./retry_policy.ts";
import { decodeSalvaged } from "./salvaged_copy.ts";
import { Flag, Opcode } from "../object/ops.ts";
import type { Header, Message } from "../object/header.ts";
import type { Logger } from "./logger.ts";
import type { Peers } from "./peers.ts";
import type { ObjectLocks } from "./object_locks.ts";
import { BusyHolders, preferQuiet, type RecoveryThrottle } from "./recovery_throttle.ts";

/**
 * Objects pulled in parallel: enough to move data, few enough to leave room for clients. While
 * clients are busy, each node involved paces its part (recovery_throttle.ts): this node before
 * each pull from the queue, a holder before each copy it reads for it (`Flag.BACKGROUND`).
 * Redundancy comes first: an object whose newest copy one member alone holds is pulled first and
 * never paced (see `Want.exposed`), nor is a pull a client waits for (`ensure`).
 */
const RECOVERY_WORKERS = 4;
/** Pause before re-listing and retrying what could not be pulled (doubles up to the max). */
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5_000;
/**
 * Fresh listings a client's `ensure` asks for when the pull it waits for finds a copy changed
 * since the run listed it (AGAIN): each one follows a change that landed, so a few suffice.
 */
const ENSURE_RELISTS_MAX = 3;

export interface RecoveryContext {
  readonly selfId: string;
  readonly store: ObjectStore;
  readonly peers: Peers;
  readonly logger: Logger;
  /** The sheep's object locks: a pull replaces a copy, so it holds the object alone. */
  readonly locks: ObjectLocks<Oid>;
  /** Paces the pulls while this node's clients are busy. */
  readonly throttle: Pick<RecoveryThrottle, "take">;
  copies(oid: Oid): number;
  /** This node's format (`ClusterConfig.ctimeMs`), sent with its listings; undefined unformatted. */
  format(): number | undefined;
  /**
   * The nodes absent from `view` that may hold acknowledged writes this node's copy of `oid` lost
   * in a crash (crash_holds.ts); empty when none. Such a copy is neither trusted nor pulled from.
   */
  heldFor(oid: Oid, view: ClusterView): readonly string[];
  /**
   * The newest version of the copies a listing found (the gateway's clock takes it in: a sheep
   * restarted with its clock behind issues its next versions above every copy its members hold).
   */
  observeVersion(version: number): void;
  /** The wall clock: when a recovery started and finished, as `info -t recovery` shows. */
  now(): number;
  /** A clock nobody sets, for how long a busy holder is avoided (`SheepOptions.monotonic`). */
  monotonic(): number;
  /** Called once this node has every object the view puts on it, each matching the newest copy. */
  completed(epoch: number): void;
}

export interface RecoveryStatus {
  state: "idle" | "gathering" | "recovering" | "done" | "failed";
  epoch: number;
  total: number;
  done: number;
  /** Objects whose pull failed in the last pass (retried until they succeed). */
  failed: number;
  /**
   * Objects whose only newest copy here a crash left suspect while a node that may hold their
   * lost writes is absent (`waitingFor`): held until it rejoins (crash_holds.ts). The epoch is
   * not complete meanwhile.
   */
  waiting: number;
  waitingFor: string[];
  objectsPerSecond: number;
  startedMs: number;
  finishedMs: number;
  /** The last epoch whose leftovers were purged (every node had recovered it). */
  purgedEpoch: number;
  error?: string;
}

/** One copy of an object as a node lists it. */
export interface ListedCopy {
  oid: Oid;
  meta: ObjectMeta;
}

/** One copy recovery may fetch: where it is and what it is. */
interface Candidate {
  node: RingNode;
  meta: ObjectMeta;
}

/**
 * What must be fetched for one object: the best copy (its version and digest) and the copies to
 * fetch it from, best first. Holders of the best copy come first; the others follow, so an object
 * whose best copy cannot be read anywhere (rotten on every holder) still ends up with the best copy
 * that can be.
 */
interface Want {
  version: number;
  digest: string;
  candidates: Candidate[];
  /**
   * Set when every copy was left unverified by a crash and they differ: the copy is built block
   * by block from these (best first), each block from a copy where it did not change since that
   * copy's last sync (see `mergeCopies`).
   */
  merge?: Candidate[];
  /** This node's own copy, if any: the pull replaces it, so its blocks may fill holes. */
  own?: Candidate;
  /**
   * This node's copy is the newest but has blocks recorded lost that another copy may hold
   * good: `candidates` are every copy, this one included, and only its lost blocks are taken
   * (see `#fill`).
   */
  fill?: boolean;
  /**
   * Fewer than two members hold the newest copy (verified, at its version and digest): until
   * this pull lands, one crash of that holder loses the acknowledged writes it has not synced
   * (and one disk loss, the object). Such a pull goes first and at full speed, whatever the
   * clients: pacing it would stretch the time one crash can lose data (seed 3754: the pull of an
   * inode, paced for 125 ms, was overtaken by its sole holder's crash; the copy that came back
   * lacked two table entries, a client allocated one again, and the create wiped a flushed write).
   */
  exposed: boolean;
}

interface Run {
  epoch: number;
  view: ClusterView;
  cancelled: boolean;
  wanted: Map<Oid, Want>;
  /** Held copies (see `RecoveryStatus.waiting`), with the nodes they wait for. */
  waiting: Map<Oid, readonly string[]>;
  gathered: Promise<void>;
  /** A listing again in flight (`#regather`), shared by whoever asks meanwhile. */
  regathering?: Promise<void>;
  /**
   * Objects due in this run that are done: pulled (by the queue or a client's `ensure`), or
   * found current by a later listing. A set, so an object both ways counts once.
   */
  counted: Set<Oid>;
  /** The format the run began under: a pull that lands after another format lands nothing. */
  format: number | undefined;
}

export class Recovery {
  readonly #context: RecoveryContext;
  #run: Run | undefined;
  #status: RecoveryStatus = recoveryStatus({});
  #pulling = new Map<Oid, Promise<void>>();
  /** Holders whose clients are busy: pulls take the same copy from the others meanwhile. */
  readonly #busy: BusyHolders;
  /** The purge listing holders now; a new view cancels it (it waits for every member). */
  #purgeRun: Run | undefined;

  constructor(context: RecoveryContext) {
    this.#context = context;
    this.#busy = new BusyHolders(BUSY_HOLDER_AVOID_MS, () => context.monotonic());
  }

  status(): RecoveryStatus {
    return { ...this.#status };
  }

  get active(): boolean {
    return this.#status.state === "gathering" || this.#status.state === "recovering";
  }

  /** Starts recovering for `view`, cancelling any older run. */
  start(view: ClusterView): void {
    if (this.#run) this.#run.cancelled = true;
    if (this.#purgeRun) this.#purgeRun.cancelled = true;
    const run = newRun(view, this.#context.format());
    this.#run = run;
    this.#status = recoveryStatus({
      state: "gathering",
      epoch: view.epoch,
      startedMs: this.#context.now(),
      purgedEpoch: this.#status.purgedEpoch,
    });
    run.gathered = this.#gather(run);
    void this.#recover(run).catch((error) => {
      if (run.cancelled) return;
      this.#status = { ...this.#status, state: "failed", error: (error as Error).message };
      this.#context.logger.warn(
        `recovery of epoch ${run.epoch} failed: ${(error as Error).message}`,
      );
    });
  }

  /** Every copy `node` holds, with its version and digest. */
  async listCopies(node: RingNode): Promise<ListedCopy[]> {
    if (node.id === this.#context.selfId) return await listLocalCopies(this.#context.store);
    const header = requestHeader(Opcode.GET_OBJ_LIST, { internal: true });
    header.flags |= Flag.RECOVERY;
    const format = this.#context.format();
    // The lister's format: a node of another refuses to list (`checkListFormat`), so no copy
    // crosses from a store the cluster formatted away to one it did not, or back.
    const data = format === undefined ? undefined : encodeListFormat(format);
    return decodeCopyList((await this.#context.peers.get(node).send(header, data)).data);
  }

  /** Lists every node's copies, retrying (with backoff) until all answer or the run is cancelled. */
  async #listAll(run: Run): Promise<Map<Oid, { node: RingNode; meta: ObjectMeta }[]> | undefined> {
    for (let delay = RETRY_FIRST_MS; !run.cancelled; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
      try {
        const lists = await Promise.all(
          run.view.nodes.map(async (node) => ({ node, copies: await this.listCopies(node) })),
        );
        const holders = new Map<Oid, { node: RingNode; meta: ObjectMeta }[]>();
        for (const { node, copies } of lists) {
          for (const { oid, meta } of copies) {
            const list = holders.get(oid);
            if (list) list.push({ node, meta });
            else holders.set(oid, [{ node, meta }]);
          }
        }
        return holders;
      } catch (error) {
        this.#status = { ...this.#status, error: `listing objects: ${(error as Error).message}` };
        await sleep(delay);
      }
    }
    return undefined;
  }

  /**
   * Lists every member's copies and works out what this node must fetch. The result replaces
   * `run.wanted` whole once the listing is in: until then the objects still due stay due (a retry
   * re-gathers while clients go on, and `ensure` must keep holding them off a stale copy).
   */
  async #gather(run: Run): Promise<void> {
    const holders = await this.#listAll(run);
    if (!holders || run.cancelled) return;
    let newest = 0;
    for (const copies of holders.values()) {
      for (const { meta } of copies) if (meta.version > newest) newest = meta.version;
    }
    this.#context.observeVersion(newest);
    const self = this.#context.selfId;
    const wanted = new Map<Oid, Want>();
    const waiting = new Map<Oid, readonly string[]>();
    for (const [oid, copies] of holders) {
      const targets = targetsOf(run.view, oid, this.#context.copies(oid));
      if (!targets.some((n) => n.id === self)) continue;
      const rank = targetRank(targets);
      const best = sortCopies(copies, (c) => c.node.id, rank)[0]!;
      const mine = copies.find((c) => c.node.id === self);
      // A copy a crash left here, while a node that may hold the writes it lost is away: not
      // trusted, merged or served until that node is back, unless a newer copy replaces it.
      const absent = mine ? this.#context.heldFor(oid, run.view) : [];
      if (absent.length > 0 && !copies.some((c) => c.meta.version > mine!.meta.version)) {
        waiting.set(oid, absent);
        continue;
      }
      // No verified copy: every copy was left suspect by a crash. Their versions are those of
      // their last sync (later writes may or may not have landed), so they are all rivals (see
      // `mergeCopies` for which block each gives).
      const rivals = best.meta.verified ? [] : sortCopies(copies, (c) => c.node.id, rank);
      if (!best.meta.verified && new Set(rivals.map((c) => c.meta.digest)).size > 1) {
        wanted.set(oid, {
          version: best.meta.version,
          digest: best.meta.digest,
          candidates: [],
          merge: rivals,
          exposed: true, // no copy is verified
        });
        continue;
      }
      if (
        mine && sameCopy(mine.meta, best.meta)
      ) {
        // Equal to the best: kept. A crash-suspect copy becomes verified once its changed
        // blocks are vouched for (see `vouched`); otherwise it is kept but stays suspect, so a
        // verified copy that comes back later wins. One whose checksums cannot be trusted at all
        // is pulled like a stale one.
        const others = copies.filter((c) => c !== mine);
        const trusted = mine.meta.verified || vouched(mine.meta, others);
        const verified = mine.meta.verified ||
          (trusted && await this.#context.store.markVerified(oid).then(() => true, () => false));
        if (verified && mayFill(mine.meta, others)) {
          // Its lost blocks were given up while the copies then listed could not vouch for them;
          // another copy may now (seed 1806: the holder of the only good block was down when
          // this copy was salvaged, and came back with it as a leftover the purge removed).
          wanted.set(oid, {
            version: best.meta.version,
            digest: best.meta.digest,
            candidates: sortCopies(copies, (c) => c.node.id, rank),
            fill: true,
            exposed: false, // every block it has is as good as it was
          });
          continue;
        }
        if (verified || !trusted) continue;
      }
      const candidates = sortCopies(
        copies.filter((c) => c.node.id !== self),
        (c) => c.node.id,
        rank,
      )
        .sort((a, b) =>
          Number(b.meta.digest === best.meta.digest) - Number(a.meta.digest === best.meta.digest)
        );
      if (candidates.length === 0) {
        // Only this node has it and its copy cannot be trusted: nothing to pull; reads of it
        // fail (never wrong bytes) until a client rewrites it.
        this.#context.logger.warn(
          `recovery of ${oidToHex(oid)}: no other copy to check it against`,
        );
        continue;
      }
      wanted.set(oid, {
        version: best.meta.version,
        digest: best.meta.digest,
        candidates,
        ...(mine ? { own: mine } : {}),
        exposed: copies.filter((c) => c.meta.verified && sameCopy(c.meta, best.meta)).length < 2,
      });
    }
    run.wanted = wanted;
    run.waiting = waiting;
    const waitingFor = [...new Set([...waiting.values()].flat())].sort();
    if (waiting.size > 0) {
      this.#context.logger.warn(
        `recovery of epoch ${run.epoch}: ${waiting.size} object(s) a crash left suspect here ` +
          `may lack acknowledged writes that ${waitingFor.join(", ")} ` +
          `${waitingFor.length === 1 ? "holds" : "hold"}: held (reads and writes wait) until ` +
          `${waitingFor.length === 1 ? "it rejoins" : "they rejoin"}`,
      );
    }
    this.#status = {
      ...this.#status,
      state: "recovering",
      total: wanted.size,
      waiting: waiting.size,
      waitingFor,
      error: undefined,
    };
  }

  async #recover(run: Run): Promise<void> {
    await run.gathered;
    let delay = RETRY_FIRST_MS;
    for (;;) {
      if (run.cancelled) return;
      const failed = await this.#pass(run);
      if (run.cancelled) return;
      // Held copies wait for a view with the nodes they wait for: this run never completes.
      if (failed === 0 && run.waiting.size > 0) return;
      if (failed === 0) break;
      this.#status = { ...this.#status, failed };
      // Some pulls failed (a holder busy, gone or full): wait, learn the holders again, retry.
      // What failed stays due meanwhile (the listing may take long: a member that does not
      // answer is waited for), so a client touching it still waits for its pull.
      await sleep(delay);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
      await this.#regather(run);
    }
    this.#status = { ...this.#status, state: "done", failed: 0, finishedMs: this.#context.now() };
    this.#context.logger.info(
      `recovery of epoch ${run.epoch} done: ${this.#status.total} objects pulled or replaced`,
    );
    this.#context.completed(run.epoch);
  }

  /** `oid`, due in `run`, is done (`Run.counted`); nothing for a run cancelled or replaced. */
  #count(run: Run, oid: Oid): void {
    if (run !== this.#run || run.cancelled) return;
    run.counted.add(oid);
    this.#status.done = Math.min(this.#status.total, run.counted.size);
  }

  /** Pulls everything wanted once; returns how many failed. */
  async #pass(run: Run): Promise<number> {
    // Exposed objects first: the workers may all be waiting on the throttle otherwise.
    const queue = [...run.wanted].sort(([, a], [, b]) => Number(b.exposed) - Number(a.exposed))
      .map(([oid]) => oid);
    let failed = 0;
    const worker = async () => {
      while (!run.cancelled && queue.length > 0) {
        const oid = queue.shift()!;
        const want = run.wanted.get(oid);
        if (!want) continue; // a client's `ensure` got there first
        try {
          // Not for `ensure`: a client waiting for an object gets it at once.
          if (!want.exposed) {
            await this.#context.throttle.take(wantedBytes(want));
            // A view change while it waited cancels the pull: the old view's want may put a copy
            // where the new view does not, after the new view's purge listed this node (seed 814).
            if (run.cancelled) break;
            if (!run.wanted.has(oid)) continue; // a client's `ensure` got there meanwhile
          }
          await this.#recoverOne(run, oid, !want.exposed);
        } catch (error) {
          failed++;
          // A holder whose copy is held (crash_holds.ts) says why in its own log, once.
          const log = isResult(error, ResultCode.WAIT_FOR_JOIN) ? "debug" : "warn";
          this.#context.logger[log](
            `recovery of ${oidToHex(oid)} failed: ${(error as Error).message}`,
          );
        }
        const seconds = (this.#context.now() - this.#status.startedMs) / 1000;
        this.#status.objectsPerSecond = seconds > 0 ? this.#status.done / seconds : 0;
      }
    };
    await Promise.all(Array.from({ length: RECOVERY_WORKERS }, worker));
    return failed;
  }

  /**
   * Recovers `oid` once, whoever asks first (the queue or a waiting client). `paced`: its reads
   * are background work the holders pace while their clients are busy.
   */
  #recoverOne(run: Run, oid: Oid, paced: boolean): Promise<void> {
    const inFlight = this.#pulling.get(oid);
    // A pull in flight (a client's, or one an earlier run started, still landing): once it has
    // settled, this run's want is looked at again, and done (and counted in this run) once the
    // copy is current. Waiting on it alone left an earlier run's pull counted in that run only:
    // the run reported done with the object uncounted ("done with 2/3 objects counted").
    if (inFlight) {
      return inFlight.catch(() => undefined).then(() => this.#recoverOne(run, oid, paced));
    }
    const want = run.wanted.get(oid);
    if (!want) return Promise.resolve();
    const pulling = this.#context.locks.exclusive(oid, () => this.#pull(run, oid, want, paced))
      .then(() => {
        run.wanted.delete(oid);
        // Counted here, whoever asked: objects a client's `ensure` pulled first count too (the
        // progress read "done 3/17" after a recovery under writes).
        this.#count(run, oid);
      })
      .finally(() => this.#pulling.delete(oid));
    this.#pulling.set(oid, pulling);
    return pulling;
  }

  async #pull(run: Run, oid: Oid, want: Want, paced: boolean): Promise<void> {
    const store = this.#context.store;
    // A client write (or a repair) may have brought the copy up to date since the listing.
    const mine = await store.meta(oid).catch(() => undefined);
    if (want.merge) {
      if (mine?.verified && mine.version >= want.version) return;
      return await this.#merge(oid, want.version, want.merge);
    }
    if (want.fill) return await this.#fill(oid, want, mine, paced);
    if (
      mine?.verified &&
      (mine.version > want.version ||
        sameCopy(mine, want))
    ) return;
    // The copy being replaced may hold the only good version of a block the best copy lost:
    // a salvaged source may fill its holes from it too (checked against the block's checksum).
    const own = want.own && mine ? [want.own] : [];
    const candidates = preferQuiet(want.candidates, (node) => this.#busy.has(node));
    const source = await fetchBestCopy(oid, candidates, this.#reader(paced), own);
    if (!source) {
      throw new SheepdogError(ResultCode.NO_OBJ, `No copy of ${oidToHex(oid)} can be read`);
    }
    // The reads may have taken long (a busy holder paces them): a view that came meanwhile may
    // not place the object here, and its purge may have listed this node already.
    if (run.cancelled && !this.#placedHere(oid)) return;
    // A format (mkfs --force) came meanwhile: the copy is of a VDI it erased.
    if (this.#context.format() !== run.format) return;
    // A copy of a crash-suspect copy stays suspect, with the source's uncertain blocks (else it
    // would count every block uncertain, and a merge after a later crash would prefer any other
    // copy's older bytes to the acknowledged writes it takes meanwhile).
    const suspect = !source.meta.verified;
    await store.create(oid, source.data, 0, {
      size: source.meta.size,
      version: source.version,
      badBlocks: source.badBlocks,
      expected: source.expected,
      unverified: suspect,
      ...(suspect && source.meta.changed ? { changed: source.meta.changed } : {}),
    });
    if (source.badBlocks.length > 0) {
      this.#context.logger.warn(
        `recovery of ${oidToHex(oid)}: ${source.badBlocks.length} block(s) of the newest copy ` +
          `are bad on every holder; they stay unreadable (I/O errors), the rest is recovered`,
      );
    } else if (source.meta.digest !== want.digest) {
      this.#context.logger.warn(
        `recovery of ${
          oidToHex(oid)
        }: the newest copy cannot be read anywhere; took ${source.node.id}'s (version ${source.version})`,
      );
    }
  }

  /**
   * Fills the lost blocks of this node's copy, the newest there is, from copies whose block has
   * the checksum it should have: `fetchBestCopy` over every copy, this one included (an equal copy
   * that reads clean serves whole; else the equal copies are salvaged, each block taken from one
   * where it is good, and the rest from any copy of any version that has exactly its bytes).
   * Nothing is written unless a lost block was filled.
   */
  async #fill(oid: Oid, want: Want, mine: ObjectMeta | undefined, paced: boolean): Promise<void> {
    // A client write (or a repair) may have changed the copy since the listing.
    const lost = mine?.lostBlocks;
    if (!mine?.verified || !lost || !sameCopy(mine, want)) {
      return;
    }
    const candidates = preferQuiet(want.candidates, (node) => this.#busy.has(node));
    const reader = this.#reader(paced);
    let unreachable: unknown;
    const source = await fetchBestCopy(oid, candidates, {
      ...reader,
      range: (node, id, offset, length) =>
        reader.range(node, id, offset, length).catch((error) => {
          if (isResult(error, ...RETRYABLE)) unreachable ??= error;
          throw error;
        }),
    });
    if (!source || source.version !== mine.version || source.meta.digest !== mine.digest) return;
    // A copy that could not be asked may hold a block still lost: asked again (the purge may
    // remove it once this epoch is done), never given up on.
    if (source.badBlocks.length > 0 && unreachable !== undefined) throw unreachable;
    const filled = lost.filter((index) => !source.badBlocks.includes(index));
    if (filled.length === 0) return;
    await this.#context.store.create(oid, source.data, 0, {
      size: source.meta.size,
      version: source.version,
      badBlocks: source.badBlocks,
      expected: source.expected,
    });
    this.#context.logger.warn(
      `recovery of ${oidToHex(oid)}: ${filled.length} lost block(s) filled from a copy that ` +
        `holds their bytes` +
        (source.badBlocks.length > 0 ? `; ${source.badBlocks.length} stay lost` : ""),
    );
  }

  /** How a pull reads copies: this node's own from its store, the others' over the network. */
  #reader(paced: boolean): CopyReader {
    const store = this.#context.store;
    const self = this.#context.selfId;
    const version = async (oid: Oid) => {
      const meta = await store.meta(oid);
      if (!meta) throw new SheepdogError(ResultCode.NO_OBJ, `No object ${oidToHex(oid)}`);
      return meta.version;
    };
    return {
      whole: async (node, id, size) => {
        if (node.id !== self) return await this.#read(node, id, size, paced);
        return { version: await version(id), data: await store.read(id, 0, size) };
      },
      salvage: async (node, id, options) => {
        if (node.id !== self) return await this.#salvage(node, id, paced, options?.suspect);
        return { version: await version(id), ...await store.salvage(id, options) };
      },
      range: async (node, id, offset, length) => {
        if (node.id === self) return await store.read(id, offset, length);
        const header = requestHeader(Opcode.READ_PEER, { internal: true });
        header.oid = id;
        header.offset = offset;
        header.dataLength = length;
        return (await this.#request(node, header, paced)).data;
      },
    };
  }

  /** True when the current view puts `oid` on this node. */
  #placedHere(oid: Oid): boolean {
    const view = this.#run?.view;
    if (!view) return false;
    return targetsOf(view, oid, this.#context.copies(oid)).some((n) =>
      n.id === this.#context.selfId
    );
  }

  /** A whole copy from `node`, checked there, with its version. */
  async #read(
    node: RingNode,
    oid: Oid,
    size: number,
    paced: boolean,
  ): Promise<{ data: Uint8Array; version: number }> {
    const header = requestHeader(Opcode.READ_PEER, { internal: true });
    header.oid = oid;
    header.dataLength = size;
    const response = await this.#request(node, header, paced);
    return { data: response.data, version: response.header.rspObjVersion };
  }

  /**
   * Sends one of recovery's reads to `node`; `paced`, as background work (it paces it while its
   * clients are busy, and says so: such a holder is avoided for a while).
   */
  async #request(node: RingNode, header: Header, paced: boolean): Promise<Message> {
    header.flags |= Flag.RECOVERY | (paced ? Flag.BACKGROUND : 0);
    const response = await this.#context.peers.get(node).send(header);
    if (response.header.flags & Flag.BUSY) this.#busy.busy(node.id);
    return response;
  }

  async #salvage(
    node: RingNode,
    oid: Oid,
    paced: boolean,
    suspect = false,
  ): Promise<SalvagedCopy & { version: number }> {
    const header = requestHeader(Opcode.GET_OBJ_SALVAGE, { internal: true });
    header.oid = oid;
    if (suspect) header.flags |= Flag.UNVERIFIED;
    const response = await this.#request(node, header, paced);
    return { ...decodeSalvaged(response.data), version: response.header.rspObjVersion };
  }

  /**
   * Builds this node's copy from crash-suspect copies, block by block (see `mergeCopies`). A
   * copy that cannot be read whole (some of its blocks fail their checksums, or a crash left its
   * checksums unrebuilt on a full disk) gives the blocks it can vouch for, salvaged: one such
   * copy may hold the synced bytes of a block that rot changed on every readable one (found by
   * the simulation, seed 5613). One whose checksums were left unrebuilt gives the blocks that
   * changed since its last sync as they are, as changed blocks, as a rebuilt copy would (the
   * store's `suspect` salvage), but only at the newest version, as any copy's changed block
   * (seed 18707: the only copy left of an unsynced write that landed was salvaged to a hole, and
   * the block was stored lost). A copy that cannot be read at all is left out; one that could
   * not be asked (a lost request, a view change) is waited for, as in `fetchBestCopy`: another
   * node that did read it would build a different copy at the same version.
   */
  async #merge(oid: Oid, version: number, rivals: Candidate[]): Promise<void> {
    const fetched: MergeSource[] = [];
    let unreachable: unknown;
    let stale: SheepdogError | undefined;
    const size = rivals[0]!.meta.size;
    const newest = Math.max(...rivals.map((c) => c.meta.version));
    const reader = this.#reader(false);
    for (const { node, meta } of rivals) {
      const copy = await reader.whole(node, oid, meta.size).then(
        ({ data, version }): SalvagedCopy & { version: number } => ({
          data,
          version,
          badBlocks: [],
          expected: [],
        }),
        (error) => {
          if (isResult(error, ...RETRYABLE)) throw error;
          // An older copy's changed blocks are never taken on their own: salvaged as ever,
          // they are holes there.
          return reader.salvage(node, oid, { suspect: meta.version === newest });
        },
      ).catch((error) => {
        if (isResult(error, ...RETRYABLE)) unreachable ??= error;
        else if (versionUnknown(meta)) {
          // A copy that cannot be read and whose checksums a crash left unrebuilt lists version 0
          // whatever it holds: it may be the newest, with flushed writes no other copy has (sim
          // seed 9307: merged without it, a flushed write was lost). Waited for, as a copy that
          // could not be asked (its listing retries the rebuild once its disk reads again).
          unreachable ??= new SheepdogError(
            ResultCode.EIO,
            `${node.id}'s copy of ${oidToHex(oid)} cannot be read and its version is unknown ` +
              `(checksums unrebuilt after a crash): not merged without it`,
          );
        }
        return undefined;
      });
      if (copy && copy.version !== meta.version) {
        // The copy changed since it was listed (its checksums were rebuilt once its disk read
        // again, or a repair landed): merged with the listing's version and changed blocks, it
        // would build other bytes than a node that listed it later (sim seed 17698: a copy
        // listed as unrebuilt, read whole once rebuilt, two nodes built two objects at one
        // version). Listed again before merging.
        stale ??= new SheepdogError(
          ResultCode.AGAIN,
          `${node.id}'s copy of ${oidToHex(oid)} changed since it was listed ` +
            `(version ${meta.version}, now ${copy.version}): listed again before merging`,
        );
      } else if (copy && copy.data.length === size) {
        fetched.push({
          data: copy.data,
          version: meta.version,
          changed: copy.changed ?? meta.changed,
          ...(copy.badBlocks.length > 0 ? { bad: copy.badBlocks } : {}),
        });
      }
    }
    if (unreachable !== undefined) throw unreachable;
    if (stale !== undefined) throw stale;
    if (fetched.length === 0) {
      throw new SheepdogError(ResultCode.EIO, `No copy of ${oidToHex(oid)} can be read`);
    }
    const merged = mergeCopies(fetched);
    const lost = new Set(merged.lost.map((l) => l.block));
    const header = isVdiOid(oid) && keepNewestHeader(merged.data, fetched, lost);
    const kept = isVdiOid(oid) ? keepAllocations(merged.data, fetched, lost) : 0;
    await this.#context.store.create(oid, merged.data, 0, {
      size: merged.data.length,
      version,
      ...(merged.lost.length > 0
        ? { badBlocks: merged.lost.map((l) => l.block), expected: merged.lost.map((l) => l.synced) }
        : {}),
    });
    this.#context.logger.warn(
      `recovery of ${oidToHex(oid)}: every copy was left unverified by a crash and they differ; ` +
        `rebuilt block by block from ${fetched.length} copies` +
        (header ? "; kept the newest header a copy holds" : "") +
        (kept > 0 ? `; kept ${kept} allocation(s) only some copies record` : "") +
        (merged.lost.length > 0
          ? `; ${merged.lost.length} block(s) no copy can vouch for stay unreadable (I/O errors)`
          : ""),
    );
  }

  /**
   * Makes sure `oid` is here and current before a client touches it: if the running recovery
   * still has it due, it is pulled now. Returns once it is (or was never) due.
   */
  async ensure(oid: Oid): Promise<void> {
    const run = this.#run;
    if (!run || run.cancelled || !this.active) return;
    await run.gathered;
    for (let relists = 0;; relists++) {
      try {
        // A failed pull is the caller's error: the local copy is missing or older than the
        // newest, so it must not be served (the gateway reads another copy, or reconciles it).
        const inFlight = this.#pulling.get(oid);
        if (inFlight) return await inFlight;
        if (run.wanted.has(oid)) await this.#recoverOne(run, oid, false);
        return;
      } catch (error) {
        // Except a copy that changed since the run listed it (a repair landed, checksums were
        // rebuilt): the client waits for a fresh listing rather than hearing "listed again" (sim
        // seed 25946: both copies of an object were equal again, and a read failed).
        if (!isResult(error, ResultCode.AGAIN) || relists >= ENSURE_RELISTS_MAX) throw error;
        if (run.cancelled) throw error;
        await this.#regather(run);
      }
    }
  }

  /**
   * Lists every member's copies again for `run` (`#gather`), its progress kept: objects due
   * before and current now (a client's write, a repair or a client's pull still landing brought
   * them up to date) are done too, as `info -t recovery` counts them. One listing at a time: the
   * retry loop and clients waiting in `ensure` share it.
   */
  #regather(run: Run): Promise<void> {
    run.regathering ??= (async () => {
      const total = this.#status.total;
      const due = [...run.wanted.keys()];
      await this.#gather(run);
      if (run === this.#run) this.#status = { ...this.#status, total };
      for (const oid of due) if (!run.wanted.has(oid)) this.#count(run, oid);
    })().finally(() => run.regathering = undefined);
    return run.regathering;
  }

  /** Stops recovering (the sheep is stopping): running pulls finish, nothing new starts. */
  stop(): void {
    if (this.#run) this.#run.cancelled = true;
    if (this.#purgeRun) this.#purgeRun.cancelled = true;
  }

  /**
   * Removes local copies the view does not place here, each only once every one of its current
   * holders lists the copy recovery's rule picks among all of them (this one included). Returns
   * how many went and how many were kept.
   */
  async purge(view: ClusterView): Promise<{ removed: number; kept: number }> {
    if (this.#purgeRun) this.#purgeRun.cancelled = true;
    const self = this.#context.selfId;
    if (!view.nodes.some((n) => n.id === self)) return { removed: 0, kept: 0 };
    const leftovers: ListedCopy[] = [];
    for (const copy of await listLocalCopies(this.#context.store)) {
      const targets = targetsOf(view, copy.oid, this.#context.copies(copy.oid));
      if (!targets.some((n) => n.id === self)) leftovers.push(copy);
    }
    if (leftovers.length === 0) {
      this.#status.purgedEpoch = view.epoch;
      return { removed: 0, kept: 0 };
    }
    const run = newRun(view, this.#context.format());
    this.#purgeRun = run;
    const holders = await this.#listAll(run);
    if (!holders || run.cancelled) return { removed: 0, kept: leftovers.length };
    let removed = 0;
    let kept = 0;
    for (const { oid } of leftovers) {
      const targets = targetsOf(view, oid, this.#context.copies(oid));
      if (run.cancelled) break;
      const copies = holders.get(oid) ?? [];
      // Removable once every current target holds the copy recovery's rule picks among all of
      // them, this leftover included (so it was either the same bytes or lost fairly).
      const rank = targetRank(targets);
      const best = sortCopies(copies, (c) => c.node.id, rank)[0];
      const confirmed = best !== undefined && targets.length > 0 && targets.every((target) => {
        const theirs = copies.find((c) => c.node.id === target.id);
        return theirs !== undefined && sameCopy(theirs.meta, best.meta);
      });
      // Nor while a holder's copy has lost blocks this one may hold: the next recovery (or a
      // scrub's repair) can fill them from it, whatever its version (seed 2970: a leftover whose
      // checksums a full disk left unrebuilt held the only good block and was purged).
      const mine = copies.find((c) => c.node.id === self);
      const holdsLost = mine !== undefined && mayHold(mine.meta, lostOfHolders(copies, targets));
      if (!confirmed || holdsLost) {
        kept++;
        continue;
      }
      await this.#context.locks.exclusive(oid, () => this.#context.store.remove(oid));
      removed++;
    }
    if (kept > 0) {
      this.#context.logger.warn(
        `purge of epoch ${view.epoch}: kept ${kept} leftover objects whose holders do not confirm a copy ` +
          "or have lost blocks these may hold",
      );
    }
    this.#status.purgedEpoch = view.epoch;
    return { removed, kept };
  }
}

/**
 * True when a crash-suspect copy can be trusted: nothing changed in it since its last sync, or
 * another copy with the same bytes is verified or did not change in any block this one did (an
 * unsynced write that landed on both, not rot on one). A copy made from a suspect copy knows
 * nothing of its blocks (no changed list) and vouches for nothing.
 */
function vouched(mine: ObjectMeta, others: readonly { meta: ObjectMeta }[]): boolean {
  const changed = mine.changed;
  if (changed === undefined) return false;
  if (changed.length === 0) return true;
  return others.some(({ meta }) =>
    meta.digest === mine.digest &&
    (meta.verified ||
      (meta.changed !== undefined &&
        changed.every(({ block }) => !meta.changed!.some((theirs) => theirs.block === block))))
  );
}

/**
 * True when a copy has blocks recorded lost that another copy may hold good: one that does not
 * list them lost (it may hold them, or be rotten there: its checksum tells).
 */
function mayFill(mine: ObjectMeta, others: readonly { meta: ObjectMeta }[]): boolean {
  const lost = mine.lostBlocks ?? [];
  return lost.length > 0 && others.some(({ meta }) => mayHold(meta, lost));
}

/** True when a copy may hold some of `blocks` good: it does not list them all lost. */
function mayHold(meta: ObjectMeta, blocks: readonly number[]): boolean {
  return blocks.some((index) => !meta.lostBlocks?.includes(index));
}

/**
 * The copy whose bytes in [at, end) the most `copies` hold, the earliest among equals;
 * undefined when there are none.
 */
function mostHeld<T extends { data: Uint8Array }>(
  copies: readonly T[],
  at: number,
  end: number,
): T | undefined {
  if (copies.length <= 2) return copies[0]; // one, or two that agree or cannot be told apart
  const counts = new Map<number, { first: T; count: number }>();
  for (const copy of copies) {
    const sum = blockChecksum(copy.data.subarray(at, end));
    const seen = counts.get(sum);
    if (seen) seen.count++;
    else counts.set(sum, { first: copy, count: 1 });
  }
  let best: { first: T; count: number } | undefined;
  for (const entry of counts.values()) if (!best || entry.count > best.count) best = entry;
  return best?.first;
}

/** The blocks any of `targets`' copies has recorded lost. */
function lostOfHolders(
  copies: readonly { node: { id: string }; meta: ObjectMeta }[],
  targets: readonly { id: string }[],
): number[] {
  const lost = new Set<number>();
  for (const copy of copies) {
    if (!targets.some((t) => t.id === copy.node.id)) continue;
    for (const index of copy.meta.lostBlocks ?? []) lost.add(index);
  }
  return [...lost];
}

/** The bytes pulling `want` moves: the size of the copies it comes from. */
function wantedBytes(want: Want): number {
  return (want.merge ?? want.candidates)[0]?.meta.size ?? 0;
}

/** A run (of recovery, or of a purge's listing) for `view`, not yet cancelled. */
/** A status with nothing counted yet but what `fields` says. */
export function recoveryStatus(fields: Partial<RecoveryStatus>): RecoveryStatus {
  return {
    state: "idle",
    epoch: 0,
    total: 0,
    done: 0,
    failed: 0,
    waiting: 0,
    waitingFor: [],
    objectsPerSecond: 0,
    startedMs: 0,
    finishedMs: 0,
    purgedEpoch: 0,
    ...fields,
  };
}

function newRun(view: ClusterView, format: number | undefined): Run {
  return {
    format,
    epoch: view.epoch,
    view,
    cancelled: false,
    wanted: new Map(),
    waiting: new Map(),
    gathered: Promise.resolve(),
    counted: new Set(),
  };
}

/** Every local copy with its meta (objects removed meanwhile are skipped). */
export async function listLocalCopies(store: ObjectStore): Promise<ListedCopy[]> {
  // Every recovery lists every member: a copy a crash left unrebuilt while its disk failed is
  // tried again there, so it is listed as what the disk holds once the fault has passed.
  await store.retryRebuilds();
  const copies: ListedCopy[] = [];
  for (const oid of await store.list()) {
    const meta = await store.meta(oid).catch((error) => {
      if (isResult(error, ResultCode.NO_OBJ)) return undefined;
      // A copy whose meta is unreadable is listed as the worst copy there is: others win.
      return { version: -1, size: 0, digest: "unreadable", verified: false };
    });
    if (meta) copies.push({ oid, meta });
  }
  return copies;
}

/** GET_OBJ_LIST's request payload: the lister's format, 8 bytes little-endian. */
export function encodeListFormat(formatMs: number): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(formatMs), true);
  return bytes;
}

/**
 * Throws unless a GET_OBJ_LIST request (`data`, its payload) comes from a node of this node's
 * format (`formatMs`): a node that missed a format holds objects of VDIs the cluster erased,
 * and recovery or a scrub would take them in as current copies (or hand current ones to it).
 */
export function checkListFormat(data: Uint8Array, formatMs: number | undefined): void {
  if (data.length !== 8 || formatMs === undefined) return;
  const theirs = Number(new DataView(data.buffer, data.byteOffset, 8).getBigUint64(0, true));
  if (theirs === formatMs) return;
  const at = (ms: number) => new Date(ms).toISOString();
  throw new SheepdogError(
    ResultCode.INVALID_CTIME,
    `Copies not listed: this node's store is of the format of ${at(formatMs)}, the asking ` +
      `node's of ${at(theirs)}`,
  );
}

/**
 * GET_OBJ_LIST payload: JSON rows [oid hex, version, size, digest, verified, changed blocks?
 * (`ChangedBlock`s, null on a copy with lost blocks and no changed list), lost blocks?].
 */
export function encodeCopyList(copies: ListedCopy[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(
    copies.map(({ oid, meta }) => [
      oid.toString(16),
      meta.version,
      meta.size,
      meta.digest,
      meta.verified ? 1 : 0,
      ...(meta.changed ? [meta.changed] : []),
      ...(meta.lostBlocks ? [...(meta.changed ? [] : [null]), meta.lostBlocks] : []),
    ]),
  ));
}

export function decodeCopyList(bytes: Uint8Array): ListedCopy[] {
  const rows = JSON.parse(new TextDecoder().decode(bytes)) as [
    string,
    number,
    number,
    string,
    number,
    (ChangedBlock[] | null)?,
    number[]?,
  ][];
  return rows.map(([hex, version, size, digest, verified, changed, lost]) => ({
    oid: BigInt("0x" + hex),
    meta: {
      version,
      size,
      digest,
      verified: verified === 1,
      ...(Array.isArray(changed) ? { changed } : {}),
      ...(Array.isArray(lost) && lost.length > 0 ? { lostBlocks: lost } : {}),
    },
  }));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A crash-suspect copy as `mergeCopies` takes it. */
export interface MergeSource {
  data: Uint8Array;
  /** Its version: that of its last sync. */
  version: number;
  /**
   * The blocks that changed since that sync, with their checksums at that sync where known;
   * undefined: unknown, every block may have.
   */
  changed: readonly ChangedBlock[] | undefined;
  /** Blocks whose bytes this copy cannot vouch for (a salvaged copy's): never taken from it. */
  bad?: readonly number[];
}

/**
 * One object from crash-suspect copies (best first: the newest version first), block by block,
 * so that every node builds the same bytes and no block goes back before a sync of the newest.
 * A copy's `bad` blocks are never taken. Each block:
 * 1. from the first copy at the newest version where the block did not change since its last
 *    sync: those are the bytes it had at that sync;
 * 2. else from the first copy, of any version, whose block has the checksum a newest copy had
 *    for it at its last sync: the same bytes, kept where the newest copy's changed (an unsynced
 *    write that landed, or rot: a crash cannot tell them apart);
 * 3. else the bytes most copies hold (the first copy's among equals): an unsynced write that
 *    landed, where it landed alike on several copies; rot changes one copy, so it is outvoted
 *    where two others agree (seed 8440), and with two differing copies it cannot be told from a
 *    write (the first is taken);
 * 4. else (every copy's block is bad) lost: zeros, listed in `lost` with the checksum a newest
 *    copy had for it at its last sync where known, to be stored as a bad block.
 * An older copy's unchanged block is not taken on its own: the newest may have synced a write
 * to it since (a flush the client was told of).
 */
export function mergeCopies(
  copies: readonly MergeSource[],
): { data: Uint8Array; lost: { block: number; synced: number | undefined }[] } {
  const size = copies[0]!.data.length;
  const newest = Math.max(...copies.map((c) => c.version));
  const usable = copies.map((c) => ({ data: c.data, bad: new Set(c.bad ?? []) }));
  // The newest copies, each with its changed blocks by block (checksum at its last sync).
  const current = copies.flatMap((c, i) =>
    c.version === newest
      ? [{
        ...usable[i]!,
        changed: c.changed && new Map(c.changed.map(({ block, synced }) => [block, synced])),
      }]
      : []
  );
  const merged = new Uint8Array(size);
  const lost: { block: number; synced: number | undefined }[] = [];
  for (let index = 0, at = 0; at < size; index++, at += CHECKSUM_BLOCK_BYTES) {
    const end = Math.min(size, at + CHECKSUM_BLOCK_BYTES);
    const good = usable.filter((c) => !c.bad.has(index));
    const unchanged = current.find((c) =>
      c.changed !== undefined && !c.changed.has(index) && !c.bad.has(index)
    );
    const synced = new Set(current.flatMap((c) => {
      const checksum = c.changed?.get(index);
      return typeof checksum === "number" ? [checksum] : [];
    }));
    const source = unchanged ??
      (synced.size === 0
        ? undefined
        : good.find((c) => synced.has(blockChecksum(c.data.subarray(at, end))))) ??
      mostHeld(good, at, end);
    if (source) merged.set(source.data.subarray(at, end), at);
    else lost.push({ block: index, synced: synced.size > 0 ? [...synced][0] : undefined });
  }
  return { data: merged, lost };
}
