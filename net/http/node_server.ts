/**
 * Serves a sheep's admin app over HTTP with @hono/node-server (the one file here that opens a
 * socket).
 *
 * Safety rules:
 * - By default it listens on 127.0.0.1 only, and answers only requests whose Host is a loopback
 *   name (a web page cannot reach it by DNS rebinding).
 * - Bound to any other address, mutating endpoints need the token; without a token they are
 *   disabled (403) and the dashboard is read-only. Reads stay open to whoever can connect.
 *
 * @module
 */

import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { AdminService } from "../admin/admin_service.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { type GaugeSource, watchSheep } from "../metrics/sheep_gauges.ts";
import type { ObjectClient } from "../object/client.ts";
import type { Logger } from "../sheep/logger.ts";
import { createAdminApp } from "./app.ts";

/** The default HTTP address and port of a sheep. */
export const HTTP_HOST_DEFAULT = "127.0.0.1";
export const HTTP_PORT_DEFAULT = 7080;

export interface HttpServiceOptions {
  /** Address to listen on; 127.0.0.1 when omitted. */
  host?: string;
  /** Port; 7080 when omitted, 0 picks a free one. */
  port?: number;
  /** Bearer token that mutating endpoints require. */
  token?: string;
  /** Where the service logs (defaults to the sheep's logger). */
  logger?: Logger;
  /** Metrics to serve; the sheep's own when omitted. */
  metrics?: Metrics;
}

export interface HttpService {
  /** Where it listens (the real port when 0 was asked for). */
  readonly address: { host: string; port: number };
  /** "http://127.0.0.1:7080". */
  readonly url: string;
  /** Whether mutating endpoints are enabled. */
  readonly mutable: boolean;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * Who may change what, given where the service listens: on loopback, mutations are allowed
 * (with the token if one is set) and only loopback Host names are answered; elsewhere,
 * mutations need a token and are disabled without one.
 */
export function httpPolicy(
  host: string,
  token: string | undefined,
): { mutable: boolean; allowedHosts?: string[] } {
  if (isLoopback(host)) {
    return { mutable: true, allowedHosts: ["localhost", "127.0.0.1", "::1", host] };
  }
  return { mutable: token !== undefined && token !== "" };
}

/** What the HTTP service uses of its sheep: its gauges, and a client that takes no network hop. */
export interface HttpHost extends GaugeSource {
  readonly id: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  localClient(peer?: string): ObjectClient;
}

/** Starts the HTTP admin API and dashboard of `sheep`. Rejects when the port cannot be bound. */
export async function startHttpService(
  sheep: HttpHost,
  options: HttpServiceOptions = {},
): Promise<HttpService> {
  const host = options.host ?? HTTP_HOST_DEFAULT;
  const port = options.port ?? HTTP_PORT_DEFAULT;
  const logger = options.logger ?? sheep.logger;
  const token = options.token === "" ? undefined : options.token;
  const policy = httpPolicy(host, token);
  const mutable = policy.mutable;
  const metrics = options.metrics ?? sheep.metrics;
  watchSheep(metrics, sheep);
  const app = createAdminApp({
    admin: new AdminService(sheep.localClient("http")),
    metrics,
    self: sheep.id,
    logger,
    ...policy,
    ...(token === undefined ? {} : { token }),
  });
  const server = createAdaptorServer({
    fetch: app.fetch,
    hostname: host,
    overrideGlobalObjects: false,
  }) as Server;
  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      reject(new Error(`Cannot serve HTTP on ${host}:${port}: ${error.code ?? error.message}`));
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (error) => logger.error(`HTTP server: ${error.message}`));
  const bound = (server.address() as AddressInfo).port;
  const shown = host.includes(":") ? `[${host}]` : host;
  const url = `http://${shown}:${bound}`;
  if (!mutable) {
    logger.warn(
      `HTTP admin API on ${url} is read-only: it listens beyond loopback and no token is set ` +
        `(set --http-token to allow changes)`,
    );
  }
  logger.info(
    `HTTP admin API and dashboard on ${url}${token ? " (token required for changes)" : ""}`,
  );
  let closed: Promise<void> | undefined;
  return {
    address: { host, port: bound },
    url,
    mutable,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
