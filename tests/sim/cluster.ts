/**
 * An in-process cluster of group members on a simulated network and simulated disks. Time is
 * `tick()`: due datagrams are stepped in, then every live node ticks, and after each input the
 * node's `Ready` is processed in the documented order (persist, send, deliver) with the
 * checkers watching every delivery.
 *
 * @module
 */

import { Membership } from "../../net/group/mod.ts";
import type { EpochRecord, GroupStatus, MemberInfo } from "../../net/group/mod.ts";
import { Checker, type NodeHistory } from "./checkers.ts";
import { type NetworkFaults, SimNetwork } from "./network.ts";
import { Prng } from "./prng.ts";

/** Protocol timing used by simulated nodes (shorter than production to keep runs fast). */
export interface SimTiming {
  heartbeatTicks: number;
  failureTimeoutTicks: number;
  settleTicks: number;
  retransmitTicks: number;
}

/** How to build a simulated cluster. */
export interface SimOptions {
  seed: number;
  /** Node count; node i has id "10.0.0.{i+1}:7000". */
  nodes: number;
  /** The last `witnesses` nodes are dog witnesses. */
  witnesses?: number;
  faults?: Partial<NetworkFaults>;
  timing?: Partial<SimTiming>;
  bootstrapMinMembers?: number;
  /** Probability that a node crashes right after persisting a Ready, before acting on it. */
  crashAfterPersistRate?: number;
}

/** One simulated machine: its disk survives crashes; its process does not. */
export class SimNode {
  readonly id: string;
  readonly witness: boolean;
  incarnation = 0;
  machine: Membership | null = null;
  /** The durable epoch log. */
  readonly disk: EpochRecord[] = [];
  history: NodeHistory | null = null;
  /** Proposal ids of the current incarnation. */
  proposals: number[] = [];

  constructor(id: string, witness: boolean) {
    this.id = id;
    this.witness = witness;
  }

  get alive(): boolean {
    return this.machine !== null;
  }

  status(): GroupStatus {
    if (this.machine === null) throw new Error(`${this.id} is down`);
    return this.machine.status();
  }
}

export const defaultFaults: NetworkFaults = {
  dropRate: 0,
  duplicateRate: 0,
  delayMin: 1,
  delayMax: 1,
  codecRate: 1,
  corruptRate: 0,
  multicast: true,
};

export const defaultTiming: SimTiming = {
  heartbeatTicks: 3,
  failureTimeoutTicks: 15,
  settleTicks: 12,
  retransmitTicks: 2,
};

/** A whole simulated cluster. */
export class SimCluster {
  readonly prng: Prng;
  readonly network: SimNetwork;
  /** What the nodes' group machines asked to tell an operator, in order. */
  readonly notices: { node: string; text: string }[] = [];
  readonly checker = new Checker();
  readonly nodes: SimNode[];
  readonly timing: SimTiming;
  readonly #options: SimOptions;
  /** Probability that a node crashes right after persisting, before acting on a Ready. */
  crashAfterPersistRate: number;
  now = 0;

  constructor(options: SimOptions) {
    this.#options = options;
    this.crashAfterPersistRate = options.crashAfterPersistRate ?? 0;
    this.prng = new Prng(options.seed);
    this.network = new SimNetwork(this.prng, { ...defaultFaults, ...options.faults });
    this.timing = { ...defaultTiming, ...options.timing };
    const witnesses = options.witnesses ?? 0;
    this.nodes = Array.from(
      { length: options.nodes },
      (_, i) => new SimNode(`10.0.0.${i + 1}:7000`, i >= options.nodes - witnesses),
    );
    this.network.setNodes(this.nodes.map((n) => n.id));
  }

  node(index: number): SimNode {
    const node = this.nodes[index];
    if (node === undefined) throw new RangeError(`no node ${index}`);
    return node;
  }

  live(): SimNode[] {
    return this.nodes.filter((n) => n.alive);
  }

