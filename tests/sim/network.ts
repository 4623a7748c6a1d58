/**
 * A simulated datagram network: per-message drop, duplication, delay (hence reordering) and
 * corruption, partitions, and optional multicast. Time is the simulation's tick; deliveries
 * come out of one queue ordered by (tick, sequence number), so a run is a function of its seed.
 *
 * @module
 */

import { decodeDatagram, encodeDatagram } from "../../net/group/codec.ts";
import type { GroupMessage } from "../../net/group/mod.ts";
import type { Prng } from "./prng.ts";

/** Fault rates and shape of the network. */
export interface NetworkFaults {
  dropRate: number;
  duplicateRate: number;
  /** Delivery delay in ticks, uniform in [delayMin, delayMax]. */
  delayMin: number;
  delayMax: number;
  /** Fraction of datagrams that go through the real codec (the rest are passed as objects). */
  codecRate: number;
  /** Fraction of encoded datagrams with one byte flipped (they must be rejected or harmless). */
  corruptRate: number;
  /** Whether "broadcast" reaches every node (multicast) or nobody (unicast-only networks). */
  multicast: boolean;
}

/** A message in flight. */
export interface Datagram {
  readonly from: string;
  readonly to: string;
  readonly msg: GroupMessage;
}

const groupTag = 0x5eed;

/** The simulated network between node ids. */
export class SimNetwork {
  faults: NetworkFaults;
  readonly #prng: Prng;
  readonly #queue = new Map<number, Datagram[]>();
  #groupOf = new Map<string, number>();
  #nodes: readonly string[] = [];
  /** Datagrams the codec rejected (corruption) and that were therefore dropped. */
  rejected = 0;
  sent = 0;
  /**
   * Sees every datagram a node puts on the wire, before faults: a multicast once, with `to`
   * "broadcast" (none is sent without multicast). The scale benchmark counts traffic with it.
   */
  tap: ((from: string, to: string, msg: GroupMessage) => void) | null = null;

  constructor(prng: Prng, faults: NetworkFaults) {
    this.#prng = prng;
    this.faults = faults;
  }

  /** The ids a "broadcast" reaches. */
  setNodes(ids: readonly string[]): void {
    this.#nodes = ids;
  }

  /** Splits the nodes: only nodes of the same group can talk. Unlisted nodes are isolated. */
  partition(groups: readonly (readonly string[])[]): void {
    this.#groupOf = new Map();
    groups.forEach((group, index) => group.forEach((id) => this.#groupOf.set(id, index)));
  }

  /** Removes every partition. */
  heal(): void {
    this.#groupOf = new Map();
  }

  /** Whether any partition is in place. */
  get partitioned(): boolean {
    return this.#groupOf.size > 0;
  }

  connected(a: string, b: string): boolean {
    if (this.#groupOf.size === 0) return true;
    const groupA = this.#groupOf.get(a);
    return groupA !== undefined && groupA === this.#groupOf.get(b);
  }

  /** Sends `msg` at tick `now`; "broadcast" goes to every other node when multicast is on. */
  send(now: number, from: string, to: string, msg: GroupMessage): void {
    if (to !== "broadcast") {
      this.tap?.(from, to, msg);
      this.#sendOne(now, from, to, msg);
      return;
    }
    if (!this.faults.multicast) return;
    this.tap?.(from, to, msg);
    for (const id of this.#nodes) if (id !== from) this.#sendOne(now, from, id, msg);
  }

  #sendOne(now: number, from: string, to: string, msg: GroupMessage): void {
    this.sent++;
    const prng = this.#prng;
    if (!this.connected(from, to) || prng.chance(this.faults.dropRate)) return;
    const copies = prng.chance(this.faults.duplicateRate) ? 2 : 1;
    for (let copy = 0; copy < copies; copy++) {
      const carried = this.#carry(from, msg);
      if (carried === null) continue;
      const tick = now + prng.int(this.faults.delayMin, this.faults.delayMax);
      const bucket = this.#queue.get(tick);
      const datagram = { from, to, msg: carried };
      if (bucket === undefined) this.#queue.set(tick, [datagram]);
      else bucket.push(datagram);
    }
  }

  /** Passes a sample through the real codec, sometimes corrupted; null if it got rejected. */
  #carry(from: string, msg: GroupMessage): GroupMessage | null {
    const prng = this.#prng;
    if (!prng.chance(this.faults.codecRate)) return msg;
    const bytes = encodeDatagram(from, msg, groupTag);
    if (prng.chance(this.faults.corruptRate)) {
      const index = prng.int(0, bytes.length - 1);
      bytes[index] = bytes[index]! ^ (1 << prng.int(0, 7));
    }
    const decoded = decodeDatagram(bytes);
    if (!decoded.ok || decoded.from !== from || decoded.groupTag !== groupTag) {
      this.rejected++;
      return null;
    }
    return decoded.msg;
  }

  /** Takes the datagrams due at `tick`, in send order; partitions apply at delivery too. */
  take(tick: number): Datagram[] {
    const due = this.#queue.get(tick) ?? [];
    this.#queue.delete(tick);
    return due.filter((d) => this.connected(d.from, d.to));
  }
}
