/**
 * A sheep: the storage daemon of one directory. It owns the object store, the VDI registry and
 * the cluster view, serves the object protocol, and acts as gateway for any client. Nothing is
 * global: several sheep run in one process (the in-process test clusters do exactly that).
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { defaultZone, type RingNode } from "../../core/hash/ring.ts";
import {
  BLOCK_SIZE_SHIFT_DEFAULT,
  BLOCK_SIZE_SHIFT_MAX,
  BLOCK_SIZE_SHIFT_MIN,
  COPIES_DEFAULT,
  COPIES_MAX,
  VNODES_DEFAULT,
} from "../../core/limits.ts";
import { FsObjectStore } from "../../core/store/fs_object_store.ts";
import { type ClusterView, makeView } from "../../core/cluster/view.ts";
import { decodeInodeHeader, INODE_HEADER_SIZE } from "../../core/vdi/inode.ts";
import { isVdiOid, type Vid } from "../../core/vdi/oid.ts";
import { type VdiChange, type VdiEvent, VdiRegistry } from "../../core/vdi/registry.ts";
import { Metrics } from "../metrics/metrics.ts";
import { ObjectServer } from "../object/server.ts";
import { LocalTransport } from "../object/transport.ts";
import { ObjectClient } from "../object/client.ts";
import type { Message } from "../object/header.ts";
import { type ClusterConfig, FLAG_STRICT, readConfig, writeConfig } from "./cluster_config.ts";
import { DirLock } from "./dir_lock.ts";
import { Gateway } from "./gateway.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { Peers } from "./peers.ts";
import { VdiService } from "./vdi_service.ts";
import { handleRequest } from "./request_handlers.ts";

/** How to build a sheep. */
export interface SheepOptions {
  dir: string;
  /** Address other nodes and clients reach this sheep at. */
  host: string;
  /** Object-protocol port; 0 picks a free one (tests). */
  port: number;
  zone?: number;
  vnodes?: number;
  logger?: Logger;
  now?: () => number;
}

/** Who holds a VDI open ("running on ADDR"). */
export interface VdiLock {
  vid: Vid;
  client: string;
  sinceMs: number;
}

export type SheepStatus = "waiting-for-format" | "running" | "stopped";

export class Sheep {
  readonly dir: string;
  readonly host: string;
  readonly logger: Logger;
  readonly registry = new VdiRegistry();
  readonly store: FsObjectStore;
  readonly peers = new Peers();
  readonly gateway: Gateway;
  readonly vdis: VdiService;
  readonly locks = new Map<Vid, VdiLock>();
  /** Request counters and latencies, bytes moved, state gauges (served at GET /metrics). */
  readonly metrics = new Metrics();
  readonly now: () => number;
  #port: number;
  #zone: number | undefined;
  #vnodes: number;
  #config: ClusterConfig | undefined;
  #view: ClusterView = makeView(0, []);
  #server: ObjectServer | undefined;
  #dirLock: DirLock | undefined;
  #status: SheepStatus = "stopped";

  constructor(options: SheepOptions) {
    this.dir = path.resolve(options.dir);
    this.host = options.host;
    this.#port = options.port;
    this.#zone = options.zone;
    this.#vnodes = options.vnodes ?? VNODES_DEFAULT;
    this.logger = options.logger ?? silentLogger;
    this.now = options.now ?? Date.now;
    this.store = new FsObjectStore(path.join(this.dir, "obj"));
    const selfId = () => this.id;
    this.gateway = new Gateway({
      get selfId() {
        return selfId();
      },
      store: this.store,
      registry: this.registry,
      peers: this.peers,
      view: () => this.#view,
      defaultCopies: () => this.#config?.copies ?? COPIES_DEFAULT,
      defaultBlockSizeShift: () => this.#config?.blockSizeShift ?? BLOCK_SIZE_SHIFT_DEFAULT,
    });
    this.vdis = new VdiService({
      registry: this.registry,
      gateway: this.gateway,
      submit: (event) => this.submitVdiEvent(event),
    });
  }

  get port(): number {
    return this.#port;
  }

  /** "host:port", this node's identity on the ring. */
  get id(): string {
    return `${this.host}:${this.#port}`;
  }

  get status(): SheepStatus {
    return this.#status;
  }

  get config(): ClusterConfig | undefined {
    return this.#config;
  }