  /** Starts (or restarts, from its disk) a node as a new incarnation. */
  start(node: SimNode): void {
    if (node.alive) throw new Error(`${node.id} is already up`);
    node.incarnation++;
    node.history = this.checker.newHistory(node.id, node.incarnation);
    node.proposals = [];
    const info = { zone: this.nodes.indexOf(node), vnodes: node.witness ? 0 : 128 };
    node.machine = new Membership({
      self: { id: node.id, incarnation: node.incarnation, witness: node.witness, info },
      persisted: node.disk.at(-1) ?? null,
      seeds: this.nodes.map((n) => n.id),
      bootstrapMinMembers: this.#options.bootstrapMinMembers,
      ...this.timing,
    });
  }

  crash(node: SimNode): void {
    node.machine = null;
  }

  /** Queues a proposal on a live node. */
  propose(node: SimNode, payload: Uint8Array): number {
    const machine = node.machine;
    if (machine === null) throw new Error(`${node.id} is down`);
    const pid = machine.propose(payload);
    node.proposals.push(pid);
    this.#process(node);
    return pid;
  }

  /** One tick of simulated time. */
  tick(): void {
    this.now++;
    for (const datagram of this.network.take(this.now)) {
      const node = this.nodes.find((n) => n.id === datagram.to);
      if (node?.machine == null) continue;
      node.machine.step(datagram.from, datagram.msg);
      this.#process(node);
    }
    for (const node of this.nodes) {
      if (node.machine === null) continue;
      node.machine.tick();
      this.#process(node);
    }
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) this.tick();
  }

  /** Runs until `done()` holds (checked every tick) or `ticksMax` pass; returns whether it held. */
  runUntil(done: () => boolean, ticksMax: number): boolean {
    for (let i = 0; i < ticksMax; i++) {
      if (done()) return true;
      this.tick();
    }
    return done();
  }

  /** Persist, then send, then deliver: the order the API documents. */
  #process(node: SimNode): void {
    while (node.machine !== null && node.machine.hasReady()) {
      const machine = node.machine;
      const ready = machine.ready();
      node.disk.push(...ready.persist);
      if (ready.persist.length > 0 && this.prng.chance(this.crashAfterPersistRate)) {
        this.crash(node); // durable writes done, nothing else acted upon
        return;
      }
      for (const { to, msg } of ready.messages) this.network.send(this.now, node.id, to, msg);
      this.notices.push(...ready.notices.map((text) => ({ node: node.id, text })));
      const cluster = machine.status().cluster;
      for (const delivery of ready.deliver) {
        this.checker.onDelivery(node.history!, cluster, delivery, node.disk);
      }
      machine.advance();
    }
  }

  /** Whether all live nodes are primary in one view made of exactly the live nodes. */
  converged(): boolean {
    const live = this.live();
    if (live.length === 0) return false;
    const expected = live.map((n) => `${n.id}#${n.incarnation}`).sort().join(",");
    let key: string | null = null;
    for (const node of live) {
      const status = node.status();
      if (status.state !== "primary" || status.view === null || status.master === null) {
        return false;
      }
      const members = memberKeys(status.view.members);
      if (members !== expected) return false;
      const nodeKey = `${status.cluster}|${status.view.epoch}|${status.master}`;
      if (key !== null && key !== nodeKey) return false;
      key = nodeKey;
    }
    return true;
  }

  /** A one-line summary of every node, for failure messages. */
  describe(): string {
    return this.nodes.map((n) => {
      if (!n.alive) return `${n.id} down`;
      const s = n.status();
      return `${n.id}#${n.incarnation} ${s.state} e${s.view?.epoch ?? 0} ` +
        `m=${s.master ?? "-"} [${s.view ? memberKeys(s.view.members) : ""}]`;
    }).join("\n");
  }
}

function memberKeys(members: readonly MemberInfo[]): string {
  return members.map((m) => `${m.id}#${m.incarnation}`).sort().join(",");
}
