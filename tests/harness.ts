/**
 * In-process test clusters: sheep on temporary directories and loopback ports.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
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
  options: { copies?: number; format?: boolean } = {},
): Promise<void> {
  const dir = await tempDir();
  const sheep = new Sheep({ dir, host: "127.0.0.1", port: 0 });
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

/** A free loopback port (TCP; the group uses the same number over UDP). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}
