/**
 * Inode headers that drifted from the VDI table: announced, so that every node's table says what
 * the inodes say.
 *
 * Every VDI change writes its inodes before its event (vdi_service.ts, DURABILITY.md), holding
 * the cluster-wide administration lock, and a change whose event is refused is undone. The table
 * and the headers agree once each change is over, but for two ways they part:
 *
 * - **An undo that failed** (a disk whose sync fails refuses the undo's write too): the inodes
 *   hold the change (a snapshot's frozen header, its new working inode) while every table holds
 *   the state before it. A client that then opens the VDI reads its header, finds a snapshot,
 *   and refuses to write (simulation, snapshot seed 227).
 * - **A VDI no node could load at start**: each sheep builds its table from its own inode copies
 *   and learns the rest from its peers (`Sheep.#loadVdis`, `mergeFromPeers`). When a crash of
 *   every node left every copy of one inode unreadable, no node knows the VDI; recovery or a
 *   repair rebuilds the copies later, its data all there, and every open says "no such VDI"
 *   (simulation seed 14190).
 * - **A node back after the others**: when a cluster comes back from a full stop, the nodes of
 *   its last view run without waiting for those stopped before them. A node that joins later
 *   learns their VDIs from their state, but they never fetch its state: the VDIs whose inodes
 *   only it holds (one copy, or every holder stopped early) stayed unknown to them, and a
 *   create of such a name would have succeeded on them alone (tests/cluster_cases.ts, "restart
 *   one by one"). So a node that merges a peer's state names what the peer lacks or holds older
 *   (`peersBehind`), and those are announced too, though its own table has them.
 *
 * So each sheep watches its store: an inode copy whose header changes (a create, a write of its
 * first 4,664 bytes, a pull or a repair; not the table entries a client writes) is due. Once no
 * change is in progress, each due header is read through the gateway (the newest copy, whichever
 * node holds it) and, if the table lacks it or holds an older one (`compareHeaders`), proposed
 * under the administration lock, with every other such header, as "found" events (as few as a
 * group proposal's size allows, `FOUND_HEADERS_PER_EVENT`) that every node applies alike: taken
 * in as a merge would, then settled (`ClusterStateMachine`). That is the state a restart of every
 * node would rebuild from the inodes. A copy this sheep could not
 * read at start is repaired at each view until it reads (a rotten header is not seen by recovery,
 * which compares versions and digests). A proposal that fails is tried again at the next view.
 *
 * @module
 */

