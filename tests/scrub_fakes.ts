/**
 * A fake cluster for Scrubber tests: a view of a few nodes, one in-memory store per node
 * (each copy a meta plus the blocks that fail their checksum), a gateway-like `repair`, a
 * clock that only moves when the scrubber sleeps, and counters of what was asked.
 *
 * @module
 */

import { type ClusterView, makeView, targetsOf } from "../core/cluster/view.ts";
import { ResultCode, SheepdogError } from "../core/errors.ts";
import type { RingNode } from "../core/hash/ring.ts";
import type { BadBlock, ObjectMeta } from "../core/store/object_store.ts";
import type { Oid } from "../core/vdi/oid.ts";
import { compareCopies } from "../core/cluster/copy_choice.ts";
import { ObjectClient } from "../net/object/client.ts";
import type { Message } from "../net/object/header.ts";
import { Opcode } from "../net/object/ops.ts";
import { LocalTransport, type Transport } from "../net/object/transport.ts";
import { Scrubber, type ScrubContext, type ScrubOptions } from "../net/sheep/scrub.ts";
import { type ScrubHost, scrubStatusRequest, startScrubRequest } from "../net/sheep/scrub_ops.ts";

/** One copy: its meta and its rotted blocks (what `verify` reports). */
export interface FakeCopy {
  meta: ObjectMeta;
  bad: BadBlock[];
  /** Blocks that read bad once only (a write under the first read). */
  transient?: BadBlock[];
}

export const OBJECT_BYTES = 1 << 20;

export function fakeNode(index: number): RingNode {
  return {
    id: `10.0.0.${index + 1}:7000`,
    host: `10.0.0.${index + 1}`,
    port: 7000,
    zone: index + 1,
    vnodes: 64,
  };
}

export class FakeWorld {
  readonly nodes: RingNode[];
  readonly copies: number;
  view: ClusterView;
  readonly stores = new Map<string, Map<Oid, FakeCopy>>();
  nowMs = 1_700_000_000_000;
  readonly sleeps: number[] = [];
  readonly repairs: { oid: Oid; suspects: string[] }[] = [];
  readonly listCalls = new Map<string, number>();
  readonly logs: string[] = [];
  recovering = false;
  serving = true;
  /** Objects the orphan check calls orphans. */
  readonly orphaned = new Set<Oid>();
  readonly unreachable = new Set<string>();
  /** Runs after every listing of a node (to change the world between listing and compare). */
  afterList: (node: RingNode) => void = () => {};
  /** When set, `verify` waits for it (to keep a pass running). */
  verifyGate: Promise<void> | undefined;

  constructor(options: { nodes: number; copies: number }) {
    this.nodes = Array.from({ length: options.nodes }, (_, i) => fakeNode(i));
    this.copies = options.copies;
    this.view = makeView(1, this.nodes);
    for (const node of this.nodes) this.stores.set(node.id, new Map());
  }

  targets(oid: Oid): RingNode[] {
    return targetsOf(this.view, oid, this.copies);
  }

  /** The first oid from `start` upwards whose first target is (or is not) `node`. */
  oidFirstOn(node: string, from: Oid, first = true): Oid {
    for (let oid = from; oid < from + 10_000n; oid++) {
      if ((this.targets(oid)[0]!.id === node) === first) return oid;
    }
    throw new Error("no such oid");
  }

  /** Stores `oid` on its targets (or `on`) at `version`, every copy equal and clean. */
  put(oid: Oid, options: { version?: number; on?: string[]; size?: number } = {}): void {
    const on = options.on ?? this.targets(oid).map((n) => n.id);
    for (const id of on) {
      const version = options.version ?? 1;
      this.stores.get(id)!.set(oid, {
        meta: {
          version,
          size: options.size ?? OBJECT_BYTES,
          digest: `d${version}`,
          verified: true,
        },
        bad: [],
      });
    }
  }

  copy(node: string, oid: Oid): FakeCopy | undefined {
    return this.stores.get(node)!.get(oid);
  }

  /** Rots block `index` of `node`'s copy of `oid`. */
  rot(node: string, oid: Oid, index = 3): void {
    this.copy(node, oid)!.bad.push({ index, reason: "checksum mismatch" });
  }

  /** The gateway's reconcile, simplified: the best clean copy of a non-suspect goes everywhere. */
  repair(oid: Oid, suspects: ReadonlySet<string> = new Set()): Promise<boolean> {
    this.repairs.push({ oid, suspects: [...suspects] });
    const targets = this.targets(oid);
    const candidates = targets
      .map((node, rank) => ({ node, rank, copy: this.copy(node.id, oid) }))
      .filter((c): c is { node: RingNode; rank: number; copy: FakeCopy } =>
        c.copy !== undefined && c.copy.bad.length === 0 && !suspects.has(c.node.id)
      )
      .sort((a, b) => compareCopies(a.copy.meta, b.copy.meta) || a.rank - b.rank);
    const source = candidates[0];
    if (!source) return Promise.resolve(targets.every((n) => !this.copy(n.id, oid)));
    for (const node of targets) {
      if (node.id === source.node.id) continue;
      const mine = this.copy(node.id, oid);
      if (
        mine && mine.bad.length === 0 && !suspects.has(node.id) &&
        mine.meta.version === source.copy.meta.version &&
        mine.meta.digest === source.copy.meta.digest
      ) continue;
      this.stores.get(node.id)!.set(oid, { meta: { ...source.copy.meta }, bad: [] });
    }
    return Promise.resolve(true);
  }

