/**
 * Connections to other sheep, one pipelined TCP transport per node, opened on first use.
 *
 * @module
 */

import { TcpTransport } from "../object/tcp_transport.ts";
import { ObjectClient } from "../object/client.ts";
import type { RingNode } from "../../core/hash/ring.ts";

export class Peers {
  #clients = new Map<string, ObjectClient>();

  /** The client for `node`. */
  get(node: Pick<RingNode, "id" | "host" | "port">): ObjectClient {
    let client = this.#clients.get(node.id);
    if (!client) {
      client = new ObjectClient(new TcpTransport({ host: node.host, port: node.port }));
      this.#clients.set(node.id, client);
    }
    return client;
  }

  /** Drops the connection to a node that left. */
  async forget(id: string): Promise<void> {
    const client = this.#clients.get(id);
    this.#clients.delete(id);
    await client?.close();
  }

  async close(): Promise<void> {
    const clients = [...this.#clients.values()];
    this.#clients.clear();
    await Promise.all(clients.map((c) => c.close()));
  }
}
