/**
 * The state every node of a cluster replicates: the cluster config, the VDI registry, the
 * attach locks ("running on ADDR") and the recovery reports (which nodes finished which epoch).
 * The group delivers cluster events and views to every node in one total order; each node feeds
 * them to its own `ClusterStateMachine`, so every node holds the same state and gets the same
 * result, or the same `SheepdogError`, from every event.
 *
 * The machine is pure (etcd raft's `RawNode` is the model): no disk, no network, no clock. What a
 * node must do because of an event comes back as data, `ClusterEffect`s, which the node performs
 * in the order given, before it applies the next event:
 *
 * - `erase-store`: a forced re-format; every object of the local store goes.
 * - `persist-config`: the config is written to the node's directory.
 * - `purge`: every node has reported epoch N recovered; leftovers of earlier epochs can go.
 *
 * An event that throws changes nothing. `snapshot()` and `merge()` carry the state to a node that
 * missed events (GET_CLUSTER_STATE), and `installView()` follows the membership.
 *
 * @module
 */

import { assert } from "../assert.ts";
import { VDI_SPACE } from "../limits.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import { Buffer } from "node:buffer";
import {
  compareHeaders,
  decodeInodeHeader,
  encodeInodeHeader,
  INODE_HEADER_SIZE,
  type InodeHeader,
  isDeleted,
} from "../vdi/inode.ts";
import type { Vid } from "../vdi/oid.ts";
import { type VdiChange, VdiRegistry } from "../vdi/registry.ts";
import { type ClusterConfig, compareFormats, predatesFormat } from "./cluster_config.ts";
import type { ClusterEvent } from "./cluster_events.ts";

/** The attach lock that serialises VDI administration cluster-wide (vid 0 is no VDI's). */
export const ADMIN_LOCK_VID = 0;

/** Who holds a VDI open ("running on ADDR"). */
export interface VdiLock {
  vid: Vid;
  client: string;
  sinceMs: number;
  /** The sheep the client is attached through: its locks go when it leaves the cluster. */
  node?: string;
}

/**
 * The replicated state as a joining node fetches it (GET_CLUSTER_STATE carries it, plus the
 * event sequence number it reflects).
 */
export interface ReplicatedState {
  config: ClusterConfig | null;
  headers: InodeHeader[];
  locks: VdiLock[];
  /** Recovery reports heard so far, per epoch: a joiner missed the events that carried them. */
  recovered?: Record<string, string[]>;
}

/** I/O a node must perform because of an event or a merge, in the order given. */
export type ClusterEffect =
  | { type: "erase-store" }
  | { type: "persist-config"; config: ClusterConfig }
  | { type: "purge"; epoch: number }
  /**
   * The VDI table took in headers: the node keeps the table beside its inodes
   * (net/sheep/vdi_table_file.ts), to know at its next start the VDIs it holds no inode of.
   */
  | { type: "remember-vdis" };

/** What applying one event gave: the proposer's answer and the node's I/O to do. */
export interface Applied {
  /** A `VdiChange` for a VDI event; undefined for the others. */
  result: VdiChange | undefined;
  effects: ClusterEffect[];
}

/** What the VDI table offers to readers (changes go through events only). */
export type VdiRegistryReader = Pick<
  VdiRegistry,
  "bitmap" | "get" | "all" | "live" | "lookup" | "family" | "plan"
>;

/** The read side of the replicated state: what request handlers and exports look at. */
export interface ReplicatedStateReader {
  /** Undefined until the cluster is formatted. */
  readonly config: ClusterConfig | undefined;
  readonly registry: VdiRegistryReader;
  readonly locks: ReadonlyMap<Vid, VdiLock>;
}

/** The replicated state of a cluster, changed only by events, views and merges. */
export class ClusterStateMachine implements ReplicatedStateReader {
  /**
   * The VDI table. Typed in full for the gateway and VDI administration, which read it; only
   * this machine changes it.
   */
  readonly registry: VdiRegistry = new VdiRegistry();
  readonly #locks = new Map<Vid, VdiLock>();
  #config: ClusterConfig | undefined;
  /** Which nodes reported recovery complete, per epoch. */
  readonly #recovered = new Map<number, Set<string>>();
  /** The current view: its epoch and storage nodes (recovery reports are counted against it). */
  #epoch = 0;
  #nodeIds: readonly string[] = [];

  get config(): ClusterConfig | undefined {
    return this.#config;
  }

  get locks(): ReadonlyMap<Vid, VdiLock> {
    return this.#locks;
  }

  /** The epoch of the last installed view (0 before any). */
  get epoch(): number {
    return this.#epoch;
  }

