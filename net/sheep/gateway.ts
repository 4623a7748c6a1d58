/**
 * The gateway: any sheep maps an object to its replicas under the current view, writes all of
 * them in parallel and acknowledges only when every one has it; reads use the local replica if
 * there is one and fall over to the next replica on error. Copy-on-write happens here: a COW
 * create reads the source object once and creates the new one with the client's bytes on top.
 *
 * @module
 */

import { isResult, ResultCode, SheepdogError } from "../../core/errors.ts";
import { trimTrailingZeros } from "../../core/bytes.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import { objectSize } from "../../core/limits.ts";
import { type ClusterView, targetsOf } from "../../core/cluster/view.ts";
import { INODE_SIZE, isSnapshot } from "../../core/vdi/inode.ts";
import { isDataOid, isVdiOid, type Oid, oidToHex, oidToVid } from "../../core/vdi/oid.ts";
import type { VdiRegistry } from "../../core/vdi/registry.ts";
import { Header } from "../object/header.ts";
import { Flag, Opcode } from "../object/ops.ts";
import { checkResponse, requestHeader } from "../object/client.ts";
import type { Peers } from "./peers.ts";

/** This node's own replicas: the store, behind recovery (a missing object may be on its way). */
export interface LocalObjects {
  read(oid: Oid, offset: number, length: number): Promise<Uint8Array>;
  write(oid: Oid, data: Uint8Array, offset: number): Promise<void>;
  create(oid: Oid, data: Uint8Array, offset: number): Promise<void>;
  remove(oid: Oid): Promise<void>;
  flush(): Promise<void>;
}

/** Results that mean "the cluster is changing": wait for the view to settle and resend. */
const RETRYABLE = [
  ResultCode.NETWORK_ERROR,
  ResultCode.OLD_NODE_VER,
  ResultCode.NEW_NODE_VER,
  ResultCode.WAIT_FOR_JOIN,
];
/** How long a request may stall on a membership change before the client sees an error. */
const RETRY_FOR_MS = 30_000;
const RETRY_INTERVAL_MS = 200;
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
}

export class Gateway {
  readonly #context: GatewayContext;
  #cachedView: ClusterView | undefined;
  #targetCache = new Map<Oid, { copies: number; targets: RingNode[] }>();

  constructor(context: GatewayContext) {
    this.#context = context;
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

  #checkRange(oid: Oid, offset: number, length: number): void {
    const limit = this.objectLimit(oid);
    if (offset + length > limit) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Range ${offset}+${length} is outside object ${oidToHex(oid)} (${limit} bytes)`,
      );
    }
  }

  /** Writes to a snapshot's objects are refused: the client must reload its inode. */
  #checkWritable(oid: Oid): void {
    if (!isVdiOid(oid) && !isDataOid(oid)) return;
    const header = this.#context.registry.get(oidToVid(oid));
    if (header && isSnapshot(header)) {
      throw new SheepdogError(ResultCode.READONLY, `Object ${oidToHex(oid)} belongs to a snapshot`);
    }
  }

  #targets(oid: Oid): RingNode[] {
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
    return [...targets];
  }

  /**
   * Runs `attempt` until it succeeds, fails for good, or the cluster has been changing for
   * longer than RETRY_FOR_MS: a VM sees a stall, not an error, while membership changes.
   */
  async #retrying<T>(attempt: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + RETRY_FOR_MS;
    for (;;) {
      try {
        return await attempt();
      } catch (error) {
        if (!isResult(error, ...RETRYABLE) || Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, RETRY_INTERVAL_MS));
      }
    }
  }

  read(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    this.#checkRange(oid, offset, length);
    return this.#retrying(() => this.#readOnce(oid, offset, length));
  }

  async #readOnce(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    const targets = this.#targets(oid);
    const local = targets.findIndex((n) => n.id === this.#context.selfId);
    if (local > 0) targets.unshift(...targets.splice(local, 1));
    let lastError: unknown;
    for (const node of targets) {
      try {
        return await this.#readFrom(node, oid, offset, length);
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  #readFrom(node: RingNode, oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    if (node.id === this.#context.selfId) return this.#context.local.read(oid, offset, length);
    const header = this.#peerHeader(Opcode.READ_PEER, oid, offset);
    header.dataLength = length;
    return this.#sendPeer(node, header);
  }

  #peerHeader(opcode: number, oid: Oid, offset: number): Header {
    const header = requestHeader(opcode, { internal: true });
    header.oid = oid;
    header.offset = offset;
    header.epoch = this.#context.view().epoch;
    return header;
  }

  async #sendPeer(node: RingNode, header: Header, data?: Uint8Array): Promise<Uint8Array> {
    if (data && data.length > 0) {
      header.flags |= Flag.WRITE;
      header.dataLength = data.length;
    }
    const client = this.#context.peers.get(node);
    return checkResponse(await client.transport.request(header, data)).data;
  }

  /** Runs `operation` on every target in parallel; all must succeed (resent on view changes). */
  #onAll(oid: Oid, operation: (node: RingNode) => Promise<unknown>): Promise<void> {
    return this.#retrying(async () => {
      const results = await Promise.allSettled(this.#targets(oid).map(operation));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
    });
  }

  async write(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    this.#checkRange(oid, offset, data.length);
    this.#checkWritable(oid);
    this.#context.admitWrite();
    await this.writeAt(oid, data, offset);
  }

  /** Writes on every target without the read-only check (VDI administration, recovery). */
  async writeAt(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    await this.#onAll(oid, (node) => {
      if (node.id === this.#context.selfId) return this.#context.local.write(oid, data, offset);
      return this.#sendPeer(node, this.#peerHeader(Opcode.WRITE_PEER, oid, offset), data);
    });
  }

  async create(oid: Oid, data: Uint8Array, offset: number, cowFrom?: Oid): Promise<void> {
    this.#checkRange(oid, offset, data.length);
    this.#checkWritable(oid);
    this.#context.admitWrite();
    let payload = data;
    let payloadOffset = offset;
    if (cowFrom !== undefined) {
      const size = this.objectLimit(oid);
      const source = await this.read(cowFrom, 0, size).catch((error) => {
        // A source that was never written reads as zeros.
        if (isResult(error, ResultCode.NO_OBJ)) return new Uint8Array(size);
        throw error;
      });
      source.set(data, offset);
      payload = trimTrailingZeros(source);
      payloadOffset = 0;
    }
    await this.createAt(oid, payload, payloadOffset);
  }

  /** Creates the object on every target (no COW, no read-only check: recovery and VDI admin). */
  async createAt(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    await this.#onAll(oid, (node) => {
      if (node.id === this.#context.selfId) return this.#context.local.create(oid, data, offset);
      return this.#sendPeer(
        node,
        this.#peerHeader(Opcode.CREATE_AND_WRITE_PEER, oid, offset),
        data,
      );
    });
  }

  async remove(oid: Oid): Promise<void> {
    await this.#onAll(oid, (node) => {
      if (node.id === this.#context.selfId) return this.#context.local.remove(oid);
      return this.#sendPeer(node, this.#peerHeader(Opcode.REMOVE_PEER, oid, 0));
    });
  }

  /** Makes acknowledged writes durable on every node of the view. */
  async flush(): Promise<void> {
    const nodes = this.#context.view().nodes;
    if (nodes.length === 0) return await this.#context.local.flush();
    await Promise.all(nodes.map((node) => {
      if (node.id === this.#context.selfId) return this.#context.local.flush();
      return this.#sendPeer(node, requestHeader(Opcode.FLUSH_PEER, { internal: true }));
    }));
  }
}
