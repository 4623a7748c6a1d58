/**
 * Runs a {@link Membership} over UDP: multicast for discovery and broadcast, unicast for
 * everything addressed, a 100 ms tick, and an injected durable `persist`.
 *
 * Sockets:
 * - one unicast socket bound to the member's own address ("host:port" = its id); it sends
 *   everything, including multicast (interface = the cluster address, TTL 1, loopback on),
 *   so datagrams never leave through the default route;
 * - with multicast on, a receiver bound to 0.0.0.0:PORT (reuseAddr, so several members per
 *   host) that joins the group on the cluster address. Datagrams of other groups sharing the
 *   port are filtered by the group tag, and our own by sender id.
 *
 * Defaults: multicast group 239.10.10.10 (organisation-local scope), port 7001; group name
 * "sheepdog". A "broadcast" goes to the multicast group and to every seed, so a network
 * without multicast works with seeds alone (`multicast: false`).
 *
 * @module
 */

import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { assert } from "../../core/assert.ts";
import type { DatagramSeal, SealRefusal } from "../auth/datagram_seal.ts";
import { decodeDatagram, encodeDatagram, groupTagOf, peekGroupTag } from "./codec.ts";
import { tickMs } from "./limits.ts";
import { Membership, type MembershipOptions } from "./membership.ts";
import type {
  Delivery,
  EpochRecord,
  GroupMessage,
  GroupStatus,
  JsonObject,
  View,
} from "./types.ts";

/** The default multicast group and port of the dog protocol. */
export const multicastDefault = { group: "239.10.10.10", port: 7001 } as const;

/** A delivered event, as the driver hands it to `onEvent`. */
export type GroupEventDelivery = Extract<Delivery, { kind: "event" }>;

/** Construction parameters of a {@link GroupDriver}. */
export interface GroupDriverOptions {
  /** "IPv4:port" to bind; port 0 picks a free port (the id then names the real port). */
  readonly address: string;
  /** Grows with every start; defaults to the wall clock in ms at construction. */
  readonly incarnation?: number;
  readonly witness?: boolean;
  readonly info?: JsonObject;
  /** The last record of the epoch log, when restarting. */
  readonly persisted?: EpochRecord | null;
  /** Writes epoch records durably; nothing else happens until it resolves. */
  readonly persist: (records: readonly EpochRecord[]) => Promise<void>;
  /** Unicast "host:port" addresses of other members. */
  readonly seeds?: readonly string[];
  /** Multicast group and port, or false for unicast seeds only. */
  readonly multicast?: { readonly group: string; readonly port: number } | false;
  /** Name of the cluster's group: datagrams of other names are ignored. */
  readonly groupName?: string;
  /** Protocol timing in ticks (see {@link MembershipOptions}). */
  readonly timing?: Pick<
    MembershipOptions,
    "heartbeatTicks" | "failureTimeoutTicks" | "settleTicks" | "retransmitTicks"
  >;
  readonly bootstrapMinMembers?: number;
  readonly onView?: (view: View) => void;
  readonly onEvent?: (event: GroupEventDelivery) => void;
  /**
   * History was missed: rebuild state from peers; `view` is the current view, and this
   * member's proposals up to id `delivered` are in the history missed (see `Delivery`).
   */
  readonly onResync?: (view: View, delivered: number) => void;
  readonly onStatus?: (status: GroupStatus) => void;
  /** Operating errors (send failures, a failed persist, which stops the driver). */
  readonly onError?: (error: Error) => void;
  /**
   * The driver stopped itself because `persist` failed: acting on a view it could not persist
   * would break the epoch guarantees, so the member has left the group (the others install a
   * view without it) and sends or delivers nothing more. `reason` says why, in one line
   * ("cannot persist the epoch log: ..."); the same as `failure`.
   */
  readonly onFailed?: (reason: string) => void;
  /**
   * Fault injection for tests: datagrams from a member this returns false for are dropped, as
   * a network partition would. Production leaves it unset.
   */
  readonly acceptFrom?: (id: string) => boolean;
  /**
   * The cluster key's seal: every datagram sent carries its MAC, and a received one without a
   * valid MAC, or seen before, is dropped and reported through `onRefusal`.
   */
  readonly seal?: DatagramSeal;
  /** A datagram was refused: `sender` is its "ip:port". */
  readonly onRefusal?: (reason: SealRefusal, sender: string) => void;
}