import { compareHeaders, INODE_HEADER_SIZE, type InodeHeader } from "../../core/vdi/inode.ts";
import { isVdiOid, type Oid, oidToHex, oidToVid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import type { CopyChange } from "../../core/store/fs_object_store.ts";
import type { Logger } from "./logger.ts";

/** Inodes older than the format remembered as said (a bound: they are not expected at all). */
const PREDATED_REMEMBERED = 1_000;

export interface HeaderDriftContext {
  /** The header `vid` has in this node's VDI table (live, snapshot or deleted). */
  tableHeader(vid: Vid): InodeHeader | undefined;
  /** True for a header older than the cluster's format (`predatesFormat`): never announced. */
  predatesFormat(header: InodeHeader): boolean;
  /** The header of inode `oid`, read through the gateway. */
  readHeader(oid: Oid): Promise<InodeHeader>;
  /** Proposes `headers` to the group; resolves once this node applied them. */
  announce(headers: InodeHeader[]): Promise<void>;
  /** Resolves true once no VDI change is in progress (false: gave up waiting). */
  noChangeInProgress(): Promise<boolean>;
  /** Runs `work` holding the administration lock, so that no VDI change starts meanwhile. */
  exclusive<T>(work: () => Promise<T>): Promise<T>;
  /** Repairs the local copy of `oid` from the other copies (the scrub's repair). */
  repair(oid: Oid): Promise<void>;
  logger: Logger;
}

export class HeaderDrift {
  readonly #context: HeaderDriftContext;
  /** Inodes whose header to compare with the table. */
  readonly #due = new Set<Oid>();
  /**
   * Inodes whose header a peer's table lacks or holds older (`peersBehind`): announced even
   * though this node's own table has them.
   */
  readonly #behind = new Set<Oid>();
  /** Inodes whose announcement failed: due again at the next view. */
  readonly #failed = new Set<Oid>();
  /** Copies that could not be read at start and still cannot: repaired at each view. */
  readonly #unloadable = new Set<Oid>();
  /** Repairs asked for by the last view, done before the due headers are looked at. */
  #repairs: Oid[] = [];
  #draining = false;
  #drained: Promise<void> = Promise.resolve();
  /** Set at the first view: before it the table is not loaded and the group not joined. */
  #started = false;
  #stopped = false;

  constructor(context: HeaderDriftContext) {
    this.#context = context;
  }

  /**
   * The store changed `oid` (every change passes here): due if it is an inode whose header the
   * change may have touched, or whose VDI the table lacks. A change that failed is not: what
   * drifts is what succeeded (an undo that failed leaves the change before it in place), and a
   * pull that fails each time the header is read through the gateway would make it due again
   * and again (simulation, snapshot seed 1).
   */
  changed(oid: Oid, change: CopyChange = { ok: true }): void {
    if (!isVdiOid(oid) || !change.ok) return;
    const known = this.#context.tableHeader(oidToVid(oid)) !== undefined;
    const written = change.written;
    if (known && written !== undefined && written.offset >= INODE_HEADER_SIZE) return;
    this.#due.add(oid);
    this.#drain();
  }

  /**
   * `headers` are in this node's table and not in a peer's, or newer here: seen when this node
   * merged that peer's state (`ClusterStateMachine.aheadOf`). A merge teaches only the node that
   * fetched, and the peers already running never fetch from it: a node back after the others
   * (the last view before a full stop ran without it) holds the only copies of some inodes, and
   * without this its peers never heard of those VDIs. Due, to be announced as found.
   */
  peersBehind(headers: readonly InodeHeader[]): void {
    for (const header of headers) {
      const oid = vdiOid(header.vdiId);
      this.#behind.add(oid);
      this.#due.add(oid);
    }
    this.#drain();
  }

  /** The local copy of inode `oid` could not be read at start (`Sheep.#loadVdis`). */
  unloadable(oid: Oid): void {
    this.#unloadable.add(oid);
  }

  /**
   * A new view (the first starts the watching): announcements that failed are tried again, and
   * the copies that could not be read at start, of VDIs still unknown, are repaired.
   */
  retry(): void {
    this.#started = true;
    for (const oid of this.#failed) this.#due.add(oid);
    this.#failed.clear();
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

  /** Works through what is due, off the path of the changes that made it due. */
  #drain(): void {
    if (this.#draining || this.#stopped || !this.#started) return;
    this.#draining = true;
    this.#drained = (async () => {
      try {
        while (!this.#stopped && (this.#repairs.length > 0 || this.#due.size > 0)) {
          const repair = this.#repairs.shift();
          if (repair !== undefined) await this.#repair(repair);
          else await this.#compare();
        }
      } finally {
        this.#draining = false;
      }
    })();
  }

  /** Compares every due header with the table, and announces those ahead of it. */
  async #compare(): Promise<void> {
    // Most often a change in progress (its headers are written before its event): once it is
    // over, the table has them.
    if (!await this.#context.noChangeInProgress()) {
      for (const oid of this.#due) this.#failed.add(oid);
      this.#due.clear();
      return;
    }
    const due = [...this.#due];
    this.#due.clear();
    if ((await this.#ahead(due)).length === 0) return;
    try {
      // Under the lock no change can start: what is still ahead then is no change's.
      const announced = await this.#context.exclusive(async () => {
        const ahead = await this.#ahead(due);
        if (ahead.length > 0) await this.#context.announce(ahead.map((a) => a.header));
        return ahead;
      });
      for (const { oid, header } of announced) {
        this.#unloadable.delete(oid);
        const what = `VDI '${header.name}', vid ${header.vdiId.toString(16)}` +
          (header.tag ? `, snapshot '${header.tag}'` : "");
        if (this.#behind.delete(oid)) {
          this.#context.logger.info(
            `peers that ran without this node lacked what inode ${oidToHex(oid)} says (${what}): ` +
              "every node takes it in now",
          );
          continue;
        }
        this.#context.logger.warn(
          `the VDI table lacked what inode ${oidToHex(oid)} says (${what}): a change was left ` +
            "on disk (an undo that failed, no node could read the inode at start, or a VDI table " +
            "kept older than the cluster's settled it away); every node takes it in now",
        );
      }
    } catch (error) {
      for (const oid of due) this.#failed.add(oid);
      this.#context.logger.warn(
        `cannot bring the VDI table in step with the inode headers: ` +
          `${(error as Error).message} (tried again at the next view)`,
      );
    }
  }

  /**
   * Those of `oids` whose header (read now) the table lacks or holds an older version of, or,
   * for those a peer is behind on, holds no newer version of.
   */
  async #ahead(oids: readonly Oid[]): Promise<{ oid: Oid; header: InodeHeader }[]> {
    const ahead: { oid: Oid; header: InodeHeader }[] = [];
    for (const oid of oids) {
      const header = await this.#readable(oid);
      if (header === undefined) continue;
      if (this.#context.predatesFormat(header)) {
        this.#predating(oid, header);
        continue;
      }
      const table = this.#context.tableHeader(header.vdiId);
      const newer = table === undefined ? 1 : compareHeaders(header, table);
      if (newer > 0 || (newer === 0 && this.#behind.has(oid))) ahead.push({ oid, header });
      else if (newer < 0 && this.#behind.delete(oid)) {
        // This table took the header from this node's own copy at start, which recovery has
        // since replaced with an older one: what a change's undo left when this node crashed
        // before it. Not announced (it is no copy's now); this node keeps it (not fixed).
        this.#context.logger.warn(
          `VDI '${table!.name}' (vid ${header.vdiId.toString(16)}): this node's table holds a ` +
            `newer header than any copy of inode ${oidToHex(oid)} (a change undone while this ` +
            "node was down); its peers hold the older one until every node restarts",
        );
      }
    }
    return ahead;
  }

  /** Inodes found older than the format, said once each. */
  readonly #predated = new Set<Oid>();

  #predating(oid: Oid, header: InodeHeader): void {
    if (this.#predated.has(oid)) return;
    if (this.#predated.size >= PREDATED_REMEMBERED) this.#predated.clear();
    this.#predated.add(oid);
    this.#context.logger.warn(
      `inode ${oidToHex(oid)} (VDI '${header.name}') is older than the cluster's format: a copy ` +
        "of a VDI the format erased, not taken in",
    );
  }

  /**
   * Repairs a copy that could not be read at start, until its header reads; then it is due
   * (and announced if the table lacks it). Whether the table knows the VDI does not matter: a
   * peer's state, or the VDI table this node kept, may well name it while every copy of its
   * inode is rotten somewhere (simulation seed 14190).
   */
  async #repair(oid: Oid): Promise<void> {
    await this.#context.repair(oid).catch((error) =>
      this.#context.logger.warn(
        `cannot repair inode ${oidToHex(oid)}, unreadable since the start: ` +
          `${(error as Error).message} (tried again at the next view)`,
      )
    );
    if (await this.#readable(oid) !== undefined) this.#unloadable.delete(oid);
    this.#due.add(oid);
  }

  /** The header if it reads and is `oid`'s VDI's (vid 0: an inode being created). */
  async #readable(oid: Oid): Promise<InodeHeader | undefined> {
    try {
      const header = await this.#context.readHeader(oid);
      return header.vdiId === oidToVid(oid) ? header : undefined;
    } catch (error) {
      this.#context.logger.debug(
        `inode ${oidToHex(oid)} not readable now: ${(error as Error).message}`,
      );
      return undefined;
    }
  }
}
