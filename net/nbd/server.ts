/**
 * NbdServer: accepts connections on TCP or a Unix socket and runs one NbdSession per
 * connection against an ExportProvider. With `tls`, every connection must start TLS.
 */
import { createServer, type Server, type Socket } from "node:net";
import { DEFAULT_LIMITS, type NbdLimits } from "./constants.ts";
import type { ExportProvider } from "./export.ts";
import { type NbdLogger, silentLogger } from "./logger.ts";
import { NbdSession, type NbdTlsEvent } from "./session.ts";
import type { NbdTls } from "./tls.ts";

export interface NbdServerOptions {
  provider: ExportProvider;
  logger?: NbdLogger;
  /** Per-connection bounds; defaults in DEFAULT_LIMITS. */
  limits?: Partial<NbdLimits>;
  /** Requires TLS of every client, with these credentials (x509 and/or PSK). */
  tls?: NbdTls;
  /** Told how each connection's TLS went (secured, refused, failed), e.g. for metrics. */
  onTls?: (event: NbdTlsEvent) => void;
}

/** Where to listen: TCP (port 0 picks a free port; the default NBD port is 10809) or a Unix socket path. */
export type NbdListenOptions = { host: string; port: number } | { path: string };

/** The bound address. */
export type NbdAddress = { host: string; port: number } | { path: string };

export class NbdServer {
  readonly #provider: ExportProvider;
  readonly #log: NbdLogger;
  readonly #limits: NbdLimits;
  readonly #tls: NbdTls | null;
  readonly #onTls: ((event: NbdTlsEvent) => void) | null;
  readonly #sessions = new Set<NbdSession>();
  #server: Server | null = null;
  #closing: Promise<void> | null = null;

  constructor(options: NbdServerOptions) {
    this.#provider = options.provider;
    this.#log = options.logger ?? silentLogger;
    this.#limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.#tls = options.tls ?? null;
    this.#onTls = options.onTls ?? null;
  }

  /** The TLS this server requires ("x509", "psk", "x509+psk"), or null for none. */
  get tls(): string | null {
    return this.#tls?.kind ?? null;
  }

  /** Sessions currently open. */
  get connections(): number {
    return this.#sessions.size;
  }

  listen(options: NbdListenOptions): Promise<NbdAddress> {
    if (this.#server !== null) return Promise.reject(new Error("NbdServer: already listening"));
    if (this.#closing !== null) return Promise.reject(new Error("NbdServer: closed"));
    const unix = "path" in options;
    // allowHalfOpen: a client that shuts down its sending side still gets the replies to the
    // requests it sent; the session ends the connection once they are written.
    const server = createServer(
      { allowHalfOpen: true, noDelay: true },
      (socket) => this.#accept(socket, unix),
    );
    this.#server = server;
    server.on("error", (err) => this.#log.error("nbd: listener error", { error: err.message }));
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        this.#server = null;
        reject(err);
      };
      server.once("error", onError);
      const onListening = () => {
        server.off("error", onError);
        const address = server.address();
        const bound: NbdAddress = unix
          ? { path: options.path }
          : typeof address === "object" && address !== null
          ? { host: address.address, port: address.port }
          : { host: options.host, port: options.port };
        this.#log.info("nbd: listening", {
          ...bound,
          ...(this.#tls !== null ? { tls: this.#tls.kind } : {}),
        });
        resolve(bound);
      };
      if (unix) server.listen(options.path, onListening);
      else server.listen(options.port, options.host, onListening);
    });
  }

  #accept(socket: Socket, unix: boolean): void {
    if (this.#closing !== null) {
      socket.destroy();
      return;
    }
    if (!unix) {
      try {
        socket.setNoDelay(true);
      } catch {
        // not a TCP socket after all
      }
    }
    const client = unix ? "unix" : formatPeer(socket.remoteAddress, socket.remotePort);
    this.#log.debug("nbd: connection", { client });
    const session = new NbdSession(socket, {
      provider: this.#provider,
      client,
      logger: this.#log,
      limits: this.#limits,
      tls: this.#tls,
      ...(this.#onTls !== null ? { onTls: this.#onTls } : {}),
    });
    this.#sessions.add(session);
    session.done.finally(() => {
      this.#sessions.delete(session);
      this.#log.debug("nbd: connection closed", { client });
    });
  }

  /**
   * Stops listening, ends every session (requests in flight finish and are answered first) and
   * resolves once all connections are closed and their exports released.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const server = this.#server;
    const stopped = server === null
      ? Promise.resolve()
      : new Promise<void>((resolve) => server.close(() => resolve()));
    const sessions = [...this.#sessions];
    for (const s of sessions) s.shutdown();
    await Promise.all(sessions.map((s) => s.done));
    await stopped;
    this.#server = null;
  }
}

function formatPeer(address: string | undefined, port: number | undefined): string {
  const host = address ?? "?";
  return host.includes(":") ? `[${host}]:${port ?? 0}` : `${host}:${port ?? 0}`;
}
