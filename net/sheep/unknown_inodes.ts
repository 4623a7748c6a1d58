/**
 * VDIs found again in inode copies no node's table holds.
 *
 * A sheep builds its VDI table at start from its own inode copies and learns the rest from its
 * peers (`Sheep.#loadVdis`, `mergeFromPeers`). When a crash took every node down and left every
 * copy of one inode unreadable at start (a write cut short whose checksums could not be rebuilt),
 * no node loads that VDI, so none can give it to the others; recovery then rebuilds the copies
 * from their blocks, and the VDI's data is all there, but its name is known nowhere: every open
 * says "no such VDI" (simulation seed 14190).
 *
 * So each sheep watches its store: an inode copy that changes (a pull, a repair, a write) while
 * its VDI is in no table here is read, and its header is proposed to the group as a "found"
 * event, which every node applies alike (`ClusterStateMachine`: taken in as a merge would, and
 * settled). A copy whose header cannot be read now waits for its next change; a proposal that
 * fails (no majority) is tried again at the next view. A copy the sheep could not read at start
 * (`unloadable`) is repaired from the other copies at each view until it reads (a rotten header
 * is not seen by recovery, which compares versions and digests, only by the scrub), so it need
 * not wait for a scrub pass to be announced.
 *
 * Every VDI change writes its new inode before its event (vdi_service.ts), holding the
 * cluster-wide administration lock: a copy of a VDI being created is in no table until the event
 * is applied. So a copy is looked at once no change is in progress, and announced under that
 * lock, after checking the table again: what is still unknown then is no change's. (An inode a
 * crash cut off before its create's event is announced too: a restart of the cluster would load
 * it all the same.)
 *
 * @module
 */

import type { InodeHeader } from "../../core/vdi/inode.ts";
import { isVdiOid, type Oid, oidToHex, oidToVid, type Vid } from "../../core/vdi/oid.ts";
import type { Logger } from "./logger.ts";

export interface UnknownInodesContext {
  /** Whether this node's VDI table holds `vid` (live, snapshot or deleted). */
  known(vid: Vid): boolean;
  /** The header of the local copy of inode `oid`. */
  readHeader(oid: Oid): Promise<InodeHeader>;
  /** Proposes `header` to the group; resolves once this node applied it. */
  announce(header: InodeHeader): Promise<void>;
  /** Resolves true once no VDI change is in progress (false: gave up waiting). */
  noChangeInProgress(): Promise<boolean>;
  /** Runs `work` holding the administration lock, so that no VDI change starts meanwhile. */
  exclusive<T>(work: () => Promise<T>): Promise<T>;
  /** Repairs the local copy of `oid` from the other copies (the scrub's repair). */
  repair(oid: Oid): Promise<void>;
  logger: Logger;
}

export class UnknownInodes {
  readonly #context: UnknownInodesContext;
  /** Inode copies to look at. */
  readonly #due = new Set<Oid>();
  /** Copies whose announcement failed: due again at the next view. */
  readonly #failed = new Set<Oid>();
  /** Copies that could not be read at start and still cannot: repaired at each view. */
  readonly #unloadable = new Set<Oid>();
  /** Repairs asked for by the last view, done before the due copies are looked at. */
  #repairs: Oid[] = [];
  #draining = false;
  #drained: Promise<void> = Promise.resolve();
  /** Set at the first view: before it the table is not loaded and the group not joined. */
  #started = false;
  #stopped = false;

  constructor(context: UnknownInodesContext) {
    this.#context = context;
  }

  /** The store changed `oid` (every change passes here: the check is two lookups). */
  changed(oid: Oid): void {
    if (!isVdiOid(oid) || this.#context.known(oidToVid(oid))) return;
    this.#due.add(oid);
    this.#drain();
  }

  /** The local copy of inode `oid` could not be read at start (`Sheep.#loadVdis`). */
  unloadable(oid: Oid): void {
    this.#unloadable.add(oid);
  }

  /**
   * A new view (the first starts the watching): announcements that failed (no majority, say) are tried again, and the copies that
   * could not be read at start, of VDIs still unknown, are repaired.
   */
  retry(): void {
    this.#started = true;
    for (const oid of this.#failed) this.#due.add(oid);
    this.#failed.clear();
    for (const oid of this.#unloadable) {
      if (this.#context.known(oidToVid(oid))) this.#unloadable.delete(oid);
    }
    this.#repairs = [...this.#unloadable];
    this.#drain();
  }

  /** Resolves once nothing is due or being looked at. */
  settled(): Promise<void> {
    return this.#drained;
  }

  stop(): void {
    this.#stopped = true;
  }

  /** Looks at the due copies one at a time, off the path of the change that made them due. */
  #drain(): void {
    if (this.#draining || this.#stopped || !this.#started) return;
    this.#draining = true;
    this.#drained = (async () => {
      try {
        while (!this.#stopped && (this.#repairs.length > 0 || this.#due.size > 0)) {
          const repair = this.#repairs.shift();
          if (repair !== undefined) {
            await this.#repair(repair);
            continue;
          }
          const oid = this.#due.values().next().value!;
          this.#due.delete(oid);
          await this.#look(oid);
        }
      } finally {
        this.#draining = false;
      }
    })();
  }

  async #look(oid: Oid): Promise<void> {
    const { known, logger } = this.#context;
    const vid = oidToVid(oid);
    // Most often a create in progress: its event is applied here once the lock is free.
    if (!await this.#context.noChangeInProgress()) {
      this.#failed.add(oid);
      return;
    }
    if (known(vid) || !await this.#readable(oid)) return;
    try {
      const header = await this.#context.exclusive(async () => {
        if (known(vid)) return undefined;
        const header = await this.#readable(oid);
        if (header) await this.#context.announce(header);
        return header;
      });
      if (!header) return;
      this.#unloadable.delete(oid);
      logger.warn(
        `found VDI '${header.name}' (vid ${vid.toString(16)}) in its inode ${oidToHex(oid)}, ` +
          "which no node's table held: every node knows it again",
      );
    } catch (error) {
      this.#failed.add(oid);
      logger.warn(
        `cannot announce the VDI found in inode ${oidToHex(oid)}: ` +
          `${(error as Error).message} (tried again at the next view)`,
      );
    }
  }

  /** Repairs a copy that could not be read at start; what it changed is due (`changed`). */
  async #repair(oid: Oid): Promise<void> {
    if (this.#context.known(oidToVid(oid))) {
      this.#unloadable.delete(oid);
      return;
    }
    if (await this.#readable(oid)) {
      this.#unloadable.delete(oid);
      this.#due.add(oid);
      return;
    }
    await this.#context.repair(oid).catch((error) =>
      this.#context.logger.warn(
        `cannot repair inode ${oidToHex(oid)}, unreadable since the start: ` +
          `${(error as Error).message} (tried again at the next view)`,
      )
    );
    this.#due.add(oid);
  }

  /** The copy's header if it reads and is `oid`'s VDI's (vid 0: a copy not written yet). */
  async #readable(oid: Oid): Promise<InodeHeader | undefined> {
    try {
      const header = await this.#context.readHeader(oid);
      return header.vdiId === oidToVid(oid) ? header : undefined;
    } catch (error) {
      this.#context.logger.debug(
        `inode ${oidToHex(oid)} not readable yet: ${(error as Error).message}`,
      );
      return undefined;
    }
  }
}
