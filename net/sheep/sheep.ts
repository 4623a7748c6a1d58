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
  CLIENT_QUIET_MS,
  COPIES_DEFAULT,
  COPIES_MAX,
  FOUND_HEADERS_PER_EVENT,
  NO_SPACE_LOG_INTERVAL_MS,
  RECOVERY_BYTES_PER_SECOND_BUSY,
  VNODES_DEFAULT,
} from "../../core/limits.ts";
import { FsObjectStore } from "../../core/store/fs_object_store.ts";
import { LogThrottle } from "../log/log_throttle.ts";
import { writeFileDurably } from "../../core/store/fs_disk.ts";
import { ChecksumWorkers } from "../../core/store/checksum_workers.ts";
import { type ClusterView, makeView } from "../../core/cluster/view.ts";
import {
  compareHeaders,
  decodeInodeHeader,
  INODE_HEADER_SIZE,
  type InodeHeader,
} from "../../core/vdi/inode.ts";
import { isVdiOid, type Oid, oidToHex, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import type { VdiChange, VdiEvent, VdiRegistry } from "../../core/vdi/registry.ts";
import {
  type ClusterConfig,
  compareFormats,
  FLAG_STRICT,
  predatesFormat,
} from "../../core/cluster/cluster_config.ts";
import type { ClusterEvent } from "../../core/cluster/cluster_events.ts";
import {
  ADMIN_LOCK_VID,
  type ClusterEffect,
  ClusterStateMachine,
  encodeFoundHeaders,
  type VdiLock,
} from "../../core/cluster/cluster_state_machine.ts";
import { Metrics } from "../metrics/metrics.ts";
import { ObjectServer } from "../object/server.ts";
import { TcpTransport } from "../object/tcp_transport.ts";
import { ClientAddresses } from "../auth/client_addresses.ts";
import { DatagramSeal } from "../auth/datagram_seal.ts";
import { Refusals } from "../auth/refusals.ts";
import { LocalTransport } from "../object/transport.ts";
import { ObjectClient } from "../object/client.ts";
import type { Message } from "../object/header.ts";
import { readConfig, writeConfig } from "./cluster_config.ts";
import { DirLock } from "./dir_lock.ts";
import { Gateway, type LocalObjects } from "./gateway.ts";
import { GatewayAccess } from "./gateway_access.ts";
import { ClusterMember, type ClusterOptions } from "./cluster_member.ts";
import {
  type ClusterDriver,
  type ClusterDriverFactory,
  leftClusterError,
} from "./cluster_driver.ts";
import type { ClusterState } from "./cluster_state.ts";
import { Recovery } from "./recovery.ts";
import { CrashHolds } from "./crash_holds.ts";
import { viewOfEpoch } from "./member_info.ts";
import { RecoveryThrottle } from "./recovery_throttle.ts";
import { ObjectLocks } from "./object_locks.ts";
import { Changes } from "./changes.ts";
import type { OrphanSource } from "./orphans.ts";
import { Scrubber, scrubContextOf, type ScrubOptions } from "./scrub.ts";
import { ClockProbe } from "./clock_probe.ts";
import { isResult, promiseOf } from "../../core/errors.ts";
import type { ReplacedCopy } from "./salvaged_copy.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { type Connect, Peers } from "./peers.ts";
import type { Disk } from "../../core/store/disk.ts";
import { VdiService } from "./vdi_service.ts";
import { AllocationCounts } from "./allocation_counts.ts";
import { OldClientEntries } from "./old_client_entries.ts";
import { HeaderDrift } from "./header_drift.ts";
import { VdiTableFile } from "./vdi_table_file.ts";
import { type FormatOptions, handleRequest } from "./request_handlers.ts";
import type { SheepStatus } from "./sheep_status.ts";
import { sameCopy } from "../../core/cluster/copy_choice.ts";

export { ADMIN_LOCK_VID, type SheepStatus, type VdiLock };

/** How to build a sheep. */
export interface SheepOptions {
  dir: string;
  /** Address other nodes and clients reach this sheep at. */
  host: string;
  /** Object-protocol port; 0 picks a free one (tests). */
  port: number;
  zone?: number;
  /**
   * Fixed vnodes (`--vnodes`). Without it the node has VNODES_DEFAULT for a node of the
   * cluster's average capacity, in proportion to its store's filesystem size.
   */
  vnodes?: number;
  logger?: Logger;
  /** The wall clock: versions, VDI and lock dates, the format's (default Date.now). */
  now?: () => number;
  /**
   * Milliseconds on a clock nobody sets (default: `now` when given, else performance.now), for
   * deadlines, waits and rates: a wall clock set back while a sheep waits on it would stretch
   * the wait by as much (an etcd lease counted on it kept a sheep cut off "in touch").
   */
  monotonic?: () => number;
  /**
   * Join a cluster through the built-in group (multicast and/or seeds). Without it (and without
   * `driver`) the sheep is alone.
   */
  cluster?: ClusterOptions;
  /** Join a cluster through another driver (etcd: net/etcd/); instead of `cluster`. */
  driver?: ClusterDriverFactory;
  /** The disk under the object store (a simulated one in the data-path simulation). */
  disk?: Disk;
  /** How to reach other sheep (in-memory in the simulation); TCP by default. */
  connect?: Connect;
  /**
   * Where cluster events go when there is no group: a simulation's total-order broadcast that
   * applies each event on every sheep in one order. Without it (and without `cluster`) a lone
   * sheep applies its events itself.
   */
  events?: EventBus;
  /** Background scrub interval and rate; without it, no background scrub (64 MiB/s by hand). */
  scrub?: ScrubOptions;
  /**
   * Recovery bytes per second while this sheep's clients are busy (default
   * RECOVERY_BYTES_PER_SECOND_BUSY; 0: recovery is never paced).
   */
  recoveryRate?: number;
  /** File handles the object store may keep open (default OPEN_FILES_MAX). */
  openFiles?: number;
  /** Check checksums on every read (default true; off only to measure what it costs). */
  verifyReads?: boolean;
  /**
   * Worker threads that compute the checksums of large reads (core/store/checksum_workers.ts);
   * default 0: every checksum on the main thread, as simulations need.
   */
  checksumWorkers?: number;
  /** Serve the object protocol on TCP (default true; the simulation has no sockets). */
  listen?: boolean;
  /** Address the object port listens on (default `host`; "0.0.0.0" for every address). */
  listenHost?: string;
  /**
   * The cluster key and who may send old clients' requests: group datagrams are sealed,
   * connections to and from other sheep authenticated, administrative requests need the key
   * (net/auth). Without it the sheep trusts everyone: in-process tests only.
   */
  security?: SheepSecurity;
}

/** A sheep's cluster key and client networks. */
export interface SheepSecurity {
  key: Uint8Array;
  /** Networks whose unauthenticated clients may send public requests (loopback always may). */
  clients?: ClientAddresses;
}

/** A totally ordered broadcast of cluster events (the group's role, or a simulation's). */
export interface EventBus {
  /** Applies `event` on every member in the same order; resolves with this member's result. */
  propose<T>(event: ClusterEvent): Promise<T>;
  /** The views this member installed before it started (the group's epoch log), any order. */
  pastViews?(): Promise<readonly ClusterView[]>;
}

/** Where a sheep keeps the nodes an operator declared gone for good (`forgetNodes`). */
const FORGOTTEN_NODES_FILE = "forgotten-nodes";

/** How long a VDI change waits for another sheep's change to finish. */
const ADMIN_LOCK_WAIT_MS = 30_000;

export class Sheep {
  readonly dir: string;
  readonly host: string;
  readonly logger: Logger;
  /**
   * The replicated state (config, VDIs, attach locks, recovery reports): changed only by the
   * cluster events, views and merged peer state this sheep applies, in the group's order.
   */
  readonly stateMachine = new ClusterStateMachine();
  readonly store: FsObjectStore;
  /** Where the store verifies large reads, if not on the main thread (the store closes it). */
  readonly checksumWorkers: ChecksumWorkers | undefined;
  /** Objects each VDI owns and shares, for the inode copies this node stores (listings read it). */
  readonly allocations: AllocationCounts;
  /** Inode headers ahead of the VDI table, announced to the group (header_drift.ts). */
  readonly #headerDrift: HeaderDrift;
  /** The VDI table as this node last knew it, read at start beside the inodes. */
  readonly #vdiTable: VdiTableFile;
  /** The epoch of this process's first group view (`ClusterState.firstEpoch`). */
  #firstEpoch: number | undefined;
  /** Merged peers' states that lacked headers of this table, until the first view is in. */
  readonly #unheard: { since: number; headers: InodeHeader[] }[] = [];
  /** Old clients' table entries known to be recorded (request_handlers.ts, `recordOwnObject`). */
  readonly oldClientEntries = new OldClientEntries();
  readonly peers: Peers;
  readonly gateway: Gateway;
  readonly vdis: VdiService;
  /** Request counters and latencies, bytes moved, state gauges (served at GET /metrics). */
  readonly metrics = new Metrics();
  readonly now: () => number;
  /** See `SheepOptions.monotonic`. */
  readonly monotonic: () => number;
  #port: number;
  #zone: number | undefined;
  #vnodes: number;
  readonly #fixedVnodes: boolean;
  /** The store's capacity, read at start, when the vnodes follow it. */
  #space: number | undefined;
  #view: ClusterView = makeView(0, []);
  /** Copies this node's crash left suspect, held while a node with their lost writes is away. */
  #holds: CrashHolds | undefined;
  #server: ObjectServer | undefined;
  #dirLock: DirLock | undefined;
  #running = false;
  readonly #events: EventBus | undefined;
  readonly #listen: boolean;
  /** The cluster driver: membership, epochs and the order of events (none when alone). */
  readonly member: ClusterDriver | undefined;
  readonly recovery: Recovery;
  /** Recovery yields to this sheep's clients: told of their requests, paces recovery's bytes. */
  readonly recoveryThrottle: RecoveryThrottle;
  /** Verifies every local block and compares replicas: by hand (START_SCRUB) and every interval. */
  readonly scrubber: Scrubber;
  /** Keeps the gateway's versions on the cluster's latest clock (clock_probe.ts). */
  readonly #clockProbe: ClockProbe;
  /** Local copies: client writes hold an object shared, a recovery pull holds it alone. */
  readonly objectLocks = new ObjectLocks<Oid>();
  /** Copies found bad or missing and replaced (or removed) since start. */
  repairs = 0;
  readonly #noSpaceLog = new LogThrottle(NO_SPACE_LOG_INTERVAL_MS);
  readonly #listenHost: string;
  readonly #security: SheepSecurity | undefined;
  /** Strangers refused (bad MACs, wrong keys, disallowed clients): counted and logged. */
  readonly refusals: Refusals;

  constructor(options: SheepOptions) {
    this.dir = path.resolve(options.dir);
    this.host = options.host;
    this.#port = options.port;
    this.#zone = options.zone;
    this.#vnodes = options.vnodes ?? VNODES_DEFAULT;
    this.#fixedVnodes = options.vnodes !== undefined;
    this.logger = options.logger ?? silentLogger;
    this.now = options.now ?? Date.now;
    this.monotonic = options.monotonic ?? options.now ?? (() => performance.now());
    this.checksumWorkers = (options.checksumWorkers ?? 0) > 0
      ? new ChecksumWorkers({
        workers: options.checksumWorkers!,
        warn: (line) => this.logger.warn(line),
      })
      : undefined;
    this.recoveryThrottle = new RecoveryThrottle({
      bytesPerSecond: options.recoveryRate ?? RECOVERY_BYTES_PER_SECOND_BUSY,
      quietMs: CLIENT_QUIET_MS,
    }, {
      now: () => this.monotonic(),
      // The global timer: a simulation runs it on virtual time, as it runs `now`.
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    });
    this.#headerDrift = new HeaderDrift({
      tableHeader: (vid) => this.registry.get(vid),
      predatesFormat: (header) => predatesFormat(header.createTime, this.config?.ctimeMs),
      readHeader: async (oid) =>
        decodeInodeHeader(await this.localAccess.readObject(oid, 0, INODE_HEADER_SIZE)),
      announce: async (headers) => {
        for (let at = 0; at < headers.length; at += FOUND_HEADERS_PER_EVENT) {
          const some = headers.slice(at, at + FOUND_HEADERS_PER_EVENT);
          const formatMs = this.config?.ctimeMs;
          await this.#submit({
            type: "found",
            headers: encodeFoundHeaders(some),
            ...(formatMs === undefined ? {} : { formatMs }),
          });
        }
      },
      noChangeInProgress: () =>
        this.stateChanges.until(() => !this.locks.has(ADMIN_LOCK_VID), ADMIN_LOCK_WAIT_MS),
      exclusive: (work) => this.#withAdminLock(work, "header-drift"),
      repair: (oid) => this.scrubber.repairLocal(oid, "inode could not be read at start"),
      logger: this.logger,
    });
    this.#vdiTable = new VdiTableFile(this.dir, {
      ...(options.disk ? { disk: options.disk } : {}),
      table: () => this.registry.all(),
      warn: (line) => this.logger.warn(line),
      now: () => this.monotonic(),
    });
    this.store = new FsObjectStore(path.join(this.dir, "obj"), options.disk, {
      log: (line) => this.logger.info(line),
      verifyReads: options.verifyReads ?? true,
      onChange: (oid, change) => {
        this.allocations.changed(oid);
        this.#headerDrift.changed(oid, change);
      },
      epoch: () => this.#view.epoch,
      holder: () => this.id,
      now: () => this.monotonic(),
      ...(this.checksumWorkers ? { hasher: this.checksumWorkers } : {}),
      ...(options.openFiles === undefined ? {} : { openFiles: options.openFiles }),
    });
    this.allocations = new AllocationCounts(this.store);
    this.#listenHost = options.listenHost ?? options.host;
    this.#security = options.security;
    this.refusals = new Refusals({
      log: (line) => this.logger.warn(line),
      count: (kind) => this.metrics.countRefusal(kind),
    });
    const key = options.security?.key;
    // A peer the group has not heard from lately is cut off or gone: requests to it fail at
    // once (reads go to another copy) instead of waiting for a network timeout.
    const reachable = options.cluster?.reachable;
    this.peers = new Peers(
      (id) => (reachable?.(id) ?? true) && (this.member?.isHeard(id) ?? true),
      options.connect ?? ((node) => new TcpTransport({ host: node.host, port: node.port, key })),
    );
    this.#events = options.events;
    this.#listen = options.listen ?? true;
    const selfId = () => this.id;
    this.gateway = new Gateway({
      get selfId() {
        return selfId();
      },
      local: this.local,
      registry: this.registry,
      peers: this.peers,
      view: () => this.#view,
      admitWrite: () => this.#admitWrite(),
      defaultCopies: () => this.config?.copies ?? COPIES_DEFAULT,
      defaultBlockSizeShift: () => this.config?.blockSizeShift ?? BLOCK_SIZE_SHIFT_DEFAULT,
      now: () => this.now(),
      monotonic: () => this.monotonic(),
      viewChanges: this.viewChanges,
      repaired: (oid, node, detail) => {
        this.repairs++;
        this.logger.warn(`repaired object ${oidToHex(oid)} on ${node}: ${detail}`);
      },
      warn: (line) => this.logger.warn(line),
      clientRequest: () => this.recoveryThrottle.client(),
    });
    this.recovery = new Recovery({
      get selfId() {
        return selfId();
      },
      store: this.store,
      peers: this.peers,
      logger: this.logger,
      locks: this.objectLocks,
      throttle: this.recoveryThrottle,
      copies: (oid) => this.gateway.copiesOf(oid),
      format: () => this.config?.ctimeMs,
      heldFor: (oid, view) => this.#holds?.absentHolders(oid, view) ?? [],
      observeVersion: (version) => this.gateway.observeVersion(version),
      now: () => this.now(),
      monotonic: () => this.monotonic(),
      completed: (epoch) => void this.#reportRecovered(epoch),
    });
    this.member = options.driver
      ? options.driver(this)
      : options.cluster
      ? new ClusterMember(this, {
        ...options.cluster,
        ...(key
          ? {
            seal: new DatagramSeal(key),
            onRefusal: (reason, sender) => this.refusals.reportDatagram(reason, sender),
          }
          : {}),
      })
      : undefined;
    this.scrubber = new Scrubber(scrubContextOf(this), options.scrub);
    this.#clockProbe = new ClockProbe({
      get id() {
        return selfId();
      },
      members: () => this.#view.nodes,
      peers: this.peers,
      adoptTimeline: (ms) => this.gateway.adoptTimeline(ms),
      observeVersion: (version) => this.gateway.observeVersion(version),
      monotonic: () => this.monotonic(),
      warn: (line) => this.logger.warn(line),
      debug: (line) => this.logger.debug(line),
    });
    this.vdis = new VdiService({
      registry: this.registry,
      gateway: this.gateway,
      submit: (event) => this.submitVdiEvent(event),
      exclusive: (work) => this.#withAdminLock(work),
      unknownInode: (oid) => this.#headerDrift.changed(oid),
      formatMs: () => this.config?.ctimeMs,
      // VDI changes need the majority; a strict cluster short of zones still takes them.
      admit: () => {
        if (this.status === "left") throw this.#leftError();
        if (this.status === "minority") {
          throw new SheepdogError(
            ResultCode.HALT,
            "This node is cut off from the majority of the cluster: changes are refused",
          );
        }
        if (this.status === "waiting-for-nodes") {
          throw new SheepdogError(
            ResultCode.WAIT_FOR_JOIN,
            "Waiting for other nodes to join cluster",
          );
        }
        return Promise.resolve();
      },
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
    if (!this.#running) return "stopped";
    // First: nothing else this node does counts for its cluster any more.
    if (this.#leftReason() !== undefined) return "left";
    // Unformatted first: it is what a user must act on, whatever the group is doing.
    if (!this.config) return "waiting-for-format";
    if (this.member) {
      const state = this.member.state;
      if (state === "minority") return "minority";
      if (state !== "primary") return "waiting-for-nodes";
    }
    return "running";
  }

  get config(): ClusterConfig | undefined {
    return this.stateMachine.config;
  }

  /** The VDI table (the state machine's: read it here, change it through events). */
  get registry(): VdiRegistry {
    return this.stateMachine.registry;
  }

  /** Who holds which VDI open, cluster-wide (the state machine's). */
  get locks(): ReadonlyMap<Vid, VdiLock> {
    return this.stateMachine.locks;
  }

  get view(): ClusterView {
    return this.#view;
  }

  /** What the scrub's orphan check reads (orphans.ts). */
  get orphanSource(): OrphanSource {
    return {
      header: (vid) => this.registry.get(vid),
      liveFamily: (vid) => this.registry.family(vid),
      readInode: (vid) => this.vdis.readInode(vid),
    };
  }

  /** This node as the ring sees it. */
  ringNode(): RingNode {
    return {
      id: this.id,
      host: this.host,
      port: this.#port,
      zone: this.#zone ?? defaultZone(this.host, this.#port),
      vnodes: this.#vnodes,
      ...(this.#space === undefined ? {} : { space: this.#space }),
    };
  }

  /**
   * The capacity the node's vnodes follow: its store's filesystem size, read once at start (as
   * the original read its space), so the ring stays put while the disk fills; a restart after
   * growing the disk reweighs. Undefined with fixed vnodes.
   */
  async #capacity(): Promise<number | undefined> {
    if (this.#fixedVnodes) return undefined;
    try {
      const { totalBytes } = await this.store.space();
      return totalBytes > 0 ? totalBytes : undefined;
    } catch (error) {
      this.logger.warn(`capacity unknown (${(error as Error).message}): fixed vnodes`);
      return undefined;
    }
  }

  /** Opens the directory, loads what it holds and starts serving. */
  async start(): Promise<void> {
    await this.#prepareDirectory();
    this.#dirLock = await DirLock.acquire(this.dir, `${this.host}:${this.#port}`);
    try {
      await this.store.open();
      if (this.store.crashSuspects > 0) await this.#loadCrashHolds();
      this.#space = await this.#capacity();
      this.stateMachine.loadConfig(await readConfig(this.dir));
      const security = this.#security;
      this.#server = new ObjectServer((request, peer) => this.handle(request, peer), {
        onError: (message) => this.logger.warn(message),
        onClosed: (peer) => this.#connectionClosed(peer),
        ...(security
          ? {
            access: {
              key: security.key,
              clients: security.clients ?? ClientAddresses.loopbackOnly,
              refusals: this.refusals,
            },
          }
          : {}),
      });
      // The VDI table first: a client that connects (QEMU's driver reconnects every second)
      // must find the node serving, not starting (it would take "shutting down" for an error).
      await this.#loadVdis();
      if (this.#listen) {
        const bound = await this.#server.listen({ host: this.#listenHost, port: this.#port });
        this.#port = bound.port;
      }
      this.#running = true;
      if (this.member) await this.member.start();
      else if (!this.#events) this.#setView(makeView(this.config ? 1 : 0, [this.ringNode()]));
      this.scrubber.startBackground();
      void this.#clockProbe.start();
      // With a group, counted at the first view (installView): reading every inode copy (4 MiB
      // each) here would hold that view, and so the first client, back.
      if (!this.member && !this.#events) void this.#countAllocations();
      this.logger.info(`sheep ${this.id} serving ${this.dir} (${this.status})`);
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Copies a crash left suspect are held while nodes that may hold their lost writes are away. */
  async #loadCrashHolds(): Promise<void> {
    const past = this.member
      ? (await this.member.epochHistory()).map(viewOfEpoch)
      : await this.#events?.pastViews?.() ?? [];
    this.#holds = new CrashHolds(
      {
        selfId: this.id,
        crashSuspectSince: (oid) => this.store.crashSuspectSince(oid),
        copies: (oid) => this.gateway.copiesOf(oid),
      },
      past,
      await this.#forgottenNodes(),
    );
    this.logger.info(
      `${this.store.crashSuspects} object(s) may lack writes a crash lost: each is checked ` +
        "against its other holders (and held while one of them is away)",
    );
  }

  /** Nodes an operator declared gone for good (`forgetNodes`). */
  async #forgottenNodes(): Promise<string[]> {
    const text = await fsp.readFile(path.join(this.dir, FORGOTTEN_NODES_FILE), "utf8")
      .catch(() => "[]");
    try {
      const ids = JSON.parse(text) as unknown;
      return Array.isArray(ids) ? ids.filter((id): id is string => typeof id === "string") : [];
    } catch {
      return [];
    }
  }

  /**
   * `nodes` are gone for good (`shepherd cluster forget`): copies a crash left suspect here stop
   * waiting for them (crash_holds.ts), now and after a restart, and recovery runs again to check
   * them against the nodes that are there. Resolves with how many objects were held before.
   */
  async forgetNodes(nodes: readonly string[]): Promise<number> {
    const known = await this.#forgottenNodes();
    const all = [...new Set([...known, ...nodes])].sort();
    await writeFileDurably(path.join(this.dir, FORGOTTEN_NODES_FILE), JSON.stringify(all));
    const held = this.recovery.status().waiting;
    if (!this.#holds) return 0;
    this.#holds.forget(nodes);
    this.logger.warn(
      `an operator declared ${nodes.join(", ")} gone for good: ${held} object(s) held for them ` +
        "are checked against the nodes that are here (writes only those nodes had are lost)",
    );
    if (held > 0 && this.config && this.#view.nodes.some((n) => n.id === this.id)) {
      this.recovery.start(this.#view);
    }
    return held;
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

  /** Rebuilds the VDI table from the inode objects this node stores and the table it kept. */
  async #loadVdis(): Promise<void> {
    const known = new Map<Vid, InodeHeader>();
    try {
      for (const header of await this.#vdiTable.read()) known.set(header.vdiId, header);
    } catch (error) {
      this.logger.warn(`cannot read the VDI table kept here: ${(error as Error).message}`);
    }
    const headers: InodeHeader[] = [];
    for (const oid of await this.store.list()) {
      if (!isVdiOid(oid)) continue;
      try {
        const header = decodeInodeHeader(await this.store.read(oid, 0, INODE_HEADER_SIZE));
        if (header.vdiId !== 0) headers.push(header);
      } catch (error) {
        // A bad local inode is learned from the peers' state, or repaired from their copies
        // and announced to them if none knew it (header_drift.ts).
        this.#headerDrift.unloadable(oid);
        this.logger.warn(`cannot load VDI from ${oidToHex(oid)}: ${(error as Error).message}`);
      }
    }
    // The inodes, where newer than (or as new as) what the table kept, as a merge would. One
    // older than the format, which the table lacks, is of a VDI the format erased.
    for (const header of headers) {
      const kept = known.get(header.vdiId);
      if (!kept && predatesFormat(header.createTime, this.config?.ctimeMs)) {
        this.logger.warn(
          `inode of VDI '${header.name}' (vid ${header.vdiId.toString(16)}) is older than the ` +
            "cluster's format: a copy of a VDI the format erased, not loaded",
        );
        continue;
      }
      if (!kept || compareHeaders(header, kept) >= 0) known.set(header.vdiId, header);
    }
    // A crash in the middle of a snapshot or rollback can leave two working inodes of a name:
    // loading settles that, by what this node knows now. Its kept table may be older than the
    // cluster's (a crash before its write): a snapshot the cluster applied is a working VDI in
    // it, and settling against that drops the new working inode, which every holder then
    // forgets (simulation, snapshot seed 5873). Those of its own copies are looked at again
    // once its peers' states are in (HeaderDrift): announced if no node keeps them, dropped
    // again by every node if they are a failed change's.
    const held = new Set(headers.map((header) => header.vdiId));
    for (const dropped of this.stateMachine.loadHeaders(known.values())) {
      if (held.has(dropped.vdiId)) this.#headerDrift.changed(vdiOid(dropped.vdiId));
    }
  }

  /** Counts the inode copies loaded at start, so the first listing need not read them. */
  async #countAllocations(): Promise<void> {
    try {
      await this.allocations.counts(this.registry.live().map((header) => header.vdiId));
    } catch (error) {
      this.logger.debug(`allocation counts not ready: ${(error as Error).message}`);
    }
  }

  /**
   * Stops serving and releases the directory. `graceful: false` skips saying goodbye to the
   * group, as a crash would (tests use it to kill a node).
   */
  async stop(options: { graceful?: boolean } = {}): Promise<void> {
    this.#running = false;
    this.#headerDrift.stop();
    this.#clockProbe.stop();
    this.gateway.close();
    this.recovery.stop();
    await this.scrubber.stop();
    await (this.#leaving ?? this.member?.stop({ leave: options.graceful ?? true }));
    // A table write still due is done on a clean stop (a crash, graceful: false, loses it).
    await this.#vdiTable.close(options.graceful ?? true);
    await this.#server?.close();
    this.#server = undefined;
    await this.peers.close();
    await this.store.close();
    await this.#dirLock?.release();
    this.#dirLock = undefined;
  }

  /** Applies a VDI event on every node (through the group), or directly when alone. */
  submitVdiEvent(event: VdiEvent): Promise<VdiChange> {
    return this.#submit<VdiChange>({ type: "vdi", event });
  }

  #submit<T>(event: ClusterEvent): Promise<T> {
    if (this.member) return this.member.propose<T>(event);
    if (this.#events) return this.#events.propose<T>(event);
    return Promise.resolve().then(() => this.applyEvent(event) as Promise<T>);
  }

  /**
   * Applies one delivered cluster event through the state machine, then performs the I/O it
   * asks for. Deterministic: every node gets the same result or the same error, so the VDI
   * table and config stay identical everywhere.
   */
  async applyEvent(event: ClusterEvent): Promise<unknown> {
    const { result, effects } = this.stateMachine.apply(event);
    await this.#perform(effects);
    this.stateChanges.notify();
    if (event.type === "mkfs") {
      if (!this.member && !this.#events) this.#setView(makeView(1, [this.ringNode()]));
      this.logger.info(
        `cluster formatted: ${event.config.copies} copies, object size 2^${event.config.blockSizeShift}`,
      );
    }
    return result;
  }

  /** Performs what the state machine asked for, in its order. */
  async #perform(effects: readonly ClusterEffect[]): Promise<void> {
    for (const effect of effects) {
      switch (effect.type) {
        case "erase-store":
          // A recovery under way listed copies of the format erased here: it starts again,
          // its pulls of them land nothing (`Run.format`).
          this.recovery.stop();
          for (const oid of await this.store.list()) await this.store.remove(oid);
          await this.#vdiTable.remove();
          if (this.#view.nodes.some((node) => node.id === this.id)) {
            this.recovery.start(this.#view);
          }
          break;
        case "remember-vdis":
          this.#vdiTable.changed();
          break;
        case "persist-config":
          await writeConfig(this.dir, effect.config);
          break;
        case "purge":
          this.#purge(effect.epoch);
          break;
      }
    }
  }

  /**
   * Runs `work` (a VDI change) holding the cluster-wide VDI-administration lock: what one sheep
   * writes before its event is invisible to another's plan, so two changes at once could write
   * one vid. The lock is the attach lock of vid 0 (no VDI has it); it goes with its node if that
   * node leaves the cluster.
   */
  async #withAdminLock<T>(work: () => Promise<T>, holder = "vdi-admin"): Promise<T> {
    // One name per user of the lock on this node: a lock held under this name is taken for
    // this user's own (an answer lost on the way, below).
    const client = `${holder}@${this.id}`;
    const deadline = this.monotonic() + ADMIN_LOCK_WAIT_MS;
    for (;;) {
      try {
        await this.lockVdi(ADMIN_LOCK_VID, client);
        break;
      } catch (error) {
        // An answer lost on the way (the lock applied cluster-wide while this node caught up,
        // or etcd's answer lost) may still have taken the lock: the state says.
        if (this.locks.get(ADMIN_LOCK_VID)?.client === client) break;
        if (!isResult(error, ResultCode.VDI_LOCKED) || this.monotonic() > deadline) throw error;
        // Woken when the state changes (the other change's unlock is applied), not polled.
        await this.stateChanges.until(
          () => !this.locks.has(ADMIN_LOCK_VID),
          Math.max(0, deadline - this.monotonic()),
        );
      }
    }
    try {
      return await work();
    } finally {
      await this.unlockVdi(ADMIN_LOCK_VID, client).catch(() => undefined);
    }
  }

  /** Takes the one-writer lock of `vid` for `client`; VDI_LOCKED names the holder. */
  lockVdi(vid: Vid, client: string, options: { force?: boolean } = {}): Promise<void> {
    return this.#submit({
      type: "lock",
      vid,
      client,
      node: this.id,
      sinceMs: this.now(),
      force: options.force ?? false,
    });
  }

  unlockVdi(vid: Vid, client?: string): Promise<void> {
    return this.#submit(
      client === undefined ? { type: "unlock", vid } : { type: "unlock", vid, client },
    );
  }

  /**
   * Releases `client`'s lock of `vid`: a client that leaves while this node cannot change the
   * cluster (a minority, a view forming) is released as soon as it can, at the next view,
   * instead of keeping its VDI attached for good.
   */
  async releaseVdi(vid: Vid, client: string): Promise<void> {
    try {
      await this.unlockVdi(vid, client);
    } catch (error) {
      this.#pendingReleases.set(`${vid}/${client}`, { vid, client });
      this.logger.info(
        `release of VDI ${vid.toString(16)} by ${client} waits for the cluster: ` +
          (error as Error).message,
      );
    }
  }

  readonly #pendingReleases = new Map<string, { vid: Vid; client: string }>();

  /**
   * Takes `vid`'s lock for one of our clients' connections ("host:port"): it lasts as long as
   * that connection (or until released), so a command killed half-way (`img convert -n`) leaves
   * nothing attached. The lock follows the working VDI (a snapshot or rollback moves it), so what
   * a connection holds is looked up by holder when it closes. A peer that is not a connection of
   * this sheep's server (an in-process client) keeps it until it releases it.
   */
  async lockForConnection(vid: Vid, peer: string): Promise<void> {
    const tracked = this.#server?.connected(peer) === true;
    await this.lockVdi(vid, peer);
    // Closed while the lock went through the cluster: its end found nothing to release.
    if (tracked && !this.#server!.connected(peer)) await this.releaseVdi(vid, peer);
  }

  /** Releases a lock `lockForConnection` took, at its holder's request. */
  async releaseForConnection(vid: Vid, peer: string): Promise<void> {
    if (this.locks.get(vid)?.client === peer) await this.unlockVdi(vid, peer);
  }

  #connectionClosed(peer: string): void {
    for (const lock of [...this.locks.values()]) {
      if (lock.client === peer) void this.releaseVdi(lock.vid, peer);
    }
  }

  /** The group standing changed: a healed partition may take the held-back releases now. */
  statusChanged(): void {
    if (this.#pendingReleases.size > 0 && this.member?.state === "primary") {
      void this.#retryReleases();
    }
  }

  /** Retries the releases a minority or a forming view held back. */
  async #retryReleases(): Promise<void> {
    for (const [key, { vid, client }] of [...this.#pendingReleases]) {
      if (this.locks.get(vid)?.client !== client) {
        this.#pendingReleases.delete(key); // released meanwhile, or taken by someone else
        continue;
      }
      try {
        await this.unlockVdi(vid, client);
        this.#pendingReleases.delete(key);
      } catch {
        return; // still not taking changes: the next view tries again
      }
    }
  }

  /** Formats the cluster: every node persists the config. */
  async makeFs(options: FormatOptions): Promise<void> {
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
    const config: ClusterConfig = {
      ctimeMs: this.now(),
      flags: options.strict ? FLAG_STRICT : 0,
      copies: options.copies,
      blockSizeShift: shift,
      shutdown: false,
    };
    await this.#submit({ type: "mkfs", config, force: options.force });
  }

  /** True when a strict cluster has fewer zones than copies (writes are refused then). */
  get redundancyReduced(): boolean {
    const copies = this.config?.copies ?? 0;
    return this.#view.ring.zones < copies;
  }

  #admitWrite(): void {
    const status = this.status;
    if (status === "left") throw this.#leftError();
    if (status === "minority") {
      throw new SheepdogError(
        ResultCode.HALT,
        "This node is cut off from the majority of the cluster: writes are refused",
      );
    }
    if (status === "waiting-for-nodes") {
      throw new SheepdogError(ResultCode.WAIT_FOR_JOIN, "Waiting for other nodes to join cluster");
    }
    if (this.redundancyReduced && ((this.config?.flags ?? 0) & FLAG_STRICT) !== 0) {
      throw new SheepdogError(
        ResultCode.HALT,
        `Writes are refused: ${this.#view.ring.zones} zone(s) alive, the strict cluster needs ${this.config?.copies}`,
      );
    }
  }

  /** A new view from the group: switch placement, drop locks of departed nodes, recover. */
  installView(view: ClusterView, options: { previousMembers: ReadonlySet<string> }): Promise<void> {
    const ids = new Set(view.nodes.map((n) => n.id));
    this.#setView(view);
    for (const left of options.previousMembers) if (!ids.has(left)) void this.peers.forget(left);
    this.logger.info(`epoch ${view.epoch}: ${view.nodes.map((n) => n.id).join(", ")}`);
    // Every view, the first after a restart included, compares every copy with its holders.
    if (this.config && ids.has(this.id)) this.recovery.start(view);
    if (this.#pendingReleases.size > 0) void this.#retryReleases();
    if (this.#firstEpoch === undefined) {
      this.#firstEpoch = view.epoch;
      this.#tellPeersBehind();
    }
    this.#headerDrift.retry();
    // Once, at the first view this process installs: only then can its own attachments be
    // ones it lost (a node formatted later has none from before).
    if (!this.#attachmentsChecked && ids.has(this.id)) {
      this.#attachmentsChecked = true;
      if (this.config) void this.#releaseLostAttachments();
      void this.#countAllocations();
    }
    return Promise.resolve();
  }

  #attachmentsChecked = false;

  /**
   * After a restart, the NBD attachments this sheep had are gone with its old process (a
   * connection does not survive it), but their locks are the cluster's and outlived it: they
   * are released, so the VDIs can be attached again. (An old client's lock names only its
   * address; QEMU's driver reconnects and goes on writing under it, so those stay.)
   */
  async #releaseLostAttachments(): Promise<void> {
    for (const lock of [...this.locks.values()]) {
      if (lock.vid === ADMIN_LOCK_VID || lock.node !== this.id) continue;
      if (!/:\d+$|^unix@/.test(lock.client)) continue; // an old client's: an address alone
      try {
        await this.unlockVdi(lock.vid, lock.client);
        this.logger.info(
          `released VDI ${lock.vid.toString(16)}: its NBD client ${lock.client} was attached ` +
            "before this sheep restarted",
        );
      } catch (error) {
        this.logger.warn(
          `Cannot release VDI ${lock.vid.toString(16)} of ${lock.client}: ` +
            `${(error as Error).message} (shepherd vdi lock break releases it by hand)`,
        );
      }
    }
  }

  /** Switches placement to `view`; the state machine follows the membership. */
  #setView(view: ClusterView): void {
    this.#view = view;
    this.stateMachine.installView(view.epoch, view.nodes.map((n) => n.id));
    this.viewChanges.notify();
    // A member that joined may be ahead: its timeline is taken in before most writes go out.
    void this.#clockProbe.probe();
  }

  /** Notified at every new view. */
  readonly viewChanges = new Changes();

  /** Notified whenever the replicated state changed (an event applied, a peer's state merged). */
  readonly stateChanges = new Changes();

  async #reportRecovered(epoch: number): Promise<void> {
    // Purging waits for every node's report, so a lost one is retried while the epoch lasts.
    for (let attempt = 0; attempt < 20 && this.#running && this.#view.epoch === epoch; attempt++) {
      try {
        await this.#submit({ type: "recovered", node: this.id, epoch });
        return;
      } catch (error) {
        this.logger.debug(
          `recovery report for epoch ${epoch} not delivered: ${(error as Error).message}`,
        );
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  }

  /** Every node recovered `epoch`: leftovers of earlier epochs go. */
  #purge(epoch: number): void {
    const view = this.#view;
    // Off the event queue: a purge lists every member's copies and must not hold up the views
    // and events behind it (a member that went away meanwhile would block them all).
    void this.recovery.purge(view).then(({ removed }) => {
      if (removed > 0) {
        this.logger.info(`all nodes recovered epoch ${epoch}: purged ${removed} leftover objects`);
      }
    }, (error) => this.logger.warn(`purge of epoch ${epoch} failed: ${(error as Error).message}`));
  }

  /** The state a joining peer fetches (GET_CLUSTER_STATE). */
  clusterState(): ClusterState {
    const first = this.#firstEpoch;
    return {
      seq: this.member?.lastSeq ?? 0,
      ...this.stateMachine.snapshot(),
      ...(first === undefined ? {} : { firstEpoch: first }),
    };
  }

  /**
   * Merges a peer's state in: its config if we have none, its VDI headers, its locks. A state of
   * another format is refused whole (`ClusterStateMachine.merge` throws); a newer one means this
   * node missed a format, and it leaves (`#leaveOlderFormat`).
   */
  async mergeState(state: ClusterState): Promise<void> {
    if (compareFormats(this.config, state.config) === "mine older") {
      this.#leaveOlderFormat(state.config!);
    }
    await this.#perform(this.stateMachine.merge(state));
    const ahead = this.stateMachine.aheadOf(state.headers);
    if (ahead.length > 0 && state.firstEpoch !== undefined) {
      this.#unheard.push({ since: state.firstEpoch, headers: ahead });
      this.#tellPeersBehind();
    }
    this.stateChanges.notify();
  }

  /** Why this node left its cluster on its own (`#leaveOlderFormat`), if it did. */
  #olderFormat: string | undefined;
  /** The driver's stop once this node left on its own: `stop` waits for it. */
  #leaving: Promise<void> | undefined;

  /**
   * This node's store is of a format the cluster replaced while it was away (a `mkfs --force`
   * it missed): its objects, VDIs and attach locks belong to no VDI the cluster has, and taken in
   * they would bring erased VDIs back or serve their bytes as a new VDI's. As Sheepdog refused
   * such a node at its join, it takes no part: out of the group (the others' next view is
   * without it), clients and peers refused, its store left as it is for the operator.
   */
  #leaveOlderFormat(theirs: ClusterConfig): void {
    if (this.#olderFormat !== undefined) return;
    const at = (config: ClusterConfig) => new Date(config.ctimeMs).toISOString();
    this.#olderFormat = `its store ${this.dir} holds the format of ${at(this.config!)}; the ` +
      `cluster was formatted again at ${at(theirs)} while it was away. Move the directory away ` +
      "and start the sheep on an empty one to rejoin";
    this.logger.error(`left the cluster: ${this.#olderFormat}`);
    this.#headerDrift.stop();
    this.recovery.stop();
    // Off the driver's own call stack: this runs inside its catch-up from peers.
    this.#leaving = new Promise<void>((resolve) => setTimeout(resolve, 0))
      .then(() => Promise.all([this.scrubber.stop(), this.member?.stop({ leave: true })]))
      .then(() => {}, (error) => this.logger.warn(`leaving: ${(error as Error).message}`));
    this.viewChanges.notify();
  }

  /**
   * What peers lack of this node's table, announced (`HeaderDrift.peersBehind`) to those that
   * ran before this node's first view: they never fetch its state. A peer that came in the same
   * view fetches it (and one not in any view yet will), so it is left out: announcing to it
   * would make every node of a cluster that starts at once announce most of its table.
   */
  #tellPeersBehind(): void {
    const first = this.#firstEpoch;
    if (first === undefined) return;
    for (const { since, headers } of this.#unheard.splice(0)) {
      if (since < first) this.#headerDrift.peersBehind(headers);
    }
  }

  /**
   * Local replicas, with recovery in front: a copy that is missing or not yet checked against its
   * holders is brought up to date before a client touches it.
   */
  #localObjects(): LocalObjects {
    const store = this.store;
    const locks = this.objectLocks;
    const counts = this.allocations;
    const held = (oid: Oid): void => this.#holds?.check(oid, this.#view);
    /**
     * Runs `work` once the copy may be served: not held (crash_holds.ts), and brought up to date
     * if recovery still has it due. Without a turn of the microtask queue when nothing is due:
     * every client read and write passes here.
     */
    const current = <T>(oid: Oid, work: () => Promise<T>): Promise<T> =>
      promiseOf(() => {
        held(oid);
        if (this.recovery.active) return this.recovery.ensure(oid).then(work);
        return work();
      });
    /**
     * A change to the local copy, under its lock (shared: writes to other blocks go on; exclusive
     * for a change that depends on the copy as it is); a full disk is said in the log.
     */
    const stored = <T>(oid: Oid, work: () => Promise<T>, exclusive = false): Promise<T> =>
      (exclusive ? locks.exclusive(oid, work) : locks.shared(oid, work)).catch((error) => {
        if (isResult(error, ResultCode.NO_SPACE)) this.#noteNoSpace(oid, error);
        throw error;
      });
    /**
     * A repair's copy replaces only the copy the repair read: a write that reached this copy
     * since (another gateway's: their locks do not exclude each other) would be lost under a copy
     * read before it. Checked with writes held off (the lock is exclusive).
     */
    const stillReplacing = async (oid: Oid, replacing: ReplacedCopy): Promise<void> => {
      const now = await store.meta(oid);
      const same = replacing === null
        ? now === undefined
        : now !== undefined && sameCopy(now, replacing);
      if (same) return;
      throw new SheepdogError(
        ResultCode.AGAIN,
        `Copy of ${oidToHex(oid)} on ${this.id} changed since the repair read it (` +
          (now ? `now version ${now.version}` : "now gone") + "): not replaced",
      );
    };
    return {
      read: (oid, offset, length) => current(oid, () => store.read(oid, offset, length)),
      readNow: (oid, offset, length) => {
        held(oid);
        return this.recovery.active ? undefined : store.readNow(oid, offset, length);
      },
      // Writes and creates of an inode move its allocation count with them.
      write: (oid, data, offset, version) =>
        current(oid, () =>
          stored(
            oid,
            () => counts.write(oid, data, offset, () => store.write(oid, data, offset, version)),
          )),
      // A create replaces the whole copy: nothing to bring up to date first (a pull due meanwhile
      // finds the newer version and leaves it).
      create: (oid, data, offset, { replacing, ...options }) =>
        stored(
          oid,
          async () => {
            if (replacing !== undefined) await stillReplacing(oid, replacing);
            return counts.create(oid, data, offset, () => store.create(oid, data, offset, options));
          },
          replacing !== undefined,
        ),
      remove: (oid) => locks.shared(oid, () => store.remove(oid)),
      healBlocks: (oid, blocks) => stored(oid, () => store.healBlocks(oid, blocks)),
      readCopy: (oid, offset, length) => {
        held(oid);
        return store.read(oid, offset, length);
      },
      salvage: (oid, options) => {
        held(oid);
        return store.salvage(oid, options);
      },
      meta: (oid) => store.meta(oid),
      flush: (vid) => store.flush(vid),
    };
  }

  /** A full disk is said once in a while in the log (every failed write is counted). */
  #noteNoSpace(oid: Oid, error: Error): void {
    const unlogged = this.#noSpaceLog.say(this.monotonic());
    if (unlogged === undefined) return;
    this.logger.error(
      `disk full on ${this.id}: cannot store ${oidToHex(oid)}: ${error.message}` +
        (unlogged > 0 ? ` (and ${unlogged} more since the last such line)` : ""),
    );
  }

  /** Throws the reason this sheep cannot serve clients now (unformatted, waiting, stopping). */
  checkServing(): void {
    switch (this.status) {
      case "running":
      case "minority": // reads still work; writes are refused by the gateway
        return;
      case "waiting-for-format":
        throw new SheepdogError(
          ResultCode.WAIT_FOR_FORMAT,
          "Waiting for cluster to be formatted (run: shepherd mkfs --copies=N)",
        );
      case "waiting-for-nodes":
        throw new SheepdogError(
          ResultCode.WAIT_FOR_JOIN,
          "Waiting for other nodes to join cluster (or run: shepherd cluster recover force)",
        );
      case "left":
        throw this.#leftError();
      default:
        throw new SheepdogError(ResultCode.SHUTDOWN, "The sheep is shutting down");
    }
  }

  /** What clients of a sheep that left its cluster on its own are told (one line). */
  #leftError(): SheepdogError {
    return leftClusterError(this.#leftReason() ?? "it stopped");
  }

  /** Why this node left its cluster on its own (its format, or its driver's reason), if it did. */
  #leftReason(): string | undefined {
    return this.#olderFormat ?? this.member?.leftReason;
  }

  /** VDI I/O into this sheep's gateway without an object-protocol hop (the NBD export). */
  get localAccess(): GatewayAccess {
    return this.#localAccess ??= new GatewayAccess(
      this.gateway,
      this.registry,
      () => this.checkServing(),
    );
  }
  #localAccess: GatewayAccess | undefined;

  /** The local replica operations: the gateway's and peer requests' one way to the store. */
  get local(): LocalObjects {
    return this.#local ??= this.#localObjects();
  }
  #local: LocalObjects | undefined;

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
