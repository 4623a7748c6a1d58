/**
 * Per-request accounting on the hot path: plain numbers a request adds to, which the registry
 * reads when it is scraped. prom-client's `inc`/`observe` hash their label objects into a
 * string on every call; three such calls per NBD request cost 2-3 µs of a 10 µs read path
 * (BENCHMARKS.md, "Where the time of a 4 KiB NBD request goes"). Here a caller resolves its
 * series once (`RequestTally.series`) and each request is a few additions.
 *
 * @module
 */

import type { Metric } from "prom-client";

/** The requests of one protocol and operation: counts, and their latencies as a histogram. */
export class RequestSeries {
  readonly protocol: string;
  readonly op: string;
  ok = 0;
  error = 0;
  /** Seconds, summed over every request. */
  sum = 0;
  /** Requests per bucket: `[i]` took at most `bounds[i]` (and more than `bounds[i-1]`); the last is +Inf. */
  readonly buckets: Float64Array;
  readonly #bounds: readonly number[];

  constructor(protocol: string, op: string, bounds: readonly number[]) {
    this.protocol = protocol;
    this.op = op;
    this.#bounds = bounds;
    this.buckets = new Float64Array(bounds.length + 1);
  }

  /** Counts one finished request that took `seconds`. */
  record(seconds: number, ok: boolean): void {
    if (ok) this.ok++;
    else this.error++;
    this.sum += seconds;
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    this.buckets[i]!++;
  }

  /** Starts timing a request; call the returned function once it is answered. */
  start(): (ok: boolean) => void {
    const started = performance.now();
    return (ok) => this.record((performance.now() - started) / 1000, ok);
  }
}

/** Every request series and byte total of one sheep. */
export class RequestTally {
  readonly bounds: readonly number[];
  readonly #series = new Map<string, RequestSeries>();
  /** Bytes by `${protocol} ${direction}`. */
  readonly #bytes = new Map<string, { protocol: string; direction: string; bytes: number }>();

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
  }

  /** The series of `protocol` and `op`, created on first use: resolve it once where you can. */
  series(protocol: string, op: string): RequestSeries {
    const key = `${protocol} ${op}`;
    let series = this.#series.get(key);
    if (series === undefined) {
      series = new RequestSeries(protocol, op, this.bounds);
      this.#series.set(key, series);
    }
    return series;
  }

  addBytes(protocol: string, direction: string, bytes: number): void {
    const key = `${protocol} ${direction}`;
    const entry = this.#bytes.get(key);
    if (entry === undefined) this.#bytes.set(key, { protocol, direction, bytes });
    else entry.bytes += bytes;
  }

  /** Forgets every count (the registry's `resetMetrics`). */
  reset(): void {
    this.#series.clear();
    this.#bytes.clear();
  }

  /** Every series created so far (some may have counted nothing yet). */
  allSeries(): Iterable<RequestSeries> {
    return this.#series.values();
  }

  /** Bytes moved so far, by protocol and direction. */
  byteTotals(): Iterable<{ protocol: string; direction: string; bytes: number }> {
    return this.#bytes.values();
  }

  /**
   * The latencies as a Prometheus histogram (`name`_bucket, _sum, _count by protocol and op),
   * in the shape a prom-client `Registry` renders.
   */
  histogram(name: string, help: string): Metric {
    const latency = {
      name,
      help,
      type: "histogram",
      aggregator: "sum",
      get: () =>
        Promise.resolve({
          name,
          help,
          type: "histogram",
          aggregator: "sum",
          values: this.#histogramValues(name),
        }),
      reset: () => this.reset(),
    };
    return latency as unknown as Metric;
  }

  #histogramValues(name: string) {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] =
      [];
    for (const s of this.#series.values()) {
      if (s.ok + s.error === 0) continue; // resolved ahead, nothing timed yet
      const labels = { protocol: s.protocol, op: s.op };
      let cumulative = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += s.buckets[i]!;
        const le = i < this.bounds.length ? this.bounds[i]! : "+Inf";
        values.push({ labels: { le, ...labels }, value: cumulative, metricName: `${name}_bucket` });
      }
      values.push({ labels, value: s.sum, metricName: `${name}_sum` });
      values.push({ labels, value: s.ok + s.error, metricName: `${name}_count` });
    }
    return values;
  }
}