  context(self: string): ScrubContext {
    const store = this.stores.get(self)!;
    const log = (level: string) => (message: string) => void this.logs.push(`${level}: ${message}`);
    return {
      selfId: self,
      logger: { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") },
      listLocal: () => Promise.resolve([...store.keys()]),
      meta: (oid) => Promise.resolve(store.get(oid)?.meta),
      verify: async (oid) => {
        await this.verifyGate;
        const copy = store.get(oid);
        if (!copy) throw new SheepdogError(ResultCode.NO_OBJ, "No object");
        const transient = copy.transient ?? [];
        delete copy.transient;
        return [...copy.bad, ...transient];
      },
      exclusive: (_oid, work) => work(),
      listCopies: (node) => {
        this.listCalls.set(node.id, (this.listCalls.get(node.id) ?? 0) + 1);
        if (this.unreachable.has(node.id)) {
          return Promise.reject(new SheepdogError(ResultCode.NETWORK_ERROR, "Peer is unreachable"));
        }
        const copies = [...this.stores.get(node.id)!].map(([oid, c]) => ({
          oid,
          meta: { ...c.meta },
        }));
        this.afterList(node);
        return Promise.resolve(copies);
      },
      nodeMeta: (node, oid) => {
        if (this.unreachable.has(node.id)) {
          return Promise.reject(new SheepdogError(ResultCode.NETWORK_ERROR, "Peer is unreachable"));
        }
        const copy = this.copy(node.id, oid);
        return Promise.resolve(copy ? { ...copy.meta } : undefined);
      },
      copies: () => this.copies,
      repair: (oid, suspects) => this.repair(oid, suspects),
      // Blocks are not modelled: nothing heals in place, every bad copy goes to `repair`.
      heal: (oid) => Promise.resolve(store.get(oid)?.bad.length ?? 0),
      orphans: () => (oid) => Promise.resolve(this.orphaned.has(oid)),
      remove: (oid) => {
        for (const copies of this.stores.values()) copies.delete(oid);
        return Promise.resolve();
      },
      view: () => this.view,
      recovering: () => this.recovering,
      serving: () => this.serving,
      now: () => this.nowMs,
      sleep: async (ms, signal) => {
        if (signal?.aborted) return;
        this.sleeps.push(ms);
        this.nowMs += ms;
        // A real turn of the event loop, so nothing here can starve the test's own timers.
        await new Promise((resolve) => setTimeout(resolve, 0));
      },
    };
  }
}

/** Polls `check` on real time (the scrubber's sleeps are fake but take a macrotask each). */
export async function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/**
 * The scrub opcodes of a fake cluster: one Scrubber per node of `world`, each answering
 * START_SCRUB and STAT_SCRUB through the real handlers, peers reached in-process (those in
 * `world.unreachable` fail as a lost connection would).
 */
export class FakeScrubCluster {
  readonly world: FakeWorld;
  readonly scrubbers = new Map<string, Scrubber>();
  readonly hosts = new Map<string, ScrubHost>();

  constructor(world: FakeWorld, options: ScrubOptions = {}) {
    this.world = world;
    for (const node of world.nodes) {
      const scrubber = new Scrubber(world.context(node.id), options);
      this.scrubbers.set(node.id, scrubber);
      this.hosts.set(node.id, {
        id: node.id,
        get view() {
          return world.view;
        },
        peers: { get: (peer) => new ObjectClient(this.transport(peer.id)) },
        scrubber,
      });
    }
  }

  /** A transport to node `id`, as a peer or a client would use it. */
  transport(id: string): Transport {
    if (this.world.unreachable.has(id)) {
      return {
        request: () =>
          Promise.reject(new SheepdogError(ResultCode.NETWORK_ERROR, "Peer is unreachable")),
        close: () => Promise.resolve(),
      };
    }
    return new LocalTransport((request) => this.handle(id, request));
  }

  /** Node `id`'s answer to `request` (an ObjectServer can serve this over TCP). */
  async handle(id: string, request: Message): Promise<Message> {
    const host = this.hosts.get(id)!;
    const reply = request.header.reply(ResultCode.SUCCESS, this.world.view.epoch);
    try {
      const op = request.header.opcode;
      if (op === Opcode.START_SCRUB) {
        return { header: reply, data: await startScrubRequest(host, request) };
      }
      if (op === Opcode.STAT_SCRUB) {
        return { header: reply, data: await scrubStatusRequest(host, request) };
      }
      throw new SheepdogError(ResultCode.NO_SUPPORT, `Unknown opcode ${op}`);
    } catch (error) {
      reply.result = error instanceof SheepdogError ? error.code : ResultCode.SYSTEM_ERROR;
      return { header: reply, data: new TextEncoder().encode((error as Error).message) };
    }
  }

  async settled(): Promise<void> {
    await Promise.all([...this.scrubbers.values()].map((s) => s.settled()));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.scrubbers.values()].map((s) => s.stop()));
  }
}
