/**
 * Recovery: after every view change each sheep works out which objects the new ring puts on it,
 * learns who holds them (object lists of every member), and pulls what it lacks. A node that
 * was away also checks the objects it kept against a replica that stayed, since they may have
 * changed meanwhile. An object a client is waiting for jumps the queue (`ensure`). A newer view
 * cancels a running recovery. Objects that no longer belong here are removed only once every
 * member reports completion for the epoch (`purge`), so nothing is dropped while still needed.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { equalBytes, trimTrailingZeros } from "../../core/bytes.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import type { ObjectStore } from "../../core/store/object_store.ts";
import { type ClusterView, targetsOf } from "../../core/cluster/view.ts";
import { type Oid, oidToHex } from "../../core/vdi/oid.ts";
import { checkResponse, requestHeader } from "../object/client.ts";
import { Flag, Opcode } from "../object/ops.ts";
import type { Logger } from "./logger.ts";
import type { Peers } from "./peers.ts";

/** Objects pulled in parallel: enough to move data, few enough to leave room for clients. */
const RECOVERY_WORKERS = 4;

export interface RecoveryContext {
  readonly selfId: string;
  readonly store: ObjectStore;
  readonly peers: Peers;
  readonly logger: Logger;
  copies(oid: Oid): number;
  objectLimit(oid: Oid): number;
  now(): number;
  /** Called once this node has every object the view puts on it. */
  completed(epoch: number): void;
}

export interface RecoveryStatus {
  state: "idle" | "gathering" | "recovering" | "done" | "failed";
  epoch: number;
  total: number;
  done: number;
  objectsPerSecond: number;
  startedMs: number;
  finishedMs: number;
  /** The last epoch whose leftovers were purged (every node had recovered it). */
  purgedEpoch: number;
  error?: string;
}

interface Run {
  epoch: number;
  view: ClusterView;
  cancelled: boolean;
  /** Holders of every object this node should have but lacks (or must re-check). */
  wanted: Map<Oid, RingNode[]>;
  gathered: Promise<void>;
}

