/**
 * Object-protocol server: accepts TCP connections, parses requests, hands each to the request
 * handler and writes responses as they complete (out of order, matched by id). A connection
 * with too many requests or bytes in flight stops being read until it drains. With an access
 * policy (the cluster key), each connection's requests pass its `ConnectionAccess` first.
 *
 * @module
 */

import * as net from "node:net";
import {
  AUTH_TIMEOUT_MS,
  CONNECTION_BUFFER_BYTES_MAX,
  REQUESTS_IN_FLIGHT_MAX,
} from "../../core/limits.ts";
import { type AccessPolicy, ConnectionAccess } from "../auth/connection_access.ts";
import { FrameReader, requestPayloadLength } from "./framing.ts";
import type { Message } from "./header.ts";
import type { RequestHandler } from "./transport.ts";

/** Where a server listens. */
export interface ListenAddress {
  host: string;
  port: number;
}

export class ObjectServer {
  readonly #handler: RequestHandler;
  readonly #onError: (message: string) => void;
  readonly #access: AccessPolicy | undefined;
  #server: net.Server | undefined;
  #sockets = new Set<net.Socket>();

  constructor(
    handler: RequestHandler,
    options: { onError?: (message: string) => void; access?: AccessPolicy } = {},
  ) {
    this.#handler = handler;
    this.#onError = options.onError ?? (() => {});
    this.#access = options.access;
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free one). */
  listen(address: ListenAddress): Promise<ListenAddress> {
    return new Promise((resolve, reject) => {
      const server = net.createServer((socket) => this.#serve(socket));
      server.once("error", reject);
      server.listen(address.port, address.host, () => {
        server.off("error", reject);
        server.on("error", (error) => this.#onError(`object server: ${error.message}`));
        this.#server = server;
        const bound = server.address() as net.AddressInfo;
        resolve({ host: address.host, port: bound.port });
      });
    });
  }

  #serve(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const reader = new FrameReader(requestPayloadLength);
    const access = this.#access &&
      new ConnectionAccess(this.#access, peer, socket.remoteAddress ?? "");
    if (access?.mustAuthenticate) {
      // A stranger that connects and says nothing must not hold a connection for ever.
      const timer = setTimeout(() => {
        if (access.authenticated || socket.destroyed) return;
        access.timedOut();
        socket.destroy();
      }, AUTH_TIMEOUT_MS);
      socket.once("close", () => clearTimeout(timer));
    }
    const send = (response: Message) => {
      response.header.dataLength = response.data.length;
      socket.cork();
      socket.write(response.header.bytes);
      if (response.data.length > 0) socket.write(response.data);
      socket.uncork();
    };
    let ended = false;
    let inFlight = 0;
    let inFlightBytes = 0;
    const throttle = () => {
      const over = inFlight >= REQUESTS_IN_FLIGHT_MAX ||
        inFlightBytes >= CONNECTION_BUFFER_BYTES_MAX;
      if (over && !socket.isPaused()) socket.pause();
      else if (!over && socket.isPaused()) socket.resume();
    };
    socket.on("data", (chunk: Uint8Array) => {
      if (ended) return;
      let messages;
      try {
        messages = reader.push(chunk);
      } catch (error) {
        this.#onError(`closing ${peer}: ${(error as Error).message}`);
        socket.destroy();
        return;
      }
      for (const message of messages) {
        const decision = access?.decide(message);
        if (decision?.kind === "close") {
          socket.destroy();
          return;
        }
        if (decision?.kind === "reply") {
          send(decision.response);
          if (!decision.close) continue;
          ended = true; // nothing more is read from a peer that failed the handshake
          socket.end();
          return;
        }
        inFlight++;
        inFlightBytes += message.data.length;
        this.#handler(message, peer).then((response) => {
          inFlight--;
          inFlightBytes -= message.data.length;
          if (socket.destroyed) return;
          send(response);
          throttle();
        });
      }
      throttle();
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      this.#sockets.delete(socket);
      access?.closed();
    });
  }

  /** Stops accepting, closes every connection and waits for the listener to close. */
  close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    const server = this.#server;
    this.#server = undefined;
    if (!server) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  }
}
