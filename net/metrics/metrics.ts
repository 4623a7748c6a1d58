/**
 * Prometheus metrics of one sheep, in a registry of its own (several sheep share a process in
 * tests, so nothing goes to prom-client's global registry). Request counters and latency
 * histograms are fed by the protocol servers as requests complete; the gauges (space, objects,
 * epoch, recovery, attachments) are refreshed by collectors just before each scrape.
 *
 * @module
 */

import process from "node:process";
import { Counter, Gauge, type LabelValues, Registry } from "prom-client";
import { RequestSeries, RequestTally } from "./request_tally.ts";
import type { ChecksumWorkerStats } from "../../core/store/checksum_workers.ts";

/** Which front door a request came through. */
export type Protocol = "object" | "nbd";

/** Bytes moved for clients: read from or written to VDIs. */
export type Direction = "read" | "write";

/**
 * How an NBD connection to a TLS-requiring export fared: secured, refused (it did not start
 * TLS) or failed (its TLS handshake did not complete).
 */
export type TlsOutcome = "secured" | "refused" | "failed";

/** The state gauges a sheep reports; any subset may be set at a time. */
export interface SheepGauges {
  epoch: number;
  nodes: number;
  objects: number;
  vdis: number;
  snapshots: number;
  usedBytes: number;
  freeBytes: number;
  totalBytes: number;
  /** VDIs some client holds open (locked). */
  attachedVdis: number;
}

/** Recovery progress of this node: objects done of total, and the current rate. */
export interface RecoveryGauges {
  active: boolean;
  done: number;
  total: number;
  /** Objects per second. */
  rate: number;
}

/**
 * Data integrity: the scrub's progress and what it and the read path found and repaired.
 * Totals are since the sheep started; `setIntegrity` takes them as absolute values.
 */
export interface IntegrityGauges {
  /** A scrub pass runs on this node now. */
  scrubRunning: boolean;
  /** When this node's last scrub pass finished (ms since the epoch; 0 = never). */
  scrubFinishedMs: number;
  scrubBytesVerified: number;
  scrubBadBlocks: number;
  /** Bad or missing copies the scrub found and could not repair. */
  scrubUnrepaired: number;
  /** Copies replaced or removed by any repair (reads, writes, scrub): the sheep's `repairs`. */
  objectRepairs: number;
  /** Blocks the store found not matching their checksum (its `health().checksumErrors`). */
  checksumErrors: number;
  /** Writes the store refused because the disk was full (its `health().noSpaceErrors`). */
  noSpaceErrors: number;
  /** A sync failed: the store refuses writes until the sheep restarts. */
  syncFailed: boolean;
}

/** Runs before each scrape to bring gauges up to date; failures never fail the scrape. */
export type Collector = () => void | Promise<void>;

/** Latency buckets from 50 µs (a cached local read) to 10 s (a stalled membership change). */
const LATENCY_BUCKETS = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