export class Recovery {
  readonly #context: RecoveryContext;
  #run: Run | undefined;
  #status: RecoveryStatus = {
    state: "idle",
    epoch: 0,
    total: 0,
    done: 0,
    objectsPerSecond: 0,
    startedMs: 0,
    finishedMs: 0,
    purgedEpoch: 0,
  };
  #locks = new Map<Oid, Promise<void>>();
  #pulling = new Map<Oid, Promise<void>>();

  constructor(context: RecoveryContext) {
    this.#context = context;
  }

  status(): RecoveryStatus {
    return { ...this.#status };
  }

  get active(): boolean {
    return this.#status.state === "gathering" || this.#status.state === "recovering";
  }

  /** Serialises work on one object (a pull and a client write never interleave). */
  async withObjectLock<T>(oid: Oid, work: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(oid) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const chained = previous.then(() => mine);
    this.#locks.set(oid, chained);
    await previous;
    try {
      return await work();
    } finally {
      release();
      if (this.#locks.get(oid) === chained) this.#locks.delete(oid);
    }
  }

  /** Starts recovering for `view`, cancelling any older run. */
  start(
    view: ClusterView,
    options: { wasAbsent: boolean; previousMembers: ReadonlySet<string> },
  ): void {
    if (this.#run) this.#run.cancelled = true;
    const run: Run = {
      epoch: view.epoch,
      view,
      cancelled: false,
      wanted: new Map(),
      gathered: Promise.resolve(),
    };
    this.#run = run;
    this.#status = {
      state: "gathering",
      epoch: view.epoch,
      total: 0,
      done: 0,
      objectsPerSecond: 0,
      startedMs: this.#context.now(),
      finishedMs: 0,
      purgedEpoch: this.#status.purgedEpoch,
    };
    run.gathered = this.#gather(run, options);
    run.gathered
      .then(() => this.#recoverAll(run))
      .catch((error) => {
        if (run.cancelled) return;
        this.#status = { ...this.#status, state: "failed", error: (error as Error).message };
        this.#context.logger.warn(
          `recovery of epoch ${run.epoch} failed: ${(error as Error).message}`,
        );
      });
  }

  async #objectList(node: RingNode): Promise<Oid[]> {
    if (node.id === this.#context.selfId) return await this.#context.store.list();
    const header = requestHeader(Opcode.GET_OBJ_LIST, { internal: true });
    header.flags |= Flag.RECOVERY;
    const response = checkResponse(await this.#context.peers.get(node).transport.request(header));
    const hexes = JSON.parse(new TextDecoder().decode(response.data)) as string[];
    return hexes.map((hex) => BigInt("0x" + hex));
  }

  async #gather(
    run: Run,
    options: { wasAbsent: boolean; previousMembers: ReadonlySet<string> },
  ): Promise<void> {
    const holders = new Map<Oid, RingNode[]>();
    const lists = await Promise.all(
      run.view.nodes.map(async (node) => ({ node, oids: await this.#objectList(node) })),
    );
    for (const { node, oids } of lists) {
      for (const oid of oids) {
        const list = holders.get(oid);
        if (list) list.push(node);
        else holders.set(oid, [node]);
      }
    }
    const self = this.#context.selfId;
    for (const [oid, nodes] of holders) {
      if (!targetsOf(run.view, oid, this.#context.copies(oid)).some((n) => n.id === self)) continue;
      const others = nodes.filter((n) => n.id !== self);
      const haveIt = nodes.some((n) => n.id === self);
      if (!haveIt) run.wanted.set(oid, others);
      // Back from an absence: what we kept may be stale; re-check against nodes that stayed.
      else if (options.wasAbsent) {
        const stayed = others.filter((n) => options.previousMembers.has(n.id));
        if (stayed.length > 0) run.wanted.set(oid, stayed);
      }
    }
    this.#status = { ...this.#status, state: "recovering", total: run.wanted.size };
  }

  async #recoverAll(run: Run): Promise<void> {
    const queue = [...run.wanted.keys()];
    const worker = async () => {
      while (!run.cancelled && queue.length > 0) {
        const oid = queue.shift()!;
        await this.#recoverOne(run, oid).catch((error) => {
          this.#context.logger.warn(
            `recovery of ${oidToHex(oid)} failed: ${(error as Error).message}`,
          );
        });
        this.#status.done++;
        const seconds = (this.#context.now() - this.#status.startedMs) / 1000;
        this.#status.objectsPerSecond = seconds > 0 ? this.#status.done / seconds : 0;
      }
    };
    await Promise.all(Array.from({ length: RECOVERY_WORKERS }, worker));
    if (run.cancelled) return;
    this.#status = { ...this.#status, state: "done", finishedMs: this.#context.now() };
    this.#context.logger.info(
      `recovery of epoch ${run.epoch} done: ${run.wanted.size} objects checked or pulled`,
    );
    this.#context.completed(run.epoch);
  }

  /** Recovers `oid` once, whoever asks first (the queue or a waiting client). */
  #recoverOne(run: Run, oid: Oid): Promise<void> {
    const inFlight = this.#pulling.get(oid);
    if (inFlight) return inFlight;
    const holders = run.wanted.get(oid);
    run.wanted.delete(oid);
    if (!holders) return Promise.resolve();
    const pulling = this.withObjectLock(oid, () => this.#pull(oid, holders)).finally(() =>
      this.#pulling.delete(oid)
    );
    this.#pulling.set(oid, pulling);
    return pulling;
  }

  async #pull(oid: Oid, holders: RingNode[]): Promise<void> {
    const store = this.#context.store;
    const local = await store.exists(oid);
    let lastError: unknown = new SheepdogError(ResultCode.NO_OBJ, `No node holds ${oidToHex(oid)}`);
    for (const node of holders) {
      try {
        const data = await this.#read(node, oid);
        if (local && equalBytes(await store.read(oid, 0, data.length), data)) return;
        await store.create(oid, trimTrailingZeros(data), 0);
        return;
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  async #read(node: RingNode, oid: Oid): Promise<Uint8Array> {
    const header = requestHeader(Opcode.READ_PEER, { internal: true });
    header.flags |= Flag.RECOVERY;
    header.oid = oid;
    header.dataLength = this.#context.objectLimit(oid);
    const response = checkResponse(await this.#context.peers.get(node).transport.request(header));
    return response.data;
  }

  /**
   * Makes sure `oid` is here before a client touches it: if the running recovery still has it
   * queued, it is pulled now. Returns once it is (or was never) due.
   */
  async ensure(oid: Oid): Promise<void> {
    const run = this.#run;
    if (!run || run.cancelled || !this.active) return;
    await run.gathered.catch(() => undefined);
    const inFlight = this.#pulling.get(oid);
    if (inFlight) return await inFlight.catch(() => undefined);
    if (run.wanted.has(oid)) await this.#recoverOne(run, oid).catch(() => undefined);
  }

  /** Removes local objects the view does not place here (after every node recovered). */
  async purge(view: ClusterView): Promise<number> {
    let removed = 0;
    for (const oid of await this.#context.store.list()) {
      if (
        targetsOf(view, oid, this.#context.copies(oid)).some((n) => n.id === this.#context.selfId)
      ) continue;
      await this.withObjectLock(oid, () => this.#context.store.remove(oid));
      removed++;
    }
    this.#status.purgedEpoch = view.epoch;
    return removed;
  }
}
