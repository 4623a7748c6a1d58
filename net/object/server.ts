/**
 * Object-protocol server: accepts TCP connections, parses requests, hands each to the request
 * handler and writes responses as they complete (out of order, matched by id). A connection
 * with too many requests in flight, or too many bytes held for it (requests, the replies they
 * will make, replies it has not read: `BufferBudget`), stops being read until it drains; all
 * connections together share one budget too; a client that leaves its replies unread for
 * REPLY_STALL_MS is cut off. With an access
 * policy (the cluster key), each connection's requests pass its `ConnectionAccess` first.
 *
 * @module
 */

import * as net from "node:net";
import {
  AUTH_TIMEOUT_MS,
  CONNECTION_BUFFER_BYTES_MAX,
  REPLY_STALL_MS,
  REQUESTS_IN_FLIGHT_MAX,
  SERVER_BUFFER_BYTES_MAX,
} from "../../core/limits.ts";
import { BufferBudget } from "./buffer_budget.ts";
import { Flag } from "./ops.ts";
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
  readonly #replyStallMs: number;
  readonly #onClosed: (peer: string) => void;
  /** Bytes held for every connection together. */
  readonly budget = new BufferBudget(SERVER_BUFFER_BYTES_MAX);
  #server: net.Server | undefined;
  #sockets = new Set<net.Socket>();
  /** The peers with an open connection. */
  #peers = new Set<string>();

  constructor(
    handler: RequestHandler,
    options: {
      onError?: (message: string) => void;
      access?: AccessPolicy;
      /** How long unread replies may sit before the client is cut off (REPLY_STALL_MS). */
      replyStallMs?: number;
      /** A connection ended ("host:port", as handlers see it): what it held goes with it. */
      onClosed?: (peer: string) => void;
    } = {},
  ) {
    this.#onClosed = options.onClosed ?? (() => {});
    this.#replyStallMs = options.replyStallMs ?? REPLY_STALL_MS;
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
    this.#peers.add(peer);
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
    let ended = false;
    let inFlight = 0;
    /** Bytes this connection holds: requests being handled, their replies, unread replies. */
    let held = 0;
    let stallTimer: ReturnType<typeof setTimeout> | undefined;
    const hold = (bytes: number) => {
      held += bytes;
      this.budget.charge(bytes);
    };
    const free = (bytes: number) => {
      held -= bytes;
      this.budget.release(bytes);
    };
    const overLimits = () =>
      inFlight >= REQUESTS_IN_FLIGHT_MAX || held >= CONNECTION_BUFFER_BYTES_MAX ||
      this.budget.spent;
    /** Takes what it can, then reads on only if everything parsed was taken. */
    const throttle = () => {
      take();
      const over = overLimits() || waiting.length > 0;
      if (over && !socket.isPaused()) socket.pause();
      else if (!over && socket.isPaused()) socket.resume();
    };
    const stopWaiting = this.budget.onRelease(throttle);
    /** Restarted whenever queued replies move; fires when they have not for REPLY_STALL_MS. */
    const watchStall = (queued: boolean) => {
      clearTimeout(stallTimer);
      stallTimer = !queued ? undefined : setTimeout(() => {
        this.#onError(
          `closing ${peer}: it has not read its replies for ${this.#replyStallMs / 1000} s`,
        );
        socket.destroy();
      }, this.#replyStallMs);
    };
    /** Replies written to the socket and not yet handed to the kernel, with their bytes. */
    const queued = new Set<{ bytes: number }>();
    const send = (response: Message) => {
      response.header.dataLength = response.data.length;
      const reply = { bytes: response.header.bytes.length + response.data.length };
      queued.add(reply);
      hold(reply.bytes);
      watchStall(true);
      const written = () => {
        if (!queued.delete(reply)) return; // freed when the connection closed
        free(reply.bytes);
        watchStall(queued.size > 0);
        throttle();
      };
      socket.cork();
      if (response.data.length > 0) {
        socket.write(response.header.bytes);
        socket.write(response.data, written);
      } else {
        socket.write(response.header.bytes, written);
      }
      socket.uncork();
    };
    /** Requests parsed but not yet taken: one chunk may carry thousands of them. */
    const waiting: Message[] = [];
    /** Takes waiting requests while the connection and the server have room for them. */
    const take = () => {
      while (waiting.length > 0 && !overLimits() && !ended && !socket.destroyed) {
        const message = waiting.shift()!;
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
        const charged = message.data.length + replyBytesOf(message);
        hold(charged);
        this.#handler(message, peer).then((response) => {
          inFlight--;
          free(charged);
          if (socket.destroyed) return;
          send(response);
          throttle();
        });
      }
    };
    socket.on("data", (chunk: Uint8Array) => {
      if (ended) return;
      try {
        waiting.push(...reader.push(chunk));
      } catch (error) {
        this.#onError(`closing ${peer}: ${(error as Error).message}`);
        socket.destroy();
        return;
      }
      throttle();
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      this.#sockets.delete(socket);
      this.#peers.delete(peer);
      this.#onClosed(peer);
      access?.closed();
      stopWaiting();
      clearTimeout(stallTimer);
      // Replies never written are not held any more (their callbacks may not run).
      for (const reply of queued) free(reply.bytes);
      queued.clear();
    });
  }

  /** True while `peer`'s connection is open. */
  connected(peer: string): boolean {
    return this.#peers.has(peer);
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

/** The reply a request will make, for the budget: a read's length (its payload comes back). */
function replyBytesOf(message: Message): number {
  return message.header.flags & Flag.WRITE ? 0 : message.header.dataLength;
}
