/**
 * In-process test clusters: sheep on temporary directories and loopback ports.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { Sheep } from "../net/sheep/sheep.ts";
import { ObjectClient } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";

export async function tempDir(prefix = "sd-test-"): Promise<string> {
  return await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Starts one formatted sheep and gives a TCP client to it; cleans up after `fn`. */
export async function withSheep(
  fn: (context: { sheep: Sheep; client: ObjectClient; dir: string }) => Promise<void>,
  options: { copies?: number; format?: boolean; checksumWorkers?: number } = {},
): Promise<void> {
  const dir = await tempDir();
  const sheep = new Sheep({
    dir,
    host: "127.0.0.1",
    port: 0,
    ...(options.checksumWorkers === undefined ? {} : { checksumWorkers: options.checksumWorkers }),
  });
  await sheep.start();
  const client = new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: sheep.port }));
  try {
    if (options.format !== false) {
      await client.makeFs({
        copies: options.copies ?? 1,
        blockSizeShift: 22,
        force: false,
        strict: false,
      });
    }
    await fn({ sheep, client, dir });
  } finally {
    await client.close();
    await sheep.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Random bytes of any length (crypto.getRandomValues is limited to 64 KiB per call). */
export function randomBytes(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(length, offset + 65536)));
  }
  return bytes;
}

/** The first port of the kernel's ephemeral range (outgoing connections take their ports there). */
function ephemeralStart(): number {
  try {
    const start = Number(
      fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0],
    );
    return Number.isInteger(start) && start > 12_000 ? start : 32768;
  } catch {
    return 32768;
  }
}

/** Ports this process handed out already (a random pick may repeat before anyone listens). */
const handedOut = new Set<number>();

/**
 * A free loopback port (TCP; the group uses the same number over UDP), below the kernel's
 * ephemeral range: a port from that range (what `listen(0)` hands out) can, between this pick
 * and the listen, become the local end of any outgoing connection of the parallel tests (an etcd
 * test failed so with EADDRINUSE in CI), and a sheep restarted on its old ports must find them
 * free.
 */
export async function freePort(): Promise<number> {
  const high = ephemeralStart();
  const low = Math.max(1024, high - 20_000);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("no free loopback port below the ephemeral range");
}
