/**
 * Object-protocol client connection over TCP: requests are pipelined, matched to responses by
 * id, and may complete out of order. A lost connection fails what is in flight with
 * NETWORK_ERROR naming the address; the next request reconnects. With the cluster key, every
 * connection is authenticated before its first request.
 *
 * @module
 */

import * as net from "node:net";
import { CONNECT_TIMEOUT_MS, REQUEST_TIMEOUT_MS } from "../../core/limits.ts";
import { describeResult, ResultCode, SheepdogError, systemErrorText } from "../../core/errors.ts";
import { newNonce, proveToServer } from "../auth/handshake.ts";
import { requestHeader } from "./client.ts";
import { Flag, Opcode } from "./ops.ts";
import { FrameReader, responsePayloadLength } from "./framing.ts";
import type { Header, Message } from "./header.ts";
import type { Transport } from "./transport.ts";

interface Pending {
  resolve: (message: Message) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Options of a TCP transport. */
export interface TcpTransportOptions {
  host: string;
  port: number;
  timeoutMs?: number;
  /** The cluster key: authenticate each connection before any request (net/auth). */
  key?: Uint8Array;
}

export class TcpTransport implements Transport {
  readonly host: string;
  readonly port: number;
  readonly #timeoutMs: number;
  #socket: net.Socket | undefined;
  #connecting: Promise<net.Socket> | undefined;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;
  /** The connection is authenticated (or needs no authentication). */
  #ready = false;
  readonly #key: Uint8Array | undefined;

  constructor(options: TcpTransportOptions) {
    this.host = options.host;
    this.port = options.port;
    this.#timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
    this.#key = options.key;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  #connect(): Promise<net.Socket> {
    if (this.#socket && this.#ready) return Promise.resolve(this.#socket);
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  /** Connects, and authenticates with the cluster key when there is one. */
  async #open(): Promise<net.Socket> {
    const socket = await this.#dial();
    if (this.#key !== undefined) {
      try {
        await this.#authenticate(socket, this.#key);
      } catch (error) {
        this.#fail(socket, error as Error);
        throw error;
      }
    }
    this.#ready = true;
    return socket;
  }

  #dial(): Promise<net.Socket> {
    return new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port });
      socket.setNoDelay(true);
      const reader = new FrameReader(responsePayloadLength);
      const onConnectError = (error: Error) => {
        clearTimeout(timer);
        reject(this.#networkError(error));
      };
      // A host whose packets are dropped (cut off, powered off) never refuses: without a limit
      // the connect would wait for the system's SYN retries (about two minutes).
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new SheepdogError(
            ResultCode.NETWORK_ERROR,
            `Cannot reach the cluster at ${this.address}: no answer within ${
              Math.min(this.#timeoutMs, CONNECT_TIMEOUT_MS) / 1000
            } s`,
          ),
        );
      }, Math.min(this.#timeoutMs, CONNECT_TIMEOUT_MS));
      socket.once("error", onConnectError);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.off("error", onConnectError);
        this.#socket = socket;
        this.#ready = false;
        socket.on("error", (error) => this.#fail(socket, error));
        socket.on("close", () => this.#fail(socket, new Error("connection closed")));
        resolve(socket);
      });
      socket.on("data", (chunk: Uint8Array) => {
        try {
          for (const message of reader.push(chunk)) this.#deliver(message);
        } catch (error) {
          socket.destroy(error as Error);
        }
      });
    });
  }

  /** The handshake of net/auth/handshake.ts: the server proves the key first, then we do. */
  async #authenticate(socket: net.Socket, key: Uint8Array): Promise<void> {
    const nonce = newNonce();
    const request = (opcode: number, data: Uint8Array) => {
      const header = requestHeader(opcode);
      header.flags = Flag.WRITE; // the flag that says a payload follows
      header.dataLength = data.length;
      return this.#send(socket, header, data);
    };
    const hello = await request(Opcode.AUTH_HELLO, nonce);
    if (hello.header.result !== ResultCode.SUCCESS) {
      throw new SheepdogError(
        ResultCode.NOT_AUTHORIZED,
        `Cannot authenticate to ${this.address}: ${describeResult(hello.header.result)}`,
      );
    }
    const proof = proveToServer(key, nonce, hello.data);
    if (proof === undefined) {
      throw new SheepdogError(
        ResultCode.NOT_AUTHORIZED,
        `The sheep at ${this.address} holds another cluster key (check --key-file)`,
      );
    }
    const proved = await request(Opcode.AUTH_PROVE, proof);
    if (proved.header.result !== ResultCode.SUCCESS) {
      throw new SheepdogError(
        ResultCode.NOT_AUTHORIZED,
        `The sheep at ${this.address} refused our cluster key (check --key-file)`,
      );
    }
  }

  #networkError(error: Error): SheepdogError {
    if (error instanceof SheepdogError) return error;
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === "ECONNREFUSED"
      ? "connection refused (is a sheep running there?)"
      : code === undefined
      ? error.message
      : systemErrorText(error);
    return new SheepdogError(
      ResultCode.NETWORK_ERROR,
      `Cannot reach the cluster at ${this.address}: ${reason}`,
    );
  }

  #deliver(message: Message): void {
    const pending = this.#pending.get(message.header.id);
    if (!pending) return; // A response to a request that timed out.
    this.#pending.delete(message.header.id);
    clearTimeout(pending.timer);
    pending.resolve(message);
  }

  #fail(socket: net.Socket, error: Error): void {
    if (this.#socket !== socket) return;
    this.#socket = undefined;
    socket.destroy();
    const failure = this.#networkError(error);
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(failure);
    }
    this.#pending.clear();
  }

  async request(header: Header, data: Uint8Array = new Uint8Array(0)): Promise<Message> {
    if (this.#closed) throw new SheepdogError(ResultCode.NETWORK_ERROR, "Transport is closed");
    return this.#send(await this.#connect(), header, data);
  }

  #send(socket: net.Socket, header: Header, data: Uint8Array): Promise<Message> {
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0 || 1;
    header.id = id;
    return new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new SheepdogError(
            ResultCode.NETWORK_ERROR,
            `No reply from ${this.address} within ${this.#timeoutMs} ms`,
          ),
        );
      }, this.#timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      socket.cork();
      socket.write(header.bytes);
      if (data.length > 0) socket.write(data);
      socket.uncork();
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    const socket = this.#socket;
    if (socket) this.#fail(socket, new Error("closed by client"));
    return Promise.resolve();
  }
}
