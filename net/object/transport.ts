/**
 * How a client reaches a sheep: over TCP (`TcpTransport`), or in-process (`LocalTransport`),
 * which calls the sheep's request handler directly so the NBD export and the HTTP API inside a
 * sheep take no network hop.
 *
 * @module
 */

import type { Header, Message } from "./header.ts";

/** Sends one request and resolves with its response (any result code). */
export interface Transport {
  request(header: Header, data?: Uint8Array): Promise<Message>;
  close(): Promise<void>;
}

/** A sheep's request handler: one request in, one response out, never throws. */
export type RequestHandler = (request: Message, peer: string) => Promise<Message>;

/** In-process transport: hands requests straight to a handler. */
export class LocalTransport implements Transport {
  readonly #handler: RequestHandler;
  readonly #peer: string;

  constructor(handler: RequestHandler, peer = "local") {
    this.#handler = handler;
    this.#peer = peer;
  }

  request(header: Header, data: Uint8Array = new Uint8Array(0)): Promise<Message> {
    return this.#handler({ header, data }, this.#peer);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
