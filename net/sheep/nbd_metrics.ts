/**
 * NBD requests in the metrics: every opened export is wrapped so each command is counted and
 * timed (protocol "nbd"), bytes read and written are added, and attached clients are counted.
 *
 * @module
 */

import { promiseOf } from "../../core/errors.ts";
import type { BlockExport, Extent } from "../nbd/mod.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { RequestSeries } from "../metrics/request_tally.ts";

/** `inner`, reporting to `metrics`; the client counts as connected until `close()`. */
export function instrumentExport(inner: BlockExport, metrics: Metrics): BlockExport {
  metrics.clientConnected("nbd");
  // One settle handler per request, no async wrapper, each series looked up once: reads and
  // writes are the hot path.
  const timed = <T>(
    series: RequestSeries,
    work: () => Promise<T>,
    bytes?: (value: T) => void,
  ): Promise<T> => {
    const done = series.start();
    return promiseOf(work).then((value) => {
      done(true);
      bytes?.(value);
      return value;
    }, (error) => {
      done(false);
      throw error;
    });
  };
  const series = (op: string) => metrics.requestSeries("nbd", op);
  const reads = series("READ");
  const writes = series("WRITE");
  let closed = false;
  return {
    name: inner.name,
    sizeBytes: inner.sizeBytes,
    readOnly: inner.readOnly,
    read: (offset, length) =>
      timed(
        reads,
        () => inner.read(offset, length),
        (bytes) => metrics.addBytes("read", bytes.length, "nbd"),
      ),
    ...(inner.readNow === undefined ? {} : {
      readNow: (offset: number, length: number) => {
        const done = reads.start();
        const bytes = inner.readNow!(offset, length);
        if (bytes === undefined) return undefined; // not counted: `read` will be
        done(true);
        metrics.addBytes("read", bytes.length, "nbd");
        return bytes;
      },
    }),
    write: (offset, data, options) =>
      timed(
        writes,
        () => inner.write(offset, data, options),
        () => metrics.addBytes("write", data.length, "nbd"),
      ),
    flush: () => timed(series("FLUSH"), () => inner.flush()),
    trim: (offset, length) => timed(series("TRIM"), () => inner.trim(offset, length)),
    writeZeroes: (offset, length, options) =>
      timed(series("WRITE_ZEROES"), () => inner.writeZeroes(offset, length, options)),
    blockStatus: (offset, length): Promise<Extent[]> =>
      timed(series("BLOCK_STATUS"), () => inner.blockStatus(offset, length)),
    close: async () => {
      if (!closed) {
        closed = true;
        metrics.clientDisconnected("nbd");
      }
      await inner.close();
    },
  };
}