  get view(): ClusterView {
    return this.#view;
  }

  /** This node as the ring sees it. */
  ringNode(): RingNode {
    return {
      id: this.id,
      host: this.host,
      port: this.#port,
      zone: this.#zone ?? defaultZone(this.host, this.#port),
      vnodes: this.#vnodes,
    };
  }

  /** Opens the directory, loads what it holds and starts serving. */
  async start(): Promise<void> {
    await this.#prepareDirectory();
    this.#dirLock = await DirLock.acquire(this.dir, `${this.host}:${this.#port}`);
    try {
      await this.store.open();
      this.#config = await readConfig(this.dir);
      this.#server = new ObjectServer((request, peer) => this.handle(request, peer), {
        onError: (message) => this.logger.warn(message),
      });
      const bound = await this.#server.listen({ host: this.host, port: this.#port });
      this.#port = bound.port;
      await this.#loadVdis();
      this.#view = makeView(this.#config ? 1 : 0, [this.ringNode()]);
      this.#status = this.#config ? "running" : "waiting-for-format";
      this.logger.info(`sheep ${this.id} serving ${this.dir} (${this.#status})`);
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  async #prepareDirectory(): Promise<void> {
    try {
      await fsp.mkdir(this.dir, { recursive: true });
      await fsp.access(this.dir, fsp.constants.W_OK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new SheepdogError(
        ResultCode.SYSTEM_ERROR,
        `Cannot use ${this.dir}: not writable (${code})`,
      );
    }
  }

  /** Rebuilds the VDI table from the inode objects this node stores. */
  async #loadVdis(): Promise<void> {
    for (const oid of await this.store.list()) {
      if (!isVdiOid(oid)) continue;
      const header = decodeInodeHeader(await this.store.read(oid, 0, INODE_HEADER_SIZE));
      if (header.vdiId !== 0) this.registry.load(header);
    }
  }

  /** Stops serving and releases the directory. */
  async stop(): Promise<void> {
    this.#status = "stopped";
    await this.#server?.close();
    this.#server = undefined;
    await this.peers.close();
    await this.store.close();
    await this.#dirLock?.release();
    this.#dirLock = undefined;
  }

  /** Applies a VDI event; with one node, directly. */
  submitVdiEvent(event: VdiEvent): Promise<VdiChange> {
    return Promise.resolve().then(() => this.registry.apply(event));
  }

  /** Formats the cluster: persists the config and starts epoch 1. */
  async makeFs(
    options: { copies: number; blockSizeShift: number; force: boolean; strict: boolean },
  ): Promise<void> {
    if (!Number.isInteger(options.copies) || options.copies < 1 || options.copies > COPIES_MAX) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Invalid copies ${options.copies}: use 1..${COPIES_MAX}`,
      );
    }
    const shift = options.blockSizeShift;
    if (!Number.isInteger(shift) || shift < BLOCK_SIZE_SHIFT_MIN || shift > BLOCK_SIZE_SHIFT_MAX) {
      throw new SheepdogError(ResultCode.INVALID_PARMS, `Invalid object size shift ${shift}`);
    }
    if (this.#config && !options.force) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        "Cannot format: the cluster is formatted already and holds data (use --force to erase it)",
      );
    }
    if (this.#config) await this.#erase();
    const config: ClusterConfig = {
      ctimeMs: this.now(),
      flags: options.strict ? FLAG_STRICT : 0,
      copies: options.copies,
      blockSizeShift: shift,
      shutdown: false,
    };
    await writeConfig(this.dir, config);
    this.#config = config;
    this.#view = makeView(1, [this.ringNode()]);
    this.#status = "running";
    this.logger.info(`cluster formatted: ${config.copies} copies, object size 2^${shift}`);
  }

  async #erase(): Promise<void> {
    for (const oid of await this.store.list()) await this.store.remove(oid);
    this.registry.clear();
    this.locks.clear();
  }

  /** A client of this very sheep that takes no network hop (NBD export, HTTP API). */
  localClient(peer = "local"): ObjectClient {
    return new ObjectClient(
      new LocalTransport((request, from) => this.handle(request, from), peer),
    );
  }

  /** Handles one request; never throws (errors become result codes). */
  handle(request: Message, peer: string): Promise<Message> {
    return handleRequest(this, request, peer);
  }
}