  /** The nodes that reported `epoch` recovered, sorted. */
  recoveredBy(epoch: number): string[] {
    return [...this.#recovered.get(epoch) ?? []].sort();
  }

  /** Loads the config the node persisted (at start, before anything is served). */
  loadConfig(config: ClusterConfig | undefined): void {
    this.#config = config;
  }

  /**
   * Loads the VDI headers of the node's own inode objects (at start), then resolves what a crash
   * in the middle of a VDI change left (`VdiRegistry.settle`). Returns the headers settling
   * dropped.
   */
  loadHeaders(headers: Iterable<InodeHeader>): InodeHeader[] {
    for (const header of headers) {
      assert(header.vdiId !== 0, "vid 0 is no VDI's");
      this.registry.load(header);
    }
    return this.registry.settle();
  }

  /**
   * Applies one delivered event. Deterministic: every node gets the same result and effects, or
   * the same error; an event that throws changes nothing.
   */
  apply(event: ClusterEvent): Applied {
    switch (event.type) {
      case "vdi":
        return { result: this.#applyVdi(event), effects: [{ type: "remember-vdis" }] };
      case "mkfs":
        return { result: undefined, effects: this.#applyMkfs(event) };
      case "lock":
        this.#applyLock(event);
        return { result: undefined, effects: [] };
      case "unlock":
        this.#applyUnlock(event);
        return { result: undefined, effects: [] };
      case "recovered":
        return { result: undefined, effects: this.#applyRecovered(event) };
      case "found": {
        // Found in a store of another format (a node that missed a format, before it knew).
        if (event.formatMs !== undefined && event.formatMs !== this.#config?.ctimeMs) {
          return { result: undefined, effects: [] };
        }
        // Copies of VDIs the format erased, brought back by a copy in flight at the erase.
        const found = decodeFoundHeaders(event.headers)
          .filter((header) => !predatesFormat(header.createTime, this.#config?.ctimeMs));
        return {
          result: undefined,
          effects: this.#learn(found) ? [{ type: "remember-vdis" }] : [],
        };
      }
      default:
        // An event type this version does not know changes nothing, on every node alike.
        return { result: undefined, effects: [] };
    }
  }

  #applyVdi(event: Extract<ClusterEvent, { type: "vdi" }>): VdiChange {
    const change = this.registry.apply(event.event);
    // A snapshot or a rollback gives the name's working VDI a new vid: whoever has it attached
    // follows it there. A deleted VDI is attached by no one.
    const moved = event.event.type === "snapshot" || event.event.type === "rollback";
    for (const header of change.updated) {
      const held = this.#locks.get(header.vdiId);
      if (!held || (!isDeleted(header) && !moved)) continue;
      this.#locks.delete(held.vid);
      if (moved) this.#locks.set(change.vid, { ...held, vid: change.vid });
    }
    return change;
  }

  #applyMkfs(event: Extract<ClusterEvent, { type: "mkfs" }>): ClusterEffect[] {
    const formatted = this.#config !== undefined;
    if (formatted && !event.force) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        "Cannot format: the cluster is formatted already and holds data (use --force to erase it)",
      );
    }
    const effects: ClusterEffect[] = [];
    if (formatted) {
      this.registry.clear();
      this.#locks.clear();
      effects.push({ type: "erase-store" });
    }
    this.#config = event.config;
    effects.push({ type: "persist-config", config: event.config });
    return effects;
  }

  #applyLock(event: Extract<ClusterEvent, { type: "lock" }>): void {
    const held = this.#locks.get(event.vid);
    if (held && held.client !== event.client && !event.force) {
      throw new SheepdogError(ResultCode.VDI_LOCKED, `VDI is in use by ${held.client}`);
    }
    this.#locks.set(event.vid, {
      vid: event.vid,
      client: event.client,
      sinceMs: event.sinceMs,
      node: event.node,
    });
  }

  #applyUnlock(event: Extract<ClusterEvent, { type: "unlock" }>): void {
    const held = this.#locks.get(event.vid);
    if (held && (event.client === undefined || held.client === event.client)) {
      this.#locks.delete(event.vid);
    }
  }

  #applyRecovered(event: Extract<ClusterEvent, { type: "recovered" }>): ClusterEffect[] {
    const done = this.#recovered.get(event.epoch) ?? new Set<string>();
    done.add(event.node);
    this.#recovered.set(event.epoch, done);
    if (event.epoch !== this.#epoch || !this.#nodeIds.every((id) => done.has(id))) return [];
    // Every node has what the ring puts on it: reports of earlier epochs are done with.
    for (const old of this.#recovered.keys()) if (old < event.epoch) this.#recovered.delete(old);
    return [{ type: "purge", epoch: event.epoch }];
  }

  /**
   * Takes in each header this node lacks or holds an older version of (`compareHeaders`), then
   * settles what they left (a merge, or headers a node found ahead of the table: header_drift.ts).
   * True if it took any.
   */
  #learn(headers: Iterable<InodeHeader>): boolean {
    let took = false;
    for (const header of headers) {
      const mine = this.registry.get(header.vdiId);
      if (mine && compareHeaders(header, mine) <= 0) continue;
      this.registry.load(header);
      took = true;
    }
    this.registry.settle();
    return took;
  }

  /**
   * A new view (its epoch and storage nodes): the attach locks taken through nodes that are no
   * longer members go. Returns the dropped locks.
   */
  installView(epoch: number, nodeIds: Iterable<string>): VdiLock[] {
    assert(Number.isInteger(epoch) && epoch >= 0, "an epoch is a whole number");
    const ids = [...nodeIds];
    const members = new Set(ids);
    this.#epoch = epoch;
    this.#nodeIds = ids;
    const dropped: VdiLock[] = [];
    for (const [vid, lock] of this.#locks) {
      if (lock.node && !members.has(lock.node)) {
        this.#locks.delete(vid);
        dropped.push(lock);
      }
    }
    return dropped;
  }

  /** The state a joining peer fetches (GET_CLUSTER_STATE), without the event sequence number. */
  snapshot(): ReplicatedState {
    return {
      config: this.#config ?? null,
      headers: this.registry.all(),
      locks: [...this.#locks.values()].map((lock) => ({ ...lock })),
      recovered: Object.fromEntries(
        [...this.#recovered].map(([epoch, nodes]) => [epoch, [...nodes]]),
      ),
    };
  }

  /**
   * Merges a peer's state in: its config if this node has none, each VDI header newer than this
   * node's (then `settle`), the locks and recovery reports this node lacks. Returns the I/O to do.
   * Throws, taking in nothing, if the peer's format is not this node's (`compareFormats`).
   */
  merge(state: ReplicatedState): ClusterEffect[] {
    if (compareFormats(this.#config, state.config) !== "same") {
      // Another format's VDIs, locks and reports are not this cluster's: none is taken in.
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `its state is of the format of ${new Date(state.config!.ctimeMs).toISOString()}, ` +
          `this node's of ${new Date(this.#config!.ctimeMs).toISOString()}: not taken in`,
      );
    }
    const effects: ClusterEffect[] = [];
    let changed = false;
    if (!this.#config && state.config) {
      this.#config = state.config;
      effects.push({ type: "persist-config", config: state.config });
      changed = this.#forgetOlderThan(state.config.ctimeMs);
    }
    // A peer that started without its config file took the cluster's beside a store of an
    // older format: the VDIs of that store are not this format's.
    const formatMs = this.#config?.ctimeMs;
    const headers = state.headers.filter((header) => !predatesFormat(header.createTime, formatMs));
    if (this.#learn(headers) || changed) effects.push({ type: "remember-vdis" });
    for (const lock of state.locks) {
      if (!this.#locks.has(lock.vid)) this.#locks.set(lock.vid, { ...lock });
    }
    for (const [epoch, nodes] of Object.entries(state.recovered ?? {})) {
      const done = this.#recovered.get(Number(epoch)) ?? new Set<string>();
      for (const node of nodes) done.add(node);
      this.#recovered.set(Number(epoch), done);
    }
    return effects;
  }

  /**
   * Forgets the headers older than the format made at `formatMs`: a node that started without
   * its config file loaded them from its store before it took the cluster's config, and they are
   * a format's that the cluster erased. True if it forgot any.
   */
  #forgetOlderThan(formatMs: number): boolean {
    const all = this.registry.all();
    const kept = all.filter((header) => !predatesFormat(header.createTime, formatMs));
    if (kept.length === all.length) return false;
    this.registry.clear();
    for (const header of kept) this.registry.load(header);
    this.registry.settle();
    return true;
  }

  /**
   * The headers this node holds that `headers` (a peer's table, as `merge` took it in) lacks or
   * holds an older version of: what that peer does not know. A merge teaches only the node
   * that fetched; these the peer must learn through the group (header_drift.ts).
   */
  aheadOf(headers: readonly InodeHeader[]): InodeHeader[] {
    const theirs = new Map(headers.map((header) => [header.vdiId, header]));
    return this.registry.all().filter((mine) => {
      const their = theirs.get(mine.vdiId);
      return their === undefined || compareHeaders(mine, their) > 0;
    });
  }
}

/** The "found" event's form of headers: their 4,664 bytes each as written in the inode, base64. */
export function encodeFoundHeaders(headers: readonly InodeHeader[]): string {
  return Buffer.concat(headers.map((header) => encodeInodeHeader(header))).toString("base64");
}

/** The headers a "found" event carries; throws (on every node alike) if they are not headers. */
export function decodeFoundHeaders(text: string): InodeHeader[] {
  const bytes = new Uint8Array(Buffer.from(text, "base64"));
  if (bytes.length === 0 || bytes.length % INODE_HEADER_SIZE !== 0) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `Found VDI headers are ${bytes.length} bytes, not a whole number of ${INODE_HEADER_SIZE}`,
    );
  }
  const headers: InodeHeader[] = [];
  for (let at = 0; at < bytes.length; at += INODE_HEADER_SIZE) {
    const header = decodeInodeHeader(bytes.subarray(at, at + INODE_HEADER_SIZE));
    if (header.vdiId === 0 || header.vdiId >= VDI_SPACE) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `A found VDI header names vid ${header.vdiId}, outside 1 to ${VDI_SPACE - 1}`,
      );
    }
    headers.push(header);
  }
  return headers;
}
