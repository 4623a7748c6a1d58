/**
 * The data path under simulation: a cluster of real `Sheep` objects, each on a `MemDisk`, talking
 * through in-memory transports that drop, delay and partition, ordered by a simulated group (an
 * event bus and views installed by the simulation), on virtual time (virtual_time.ts). A client
 * (`VdiIo` through the sheep's gateways; with `qemu`, QEMU 5.2's driver over the object protocol
 * to one sheep, qemu_driver_client.ts) writes, reads and flushes one VDI while faults chosen by
 * the seed hit the cluster: crashes with power loss (unsynced writes dropped or torn), rot, full disks,
 * failed syncs, failing reads, lossy links, partitions, nodes leaving the view and coming back.
 *
 * Checkers (each shown to fail on a broken variant in data_path_test.ts):
 * 1. an acknowledged write that a flush made durable is never lost ("lost-flushed");
 * 2. a read never returns bytes the model (vdi_model.ts) does not allow ("wrong-bytes"), and an
 *    operation fails only while a fault justifies it ("unjustified-error");
 * 3. once the faults stop and the last view settles (recovery done and leftovers purged on every
 *    node), every object's copies are identical on its targets and nowhere else, and the whole VDI
 *    reads the same through every sheep, as the model allows ("not-converged").
 * An operation that never finishes is "hung".
 *
 * Everything the seed chooses replays: the schedule, the bytes, the network's and the crashes'
 * dice, and time. A failure carries the log of what ran.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { isResult, promiseOf, ResultCode, SheepdogError } from "../../core/errors.ts";
import { type ClusterView, makeView, targetsOf } from "../../core/cluster/view.ts";
import { readFully } from "../../core/store/disk.ts";
import { MemDisk } from "../../core/store/mem_disk.ts";
import type { ObjectMeta } from "../../core/store/object_store.ts";
import { type ObjectAccess, VdiIo } from "../../core/vdi/io.ts";
import { type InodeHeader, isSnapshot } from "../../core/vdi/inode.ts";
import {
  dataOid,
  isDataOid,
  type Oid,
  oidFromHex,
  oidToHex,
  oidToIndex,
  vdiOid,
  type Vid,
} from "../../core/vdi/oid.ts";
import type { SnapshotRef } from "../../core/vdi/registry.ts";
import type { Message } from "../../net/object/header.ts";
import { decodeEvent, encodeEvent } from "../../core/cluster/cluster_events.ts";
import { decodeClusterState, encodeClusterState } from "../../net/sheep/cluster_state.ts";
import type { Connect } from "../../net/sheep/peers.ts";
import type { Logger } from "../../net/sheep/logger.ts";
import { type EventBus, Sheep } from "../../net/sheep/sheep.ts";
import { Prng } from "./prng.ts";
import {
  type DriverConnection,
  type DriverNetwork,
  type QemuCache,
  QemuDriverClient,
} from "./qemu_driver_client.ts";
import { VdiModel } from "./vdi_model.ts";
import { type Outcome, VIRTUAL_START_MS, VirtualTime } from "./virtual_time.ts";

/** Which checker fired. */
export type FailureKind =
  | "lost-flushed"
  | "wrong-bytes"
  | "unjustified-error"
  | "not-converged"
  | "hung";

/** A checker fired: what, and the log of the run up to it. */
export class SimFailure extends Error {
  override name = "SimFailure";
  readonly kind: FailureKind;
  readonly log: readonly string[];

  constructor(kind: FailureKind, message: string, log: readonly string[]) {
    super(`${kind}: ${message}`);
    this.kind = kind;
    this.log = log;
  }
}

/**
 * Deliberately broken products, to show the checkers catch them:
 * - "volatile-sync": object writes never become durable (a datasync that only pretends);
 * - "flip-read": node 0 returns data with one byte flipped after its store verified it;
 * - "no-recovery": no sheep ever runs recovery.
 */
export type Variant = "volatile-sync" | "flip-read" | "no-recovery";

export interface DataPathOptions {
  seed: number;
  nodes?: number;
  copies?: number;
  /** VDI size in objects (1 MiB each). */
  objects?: number;
  variant?: Variant;
  /** Crashes keep a random part of the unsynced writes (default); false drops all of them. */
  tornCrashes?: boolean;
  /**
   * The client also discards ranges (an NBD TRIM: whole objects removed, their table entries
   * cleared). Off by default: the seeds without it replay as they always did.
   */
  discards?: boolean;
  /**
   * The client is QEMU 5.2's driver (qemu_driver_client.ts) over the object protocol, opened with
   * `cache`, instead of `VdiIo` over the gateways' local access.
   */
  qemu?: { cache: QemuCache };
  /**
   * The client also snapshots the VDI now and then (`VdiIo`: `VdiService`'s snapshot, as `img
   * snapshot` asks a sheep; QEMU's driver: its own, `QemuDriverClient.snapshot`) and reads the
   * snapshots, which must hold for good what the VDI held when each was taken. Off by default,
   * as `discards`.
   */
  snapshots?: boolean;
  /**
   * Each node's clock is off by its own amount (`clockOffsets`), as machines' clocks are: a few
   * milliseconds, seconds, or an hour either way. Off by default, as `discards`; drawn from a
   * stream of its own, so a seed's workload and faults are those it has without it.
   */
  clockSkew?: boolean;
}

/**
 * Each node's clock offset in milliseconds for a seed: about one node in three exact, the others
 * off by up to 50 ms, up to 5 s, or about an hour, ahead or behind.
 */
export function clockOffsets(seed: number, nodes: number): number[] {
  const prng = new Prng(seed ^ 0x636c6f63);
  return Array.from({ length: nodes }, () => {
    const sign = prng.pick([-1, 1]);
    switch (prng.int(0, 3)) {
      case 0:
        return 0;
      case 1:
        return sign * prng.int(1, 50);
      case 2:
        return sign * prng.int(51, 5_000);
      default:
        return sign * prng.int(3_500_000, 3_700_000);
    }
  });
}

