/**
 * Connections to other sheep, one pipelined TCP transport per node, opened on first use.
 *
 * @module
 */

import { TcpTransport } from "../object/tcp_transport.ts";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { Transport } from "../object/transport.ts";
import { ObjectClient } from "../object/client.ts";
import type { RingNode } from "../../core/hash/ring.ts";

/** Opens the transport to a node: TCP by default; a simulation connects sheep in memory. */
export type Connect = (node: Pick<RingNode, "id" | "host" | "port">) => Transport;

const connectTcp: Connect = (node) => new TcpTransport({ host: node.host, port: node.port });

export class Peers {
  #clients = new Map<string, ObjectClient>();
  readonly #reachable: (id: string) => boolean;
  readonly #connect: Connect;

  /** `reachable` is fault injection for tests (a partition); by default every peer is. */
  constructor(reachable: (id: string) => boolean = () => true, connect: Connect = connectTcp) {
    this.#reachable = reachable;
    this.#connect = connect;
  }

  /** The client for `node`. */
  get(node: Pick<RingNode, "id" | "host" | "port">): ObjectClient {
    if (!this.#reachable(node.id)) return UNREACHABLE;
    let client = this.#clients.get(node.id);
    if (!client) {
      client = new ObjectClient(this.#connect(node));
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

/** What a partitioned peer looks like: every request fails as a lost connection would. */
const UNREACHABLE = new ObjectClient(
  {
    request: () =>
      Promise.reject(new SheepdogError(ResultCode.NETWORK_ERROR, "Peer is unreachable")),
    close: () => Promise.resolve(),
  } satisfies Transport,
);