export class Metrics {
  /** The registry `text()` serialises; callers may register their own metrics in it. */
  readonly registry = new Registry();
  readonly #collectors: Collector[] = [];
  /** Request counts, latencies and bytes: added to per request, read at scrape. */
  readonly #tally = new RequestTally(LATENCY_BUCKETS);
  readonly #clients: Gauge<"protocol">;
  readonly #nbdTls: Counter<"outcome">;
  readonly #collectErrors: Counter;
  readonly #refusals: Counter<"kind">;
  readonly #gauges: { [K in keyof SheepGauges]: Gauge };
  readonly #recovery: { [K in keyof RecoveryGauges]: Gauge };
  #recoveryState: RecoveryGauges = { active: false, done: 0, total: 0, rate: 0 };
  readonly #integrity: {
    scrubRunning: Gauge;
    scrubFinishedMs: Gauge;
    scrubBytesVerified: Counter;
    scrubBadBlocks: Counter;
    scrubUnrepaired: Counter;
    objectRepairs: Counter;
    checksumErrors: Counter;
    noSpaceErrors: Counter;
    syncFailed: Gauge;
  };
  readonly #checksumWorkers: {
    jobs: Counter<"outcome">;
    running: Gauge;
    deaths: Counter;
  };
  /** The absolute total each counter set from one (by `#advance`) was last set to, by series. */
  readonly #totals = new Map<Counter<string>, Map<string, number>>();

  constructor() {
    const registers = [this.registry];
    const gauge = (name: string, help: string) => new Gauge({ name, help, registers });
    // The request counters are set from the tally's totals when scraped (`#advance`).
    const requests: Counter<"protocol" | "op" | "result"> = new Counter({
      name: "sheepdog_requests_total",
      help: "Requests handled, by protocol, operation and result (ok or error)",
      labelNames: ["protocol", "op", "result"],
      registers,
      collect: () => {
        for (const s of this.#tally.allSeries()) {
          const labels = { protocol: s.protocol, op: s.op };
          if (s.ok > 0) this.#advance(requests, s.ok, { ...labels, result: "ok" });
          if (s.error > 0) this.#advance(requests, s.error, { ...labels, result: "error" });
        }
      },
    });
    this.registry.registerMetric(this.#tally.histogram(
      "sheepdog_request_duration_seconds",
      "Time from receiving a request to having its reply, by protocol and operation",
    ));
    const bytes: Counter<"protocol" | "direction"> = new Counter({
      name: "sheepdog_io_bytes_total",
      help: "Bytes of VDI data read or written for clients, by protocol and direction",
      labelNames: ["protocol", "direction"],
      registers,
      collect: () => {
        for (const e of this.#tally.byteTotals()) {
          this.#advance(bytes, e.bytes, { protocol: e.protocol, direction: e.direction });
        }
      },
    });
    this.#clients = new Gauge({
      name: "sheepdog_connected_clients",
      help: "Client connections open now, by protocol",
      labelNames: ["protocol"],
      registers,
    });
    this.#nbdTls = new Counter({
      name: "sheepdog_nbd_tls_connections_total",
      help: "NBD connections to a TLS-requiring export: secured, refused (no STARTTLS) or " +
        "failed (TLS handshake did not complete)",
      labelNames: ["outcome"],
      registers,
    });
    this.#collectErrors = new Counter({
      name: "sheepdog_metrics_collect_errors_total",
      help: "Scrapes during which a gauge could not be refreshed (its previous value was kept)",
      registers,
    });
    this.#refusals = new Counter({
      name: "sheepdog_refusals_total",
      help: "Datagrams, connections and requests refused as not from the cluster or an " +
        "allowed client (bad MAC, replay, wrong or no key, client address not allowed)",
      labelNames: ["kind"],
      registers,
    });
    this.#gauges = {
      epoch: gauge("sheepdog_epoch", "Current epoch of the cluster view"),
      nodes: gauge("sheepdog_cluster_nodes", "Nodes in the current cluster view"),
      objects: gauge("sheepdog_objects_stored", "Objects held by this node's store"),
      vdis: gauge("sheepdog_vdis", "Working VDIs (not counting snapshots)"),
      snapshots: gauge("sheepdog_snapshots", "Snapshots"),
      usedBytes: gauge("sheepdog_space_used_bytes", "Disk space the objects of this node use"),
      freeBytes: gauge("sheepdog_space_free_bytes", "Free space on this node's store filesystem"),
      totalBytes: gauge("sheepdog_space_total_bytes", "Size of this node's store filesystem"),
      attachedVdis: gauge("sheepdog_attached_vdis", "VDIs a client (VM) holds open"),
    };
    this.#recovery = {
      active: gauge("sheepdog_recovery_active", "1 while this node recovers objects, else 0"),
      done: gauge("sheepdog_recovery_objects_done", "Objects recovered in the current recovery"),
      total: gauge("sheepdog_recovery_objects_total", "Objects to recover in the current recovery"),
      rate: gauge("sheepdog_recovery_rate_objects_per_second", "Recent recovery rate"),
    };
    const counter = (name: string, help: string) => new Counter({ name, help, registers });
    this.#integrity = {
      scrubRunning: gauge(
        "sheepdog_scrub_running",
        "1 while a scrub pass runs on this node, else 0",
      ),
      scrubFinishedMs: gauge(
        "sheepdog_scrub_last_finished_seconds",
        "When this node's last scrub pass finished, in seconds since the Unix epoch (0 = never)",
      ),
      scrubBytesVerified: counter(
        "sheepdog_scrub_bytes_verified_total",
        "Bytes of local copies the scrub read and checked against their block checksums",
      ),
      scrubBadBlocks: counter(
        "sheepdog_scrub_bad_blocks_total",
        "Blocks the scrub found not matching their checksum",
      ),
      scrubUnrepaired: counter(
        "sheepdog_scrub_copies_unrepaired_total",
        "Bad or missing copies the scrub found and could not repair",
      ),
      objectRepairs: counter(
        "sheepdog_object_repairs_total",
        "Copies found bad or missing and replaced (or removed) by reads, writes and scrub",
      ),
      checksumErrors: counter(
        "sheepdog_checksum_errors_total",
        "Blocks this node's store found not matching their checksum (reads and scrub)",
      ),
      noSpaceErrors: counter(
        "sheepdog_store_no_space_errors_total",
        "Writes this node's store refused because its disk was full",
      ),
      syncFailed: gauge(
        "sheepdog_store_sync_failed",
        "1 once a sync failed on this node's disk (writes are refused until restart), else 0",
      ),
    };
    this.#checksumWorkers = {
      jobs: new Counter({
        name: "sheepdog_checksum_worker_jobs_total",
        help: "Large reads whose checksums went to a worker thread: answered by it, or " +
          "verified on the main thread after all (fallback: the worker died, stalled or " +
          "answered wrong)",
        labelNames: ["outcome"],
        registers,
      }),
      running: gauge(
        "sheepdog_checksum_workers_running",
        "Checksum worker threads alive now (started as large reads need them)",
      ),
      deaths: counter(
        "sheepdog_checksum_worker_deaths_total",
        "Checksum worker threads that exited or stalled (their reads were verified again)",
      ),
    };
    new Gauge({
      name: "sheepdog_process_memory_bytes",
      help: "Memory of the sheep process (rss, heap_total, heap_used, external, array_buffers)",
      labelNames: ["kind"],
      registers,
      collect() {
        const usage = process.memoryUsage();
        this.set({ kind: "rss" }, usage.rss);
        this.set({ kind: "heap_total" }, usage.heapTotal);
        this.set({ kind: "heap_used" }, usage.heapUsed);
        this.set({ kind: "external" }, usage.external);
        this.set({ kind: "array_buffers" }, usage.arrayBuffers);
      },
    });
    gauge(
      "sheepdog_start_time_seconds",
      "When these metrics began, in seconds since the Unix epoch",
    )
      .set(Date.now() / 1000);
  }
  /** Counts one refusal of a stranger (net/auth/refusals.ts). */
  countRefusal(kind: string): void {
    this.#refusals.inc({ kind });
  }

  /** Counts one finished request and records its latency. */
  observeRequest(protocol: Protocol, op: string, seconds: number, ok: boolean): void {
    this.#tally.series(protocol, op).record(seconds, ok);
  }

  /**
   * Starts timing a request; call the returned function once it is answered. For the NBD
   * server: `const done = metrics.startRequest("nbd", "READ"); ... done(ok)`.
   */
  startRequest(protocol: Protocol, op: string): (ok: boolean) => void {
    return this.#tally.series(protocol, op).start();
  }

  /**
   * The series of `protocol` and `op`, to time many requests without looking it up each time:
   * `const reads = metrics.requestSeries("nbd", "READ"); const done = reads.start(); ... done(ok)`.
   */
  requestSeries(protocol: Protocol, op: string): RequestSeries {
    return this.#tally.series(protocol, op);
  }

  /** Counts client data moved. */
  addBytes(direction: Direction, bytes: number, protocol: Protocol = "object"): void {
    if (bytes > 0) this.#tally.addBytes(protocol, direction, bytes);
  }

  /** A client connected (an NBD session, say). */
  clientConnected(protocol: Protocol): void {
    this.#clients.inc({ protocol });
  }

  /** A client went away. */
  clientDisconnected(protocol: Protocol): void {
    this.#clients.dec({ protocol });
  }

  /** Counts an NBD connection's TLS outcome. */
  nbdTls(outcome: TlsOutcome): void {
    this.#nbdTls.inc({ outcome });
  }

  /** Sets any of the state gauges. */
  setGauges(values: Partial<SheepGauges>): void {
    for (const [key, value] of Object.entries(values)) {
      if (value !== undefined) this.#gauges[key as keyof SheepGauges].set(value);
    }
  }

  /** Sets recovery progress (the recovery worker calls this as it goes). */
  setRecovery(values: Partial<RecoveryGauges>): void {
    this.#recoveryState = { ...this.#recoveryState, ...values };
    const state = this.#recoveryState;
    this.#recovery.active.set(state.active ? 1 : 0);
    this.#recovery.done.set(state.done);
    this.#recovery.total.set(state.total);
    this.#recovery.rate.set(state.rate);
  }

  /** The recovery progress last set. */
  get recovery(): RecoveryGauges {
    return { ...this.#recoveryState };
  }

  /**
   * Sets the integrity metrics from absolute totals (a collector reads them from the scrubber,
   * the sheep and the store); counters move by the difference, and start again from the value
   * given if it went down (a restarted source).
   */
  setIntegrity(values: Partial<IntegrityGauges>): void {
    const integrity = this.#integrity;
    if (values.scrubRunning !== undefined) integrity.scrubRunning.set(values.scrubRunning ? 1 : 0);
    if (values.syncFailed !== undefined) integrity.syncFailed.set(values.syncFailed ? 1 : 0);
    if (values.scrubFinishedMs !== undefined) {
      integrity.scrubFinishedMs.set(values.scrubFinishedMs / 1000);
    }
    const counters = [
      "scrubBytesVerified",
      "scrubBadBlocks",
      "scrubUnrepaired",
      "objectRepairs",
      "checksumErrors",
      "noSpaceErrors",
    ] as const;
    for (const key of counters) this.#advance(integrity[key], values[key]);
  }

  /**
   * Sets the checksum worker metrics from a pool's `stats` (absolute totals, as
   * `setIntegrity` takes them); a sheep without a pool reports zeros.
   */
  setChecksumWorkers(stats: ChecksumWorkerStats): void {
    const workers = this.#checksumWorkers;
    workers.running.set(stats.running);
    this.#advance(workers.jobs, stats.answered, { outcome: "answered" });
    this.#advance(workers.jobs, stats.fallbacks, { outcome: "fallback" });
    this.#advance(workers.deaths, stats.deaths);
  }

  /**
   * Moves `counter` (the series of `labels`) to the absolute total `value`: up by the
   * difference, or from `value` again if it went down (a restarted source).
   */
  #advance<T extends string>(
    counter: Counter<T>,
    value: number | undefined,
    labels: LabelValues<T> = {},
  ): void {
    if (value === undefined || !(value >= 0)) return;
    let totals = this.#totals.get(counter);
    if (totals === undefined) this.#totals.set(counter, totals = new Map());
    const series = JSON.stringify(labels);
    const last = totals.get(series) ?? 0;
    if (value < last) counter.remove(labels);
    counter.inc(labels, value < last ? value : value - last);
    totals.set(series, value);
  }

  /** Adds a function that refreshes gauges before each scrape. */
  addCollector(collector: Collector): void {
    this.#collectors.push(collector);
  }

  /** The Content-Type of `text()`. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Runs the collectors, then renders every metric in the Prometheus text format. */
  async text(): Promise<string> {
    const results = await Promise.allSettled(this.#collectors.map(async (c) => await c()));
    for (const result of results) if (result.status === "rejected") this.#collectErrors.inc();
    return await this.registry.metrics();
  }
}