/** What the workload needs of a client. */
interface SimClient {
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Whole objects inside the range read as zeros after it (an NBD TRIM, a guest's discard). */
  discard(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
}

/** `VdiIo`, as the workload calls it (the promises are its own). */
function vdiIoClient(io: VdiIo): SimClient {
  return {
    read: (offset, length) => io.read(offset, length),
    write: (offset, data) => io.write(offset, data),
    discard: (offset, length) => io.discard(offset, length, { zeroPartial: false }),
    flush: () => io.flush(),
  };
}

/** The address QEMU's driver connects from (an old client is known by its address). */
const QEMU_HOST = "10.0.1.1";

const VDI_NAME = "vm";
const OBJECT_SHIFT = 20;
const OBJECT_BYTES = 2 ** OBJECT_SHIFT;
/** The store's checksum block, the unit a rotted copy loses. */
const BLOCK_BYTES = 4096;
/** Virtual time one client operation may take (the gateway stalls up to 30 s on view changes). */
const OP_LIMIT_MS = 120_000;
/** Virtual time the last view has to settle in once the faults stop. */
const SETTLE_LIMIT_MS = 300_000;
const EMPTY = new Uint8Array(0);
/** Bytes of each inode copy compared byte for byte (header and the start of the table). */
const INODE_BYTES_COMPARED = 64 * 1024;
const VERBOSE = Deno.env.get("SIM_VERBOSE") === "1";
/** An oid (hex) whose copies are described after every step (debugging). */
const TRACE = Deno.env.get("SIM_TRACE");

/** A disk whose object writes never become durable: syncs of anything but new files pretend. */
class VolatileSyncDisk extends MemDisk {
  override syncFile(...args: Parameters<MemDisk["syncFile"]>): void {
    if (args[1].endsWith(".tmp")) super.syncFile(...args);
  }
}

/** One life of a node: a sheep between its start and its crash. */
interface Life {
  readonly sheep: Sheep;
  alive: boolean;
  /** Events and views, applied one after the other as the group delivers them. */
  queue: Promise<unknown>;
}

class SimNode {
  readonly index: number;
  readonly host: string;
  readonly port = 7000;
  readonly dir: string;
  readonly disk: MemDisk;
  life: Life | undefined;
  /** Cut off from everyone and out of the view, but running. */
  away = false;
  /** The views this node installed, across its lives (the group's durable epoch log). */
  readonly views: ClusterView[] = [];
  /** How far this node's clock is off the simulation's time (`DataPathOptions.clockSkew`). */
  clockOffsetMs = 0;

  constructor(index: number, dir: string, disk: MemDisk) {
    this.index = index;
    this.host = `10.0.0.${index + 1}`;
    this.dir = dir;
    this.disk = disk;
  }

  get id(): string {
    return `${this.host}:${this.port}`;
  }

  get up(): boolean {
    return this.life?.alive === true;
  }

  get sheep(): Sheep {
    if (!this.life) throw new Error(`node ${this.index} is down`);
    return this.life.sheep;
  }

  get name(): string {
    return `n${this.index}`;
  }

  /** Where its sheep keeps its objects (net/sheep/sheep.ts): known while the node is down too. */
  get objectDir(): string {
    return path.join(this.dir, "obj");
  }
}

/** Link faults in force. */
interface NetFaults {
  drop: number;
  dropReply: number;
  delay: number;
  delayMaxMs: number;
}

const CALM: NetFaults = { drop: 0, dropReply: 0, delay: 0, delayMaxMs: 0 };

/** Object access that sends each call through a gateway the simulation picks. */
class RoutedAccess implements ObjectAccess {
  readonly #pick: () => Sheep;

  constructor(pick: () => Sheep) {
    this.#pick = pick;
  }

  readObject(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    return this.#pick().localAccess.readObject(oid, offset, length);
  }

  writeObject(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    return this.#pick().localAccess.writeObject(oid, data, offset);
  }

  createObject(oid: Oid, data: Uint8Array, offset: number, cowFrom?: Oid): Promise<void> {
    return this.#pick().localAccess.createObject(oid, data, offset, cowFrom);
  }

  removeObject(oid: Oid): Promise<void> {
    return this.#pick().localAccess.removeObject(oid);
  }

  flush(): Promise<void> {
    return this.#pick().localAccess.flush();
  }

  lookupVdi(name: string, ref?: SnapshotRef): Promise<Vid> {
    return this.#pick().localAccess.lookupVdi(name, ref);
  }
}

/** The simulated cluster, its client, its model and its faults. */
export class DataPathSim {
  readonly seed: number;
  readonly copies: number;
  readonly variant: Variant | undefined;
  readonly tornCrashes: boolean;
  readonly discards: boolean;
  readonly qemuCache: QemuCache | undefined;
  readonly time = new VirtualTime();
  readonly nodes: SimNode[] = [];
  readonly log: string[] = [];
  readonly model: VdiModel;
  /** Pin every client call to one node's gateway (scripted scenarios); else the seed picks. */
  route: number | undefined;
  /**
   * Scripted scenarios: called for every request before it is delivered; returning true loses
   * it (the sender sees a network error), as a lossy link would.
   */
  lose: ((from: SimNode, to: SimNode, request: Message) => boolean) | undefined;
  /**
   * Scripted scenarios with QEMU's driver: called for each of its requests before it is
   * delivered ("request") and once it was handled ("reply"); returning true breaks the
   * driver's connection there.
   */
  loseDriver: ((to: SimNode, request: Message, at: "request" | "reply") => boolean) | undefined;
  net: NetFaults = { ...CALM };
  readonly partitions = new Set<string>();
  /** Nodes whose disk is full, whose next sync fails, whose reads of some object fail. */
  readonly full = new Set<SimNode>();
  readonly syncFaults = new Set<SimNode>();
  readonly readFaults = new Map<SimNode, string>();
  epoch = 0;
  /** The working VDI's vid (a snapshot moves it). */
  vid: Vid = 0;
  readonly snapshotting: boolean;
  /** Nodes' clocks are off, and are set now and then (`DataPathOptions.clockSkew`). */
  readonly clockSkew: boolean;
  /** Every vid the working VDI has had, the current one last. */
  readonly #chain: Vid[] = [];
  /** The snapshots taken, with what each may be read as. */
  readonly #snapshots: { tag: string; vid: Vid; image: VdiModel }[] = [];
  #snapshotsTried = 0;
  /** Copies rotted in this run. */
  rots = 0;
  readonly #prng: Prng;
  readonly #netPrng: Prng;
  readonly #crashPrng: Prng;
  readonly #routePrng: Prng;
  /** QEMU's driver: which member it reconnects to, and its link's dice. */
  readonly #driverPrng: Prng;
  /**
   * Per node: the last acknowledged write (the model's sequence number) before the last
   * successful flush while it was a member. A flush syncs the members' copies only.
   */
  readonly #syncedThrough = new Map<SimNode, number>();
  #io: VdiIo | undefined;
  #qemu: QemuDriverClient | undefined;
  #client: SimClient | undefined;
  /** The sheep QEMU's driver talks to. */
  #driverNode: SimNode | undefined;
  #driverPort = 50_000;
  #root = "";

  private constructor(options: DataPathOptions) {
    this.seed = options.seed;
    this.#prng = new Prng(options.seed);
    this.#netPrng = new Prng(options.seed ^ 0x6e6e6e6e);
    this.#crashPrng = new Prng(options.seed ^ 0x63636363);
    this.#routePrng = new Prng(options.seed ^ 0x72727272);
    this.#driverPrng = new Prng(options.seed ^ 0x71656d75);
    const nodes = options.nodes ?? this.#prng.int(3, 5);
    this.copies = options.copies ?? this.#prng.int(2, Math.min(3, nodes));
    const objects = options.objects ?? this.#prng.int(3, 6);
    this.variant = options.variant;
    this.tornCrashes = options.tornCrashes ?? true;
    this.discards = options.discards ?? false;
    this.qemuCache = options.qemu?.cache;
    this.snapshotting = options.snapshots ?? false;
    this.clockSkew = options.clockSkew ?? false;
    this.model = new VdiModel(objects * OBJECT_BYTES, OBJECT_BYTES);
    for (let i = 0; i < nodes; i++) {
      const disk = this.variant === "volatile-sync" ? new VolatileSyncDisk() : new MemDisk();
      this.nodes.push(new SimNode(i, "", disk));
    }
    if (options.clockSkew) {
      clockOffsets(options.seed, nodes).forEach((offset, i) =>
        this.nodes[i]!.clockOffsetMs = offset
      );
    }
  }

  /** `node`'s clock: the simulation's time, off by the node's offset. */
  #clockOf(node: SimNode): number {
    return this.time.now + node.clockOffsetMs;
  }

  get prng(): Prng {
    return this.#prng;
  }

  /** Runs `fn` on a new simulation (`create`), disposed of afterwards whatever happens. */
  static async with<T>(options: DataPathOptions, fn: (sim: DataPathSim) => Promise<T>): Promise<T> {
    const sim = await DataPathSim.create(options);
    try {
      return await fn(sim);
    } finally {
      await sim.dispose();
    }
  }

  /** Builds and formats the cluster and creates the VDI; the caller must `dispose()` it. */
  static async create(options: DataPathOptions): Promise<DataPathSim> {
    const sim = new DataPathSim(options);
    sim.time.install();
    try {
      await sim.#setUp();
    } catch (error) {
      await sim.dispose();
      throw error;
    }
    return sim;
  }

  async #setUp(): Promise<void> {
    this.#root = await fsp.mkdtemp(path.join(os.tmpdir(), "sheepdog-datapath-"));
    for (const [i, node] of this.nodes.entries()) {
      const dir = path.join(this.#root, `n${i}`);
      (node as { dir: string }).dir = dir;
      await this.#startLife(node);
    }
    this.note(
      `seed ${this.seed}: ${this.nodes.length} nodes, ${this.copies} copies, ` +
        `${this.model.size / OBJECT_BYTES} objects of 1 MiB${
          this.variant ? `, ${this.variant}` : ""
        }${this.qemuCache ? `, QEMU's driver with cache=${this.qemuCache}` : ""}${
          this.nodes.some((n) => n.clockOffsetMs !== 0)
            ? `; clocks off by ${
              this.nodes.map((n) => `${n.name} ${n.clockOffsetMs} ms`).join(", ")
            }`
            : ""
        }`,
    );
    const first = this.nodes[0]!.sheep;
    // Formatting writes every node's config file: real I/O, awaited outside the time driver.
    await first.makeFs({
      copies: this.copies,
      blockSizeShift: OBJECT_SHIFT,
      force: false,
      strict: false,
    });
    for (const node of this.nodes) await node.life!.queue;
    await this.#newView(this.nodes);
    const created = first.vdis.change({
      type: "create",
      name: VDI_NAME,
      sizeBytes: this.model.size,
      copies: this.copies,
      blockSizeShift: OBJECT_SHIFT,
      nowMs: this.#clockOf(this.nodes[0]!),
    });
    this.vid = this.#expectOk(await this.time.run(created, OP_LIMIT_MS), "create the VDI");
    this.#chain.push(this.vid);
    if (this.qemuCache !== undefined) {
      const opened = QemuDriverClient.open(this.#driverNetwork(), VDI_NAME, {
        cache: this.qemuCache,
      });
      this.#qemu = this.#expectOk(await this.time.run(opened, OP_LIMIT_MS), "open the VDI");
      this.#client = this.#qemu;
      return;
    }
    this.#io = this.#expectOk(
      await this.time.run(VdiIo.open(this.#access(), VDI_NAME), OP_LIMIT_MS),
      "open the VDI",
    );
    this.#client = vdiIoClient(this.#io);
  }

  #expectOk<T>(outcome: Outcome<T>, what: string): T {
    if (outcome.kind === "ok") return outcome.value;
    const why = outcome.kind === "error" ? message(outcome.error) : outcome.why;
    throw this.fail(outcome.kind === "hung" ? "hung" : "unjustified-error", `${what}: ${why}`);
  }

  note(line: string): void {
    const text = this.#root ? line.replaceAll(this.#root, "<dir>") : line;
    this.log.push(`[${this.time.now - VIRTUAL_START_MS} ms] ${text}`);
    if (Deno.env.get("SIM_LIVE")) console.error(this.log.at(-1));
  }

  fail(kind: FailureKind, text: string): SimFailure {
    this.note(`FAILED ${kind}: ${text}`);
    return new SimFailure(kind, text, this.log);
  }

  // ---- Lives, the network and the group ----

  async #startLife(node: SimNode): Promise<void> {
    // The links and the bus ask for the life the sheep belongs to (it exists once started).
    const born: { life?: Life } = {};
    const sheep = new Sheep({
      dir: node.dir,
      host: node.host,
      port: node.port,
      listen: false,
      disk: node.disk.attach(),
      now: () => this.#clockOf(node),
      monotonic: () => this.time.now,
      logger: this.#logger(node),
      connect: this.#connector(node, () => born.life),
      events: this.#bus(node, () => born.life),
    });
    this.#applyVariant(node, sheep);
    // Real file I/O (config, lock): awaited outside the time driver, so no timer fires meanwhile.
    await sheep.start();
    born.life = { sheep, alive: true, queue: Promise.resolve() };
    node.life = born.life;
  }

  /** The sheep's warnings go into the run's log (its info lines too with SIM_VERBOSE=1). */
  #logger(node: SimNode): Logger {
    const line = (level: string) => (text: string) => this.note(`  ${node.name} ${level}: ${text}`);
    return {
      debug: VERBOSE ? line("debug") : () => {},
      info: VERBOSE ? line("info") : () => {},
      warn: line("warn"),
      error: line("error"),
    };
  }

  #applyVariant(node: SimNode, sheep: Sheep): void {
    if (this.variant === "no-recovery") sheep.recovery.start = () => {};
    if (this.variant === "flip-read" && node.index === 0) {
      const store = sheep.store;
      const read = store.read.bind(store);
      store.read = async (oid, offset, length) => {
        const data = await read(oid, offset, length);
        // After the checksums were verified: nothing below the gateway can notice.
        if (isDataOid(oid) && data.length > 0) data[0] = data[0]! ^ 0x20;
        return data;
      };
    }
  }

  #connector(from: SimNode, life: () => Life | undefined): Connect {
    return (target) => ({
      request: (header, data) =>
        this.#deliver(from, life(), target.id, { header, data: data ?? EMPTY }),
      close: () => Promise.resolve(),
    });
  }

  async #deliver(
    from: SimNode,
    life: Life | undefined,
    to: string,
    request: Message,
  ): Promise<Message> {
    const lost = (why: string) =>
      new SheepdogError(ResultCode.NETWORK_ERROR, `${from.id} -> ${to}: ${why}`);
    const node = this.nodes.find((n) => n.id === to);
    if (!life?.alive) throw lost("the sender is dead");
    const target = node?.life;
    if (!node || !target?.alive || node.away || from.away || this.#cut(from, node)) {
      throw lost("unreachable");
    }
    if (this.lose?.(from, node, request)) throw lost("request lost");
    const net = this.net;
    if (net.drop > 0 && this.#netPrng.chance(net.drop)) throw lost("request lost");
    if (net.delay > 0 && this.#netPrng.chance(net.delay)) {
      await sleep(this.#netPrng.int(1, net.delayMaxMs));
      if (!target.alive || !life.alive || this.#cut(from, node)) throw lost("connection reset");
    }
    const response = await target.sheep.handle(
      { header: request.header, data: request.data.slice() },
      from.id,
    );
    if (!life.alive) throw lost("the sender died");
    if (net.dropReply > 0 && this.#netPrng.chance(net.dropReply)) throw lost("reply lost");
    return { header: response.header, data: response.data.slice() };
  }

  #cut(a: SimNode, b: SimNode): boolean {
    return this.partitions.has(pairKey(a, b));
  }

  #bus(node: SimNode, life: () => Life | undefined): EventBus {
    return {
      pastViews: () => Promise.resolve([...node.views]),
      propose: <T>(event: Parameters<EventBus["propose"]>[0]): Promise<T> => {
        const proposer = life();
        if (!proposer?.alive || node.away) {
          return Promise.reject(new SheepdogError(ResultCode.NETWORK_ERROR, "not in the group"));
        }
        const payload = encodeEvent(event);
        let mine: Promise<unknown> | undefined;
        for (const member of this.nodes) {
          const memberLife = member.life;
          if (!memberLife?.alive || member.away) continue;
          const applied = chain(
            memberLife,
            () => memberLife.sheep.applyEvent(decodeEvent(payload)),
          );
          if (memberLife === proposer) mine = applied;
        }
        return (mine ?? Promise.reject(new Error("the proposer is no member"))) as Promise<T>;
      },
    };
  }

  /** Nodes in the current view. */
  members(): SimNode[] {
    return this.nodes.filter((n) => n.up && !n.away);
  }

  /**
   * A new view of every live, reachable node, delivered in order after whatever each has queued;
   * `joiners` first fetch the cluster state from the others, as a joining sheep does.
   */
  async #newView(joiners: readonly SimNode[]): Promise<void> {
    const members = this.members();
    if (members.length === 0) return;
    this.epoch++;
    const view = makeView(this.epoch, members.map((n) => n.sheep.ringNode()));
    this.note(`view ${this.epoch}: ${members.map((n) => n.name).join(" ")}`);
    const installed = members.map((member) => {
      const life = member.life!;
      return chain(life, async () => {
        if (joiners.includes(member)) {
          for (const other of members) {
            if (other === member || !other.up) continue;
            const state = encodeClusterState(other.sheep.clusterState());
            await life.sheep.mergeState(decodeClusterState(state));
          }
        }
        const previousMembers = new Set(life.sheep.view.nodes.map((n) => n.id));
        member.views.push(view); // logged before it is acted on, as the group does
        await life.sheep.installView(view, { previousMembers });
      });
    });
    // The group delivers a view after what each node has queued; clients wait for it.
    this.#expectOk(await this.time.run(Promise.all(installed), OP_LIMIT_MS), `view ${view.epoch}`);
  }

  // ---- Faults ----

  /**
   * Power loss on `victims`: unsynced writes dropped or torn; then the view drops them. With
   * `reached`, exactly the pending writes of the files it names land (whole).
   */
  async crash(
    victims: readonly SimNode[],
    options: { reached?: (path: string) => boolean } = {},
  ): Promise<void> {
    const uncertain = await this.#noteLosses(new Set(victims));
    for (const node of victims) {
      node.life!.alive = false;
      const reached = options.reached;
      node.disk.crash(
        reached ? { reached } : this.tornCrashes ? () => this.#crashPrng.float() : undefined,
      );
      this.syncFaults.delete(node);
    }
    this.model.crashed();
    for (const node of victims) {
      const life = node.life!;
      node.life = undefined;
      node.away = false;
      // Its store closes (and flushes) through a dead attachment: nothing more reaches the disk.
      await life.sheep.stop({ graceful: false });
    }
    await this.#noteUnvouched(uncertain);
    this.note(`crash ${victims.map((n) => n.name).join(" ")}`);
    await this.#newView([]);
  }

  /** Runs time until every member has recovered and purged the current view. */
  async settle(limitMs: number): Promise<boolean> {
    const members = this.members();
    const epoch = this.epoch;
    return await this.time.until(() => members.every((n) => settledAt(n, epoch)), limitMs);
  }

  /**
   * Which objects lose every verified copy at the newest version in this crash: their bytes may
   * go back to anything since the last flush (the model's `lost`). And which 4 KiB blocks the
   * crash may take the newest bytes of from every copy: bad on every newest copy that stays up
   * (rotted, or recorded lost by a salvage), held clean only by victims, of any version (a
   * victim's older copy that missed a later write elsewhere in the object still holds the block),
   * while no copy that stays up, of any version, holds them clean. Those are returned, to be
   * checked once the victims' disks have crashed (`#noteUnvouched`).
   */
  async #noteLosses(victims: ReadonlySet<SimNode>): Promise<Uncertain[]> {
    const copiesOf = async (oid: Oid): Promise<{ node: SimNode; meta: ObjectMeta }[]> => {
      const copies: { node: SimNode; meta: ObjectMeta }[] = [];
      for (const node of this.nodes) {
        if (!node.up) continue;
        const meta = await node.sheep.store.meta(oid).catch(() => undefined);
        if (meta) copies.push({ node, meta });
      }
      return copies;
    };
    const holdersAtNewest = (copies: { node: SimNode; meta: ObjectMeta }[]): SimNode[] => {
      const newest = Math.max(-1, ...copies.map((c) => c.meta.version));
      return copies.filter((c) => c.meta.verified && c.meta.version === newest).map((c) => c.node);
    };
    const inode = holdersAtNewest(await copiesOf(vdiOid(this.vid))).every((n) => victims.has(n));
    const lost: number[] = [];
    const uncertain: Uncertain[] = [];
    for (const index of this.model.allocated) {
      const oid = dataOid(this.vid, index);
      const copies = await copiesOf(oid);
      const holders = holdersAtNewest(copies);
      const data = holders.every((n) => victims.has(n));
      if (data || inode) this.model.lost(index, { data, inode });
      if (data) {
        lost.push(index);
        continue;
      }
      if (!copies.some((c) => victims.has(c.node))) continue;
      const blocks = await badOnEvery(holders.filter((n) => !victims.has(n)), oid);
      if (blocks.length === 0) continue;
      // Which copies hold each such block's newest bytes clean, by what is in their data file.
      // A copy that cannot be read now (a read fault) is taken to hold them if it stays up, and
      // not to if it crashes: either way nothing is excused on a guess.
      const clean = new Map<SimNode, Set<number>>();
      for (const { node, meta } of copies) {
        const verified = await node.sheep.store.verify(oid).catch(() => undefined);
        const bytes = await storedBytes(node, oid, meta.size).catch(() => undefined);
        if (!verified || !bytes) {
          clean.set(node, new Set(victims.has(node) ? [] : blocks));
          continue;
        }
        const bad = new Set(verified.map((b) => b.index));
        clean.set(
          node,
          new Set(blocks.filter((b) => !bad.has(b) && this.#holdsLatest(bytes, index, b))),
        );
      }
      for (const block of blocks) {
        const holding = copies.filter((c) => clean.get(c.node)?.has(block)).map((c) => c.node);
        if (holding.length === 0 || holding.some((n) => !victims.has(n))) continue;
        uncertain.push({ oid, index, block, size: copies[0]!.meta.size, victims: holding });
      }
    }
    if (inode || lost.length > 0) {
      this.note(
        `  unflushed writes may be lost: objects [${lost.join(",")}]${
          inode ? " and the inode" : ""
        }`,
      );
    }
    return uncertain;
  }

  /**
   * After the crash: the blocks of `#noteLosses` whose newest bytes no victim's disk kept, and
   * that no flush since their last write reached a victim holding them (a node out of the view
   * misses flushes; their bytes on it were never synced), are the model's `unvouched`: nobody can
   * vouch for them any more. A victim that synced them and lost them anyway lost a flushed write:
   * not excused.
   */
  async #noteUnvouched(uncertain: readonly Uncertain[]): Promise<void> {
    const blocks: number[] = [];
    for (const { oid, index, block, size, victims } of uncertain) {
      const vdiBlock = index * (OBJECT_BYTES / BLOCK_BYTES) + block;
      const synced = victims.some((n) =>
        this.model.lastWrite(vdiBlock) <= (this.#syncedThrough.get(n) ?? 0)
      );
      if (synced) continue;
      let kept = false;
      for (const node of victims) {
        // Gone (ENOENT): not kept; unreadable now (a read fault): taken as kept.
        const bytes = await storedBytes(node, oid, size).catch((e) =>
          (e as { code?: string }).code === "ENOENT" ? undefined : "unreadable" as const
        );
        kept ||= bytes === "unreadable" ||
          (bytes !== undefined && this.#holdsLatest(bytes, index, block));
      }
      if (!kept) blocks.push(vdiBlock);
    }
    if (blocks.length === 0) return;
    this.model.unvouched(blocks);
    this.note(`  unsynced writes lost (the copies left rotted, or lost them): blocks [${blocks}]`);
  }

  /** True when `bytes`, a copy of object `index`, hold block `block`'s newest acknowledged bytes. */
  #holdsLatest(bytes: Uint8Array, index: number, block: number): boolean {
    const start = block * BLOCK_BYTES;
    const end = Math.min(bytes.length, start + BLOCK_BYTES);
    const at = index * OBJECT_BYTES + start;
    return end > start &&
      sameBytes(bytes.subarray(start, end), this.model.latest.subarray(at, at + end - start));
  }

  /**
   * Starts a crashed node again on its disk and lets it join; the client reads its table again
   * unless `reopen` is false (a scripted test that expects the VDI unknown for a while).
   */
  async restart(nodes: readonly SimNode[], options: { reopen?: boolean } = {}): Promise<void> {
    for (const node of nodes) await this.#startLife(node);
    this.note(`restart ${nodes.map((n) => n.name).join(" ")}`);
    await this.#newView(nodes);
    if (options.reopen ?? true) await this.reopen();
  }

  /** Cuts `node` off and drops it from the view (it keeps running on its old view). */
  async leave(node: SimNode): Promise<void> {
    node.away = true;
    this.note(`${node.name} leaves the view`);
    await this.#newView([]);
  }

  /** Brings an away node back into the view. */
  async rejoin(node: SimNode): Promise<void> {
    node.away = false;
    this.note(`${node.name} rejoins`);
    await this.#newView([node]);
  }

  /** The nodes holding `oid` in the current view, in ring order. */
  targets(oid: Oid): SimNode[] {
    const view = this.members()[0]!.sheep.view;
    return targetsOf(view, oid, this.copies).map((t) => this.nodes.find((n) => n.id === t.id)!);
  }

  /** Flips one byte of `node`'s copy of `oid`: of its data, or with `checksums` of its block checksums. */
  rot(node: SimNode, oid: Oid, offset: number, options: { checksums?: boolean } = {}): void {
    const file = objectPath(node, oid) + (options.checksums ? ".meta" : "");
    node.disk.rot(file, offset);
    this.rots++;
    this.note(
      `rot ${oidToHex(oid)}${options.checksums ? ".meta" : ""} on ${node.name} at ${hex(offset)}`,
    );
  }

  /** Reads through the client without judging the outcome (scripted scenarios judge it). */
  async tryRead(offset: number, length: number): Promise<Outcome<Uint8Array>> {
    const outcome = await this.time.run(this.#client!.read(offset, length), OP_LIMIT_MS);
    this.note(`read ${hex(offset)}+${length}: ${describe(outcome)}`);
    return outcome;
  }

  /** Reasons an operation may fail now. */
  async degraded(): Promise<string[]> {
    const reasons: string[] = [];
    if (this.net.drop > 0 || this.net.dropReply > 0) reasons.push("lossy network");
    if (this.partitions.size > 0) reasons.push("partition");
    for (const node of this.full) reasons.push(`${node.name} disk full`);
    for (const node of this.syncFaults) reasons.push(`${node.name} sync failure`);
    for (const node of this.nodes) {
      if (node.up && node.sheep.store.health().syncError) reasons.push(`${node.name} sync failed`);
    }
    // A node alive but outside the view may hold the only current copy of something (another
    // copy was fenced out by a failing disk): it is unavailable, not lost, until it rejoins.
    const members = new Set(this.members());
    for (const node of this.nodes) {
      if (node.up && !members.has(node)) reasons.push(`${node.name} outside the view`);
    }
    // A copy a crash left suspect is held while a node that may hold the writes it lost is down
    // (net/sheep/crash_holds.ts): unavailable, not lost, until that node is back.
    const suspects = [...members].filter((n) => n.sheep.store.crashSuspects > 0);
    for (const down of this.nodes.filter((n) => !n.up)) {
      for (const node of suspects) {
        reasons.push(`${node.name} has copies a crash left suspect, ${down.name} is down`);
      }
    }
    reasons.push(...await this.#unreadableOnly());
    reasons.push(...await this.#heldOnlyByNodesOut(members));
    return reasons;
  }

  /**
   * Two nodes may be out at once (down or away) with two copies: an object whose every copy is
   * on them (a second crash before recovery copied it elsewhere, say under a partition) is
   * unavailable, not lost, until one comes back.
   */
  async #heldOnlyByNodesOut(members: Set<SimNode>): Promise<string[]> {
    const reasons: string[] = [];
    for (const node of this.nodes.filter((n) => !members.has(n))) {
      const names = await node.disk.readdir(node.objectDir).catch(() => []);
      for (const name of names) {
        const oid = oidFromHex(name);
        if (oid === undefined) continue;
        let present = false;
        for (const member of members) present ||= await member.sheep.store.exists(oid);
        if (!present) reasons.push(`every copy of ${name} is on nodes that are out`);
      }
    }
    return reasons;
  }

  /**
   * Rot is injected only while another good copy exists, but a later fault (a crash that keeps
   * its node down) may take that copy away: then no member holds a clean copy at the newest
   * version of the object, and an error is the right answer until the good copy is back. Checked
   * only when an operation failed (it verifies every member's copies).
   */
  async #rottenOnly(): Promise<string[]> {
    const reasons: string[] = [];
    const members = this.members();
    // A snapshot's objects too: the working VDI reads those it has not written since.
    const oids = this.#chain.flatMap((vid) => [
      vdiOid(vid),
      ...[...this.model.allocated].map((i) => dataOid(vid, i)),
    ]);
    for (const oid of oids) {
      const copies: { meta: ObjectMeta; clean: boolean }[] = [];
      for (const node of members) {
        const meta = await node.sheep.store.meta(oid).catch(() => undefined);
        if (!meta) continue;
        const bad = await node.sheep.store.verify(oid).catch(() => [{ index: -1 }]);
        copies.push({ meta, clean: bad.length === 0 });
      }
      if (copies.length === 0) continue;
      const newest = Math.max(...copies.map((c) => c.meta.version));
      if (!copies.some((c) => c.clean && c.meta.version === newest)) {
        reasons.push(
          `no member holds a clean copy of ${oidToHex(oid)} (rot; the good one is down)`,
        );
      }
    }
    return reasons;
  }

  /**
   * A copy whose reads fail excuses nothing while another member holds a copy as current (the
   * fault is injected only then), but a later fault may take that copy away (a crash drops its
   * unsynced writes, a view change moves the object): then the failing copy is the only one with
   * every acknowledged write, and an error is the one right answer until its reads work again.
   */
  async #unreadableOnly(): Promise<string[]> {
    const reasons: string[] = [];
    const members = this.members();
    for (const [node, file] of this.readFaults) {
      const oid = oidFromHex(path.basename(file));
      if (oid === undefined || !members.includes(node)) continue;
      const mine = await node.sheep.store.meta(oid).catch(() => undefined);
      if (!mine) continue;
      let covered = false;
      for (const other of members) {
        if (other === node) continue;
        const meta = await other.sheep.store.meta(oid).catch(() => undefined);
        if (
          meta?.verified &&
          (meta.version > mine.version ||
            (meta.version === mine.version && meta.digest === mine.digest))
        ) covered = true;
      }
      if (!covered) {
        reasons.push(`${node.name} cannot read the only current copy of ${oidToHex(oid)}`);
      }
    }
    return reasons;
  }

  // ---- The client ----

  #access(): ObjectAccess {
    return new RoutedAccess(() => this.gateway().sheep);
  }

