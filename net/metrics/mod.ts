/**
 * Prometheus metrics of a sheep: `Metrics` (one registry per sheep), the object-protocol hook
 * and the collector of a sheep's state gauges.
 *
 * For the NBD server: `metrics.observeRequest("nbd", op, seconds, ok)` or
 * `const done = metrics.startRequest("nbd", op); ...; done(ok)`, `metrics.addBytes("read", n,
 * "nbd")`, and `metrics.clientConnected("nbd")` / `clientDisconnected("nbd")` per session;
 * `metrics.nbdTls(outcome)` once per connection to a TLS-requiring export.
 *
 * @module
 */

export {
  type Collector,
  type Direction,
  type IntegrityGauges,
  Metrics,
  type Protocol,
  type RecoveryGauges,
  type SheepGauges,
  type TlsOutcome,
} from "./metrics.ts";
export { observeObjectRequest } from "./object_protocol.ts";
export { collectSheepGauges, type GaugeSource, watchSheep } from "./sheep_gauges.ts";
