/**
 * NBD requests in the metrics: every opened export is wrapped so each command is counted and
 * timed (protocol "nbd"), bytes read and written are added, and attached clients are counted.
 *
 * @module
 */

import type { BlockExport, Extent } from "../nbd/mod.ts";
import type { Metrics } from "../metrics/metrics.ts";

/** `inner`, reporting to `metrics`; the client counts as connected until `close()`. */
export function instrumentExport(inner: BlockExport, metrics: Metrics): BlockExport {
  metrics.clientConnected("nbd");
  const timed = async <T>(op: string, work: () => Promise<T>): Promise<T> => {
    const done = metrics.startRequest("nbd", op);
    try {
      const result = await work();
      done(true);
      return result;
    } catch (error) {
      done(false);
      throw error;
    }
  };
  let closed = false;
  return {
    name: inner.name,
    sizeBytes: inner.sizeBytes,
    readOnly: inner.readOnly,
    read: (offset, length) =>
      timed("READ", async () => {
        const bytes = await inner.read(offset, length);
        metrics.addBytes("read", bytes.length, "nbd");
        return bytes;
      }),
    write: (offset, data, options) =>
      timed("WRITE", async () => {
        await inner.write(offset, data, options);
        metrics.addBytes("write", data.length, "nbd");
      }),
    flush: () => timed("FLUSH", () => inner.flush()),
    trim: (offset, length) => timed("TRIM", () => inner.trim(offset, length)),
    writeZeroes: (offset, length, options) =>
      timed("WRITE_ZEROES", () => inner.writeZeroes(offset, length, options)),
    blockStatus: (offset, length): Promise<Extent[]> =>
      timed("BLOCK_STATUS", () => inner.blockStatus(offset, length)),
    close: async () => {
      if (!closed) {
        closed = true;
        metrics.clientDisconnected("nbd");
      }
      await inner.close();
    },
  };
}