  /** The node whose gateway serves the next call. */
  gateway(): SimNode {
    const members = this.members();
    const pinned = this.route === undefined ? undefined : this.nodes[this.route];
    if (pinned && members.includes(pinned)) return pinned;
    if (members.length === 0) throw new SheepdogError(ResultCode.HALT, "no node is up");
    return this.#routePrng.pick(members);
  }

  /**
   * QEMU's driver reaches the sheep it was given while that one is a member (pinned by `route`
   * in scripted scenarios), else a member the seed picks; its link loses requests and replies
   * as the network's faults say, with dice of its own.
   */
  #driverNetwork(): DriverNetwork {
    return {
      connect: () => {
        const members = this.members();
        if (members.length === 0) return undefined;
        const pinned = this.route === undefined ? undefined : this.nodes[this.route];
        const current = this.#driverNode;
        const node = pinned && members.includes(pinned)
          ? pinned
          : current && members.includes(current)
          ? current
          : this.#driverPrng.pick(members);
        this.#driverNode = node;
        return this.#driverConnection(node, `${QEMU_HOST}:${this.#driverPort++}`);
      },
      sleep,
      note: (line) => this.note(line),
    };
  }

  /** A connection of QEMU's driver to `node`'s sheep, from `peer`; it breaks as a whole. */
  #driverConnection(node: SimNode, peer: string): DriverConnection {
    const life = node.life!;
    const prng = this.#driverPrng;
    const connection = {
      name: node.name,
      open: true,
      send: async (request: Message): Promise<Message> => {
        const broken = (why: string) => {
          connection.open = false;
          return new SheepdogError(ResultCode.NETWORK_ERROR, `${peer} -> ${node.id}: ${why}`);
        };
        const usable = () => connection.open && life.alive && !node.away;
        if (!usable()) throw broken("connection reset");
        if (this.loseDriver?.(node, request, "request")) throw broken("request lost");
        const net = this.net;
        if (net.drop > 0 && prng.chance(net.drop)) throw broken("request lost");
        if (net.delay > 0 && prng.chance(net.delay)) {
          await sleep(prng.int(1, net.delayMaxMs));
          if (!usable()) throw broken("connection reset");
        }
        const response = await life.sheep.handle(
          { header: request.header, data: request.data.slice() },
          peer,
        );
        if (!usable()) throw broken("connection reset");
        if (this.loseDriver?.(node, request, "reply")) throw broken("reply lost");
        if (net.dropReply > 0 && prng.chance(net.dropReply)) throw broken("reply lost");
        return { header: response.header, data: response.data.slice() };
      },
    };
    return connection;
  }

  /** The client QEMU's driver is, when it is (`DataPathOptions.qemu`). */
  get driver(): QemuDriverClient | undefined {
    return this.#qemu;
  }

  /**
   * The client reads the VDI's table again (after a crash its cached inode may be ahead of the
   * disks), through the same handle: as the product's clients do, it keeps what it allocated
   * since its last flush (`VdiIo.reload`). QEMU's driver does no such thing: it keeps its table
   * and reconnects when it next sends.
   */
  async reopen(): Promise<void> {
    if (!this.#io) return;
    const reasons = await this.degraded();
    const outcome = await this.time.run(this.#io!.reload(), OP_LIMIT_MS);
    if (outcome.kind === "ok") return;
    if (outcome.kind === "error" && reasons.length > 0) return;
    this.#expectOk(outcome, "reopen the VDI");
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const reasons = await this.degraded();
    const outcome = await this.time.run(this.#client!.write(offset, data), OP_LIMIT_MS);
    this.note(`write ${hex(offset)}+${data.length}: ${describe(outcome)}`);
    if (outcome.kind === "ok") {
      this.model.acknowledged(offset, data);
      // cache=none: the sheep answered once the write was durable (Flag.DIRECT).
      if (this.#qemu?.directWrites) this.#flushed();
      return;
    }
    this.model.failed(offset, data);
    await this.#judgeError(outcome, reasons, "write");
  }

  /**
   * An NBD TRIM: the whole objects inside the range read as zeros after it (`VdiIo.discard`).
   * A guest's discard through QEMU's driver (`sd_co_pdiscard`) promises nothing of the kind (QEMU
   * promises zeros for write-zeroes only), and they may read as before: the sheep keeps the VDI's
   * last object when an old client clears its entry alone (`oldClientInodeWrite`), and the driver
   * clears its entry in memory before it asks, so after a discard that failed its table and the
   * VDI's differ, and a discard there again does nothing (seed 369).
   */
  async discard(offset: number, length: number): Promise<void> {
    const reasons = await this.degraded();
    const outcome = await this.time.run(this.#client!.discard(offset, length), OP_LIMIT_MS);
    this.note(`discard ${hex(offset)}+${length}: ${describe(outcome)}`);
    const first = Math.ceil(offset / OBJECT_BYTES);
    const end = Math.floor((offset + length) / OBJECT_BYTES);
    for (let index = first; index < end; index++) {
      const zeros = new Uint8Array(OBJECT_BYTES);
      const mayKeep = this.#qemu !== undefined;
      if (outcome.kind === "ok" && !mayKeep) this.model.acknowledged(index * OBJECT_BYTES, zeros);
      else this.model.failed(index * OBJECT_BYTES, zeros);
    }
    if (outcome.kind !== "ok") return await this.#judgeError(outcome, reasons, "discard");
    if (this.#qemu?.directWrites) this.#flushed();
  }

  async read(offset: number, length: number): Promise<void> {
    const reasons = await this.degraded();
    const outcome = await this.time.run(this.#client!.read(offset, length), OP_LIMIT_MS);
    this.note(`read ${hex(offset)}+${length}: ${describe(outcome)}`);
    if (outcome.kind !== "ok") return await this.#judgeError(outcome, reasons, "read");
    this.#checkRead(offset, outcome.value, "read");
  }

  async flush(): Promise<void> {
    const reasons = await this.degraded();
    const outcome = await this.time.run(this.#client!.flush(), OP_LIMIT_MS);
    this.note(`flush: ${describe(outcome)}`);
    if (outcome.kind === "ok") return this.#flushed();
    await this.#judgeError(outcome, reasons, "flush");
  }

  /**
   * A snapshot of the working VDI: through a member's sheep (as `img snapshot` asks one), or,
   * with QEMU's driver, by the driver (`sd_snapshot_create`, which then goes on with the new
   * working VDI). Once taken, it must hold for good every write acknowledged before it, and the
   * working VDI moves to a new vid. Whether it was taken, after an error too, the sheep's VDI
   * tables say.
   */
  async snapshot(): Promise<void> {
    const reasons = await this.degraded();
    const tag = `s${this.#snapshotsTried++}`;
    let taking: Promise<unknown>;
    let through: string;
    if (this.#qemu && this.#qemu.vid !== this.vid) {
      // `sd_snapshot_create` writes the header in memory back to the vid in memory and never
      // reloads it; only a guest's request that meets READONLY does (`reload_inode`). A driver
      // still on the vid a snapshot froze (the reply of its NEW_VDI lost, or the read of the new
      // header failed, and no write since moved it) writes into a snapshot's inode: refused,
      // and its snapshot fails, for as long as the guest does not write (seed 1101).
      reasons.push(`QEMU's driver is still on ${hex(this.#qemu.vid)}, a snapshot now`);
    }
    if (this.#qemu) {
      const vmClockNsec = BigInt(this.time.now - VIRTUAL_START_MS) * 1_000_000n;
      taking = this.#qemu.snapshot(tag, { vmClockNsec });
      through = "QEMU's driver";
    } else {
      const node = this.gateway();
      taking = promiseOf(() =>
        node.sheep.vdis.change({
          type: "snapshot",
          vid: node.sheep.registry.lookup(VDI_NAME).vdiId,
          tag,
          nowMs: this.#clockOf(node),
        })
      );
      through = node.name;
    }
    const outcome = await this.time.run(taking, OP_LIMIT_MS);
    this.note(`snapshot ${tag} through ${through}: ${describe(outcome)}`);
    const taken = this.#snapshotVid(tag);
    if (taken !== undefined) {
      // The snapshot flushed the VDI before its event: every write acknowledged before it is
      // durable, in it and in the working VDI.
      this.#flushed();
      this.#snapshots.push({ tag, vid: taken.vid, image: this.model.snapshotted() });
      this.vid = taken.working;
      this.#chain.push(this.vid);
      this.note(`  snapshot ${tag} is vid ${hex(taken.vid)}, the VDI moved to ${hex(this.vid)}`);
    }
    if (outcome.kind === "ok" && taken === undefined) {
      throw this.fail("unjustified-error", `snapshot ${tag} succeeded, but no sheep lists it`);
    }
    if (outcome.kind === "ok" && this.#qemu && this.#qemu.vid !== this.vid) {
      throw this.fail(
        "unjustified-error",
        `snapshot ${tag} succeeded, but QEMU's driver went on with ${hex(this.#qemu.vid)}`,
      );
    }
    if (outcome.kind !== "ok") await this.#judgeError(outcome, reasons, `snapshot ${tag}`);
  }

  /**
   * Follows the working VDI when a snapshot the simulation did not see succeed moved it (one
   * whose undo failed, which a sheep then announced: net/sheep/header_drift.ts): what it holds is
   * what the VDI held then, less what a crash may still take back (its flush may have failed).
   */
  followWorking(): void {
    let working: InodeHeader | undefined;
    for (const node of this.members()) {
      const header = (() => {
        try {
          return node.sheep.registry.lookup(VDI_NAME);
        } catch {
          return undefined;
        }
      })();
      if (header && (!working || header.snapId > working.snapId)) working = header;
    }
    if (!working || working.vdiId === this.vid) return;
    const frozen = this.nodes.find((n) => n.up)?.sheep.registry.get(this.vid);
    if (frozen && isSnapshot(frozen)) {
      const image = this.model.snapshotted({ durable: false });
      this.#snapshots.push({ tag: frozen.tag, vid: frozen.vdiId, image });
    }
    this.note(`  the VDI moved to ${hex(working.vdiId)} (snapshot '${frozen?.tag}' announced)`);
    this.vid = working.vdiId;
    this.#chain.push(this.vid);
  }

  /**
   * The vid of snapshot `tag`, and of the working VDI, as the members' VDI tables have them, if
   * it was taken (every member applies a VDI change's event).
   */
  #snapshotVid(tag: string): { vid: Vid; working: Vid } | undefined {
    for (const node of this.members()) {
      try {
        const vid = node.sheep.registry.lookup(VDI_NAME, { tag }).vdiId;
        return { vid, working: node.sheep.registry.lookup(VDI_NAME).vdiId };
      } catch {
        // Not in this member's table.
      }
    }
    return undefined;
  }

  /** The snapshots taken so far (their tags). */
  get snapshots(): readonly string[] {
    return this.#snapshots.map((s) => s.tag);
  }

  /**
   * Reads a range of snapshot `tag`, opened anew (read-only) with `VdiIo` through a member,
   * whoever took it: QEMU's snapshots too (the QEMU snapshot test in data_path_test.ts says why).
   */
  async readSnapshot(tag: string, offset: number, length: number): Promise<void> {
    const snapshot = this.#snapshots.find((s) => s.tag === tag)!;
    const reasons = await this.degraded();
    const reading = (async () => {
      const io = await VdiIo.open(this.#access(), VDI_NAME, { tag });
      return await io.read(offset, length);
    })();
    const outcome = await this.time.run(reading, OP_LIMIT_MS);
    const what = `read of snapshot ${tag} ${hex(offset)}+${length}`;
    this.note(`${what}: ${describe(outcome)}`);
    if (outcome.kind !== "ok") return await this.#judgeError(outcome, reasons, what);
    this.#checkRead(offset, outcome.value, what, snapshot.image);
  }

  /** Every acknowledged write is durable now. */
  #flushed(): void {
    this.model.flushed();
    // What each member held is synced now; a node out of the view was not flushed.
    for (const node of this.members()) this.#syncedThrough.set(node, this.model.writes);
  }

  async #judgeError(outcome: Outcome<unknown>, reasons: string[], what: string): Promise<void> {
    if (outcome.kind === "hung") throw this.fail("hung", `${what}: ${outcome.why}`);
    if (reasons.length > 0 || (await this.degraded()).length > 0) return;
    if ((await this.#rottenOnly()).length > 0) return;
    const error = outcome.kind === "error" ? message(outcome.error) : "";
    throw this.fail("unjustified-error", `${what} failed with no fault to justify it: ${error}`);
  }

  #checkRead(offset: number, data: Uint8Array, what: string, model = this.model): void {
    const mismatch = model.check(offset, data);
    if (!mismatch) return;
    const at = mismatch.offset;
    const detail = `${what} returned 0x${mismatch.got.toString(16)} at byte ${hex(at)} ` +
      `(object ${Math.floor(at / OBJECT_BYTES)}), allowed ` +
      `[${mismatch.allowed.map((v) => `0x${v.toString(16)}`).join(", ")}]` +
      (mismatch.stale ? ", a value it held earlier" : ", a value it never held");
    const kind = mismatch.stale && mismatch.flushed ? "lost-flushed" : "wrong-bytes";
    throw this.fail(kind, detail);
  }

  /** Notes every copy of `oid`: version, digest, verified, bad blocks. */
  async trace(oid: Oid): Promise<void> {
    const parts: string[] = [];
    for (const node of this.nodes) {
      if (!node.up) continue;
      const meta = await node.sheep.store.meta(oid).catch((e) => message(e));
      if (meta === undefined || typeof meta === "string") {
        parts.push(`${node.name} ${meta ?? "-"}`);
        continue;
      }
      const bad = await node.sheep.store.verify(oid).catch(() => []);
      parts.push(
        `${node.name} v${meta.version} ${meta.digest.slice(0, 6)}` +
          `${meta.verified ? "" : " unverified"}${
            bad.length ? ` bad[${bad.map((b) => b.index)}]` : ""
          }`,
      );
    }
    this.note(`  trace ${oidToHex(oid)}: ${parts.join(", ")}`);
  }

  // ---- The end: heal, settle, converge ----

  /** Fills `node`'s disk: `roomBytes` more fit, no more (until `freeDisk` or `heal`). */
  async fillDisk(node: SimNode, roomBytes = 0): Promise<void> {
    const space = await node.disk.space("/");
    node.disk.setCapacity(space.totalBytes - space.freeBytes + roomBytes);
    this.full.add(node);
  }

  /** Gives `node`'s disk room again; false when `fillDisk` had not filled it. */
  freeDisk(node: SimNode): boolean {
    if (!this.full.delete(node)) return false;
    node.disk.setCapacity(Infinity);
    return true;
  }

  /** Stops every fault, brings every node back, and installs one more view of all of them. */
  async heal(): Promise<void> {
    this.net = { ...CALM };
    this.partitions.clear();
    for (const node of [...this.full]) this.freeDisk(node);
    for (const [node, file] of this.readFaults) {
      if (node.up) await failReads(node, file, false);
    }
    this.readFaults.clear();
    // A failed sync is sticky until the sheep restarts; so is an armed one, so power-cycle both.
    const sick = this.nodes.filter((n) =>
      n.up && (this.syncFaults.has(n) || n.sheep.store.health().syncError)
    );
    if (sick.length > 0) {
      await this.crash(sick);
      await this.restart(sick);
    }
    const down = this.nodes.filter((n) => !n.up);
    if (down.length > 0) await this.restart(down);
    for (const node of this.nodes.filter((n) => n.away)) await this.rejoin(node);
    this.note("healed");
    await this.#newView([]);
  }

  /** Waits for the last view to settle, then checks that every copy converged (checker 3). */
  async converge(): Promise<void> {
    const members = this.members();
    const epoch = this.epoch;
    const done = await this.settle(SETTLE_LIMIT_MS);
    const problems: string[] = [];
    if (!done) {
      for (const node of members) {
        const s = node.sheep.recovery.status();
        problems.push(
          `${node.name}: view ${node.sheep.view.epoch}, recovery ${s.state} of epoch ${s.epoch}, ` +
            `purged ${s.purgedEpoch}${s.error ? ` (${s.error})` : ""}`,
        );
      }
    }
    if (done && this.rots > 0) await this.#scrub(members);
    problems.push(...await this.#compareCopies(members));
    if (problems.length > 0) {
      throw this.fail("not-converged", `after the faults stopped:\n  ${problems.join("\n  ")}`);
    }
    await this.#readEverywhere(members);
    this.note(`converged at view ${epoch}`);
  }

  /**
   * What the scrub does (net/sheep/scrub.ts, phase 1): verify every copy, heal each one found
   * bad in place from the other copies' blocks, and have its gateway repair what is left. Rot
   * nobody read is still there.
   */
  async #scrub(members: SimNode[]): Promise<void> {
    for (const node of members) {
      for (const oid of await node.sheep.store.list()) {
        const bad = await node.sheep.store.verify(oid).catch(() => [{ index: -1 }]);
        if (bad.length === 0) continue;
        const healed = await this.time.run(node.sheep.gateway.healLocal(oid), OP_LIMIT_MS);
        if (healed.kind === "ok" && healed.value === 0) {
          this.note(`scrub: ${oidToHex(oid)} bad on ${node.name}: healed in place`);
          continue;
        }
        const repaired = await this.time.run(
          node.sheep.gateway.repair(oid, new Set([node.id])),
          OP_LIMIT_MS,
        );
        this.note(`scrub: ${oidToHex(oid)} bad on ${node.name}: repair ${describe(repaired)}`);
      }
    }
  }

  async #compareCopies(members: SimNode[]): Promise<string[]> {
    const problems: string[] = [];
    const view = members[0]!.sheep.view;
    const oids = new Set<Oid>([vdiOid(this.vid)]);
    for (const node of members) for (const oid of await node.sheep.store.list()) oids.add(oid);
    for (const oid of [...oids].sort((a, b) => (a < b ? -1 : 1))) {
      const targets = targetsOf(view, oid, this.copies).map((t) =>
        members.find((n) => n.id === t.id)!
      );
      const copies: { node: SimNode; meta: ObjectMeta; bytes: Uint8Array | string }[] = [];
      for (const node of targets) {
        const meta = await node.sheep.store.meta(oid).catch(() => undefined);
        if (!meta) {
          problems.push(`${oidToHex(oid)}: missing on target ${node.name}`);
          continue;
        }
        // An inode is 4 MiB, nearly all an empty table: its digest covers that; read the rest.
        const length = isDataOid(oid) ? meta.size : Math.min(meta.size, INODE_BYTES_COMPARED);
        const vdiOffset = isDataOid(oid) ? oidToIndex(oid) * OBJECT_BYTES : undefined;
        const read = await readExcusing(
          (o, l) => node.sheep.store.read(oid, o, l),
          length,
          (o) => vdiOffset !== undefined && this.model.mayFail(vdiOffset + o),
        ).catch((e) => ({ bytes: message(e), failed: [] }));
        const bytes = read.bytes;
        copies.push({ node, meta, bytes });
        // What is served must be what is stored: a store serving from a file no longer the
        // object's (reopened while a create replaced it) served right and stored wrong.
        const stored = await storedBytes(node, oid, length);
        for (const at of read.failed) stored.fill(0, at, at + BLOCK_BYTES);
        if (typeof bytes !== "string" && !sameBytes(bytes, stored)) {
          problems.push(`${oidToHex(oid)}: ${node.name} serves bytes its data file does not hold`);
        }
      }
      const first = copies[0];
      for (const copy of copies) {
        if (typeof copy.bytes === "string") {
          problems.push(`${oidToHex(oid)}: unreadable on ${copy.node.name}: ${copy.bytes}`);
        } else if (
          first &&
          (copy.meta.version !== first.meta.version || copy.meta.digest !== first.meta.digest ||
            typeof first.bytes === "string" || !sameBytes(copy.bytes, first.bytes))
        ) {
          problems.push(
            `${oidToHex(oid)}: ${copy.node.name} holds version ${copy.meta.version} ` +
              `${copy.meta.digest.slice(0, 8)}, ${first.node.name} version ${first.meta.version} ` +
              `${first.meta.digest.slice(0, 8)}`,
          );
        }
      }
      for (const node of members) {
        if (targets.includes(node)) continue;
        if (await node.sheep.store.exists(oid)) {
          problems.push(`${oidToHex(oid)}: a leftover copy on ${node.name} was never purged`);
        }
      }
    }
    return problems;
  }

  /**
   * Reads the whole VDI, and every snapshot, through every sheep: the same bytes everywhere, as
   * the model (each snapshot's, as it was taken) allows.
   */
  async #readEverywhere(members: SimNode[]): Promise<void> {
    await this.#readWholeEverywhere(members, undefined, this.model, "");
    for (const { tag, image } of this.#snapshots) {
      await this.#readWholeEverywhere(members, { tag }, image, ` of snapshot ${tag}`);
    }
  }

  async #readWholeEverywhere(
    members: SimNode[],
    ref: SnapshotRef,
    model: VdiModel,
    of: string,
  ): Promise<void> {
    let reference: { node: SimNode; bytes: Uint8Array } | undefined;
    for (const node of members) {
      const read = (async () => {
        const io = await VdiIo.open(node.sheep.localAccess, VDI_NAME, ref);
        const { bytes, failed } = await readExcusing(
          (o, l) => io.read(o, l),
          io.sizeBytes,
          (o) => model.mayFail(o),
        );
        // A block the model lets fail (`unvouched`) that failed is compared as what it should be.
        for (const at of failed) bytes.set(model.latest.subarray(at, at + BLOCK_BYTES), at);
        return bytes;
      })();
      const outcome = await this.time.run(read, OP_LIMIT_MS);
      if (outcome.kind !== "ok") {
        throw this.fail(
          "not-converged",
          `the final read${of} through ${node.name}: ${describe(outcome)}`,
        );
      }
      this.#checkRead(0, outcome.value, `the final read${of} through ${node.name}`, model);
      if (reference && !sameBytes(reference.bytes, outcome.value)) {
        throw this.fail(
          "not-converged",
          `${node.name} and ${reference.node.name} read different bytes`,
        );
      }
      reference ??= { node, bytes: outcome.value };
    }
  }

  /** Stops every sheep and removes the directories; virtual time is uninstalled. */
  async dispose(): Promise<void> {
    for (const node of this.nodes) {
      const life = node.life;
      if (!life) continue;
      life.alive = false;
      node.life = undefined;
      node.disk.crash(); // detaches: a closing store must not wait on anything
      await life.sheep.stop({ graceful: false }).catch(() => undefined);
    }
    this.time.uninstall();
    if (this.#root) await fsp.rm(this.#root, { recursive: true, force: true });
  }
}

/** Whether `node` has installed view `epoch`, recovered it and purged its leftovers. */
function settledAt(node: SimNode, epoch: number): boolean {
  const status = node.sheep.recovery.status();
  return node.sheep.view.epoch === epoch && status.state === "done" && status.epoch === epoch &&
    status.purgedEpoch === epoch;
}

/** Turns failing reads of one object file on or off. */
function failReads(node: SimNode, file: string, on: boolean): Promise<void> {
  try {
    node.disk.failReads(file, on);
  } catch {
    // The file went (recreated or removed meanwhile): nothing left to fail.
  }
  return Promise.resolve();
}

function chain<T>(life: Life, work: () => Promise<T>): Promise<T> {
  const result = life.queue.then(work);
  life.queue = result.catch(() => undefined);
  return result;
}

function pairKey(a: SimNode, b: SimNode): string {
  return a.index < b.index ? `${a.index}|${b.index}` : `${b.index}|${a.index}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Reads `length` bytes from 0 with `read`; when that fails with an I/O error, again in
 * runs around the 4 KiB blocks `mayFail` excuses (the model's `unvouched`: an I/O error is a right
 * answer there), each such block alone. The blocks that failed (their offsets) read as zeros.
 */
async function readExcusing(
  read: (offset: number, length: number) => Promise<Uint8Array>,
  length: number,
  mayFail: (offset: number) => boolean,
): Promise<{ bytes: Uint8Array; failed: number[] }> {
  try {
    return { bytes: await read(0, length), failed: [] };
  } catch (error) {
    if (!isResult(error, ResultCode.EIO)) throw error;
    let excused = false;
    for (let at = 0; at < length && !excused; at += BLOCK_BYTES) excused = mayFail(at);
    if (!excused) throw error;
  }
  const bytes = new Uint8Array(length);
  const failed: number[] = [];
  let run = 0;
  for (let at = 0; at <= length; at += BLOCK_BYTES) {
    if (at < length && !mayFail(at)) continue;
    if (at > run) bytes.set(await read(run, Math.min(at, length) - run), run);
    if (at < length) {
      const piece = Math.min(BLOCK_BYTES, length - at);
      try {
        bytes.set(await read(at, piece), at);
      } catch (error) {
        if (!isResult(error, ResultCode.EIO)) throw error;
        failed.push(at);
      }
    }
    run = at + BLOCK_BYTES;
  }
  return { bytes, failed };
}

/** The blocks of `oid` that fail their checksum on every one of `nodes`' copies. */
async function badOnEvery(nodes: readonly SimNode[], oid: Oid): Promise<number[]> {
  let common: Set<number> | undefined;
  for (const node of nodes) {
    const bad = await node.sheep.store.verify(oid).catch(() => []);
    const mine = new Set(bad.map((b) => b.index).filter((i) => i >= 0));
    common = common === undefined ? mine : new Set([...common].filter((i) => mine.has(i)));
  }
  return [...(common ?? [])];
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  const left = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  return left.equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function describe(outcome: Outcome<unknown>): string {
  if (outcome.kind === "ok") return "ok";
  if (outcome.kind === "hung") return `hung (${outcome.why})`;
  return `error (${message(outcome.error)})`;
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}

/** The path of an object's data file on a node's disk. */
export function objectPath(node: { dir: string }, oid: Oid): string {
  return path.join(node.dir, "obj", oidToHex(oid));
}

// ---- The seeded run ----

/** What one seed did. */
export interface SeedSummary {
  seed: number;
  steps: number;
  faults: Record<string, number>;
  virtualMs: number;
  log: readonly string[];
}

interface Pending {
  step: number;
  run: () => Promise<void>;
}

/** The workload and the fault schedule of one seed. */
class Schedule {
  readonly #sim: DataPathSim;
  readonly #prng: Prng;
  #pending: Pending[] = [];
  readonly faults: Record<string, number> = {};

  constructor(sim: DataPathSim) {
    this.#sim = sim;
    this.#prng = sim.prng;
  }

  async step(step: number): Promise<void> {
    await this.#expire(step);
    if (this.#sim.snapshotting) this.#sim.followWorking();
    const prng = this.#prng;
    if (prng.chance(0.3)) await this.#fault(step);
    else await this.#clientOp();
    await this.#sim.time.advance(prng.int(1, 200));
    if (TRACE !== undefined) await this.#sim.trace(BigInt(`0x${TRACE}`));
  }

  async #expire(step: number): Promise<void> {
    const due = this.#pending.filter((p) => p.step <= step);
    this.#pending = this.#pending.filter((p) => p.step > step);
    for (const pending of due) await pending.run();
  }

  /** Ends every fault still in force (the heal does the rest). */
  async finish(): Promise<void> {
    await this.#expire(Infinity);
  }

  /**
   * Ends a fault after a while of virtual time (100 ms to 3 s), even while an operation waits:
   * a link or a disk heals by itself; a stalled client must not stall the heal.
   */
  #timed(end: () => void): void {
    setTimeout(end, this.#prng.int(100, 3000));
  }

  #later(step: number, run: () => Promise<void>): void {
    this.#pending.push({ step: step + this.#prng.int(1, 4), run });
  }

  async #clientOp(): Promise<void> {
    const sim = this.#sim;
    const prng = this.#prng;
    const size = sim.model.size;
    const r = prng.float();
    // With snapshots, one op in four is about them (the others keep their shares among the rest).
    if (sim.snapshotting && prng.chance(0.25)) return await this.#snapshotOp();
    if (r < 0.55) {
      const { offset, length } = this.#range(64 * 1024);
      await sim.write(offset, pattern(prng.uint32(), length));
    } else if (r < 0.85) {
      const whole = prng.chance(0.2);
      const { offset, length } = whole
        ? { offset: prng.int(0, size / OBJECT_BYTES - 1) * OBJECT_BYTES, length: OBJECT_BYTES }
        : this.#range(256 * 1024);
      await sim.read(offset, length);
    } else if (sim.discards && r < 0.95) {
      // Mostly whole objects (what a discard removes), sometimes with a partial one at an end.
      const objects = size / OBJECT_BYTES;
      const start = prng.int(0, objects - 1) * OBJECT_BYTES;
      const length = Math.min(prng.int(1, 2) * OBJECT_BYTES, size - start);
      const trim = prng.chance(0.3) ? prng.int(1, OBJECT_BYTES / 2) : 0;
      await sim.discard(start + trim, length - trim);
    } else {
      await sim.flush();
    }
  }

  /** A snapshot (the first, then two times in five, at most four), else a read of one. */
  async #snapshotOp(): Promise<void> {
    const sim = this.#sim;
    const prng = this.#prng;
    const tags = sim.snapshots;
    if (tags.length === 0 || (tags.length < 4 && prng.chance(0.4))) {
      // Half of them right after a flush of the client's, half with writes not yet flushed.
      if (prng.chance(0.5)) await sim.flush();
      return await sim.snapshot();
    }
    const { offset, length } = this.#range(256 * 1024);
    await sim.readSnapshot(prng.pick(tags), offset, length);
  }

  /** A range: 4 KiB-aligned, or across an object boundary, or anywhere. */
  #range(lengthMax: number): { offset: number; length: number } {
    const prng = this.#prng;
    const size = this.#sim.model.size;
    const shape = prng.float();
    if (shape < 0.3) {
      const length = 4096 * prng.int(1, lengthMax / 4096);
      return { offset: 4096 * prng.int(0, (size - length) / 4096), length };
    }
    if (shape < 0.5) {
      const boundary = OBJECT_BYTES * prng.int(1, size / OBJECT_BYTES - 1);
      const length = prng.int(2, lengthMax);
      return { offset: boundary - prng.int(1, length - 1), length };
    }
    const length = prng.int(1, lengthMax);
    return { offset: prng.int(0, size - length), length };
  }

  async #fault(step: number): Promise<void> {
    const sim = this.#sim;
    const members = sim.members();
    const out = sim.nodes.filter((n) => !n.up || n.away).length;
    const canLose = members.length > 1 && out < (sim.nodes.length >= 4 ? 2 : 1);
    const kinds: string[] = ["rot", "full", "sync", "reads", "net", "power"];
    if (canLose) kinds.push("crash", "crash", "away");
    if (members.length > 1) kinds.push("partition");
    if (sim.clockSkew) kinds.push("clock");
    const kind = this.#prng.pick(kinds);
    const done = await this.#inject(kind, step, members);
    if (done) this.faults[kind] = (this.faults[kind] ?? 0) + 1;
  }

  async #inject(kind: string, step: number, members: SimNode[]): Promise<boolean> {
    const sim = this.#sim;
    const prng = this.#prng;
    switch (kind) {
      case "crash": {
        const victim = prng.pick(members);
        await sim.crash([victim]);
        this.#later(step, async () => {
          if (!victim.up) await sim.restart([victim]);
        });
        return true;
      }
      case "power": {
        const all = sim.nodes.filter((n) => n.up);
        await sim.crash(all);
        await sim.restart(sim.nodes.filter((n) => !n.up));
        return true;
      }
      case "clock": {
        // A node's wall clock is set (an NTP step, an operator): back or ahead, by up to an hour.
        // Its monotonic clock goes on.
        const node = prng.pick(sim.nodes);
        const by = prng.pick([-1, 1]) *
          prng.pick([prng.int(1, 50), prng.int(51, 5_000), 3_600_000]);
        node.clockOffsetMs += by;
        sim.note(`clock of ${node.name} set ${by > 0 ? "ahead" : "back"} by ${Math.abs(by)} ms`);
        return true;
      }
      case "away": {
        const node = prng.pick(members);
        await sim.leave(node);
        this.#later(step, async () => {
          if (node.up && node.away) await sim.rejoin(node);
        });
        return true;
      }
      case "rot":
        return await this.#rot(members);
      case "full": {
        const node = prng.pick(members);
        if (sim.full.has(node)) return false;
        await sim.fillDisk(node, 4096 * prng.int(0, 16));
        sim.note(`${node.name} disk full`);
        this.#timed(() => {
          if (sim.freeDisk(node)) sim.note(`${node.name} disk has room again`);
        });
        return true;
      }
      case "sync": {
        const node = prng.pick(members);
        if (sim.syncFaults.has(node)) return false;
        node.disk.failNextSync();
        sim.syncFaults.add(node);
        sim.note(`${node.name}: its next sync fails`);
        // A failed sync is sticky until the sheep restarts: power-cycle it soon.
        this.#later(step, async () => {
          if (!node.up || !sim.syncFaults.has(node)) return;
          await sim.crash([node]);
          await sim.restart([node]);
        });
        return true;
      }
      case "reads": {
        const node = prng.pick(members);
        const index = prng.int(0, sim.model.size / OBJECT_BYTES - 1);
        const file = objectPath(node, dataOid(sim.vid, index));
        // One failing copy at a time, of an object whose other copies are good: reads and
        // writes must keep working, so no error is excused by it.
        if (sim.readFaults.size > 0 || !await node.sheep.store.exists(dataOid(sim.vid, index))) {
          return false;
        }
        // At least one other copy, and every other copy verifies (seed 18699 failed the only
        // copy's reads: an error no fault of the model excuses).
        let others = 0;
        for (const other of members) {
          if (other === node || !await other.sheep.store.exists(dataOid(sim.vid, index))) continue;
          const bad = await other.sheep.store.verify(dataOid(sim.vid, index)).catch(() => [0]);
          if (bad.length > 0) return false;
          others++;
        }
        if (others === 0) return false;
        await failReads(node, file, true);
        sim.readFaults.set(node, file);
        sim.note(`${node.name}: reads of object ${index} fail`);
        this.#timed(() => {
          if (sim.readFaults.get(node) !== file) return;
          sim.readFaults.delete(node);
          void failReads(node, file, false);
          sim.note(`${node.name}: reads of object ${index} work again`);
        });
        return true;
      }
      case "net": {
        sim.net = {
          drop: prng.pick([0, 0.05, 0.2]),
          dropReply: prng.pick([0, 0.05, 0.1]),
          delay: 0.3,
          delayMaxMs: prng.pick([5, 50, 500]),
        };
        const faults = sim.net;
        sim.note(`network: ${JSON.stringify(faults)}`);
        this.#timed(() => {
          if (sim.net !== faults) return;
          sim.net = { ...CALM };
          sim.note("network calm");
        });
        return true;
      }
      case "partition": {
        const [a, b] = prng.shuffle(members);
        const key = pairKey(a!, b!);
        if (sim.partitions.has(key)) return false;
        sim.partitions.add(key);
        sim.note(`partition ${a!.name} | ${b!.name}`);
        // Shorter than the group's failure timeout: longer, and the view would change instead.
        this.#timed(() => {
          if (!sim.partitions.delete(key)) return;
          sim.note(`partition ${a!.name} | ${b!.name} healed`);
        });
        return true;
      }
    }
    return false;
  }

  /** Rots one byte of one copy, when every other copy at the newest version is good. */
  async #rot(members: SimNode[]): Promise<boolean> {
    const sim = this.#sim;
    const prng = this.#prng;
    const allocated = [...sim.model.allocated];
    if (allocated.length === 0) return false;
    const oid = dataOid(sim.vid, prng.pick(allocated));
    const copies: { node: SimNode; meta: ObjectMeta }[] = [];
    for (const node of members) {
      const meta = await node.sheep.store.meta(oid).catch(() => undefined);
      if (!meta || !meta.verified) continue;
      if ((await node.sheep.store.verify(oid)).length > 0) return false;
      copies.push({ node, meta });
    }
    const newest = Math.max(-1, ...copies.map((c) => c.meta.version));
    const good = copies.filter((c) => c.meta.version === newest);
    if (good.length < 2 || new Set(good.map((c) => c.meta.digest)).size !== 1) return false;
    const victim = prng.pick(good);
    const offset = prng.int(0, victim.meta.size - 1);
    if ([...sim.readFaults.values()].some((file) => file.endsWith(oidToHex(oid)))) return false;
    victim.node.disk.rot(objectPath(victim.node, oid), offset);
    sim.rots++;
    sim.note(`rot ${oidToHex(oid)} on ${victim.node.name} at ${hex(offset)}`);
    return true;
  }
}

/** Bytes for one write: a seeded pattern, so every write's bytes differ from the others'. */
function pattern(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let state = seed | 1;
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    out[i] = state & 0xff;
  }
  return out;
}

/** Runs one seed: set up, `steps` steps of workload and faults, heal, converge. */
export async function runDataPathSeed(
  options: DataPathOptions & { steps?: number },
): Promise<SeedSummary> {
  return await DataPathSim.with(options, async (sim) => {
    const steps = options.steps ?? 24;
    const schedule = new Schedule(sim);
    for (let step = 0; step < steps; step++) await schedule.step(step);
    await schedule.finish();
    await sim.heal();
    await sim.converge();
    return {
      seed: sim.seed,
      steps,
      faults: schedule.faults,
      virtualMs: sim.time.now - VIRTUAL_START_MS,
      log: sim.log,
    };
  });
}

export { failReads, OBJECT_BYTES, pattern, SimNode };

/** A block (of object `index`) whose newest bytes only crash victims held clean. */
interface Uncertain {
  oid: Oid;
  index: number;
  block: number;
  size: number;
  victims: SimNode[];
}

/** The first `length` bytes of `oid`'s data file on `node`'s disk (zeros past its end). */
async function storedBytes(node: SimNode, oid: Oid, length: number): Promise<Uint8Array> {
  const file = await node.disk.open(path.join(node.objectDir, oidToHex(oid)), "r+");
  try {
    const bytes = new Uint8Array(length);
    await readFully(file, bytes, 0);
    return bytes;
  } finally {
    await file.close();
  }
}
