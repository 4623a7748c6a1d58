/**
 * The etcd cluster driver: membership, epochs and the total order of cluster events kept in an
 * etcd cluster instead of the built-in group, for clusters larger than a group protocol should
 * carry. The key layout is in etcd_layout.ts, the epoch rules in etcd_epoch.ts, the lease and
 * what losing touch means in etcd_lease.ts.
 *
 * Every sheep watches the whole prefix and handles each change in revision order through one
 * queue: member keys (who is alive), the epoch key (the view, installed when it names this
 * process), event keys (applied, the proposer's result going back to its caller). A watch that
 * breaks resumes from the last revision received; one that fell behind a compaction reloads:
 * the current keys are read again, events still kept are applied from there, and if some were
 * already trimmed the state comes from peers (GET_CLUSTER_STATE), as the built-in group does
 * for a node that missed history.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import { makeView } from "../../core/cluster/view.ts";
import type { ClusterEvent } from "../../core/cluster/cluster_events.ts";
import { ETCD_EVENTS_KEPT, ETCD_TRIM_BATCH } from "../../core/limits.ts";
import {
  admitProposal,
  type ClusterDriver,
  type ClusterStanding,
  type MemberHost,
} from "../sheep/cluster_driver.ts";
import { ApplyQueue } from "../sheep/apply_queue.ts";
import { Changes } from "../sheep/changes.ts";
import { EpochLog, type StoredEpoch } from "../sheep/epoch_log.ts";
import { nextIncarnation } from "../sheep/incarnation.ts";
import { mergeFromPeers } from "../sheep/peer_state.ts";
import { Proposals } from "../sheep/proposals.ts";
import { memberInfoOf } from "../sheep/member_info.ts";
import { EtcdClient, type KeyValue } from "./etcd_client.ts";
import { epochWriter, type LiveMember, nextEpoch } from "./etcd_epoch.ts";
import {
  decodeEnvelope,
  decodeEpoch,
  decodeMember,
  encodeJson,
  type EpochValue,
  EtcdLayout,
  type EventEnvelope,
  type MemberRecord,
} from "./etcd_layout.ts";
import { EtcdLease, sleep } from "./etcd_lease.ts";
import { type WatchEvent, watchPrefix } from "./etcd_watch.ts";

export interface EtcdDriverOptions {
  /** "host:port" of etcd members' client ports. */
  endpoints: readonly string[];
  /** Where this cluster's keys live (default "/sheepdog/"). */
  prefix?: string;
  /** This cluster's id (a fingerprint of its key): another id under the prefix is refused. */
  clusterId: string;
  /** A sheep whose lease lapses this long after its last renewal is gone (default 5000 ms). */
  failureTimeoutMs?: number;
  /** How long the first sheep waits for others before it writes the first epoch (3000 ms). */
  settleMs?: number;
  /** Events kept in etcd before the oldest are deleted (default ETCD_EVENTS_KEPT). */
  eventsKept?: number;
  /** How requests are sent (default: the global fetch). */
  fetch?: typeof fetch;
}

/** How long a burst of membership changes may take to settle into one epoch. */
const EPOCH_DEBOUNCE_MS = 100;
/** Between attempts to write an epoch that failed, and between watch reconnections. */
const RETRY_MS = 200;
/** How long a proposal is retried while etcd does not answer. */
const APPEND_FOR_MS = 30_000;

export class EtcdDriver implements ClusterDriver {
  readonly #host: MemberHost;
  readonly #options: EtcdDriverOptions;
  readonly #client: EtcdClient;
  readonly #layout: EtcdLayout;
  readonly epochLog: EpochLog;
  readonly #queue: ApplyQueue;
  readonly #proposals = new Proposals<string>();
  readonly #lease: EtcdLease;
  #self: MemberRecord | undefined;
  /** The create revision of this sheep's member key (a new one after a lapsed lease). */
  #memberRevision = 0;
  #running = false;
  #state: ClusterStanding = "forming";
  /** Notified at every change of standing and at stop (a proposal waits for a standing). */
  readonly #standing = new Changes();
  #startedAt = 0;
  /** What the handled part of the stream says: live members, the epoch key, the trim floor. */
  readonly #live = new Map<string, LiveMember>();
  #epoch: EpochValue | null = null;
  #epochRevision = 0;
  #floor = 0;
  #eventKeys = 0;
  /** The last revision handled (applied), and the last one the watch received. */
  #lastRev = 0;
  #received = 0;
  /**
   * The last view installed on the host (it names this process); set once its catch-up from
   * peers is done, and only then is the node primary.
   */
  #installed: EpochValue | null = null;
  #forced = false;
  #proposalId = 0;
  #stop = new AbortController();
  #watch: Promise<void> | undefined;
  /** The current watch connection: dropped when the lease says etcd is out of reach. */
  #watchAttempt: AbortController | undefined;
  #epochTimer: ReturnType<typeof setTimeout> | undefined;
  #registering: Promise<void> | undefined;
  #trimming = false;
  /** Out of touch with etcd since the lease said so. */
  #cutOff = false;