/** Counters for diagnostics. */
export interface GroupDriverStats {
  received: number;
  rejected: number;
  sent: number;
  sendErrors: number;
}

/** The async driver of one group member over UDP. */
export class GroupDriver {
  readonly #options: GroupDriverOptions;
  readonly #groupTag: number;
  #machine: Membership | null = null;
  #unicast: Socket | null = null;
  #receiver: Socket | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  #id = "";
  #pumping = false;
  #stopped = false;
  /** Why the driver stopped itself (see `onFailed`). */
  #failure: string | undefined;
  readonly stats: GroupDriverStats = { received: 0, rejected: 0, sent: 0, sendErrors: 0 };

  constructor(options: GroupDriverOptions) {
    parseAddress(options.address); // fail early on a bad address
    this.#options = options;
    this.#groupTag = groupTagOf(options.groupName ?? "sheepdog");
  }

  /** This member's id ("host:port"), known once started. */
  get id(): string {
    assert(this.#id !== "", "the driver is not started");
    return this.#id;
  }

  /**
   * Binds the sockets, joins the multicast group and starts ticking.
   *
   * @throws {Error} when binding or joining fails (the message says why and what to do).
   */
  async start(): Promise<void> {
    assert(this.#unicast === null && !this.#stopped, "start() once");
    try {
      await this.#startSockets();
    } catch (error) {
      await this.stop(); // leave no socket behind: the caller may retry on the same port
      throw error;
    }
  }

  async #startSockets(): Promise<void> {
    const { host, port } = parseAddress(this.#options.address);
    const unicast = createSocket({ type: "udp4" });
    this.#unicast = unicast;
    await bindSocket(unicast, port, host);
    unicast.on("message", (data, remote) => this.#onDatagram(data, remote));
    unicast.on("error", (error) => this.#report(error));
    this.#id = `${host}:${unicast.address().port}`;
    const multicast = this.#options.multicast ?? multicastDefault;
    if (multicast !== false) await this.#joinMulticast(host, multicast);
    this.#machine = this.#newMachine();
    this.#timer = setInterval(() => this.#tick(), tickMs);
    // The tick alone must not keep a process alive; the sockets decide that.
    (this.#timer as { unref?: () => void }).unref?.();
    this.#tick();
  }

  async #joinMulticast(host: string, multicast: { group: string; port: number }): Promise<void> {
    const unicast = this.#unicast!;
    const receiver = createSocket({ type: "udp4", reuseAddr: true });
    this.#receiver = receiver;
    await bindSocket(receiver, multicast.port, "0.0.0.0");
    receiver.on("message", (data, remote) => this.#onDatagram(data, remote));
    receiver.on("error", (error) => this.#report(error));
    try {
      receiver.addMembership(multicast.group, host);
      unicast.setMulticastInterface(host);
      unicast.setMulticastTTL(1); // stay on the local network; TTL 0 is rejected by some runtimes
      unicast.setMulticastLoopback(true); // members on the same host hear each other
    } catch (error) {
      throw new Error(
        `Cannot join multicast group ${multicast.group} on ${host}: ${(error as Error).message}` +
          " (no route for 224.0.0.0/4 on that interface? add one, or use seeds with multicast off)",
      );
    }
  }

  #newMachine(): Membership {
    const options = this.#options;
    return new Membership({
      self: {
        id: this.#id,
        incarnation: options.incarnation ?? Date.now(),
        witness: options.witness ?? false,
        info: options.info ?? {},
      },
      persisted: options.persisted ?? null,
      seeds: options.seeds ?? [],
      bootstrapMinMembers: options.bootstrapMinMembers,
      ...options.timing,
    });
  }

  /** Stops ticking and closes every socket. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await Promise.all([closeSocket(this.#unicast), closeSocket(this.#receiver)]);
    this.#unicast = null;
    this.#receiver = null;
  }

  /**
   * Proposes a cluster event for total-order delivery.
   *
   * @returns the proposal id (`proposalId` of the delivered event).
   * @throws {RangeError} when the payload exceeds one datagram (`proposalBytesMax`).
   */
  propose(payload: Uint8Array): number {
    const pid = this.#running().propose(payload);
    this.#pump();
    return pid;
  }

  /** Leaves the group (the master installs a view without this member). */
  leave(): void {
    this.#running().leave();
    this.#pump();
  }

  /** Operator override while waiting for nodes: form a view with the nodes present. */
  forceRecover(): boolean {
    const formed = this.#running().forceRecover();
    this.#pump();
    return formed;
  }

  /** True when `id` was heard from within the failure timeout (Membership.isHeard). */
  isHeard(id: string): boolean {
    return this.#machine === null || this.#stopped || this.#machine.isHeard(id);
  }

  /** The member's standing. */
  status(): GroupStatus {
    return this.#running().status();
  }

  /** Why the driver stopped itself ("cannot persist the epoch log: ..."), if it did. */
  get failure(): string | undefined {
    return this.#failure;
  }

  #running(): Membership {
    // An operating condition, not a programmer's error: the caller may not have heard yet.
    if (this.#failure !== undefined) {
      throw new Error(`This member has left the group: ${this.#failure}`);
    }
    assert(this.#machine !== null && !this.#stopped, "the driver is not running");
    return this.#machine;
  }

  #tick(): void {
    if (this.#stopped || this.#machine === null) return;
    this.#machine.tick();
    this.#pump();
  }

  #onDatagram(data: Uint8Array, remote: RemoteInfo): void {
    if (this.#stopped || this.#machine === null) return;
    this.stats.received++;
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    // Another cluster sharing the port is not a stranger to report: skip its datagrams first.
    const tag = peekGroupTag(bytes);
    if (tag === undefined) {
      this.stats.rejected++;
      return;
    }
    if (tag !== this.#groupTag) return;
    const seal = this.#options.seal;
    if (seal) {
      const sender = `${remote.address}:${remote.port}`;
      const opened = seal.open(bytes, sender);
      if (!opened.ok) {
        this.stats.rejected++;
        this.#options.onRefusal?.(opened.reason, sender);
        return;
      }
      bytes = opened.datagram;
    }
    const decoded = decodeDatagram(bytes);
    if (!decoded.ok) {
      this.stats.rejected++;
      return;
    }
    if (decoded.groupTag !== this.#groupTag || decoded.from === this.#id) return;
    if (this.#options.acceptFrom && !this.#options.acceptFrom(decoded.from)) return;
    this.#machine.step(decoded.from, decoded.msg);
    this.#pump();
  }

  /** Performs effects in the documented order, one Ready at a time. */
  #pump(): void {
    if (this.#pumping) return; // the running loop picks up whatever arrives meanwhile
    this.#pumping = true;
    this.#pumpLoop().catch((error) => {
      const detail = (error as Error).message;
      this.#failure = `cannot persist the epoch log: ${detail}`;
      this.#report(new Error(`Cannot persist the epoch log: ${detail}`));
      // Acting on an unpersisted view could break the epoch guarantees: stop instead.
      void this.stop();
      this.#options.onFailed?.(this.#failure);
    }).finally(() => {
      this.#pumping = false;
      // Effects queued while the last await was settling would otherwise wait for a tick.
      if (!this.#stopped && this.#machine?.hasReady()) this.#pump();
    });
  }

  async #pumpLoop(): Promise<void> {
    while (!this.#stopped && this.#machine !== null && this.#machine.hasReady()) {
      const machine = this.#machine;
      const ready = machine.ready();
      if (ready.persist.length > 0) await this.#options.persist(ready.persist);
      if (this.#stopped) return;
      // A hello goes to every peer as one object: encode it once. Seal every send on its own:
      // a peer hears a hello both from the group and addressed to it, and two copies under
      // one sequence number would make the second a "replay" (a false refusal each heartbeat).
      const encoded = new Map<GroupMessage, Uint8Array>();
      for (const { to, msg } of ready.messages) {
        let bytes = encoded.get(msg);
        if (bytes === undefined) {
          bytes = encodeDatagram(this.#id, msg, this.#groupTag);
          encoded.set(msg, bytes);
        }
        this.#send(to, bytes);
      }
      for (const delivery of ready.deliver) this.#deliver(delivery);
      for (const notice of ready.notices) this.#options.onError?.(new Error(notice));
      if (ready.status !== null) this.#options.onStatus?.(ready.status);
      machine.advance();
    }
  }

  #deliver(delivery: Delivery): void {
    if (delivery.kind === "view") this.#options.onView?.(delivery.view);
    else if (delivery.kind === "resync") {
      this.#options.onResync?.(delivery.view, delivery.delivered);
    } else this.#options.onEvent?.(delivery);
  }

  #send(to: string, bytes: Uint8Array): void {
    const socket = this.#unicast;
    if (socket === null) return;
    if (to !== "broadcast") {
      this.#sendTo(socket, bytes, to);
      return;
    }
    const multicast = this.#options.multicast ?? multicastDefault;
    if (multicast !== false) this.#sendRaw(socket, bytes, multicast.port, multicast.group);
    for (const seed of this.#options.seeds ?? []) {
      if (seed !== this.#id) this.#sendTo(socket, bytes, seed);
    }
  }

  #sendTo(socket: Socket, bytes: Uint8Array, to: string): void {
    const address = tryParseAddress(to);
    if (address !== null) this.#sendRaw(socket, bytes, address.port, address.host);
  }

  #sendRaw(socket: Socket, bytes: Uint8Array, port: number, host: string): void {
    this.stats.sent++;
    const sealed = this.#options.seal ? this.#options.seal.seal(bytes) : bytes;
    socket.send(sealed, port, host, (error) => {
      if (error === null || error === undefined) return;
      this.stats.sendErrors++;
      // One report per kind is enough: a missing route fails every send the same way.
      if (this.stats.sendErrors === 1) {
        this.#report(new Error(`Cannot send to ${host}:${port}: ${error.message}`));
      }
    });
  }

  #report(error: Error): void {
    this.#options.onError?.(error);
  }
}

function parseAddress(address: string): { host: string; port: number } {
  const parsed = tryParseAddress(address);
  if (parsed === null) {
    throw new TypeError(`Cannot use address "${address}": expected IPv4:PORT, e.g. 10.0.0.1:7000`);
  }
  return parsed;
}

function tryParseAddress(address: string): { host: string; port: number } | null {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(address);
  if (match === null) return null;
  const port = Number(match[2]);
  const octetsOk = match[1]!.split(".").every((octet) => Number(octet) <= 255);
  if (!octetsOk || port > 65535) return null;
  return { host: match[1]!, port };
}

function bindSocket(socket: Socket, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => {
      reject(new Error(`Cannot bind UDP ${host}:${port}: ${error.message}`));
    };
    socket.once("error", onError);
    socket.bind(port, host, () => {
      socket.off("error", onError);
      resolve();
    });
  });
}

function closeSocket(socket: Socket | null): Promise<void> {
  if (socket === null) return Promise.resolve();
  return new Promise((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}
