/** Starts an NbdServer over a MemoryExportProvider on 127.0.0.1 and cleans up after a test. */
import assert from "node:assert/strict";
import {
  type NbdLimits,
  type NbdLogger,
  NbdServer,
  type NbdTls,
  type NbdTlsEvent,
} from "../../net/nbd/mod.ts";
import { MemoryExportProvider } from "./memory_export.ts";
import { RawClient } from "./raw_client.ts";

export const KiB = 1024;
export const MiB = 1024 * 1024;

export interface Harness {
  server: NbdServer;
  provider: MemoryExportProvider;
  port: number;
  connect(): Promise<RawClient>;
}

/** Volumes: "vol" 16 MiB writable, "big" 96 MiB writable, "ro" 1 MiB read-only. */
export async function withServer(
  fn: (h: Harness) => Promise<void>,
  options: {
    limits?: Partial<NbdLimits>;
    tls?: NbdTls;
    logger?: NbdLogger;
    onTls?: (event: NbdTlsEvent) => void;
  } = {},
): Promise<void> {
  const provider = new MemoryExportProvider();
  provider.add("vol", 16 * MiB, { description: "test volume" });
  provider.add("big", 96 * MiB);
  provider.add("ro", 1 * MiB, { readOnly: true, description: "a snapshot" });
  const server = new NbdServer({
    provider,
    limits: options.limits,
    ...(options.tls ? { tls: options.tls } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.onTls ? { onTls: options.onTls } : {}),
  });
  const address = await server.listen({ host: "127.0.0.1", port: 0 });
  assert.ok("port" in address);
  const clients: RawClient[] = [];
  const h: Harness = {
    server,
    provider,
    port: address.port,
    connect: async () => {
      const c = await RawClient.connect({ port: address.port });
      clients.push(c);
      return c;
    },
  };
  try {
    await fn(h);
  } finally {
    provider.beforeOp = null;
    await Promise.all(clients.map((c) => c.destroy()));
    await server.close();
  }
  assert.deepEqual(provider.violations, [], "session broke the BlockExport contract");
  for (const e of provider.opened) {
    assert.equal(e.closeCount, 1, `export ${e.name} of ${e.client} closed ${e.closeCount} times`);
  }
}

export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` every 5 ms up to `ms`. */
export async function until(cond: () => boolean, ms = 2000, what = "condition"): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