  constructor(host: MemberHost, options: EtcdDriverOptions) {
    this.#host = host;
    this.#options = options;
    this.#client = new EtcdClient({
      endpoints: options.endpoints,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    this.#layout = new EtcdLayout(options.prefix ?? "/sheepdog/");
    this.epochLog = new EpochLog(host.dir, undefined, (line) => host.logger.warn(line));
    this.#queue = new ApplyQueue(host.logger);
    this.#lease = new EtcdLease({
      client: this.#client,
      ttlSeconds: Math.max(1, Math.ceil((options.failureTimeoutMs ?? 5000) / 1000)),
      // A wall clock set back while cut off would keep this sheep "in touch" that much longer.
      now: () => host.monotonic(),
      onLost: () => void this.#register(),
      onTouch: (inTouch) => {
        if (!inTouch) {
          host.logger.warn(
            `cut off from etcd at ${this.#client.endpoints.join(",")} for a lease's TTL: ` +
              "writes are refused until it is back",
          );
          this.#cutOff = true;
          this.#watchAttempt?.abort();
        } else if (this.#cutOff) {
          this.#cutOff = false;
          host.logger.info("in touch with etcd again");
        }
        this.#updateState();
        this.#scheduleEpoch();
      },
    });
  }

  get state(): ClusterStanding {
    return this.#state;
  }

  get master(): string | null {
    return epochWriter(this.#epoch, [...this.#live.values()]);
  }

  get members(): readonly string[] {
    return this.#epoch?.members.map((m) => m.id) ?? [];
  }

  /** Nothing before the first view is installed: until then the state is the disk's alone. */
  get lastSeq(): number {
    return this.#installed ? this.#lastRev : 0;
  }

  isHeard(id: string): boolean {
    return this.#live.has(id);
  }

  async epochHistory(): Promise<StoredEpoch[]> {
    return (await this.epochLog.list()).filter((record) => record.members.length > 0);
  }

  async start(): Promise<void> {
    this.#running = true;
    this.#startedAt = this.#host.monotonic();
    const incarnation = await nextIncarnation({
      dir: this.#host.dir,
      selfId: this.#host.id,
      nowMs: this.#host.now(),
      records: await this.epochLog.list().catch(() => []),
      warn: (line) => this.#host.logger.warn(line),
    });
    const node = this.#host.ringNode();
    this.#self = {
      id: this.#host.id,
      incarnation,
      host: node.host,
      port: node.port,
      zone: node.zone,
      vnodes: node.vnodes,
      ...(node.space === undefined ? {} : { space: node.space }),
    };
    await this.#claimPrefix();
    await this.#register();
    await this.#inQueue(() => this.#reload(true));
    this.#lease.start();
    this.#watch = this.#watchLoop(this.#stop.signal);
    this.#host.logger.info(
      `cluster driver: etcd at ${this.#client.endpoints.join(",")}, keys under ` +
        `${this.#layout.prefix} (cluster id ${this.#options.clusterId}, lease TTL ` +
        `${this.#lease.ttlMs / 1000} s)`,
    );
  }

  async stop(options: { leave: boolean }): Promise<void> {
    this.#running = false;
    this.#standing.notify(); // proposals waiting for a standing give up now
    this.#stop.abort();
    clearTimeout(this.#epochTimer);
    await this.#watch;
    await this.#registering?.catch(() => undefined);
    // Leaving revokes the lease: the member key goes now, not a TTL later.
    await this.#lease.stop({ revoke: options.leave });
    this.#proposals.shutdown();
    this.#state = "left";
  }

  async propose<T>(event: ClusterEvent): Promise<T> {
    await admitProposal(this.#standing, {
      standing: () => this.#state,
      running: () => this.#running,
    });
    const self = this.#self!;
    const proposalId = ++this.#proposalId;
    const key = this.#layout.event(self.id, self.incarnation, proposalId);
    const envelope: EventEnvelope = {
      origin: self.id,
      incarnation: self.incarnation,
      proposalId,
      event,
    };
    const result = this.#proposals.expect<T>(key);
    void this.#append(key, envelope);
    return await result;
  }

  forceRecover(): boolean {
    if (this.#state !== "waiting-for-nodes") return false;
    this.#host.logger.warn("recovery forced: the next epoch starts with the sheep present");
    this.#forced = true;
    this.#scheduleEpoch();
    return true;
  }

  /** Writes the cluster id under the prefix, or checks that the one there is this cluster's. */
  async #claimPrefix(): Promise<void> {
    const ours = this.#options.clusterId;
    const claim = await this.#client.txn(
      [{ key: this.#layout.id, target: "VERSION", result: "EQUAL", version: 0 }],
      [{ put: { key: this.#layout.id, value: new TextEncoder().encode(ours) } }],
      [{ range: { key: this.#layout.id } }],
    );
    if (claim.succeeded) return;
    const theirs = new TextDecoder().decode(claim.ranges[0]?.[0]?.value ?? new Uint8Array());
    if (theirs === ours) return;
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `etcd at ${this.#client.endpoints.join(",")} holds another cluster's data under ` +
        `${this.#layout.prefix} (cluster id ${theirs}; this sheep's key gives ${ours}): use that ` +
        `cluster's key file, or another prefix (etcd://HOST:PORT/PREFIX)`,
    );
  }

  /** Takes a lease and (re)writes this sheep's member key under it. */
  #register(): Promise<void> {
    this.#registering ??= (async () => {
      try {
        if (this.#memberRevision !== 0) {
          this.#host.logger.warn("the etcd lease lapsed: registering again");
        }
        await this.#lease.grant();
        const key = this.#layout.member(this.#self!.id);
        const written = await this.#client.txn([], [
          { put: { key, value: encodeJson(this.#self), lease: this.#lease.id } },
          { range: { key } },
        ]);
        this.#memberRevision = written.ranges[0]?.[0]?.createRevision ?? written.revision;
      } catch (error) {
        // At start the caller reports it; later the next renewal finds the lease gone again.
        if (this.#memberRevision === 0) throw error;
        this.#host.logger.warn(`cannot register with etcd: ${(error as Error).message}`);
      } finally {
        this.#registering = undefined;
      }
    })();
    return this.#registering;
  }

  /** Runs `work` on the apply queue and waits for it. */
  #inQueue(work: () => Promise<void>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.enqueue(() => work().then(resolve, (error) => (reject(error), undefined)));
    });
  }

  /**
   * Reads every key under the prefix and handles it as a stream in revision order: at start
   * (events before now are the peers' history, not replayed: the node's state comes from its
   * disk and, at its first view, from its peers), and after the watch fell behind a compaction
   * (events still kept are applied; if some were trimmed, the state comes from peers first).
   */
  async #reload(initial: boolean): Promise<void> {
    const snapshot = await this.#client.range(this.#layout.prefix, { prefix: true });
    this.#live.clear();
    this.#eventKeys = 0;
    // Who is alive first: the peers to ask must count as reachable.
    for (const kv of snapshot.kvs) {
      const kind = this.#layout.kindOf(kv.key);
      if (kind.kind === "member") this.#onMember(kind.id, kv);
    }
    let from = initial ? snapshot.revision : this.#lastRev;
    const floor = snapshot.kvs.find((kv) => kv.key === this.#layout.floor);
    if (!initial && floor && Number(new TextDecoder().decode(floor.value)) > this.#lastRev + 1) {
      this.#host.logger.warn(
        `events after revision ${this.#lastRev} were trimmed from etcd: fetching the state ` +
          "from peers",
      );
      const peers = [...this.#live.values()].map((m) => ringNodeOf(m.record));
      const seq = await mergeFromPeers(this.#host, peers);
      if (seq === null) this.#host.logger.error("no peer answered: events were missed");
      from = Math.max(from, seq ?? 0);
      // Our own events among the trimmed ones are in that state, and no longer in etcd.
      this.#proposals.skippedThrough(from);
    }
    for (const kv of snapshot.kvs) await this.#handle({ type: "put", kv }, from);
    this.#lastRev = Math.max(this.#lastRev, snapshot.revision);
    this.#received = this.#lastRev;
    this.#afterChanges();
  }

  async #watchLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const attempt = new AbortController();
      this.#watchAttempt = attempt;
      const abort = () => attempt.abort();
      signal.addEventListener("abort", abort);
      const endpoint = this.#client.current;
      try {
        const end = await watchPrefix(
          this.#client,
          this.#layout.prefix,
          this.#received + 1,
          (events) => this.#onWatch(events),
          attempt.signal,
        );
        if ("compacted" in end) {
          this.#host.logger.warn(
            `the watch fell behind etcd's compaction (revision ${end.compacted}): reloading`,
          );
          await this.#inQueue(() => this.#reload(false)).catch((error) =>
            this.#host.logger.warn(`cannot reload from etcd: ${(error as Error).message}`)
          );
          continue;
        }
        this.#client.skip(endpoint);
        if (!signal.aborted) this.#host.logger.debug(`etcd watch ended: ${end.ended}`);
      } catch (error) {
        this.#host.logger.debug(`etcd watch failed: ${(error as Error).message}`);
      } finally {
        signal.removeEventListener("abort", abort);
      }
      await sleep(RETRY_MS, signal);
    }
  }

  #onWatch(events: WatchEvent[]): void {
    this.#received = events[events.length - 1]!.kv.modRevision;
    this.#queue.enqueue(async () => {
      for (const event of events) await this.#handle(event, this.#lastRev);
      this.#afterChanges();
    });
  }

  /** Handles one change; events at or before revision `appliedUpTo` are not applied again. */
  async #handle(change: WatchEvent, appliedUpTo: number): Promise<void> {
    const { kv } = change;
    const revision = kv.modRevision;
    const kind = this.#layout.kindOf(kv.key);
    // Before applying: a peer fetching the state meanwhile gets the position it holds.
    this.#lastRev = Math.max(this.#lastRev, revision);
    switch (kind.kind) {
      case "member":
        if (change.type === "delete") this.#live.delete(kind.id);
        else this.#onMember(kind.id, kv);
        break;
      case "epoch":
        if (change.type === "put") await this.#onEpoch(kv);
        break;
      case "floor":
        if (change.type === "put") this.#floor = Number(new TextDecoder().decode(kv.value));
        break;
      case "event":
        if (change.type === "delete") {
          this.#eventKeys = Math.max(0, this.#eventKeys - 1);
          break;
        }
        this.#eventKeys++;
        if (revision > appliedUpTo && kv.version === 1) await this.#applyEvent(kv);
        // Held by the state fetched from peers (see #reload): not applied again, but its
        // proposer, if this sheep, is told.
        else if (revision <= appliedUpTo) this.#proposals.skipped(kv.key);
        break;
      case "id":
        if (new TextDecoder().decode(kv.value) !== this.#options.clusterId) {
          this.#host.logger.error(
            `the cluster id under ${this.#layout.prefix} was changed or removed: another ` +
              "cluster may be writing there",
          );
        }
        break;
      case "other":
        break;
    }
  }

  #onMember(id: string, kv: KeyValue): void {
    try {
      const record = decodeMember(kv.value);
      if (record.id !== id) throw new Error(`it names ${record.id}`);
      this.#live.set(id, { record, createRevision: kv.createRevision });
    } catch (error) {
      this.#host.logger.error(
        `ignoring a malformed member key ${kv.key}: ${(error as Error).message}`,
      );
    }
  }

  async #onEpoch(kv: KeyValue): Promise<void> {
    let value: EpochValue;
    try {
      value = decodeEpoch(kv.value);
    } catch (error) {
      this.#host.logger.error(
        `ignoring a malformed epoch at revision ${kv.modRevision}: ${(error as Error).message}`,
      );
      return;
    }
    this.#epoch = value;
    this.#epochRevision = kv.modRevision;
    const self = this.#self!;
    const mine = value.members.some((m) => m.id === self.id && m.incarnation === self.incarnation);
    if (!mine || this.#installed?.epoch === value.epoch) return;
    const previous = new Set(this.#installed?.members.map((m) => m.id) ?? []);
    const first = this.#installed === null;
    const nodes = value.members.map(ringNodeOf);
    await this.epochLog.append([{
      cluster: this.#options.clusterId,
      era: 0,
      epoch: value.epoch,
      slot: kv.modRevision,
      seq: this.#lastRev,
      members: value.members.map((m) => ({
        id: m.id,
        incarnation: m.incarnation,
        witness: false,
        info: memberInfoOf(ringNodeOf(m)),
      })),
      pids: [],
    }], this.#host.now());
    // The first view of this process: learn what the others know (VDIs this node stores no
    // inode of, locks), as the built-in group does at a node's first view. A peer's state may
    // hold events after this epoch: those are not applied again (as cluster_member.ts says).
    if (first && nodes.some((n) => n.id !== self.id)) {
      await mergeFromPeers(this.#host, nodes, (seq) => {
        this.#lastRev = Math.max(this.#lastRev, seq);
      });
    }
    this.#installed = value;
    this.#updateState();
    await this.#host.installView(makeView(value.epoch, nodes), { previousMembers: previous });
  }

  /** Applies one event whole, or, malformed, not at all (and says so loudly). */
  async #applyEvent(kv: KeyValue): Promise<void> {
    const pending = this.#proposals.take(kv.key);
    let envelope: EventEnvelope;
    try {
      envelope = decodeEnvelope(kv.value);
    } catch (error) {
      const message = `skipped a malformed cluster event ${kv.key} at revision ` +
        `${kv.modRevision}: ${(error as Error).message}`;
      this.#host.logger.error(message);
      pending?.reject(new SheepdogError(ResultCode.INVALID_PARMS, message));
      return;
    }
    try {
      // Applied on every node alike; only the proposer has someone waiting for the result.
      const result = await this.#host.applyEvent(envelope.event);
      pending?.resolve(result);
    } catch (error) {
      pending?.reject(error as Error);
    }
  }

  /** After a batch of changes: the standing, a possible new epoch, a possible trim. */
  #afterChanges(): void {
    // This process's member key gone while it runs and reaches etcd (its lease lapsed, or a
    // registration failed half-way): register again, or no epoch would ever take it back.
    const self = this.#self;
    const own = self ? this.#live.get(self.id)?.record : undefined;
    if (self && this.#running && this.#lease.inTouch && own?.incarnation !== self.incarnation) {
      void this.#register();
    }
    this.#updateState();
    this.#scheduleEpoch();
    this.#maybeTrim();
  }

  #updateState(): void {
    const self = this.#self;
    let state: ClusterStanding;
    if (!this.#running || !self) state = "left";
    else if (!this.#lease.inTouch) state = "minority";
    else if (
      this.#installed &&
      this.#epoch?.members.some((m) => m.id === self.id && m.incarnation === self.incarnation)
    ) state = "primary";
    else if (nextEpoch(this.#epoch, [...this.#live.values()], false).kind === "wait") {
      state = "waiting-for-nodes";
    } else state = this.#installed ? "minority" : "forming";
    if (state === this.#state) return;
    this.#state = state;
    this.#standing.notify();
    this.#host.statusChanged?.();
  }

  #scheduleEpoch(delayMs = EPOCH_DEBOUNCE_MS): void {
    if (!this.#running || this.#epochTimer !== undefined) return;
    this.#epochTimer = setTimeout(() => {
      this.#epochTimer = undefined;
      void this.#writeEpoch();
    }, delayMs);
  }

  /** Writes the next epoch if the live members call for one and this sheep is its writer. */
  async #writeEpoch(): Promise<void> {
    if (!this.#running || !this.#lease.inTouch) return;
    const live = [...this.#live.values()];
    const decision = nextEpoch(this.#epoch, live, this.#forced);
    if (decision.kind !== "propose") return;
    if (!this.#forced && epochWriter(this.#epoch, live) !== this.#self!.id) return;
    const settled = this.#startedAt + (this.#options.settleMs ?? 3000);
    if (this.#epoch === null && this.#host.monotonic() < settled) {
      this.#scheduleEpoch(settled - this.#host.monotonic());
      return;
    }
    try {
      const written = await this.#client.txn(
        [
          {
            key: this.#layout.epoch,
            target: "MOD",
            result: "EQUAL",
            modRevision: this.#epochRevision,
          },
          ...this.#stillMember(),
        ],
        [{ put: { key: this.#layout.epoch, value: encodeJson(decision.value) } }],
      );
      if (written.succeeded) {
        this.#forced = false;
        this.#host.logger.info(
          `wrote epoch ${decision.value.epoch}: ${
            decision.value.members.map((m) => m.id).join(", ")
          }`,
        );
      }
      // Lost the race: the watch brings the epoch that won, and this is checked again then.
    } catch (error) {
      this.#host.logger.debug(`cannot write the next epoch: ${(error as Error).message}`);
      this.#scheduleEpoch(RETRY_MS);
    }
  }

  /** A transaction's guard: this sheep's member key is still the one it wrote. */
  #stillMember() {
    return [{
      key: this.#layout.member(this.#self!.id),
      target: "CREATE" as const,
      result: "EQUAL" as const,
      createRevision: this.#memberRevision,
    }];
  }

  /**
   * Appends an event, once: the transaction requires this sheep still to be a member and the
   * event key not to exist, so resending after an answer that got lost cannot append it twice.
   * An event not appended is sent again (the same key, so exactly once) for APPEND_FOR_MS, then
   * its proposer hears an error: HALT when etcd says this sheep is no member (nothing was
   * appended), NETWORK_ERROR when etcd did not answer (it may have been). An event appended
   * is answered when the watch brings it, or, if this sheep catches up past it with its peers'
   * state, then (`Proposals.skipped`).
   */
  async #append(key: string, envelope: EventEnvelope): Promise<void> {
    const deadline = this.#host.monotonic() + APPEND_FOR_MS;
    for (;;) {
      try {
        const written = await this.#client.txn(
          [...this.#stillMember(), { key, target: "VERSION", result: "EQUAL", version: 0 }],
          [{ put: { key, value: encodeJson(envelope) } }, { range: { key } }],
          [{ range: { key } }],
        );
        const appended = written.ranges[0]?.[0];
        if (appended) {
          this.#proposals.placed(key, appended.modRevision);
          // Its answer came after this sheep had got past it: handled already, or skipped
          // with the state a catch-up fetched.
          if (appended.modRevision <= this.#lastRev) this.#proposals.skipped(key);
          return;
        }
        this.#proposals.fail(
          key,
          new SheepdogError(
            ResultCode.HALT,
            "This node is cut off from the majority of the cluster: changes are refused",
          ),
        );
        return;
      } catch (error) {
        if (!this.#running || this.#host.monotonic() > deadline) {
          this.#proposals.fail(
            key,
            new SheepdogError(ResultCode.NETWORK_ERROR, (error as Error).message),
          );
          return;
        }
        await sleep(RETRY_MS, this.#stop.signal);
      }
    }
  }

  /**
   * Deletes the oldest events beyond the number kept, and records up to which revision they
   * are gone (a node behind that fetches the state from peers). Only the epoch writer trims.
   */
  #maybeTrim(): void {
    const kept = this.#options.eventsKept ?? ETCD_EVENTS_KEPT;
    if (this.#trimming || this.#eventKeys <= kept || this.master !== this.#self?.id) return;
    this.#trimming = true;
    void (async () => {
      try {
        const limit = Math.min(ETCD_TRIM_BATCH, this.#eventKeys - kept);
        const oldest = await this.#client.range(this.#layout.events, {
          prefix: true,
          limit,
          keysOnly: true,
        });
        const last = oldest.kvs[oldest.kvs.length - 1];
        if (!last) return;
        await this.#client.txn([], [
          {
            put: {
              key: this.#layout.floor,
              value: new TextEncoder().encode(String(last.modRevision + 1)),
            },
          },
          ...oldest.kvs.map((kv) => ({ delete: { key: kv.key } })),
        ]);
      } catch (error) {
        this.#host.logger.debug(`cannot trim old events: ${(error as Error).message}`);
      } finally {
        this.#trimming = false;
      }
    })();
  }
}

function ringNodeOf(member: MemberRecord): RingNode {
  return {
    id: member.id,
    host: member.host,
    port: member.port,
    zone: member.zone,
    vnodes: member.vnodes,
    ...(member.space === undefined ? {} : { space: member.space }),
  };
}
