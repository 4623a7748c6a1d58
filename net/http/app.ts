/**
 * The HTTP admin API and dashboard of a sheep: a hono app over the same `AdminService` that
 * `shepherd` uses, so both share every validation and error. It knows nothing of sockets:
 * `app.request()` drives it in tests and `startHttpService` (node_server.ts) serves it.
 *
 * Safety: mutating endpoints answer 403 unless `mutable`, and need `Authorization: Bearer TOKEN`
 * when a token is set. They also refuse requests a browser sends from another origin, and with
 * `allowedHosts` every request must name one of those hosts (no DNS rebinding onto loopback).
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { AdminService, NodeRow, ScrubRow, VdiRow } from "../admin/admin_service.ts";
import { nodeProblem, parseSize } from "../admin/format.ts";
import type { Logger } from "../sheep/logger.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { dashboardHtml } from "./dashboard.ts";
import { errorResponse, HttpError, invalid } from "./errors.ts";
import { ringLayout } from "./ring_layout.ts";

/** One epoch of the cluster's history: who was in it. */
export interface EpochRecord {
  epoch: number;
  nodes: string[];
  timeMs?: number;
}

/** Recovery progress of one node. */
export interface NodeRecovery {
  id: string;
  state: "idle" | "recovering";
  done: number;
  total: number;
  /** Objects per second. */
  rate: number;
}

export interface RecoveryReport {
  state: "idle" | "recovering";
  nodes: NodeRecovery[];
}

/** The cluster's scrub: totals of every node's current (or last) pass, and each node's row. */
export interface ScrubReport {
  /** "running" while any node scrubs. */
  state: "running" | "idle";
  objectsChecked: number;
  objectsTotal: number;
  bytesVerified: number;
  badBlocks: number;
  repaired: number;
  repairFailed: number;
  /** Findings of the current (or last) passes, all nodes. */
  findings: number;
  nodes: ScrubRow[];
}

/** Sums the nodes' rows into a report. */
export function scrubReport(nodes: ScrubRow[]): ScrubReport {
  const sum = (f: (row: ScrubRow) => number | undefined) =>
    nodes.reduce((total, row) => total + (f(row) ?? 0), 0);
  return {
    state: nodes.some((n) => n.state === "running") ? "running" : "idle",
    objectsChecked: sum((r) => r.objectsChecked),
    objectsTotal: sum((r) => r.objectsTotal),
    bytesVerified: sum((r) => r.bytesVerified),
    badBlocks: sum((r) => r.badBlocks),
    repaired: sum((r) => r.repaired),
    repairFailed: sum((r) => r.repairFailed),
    findings: sum((r) => r.findingsTotal),
    nodes,
  };
}

export interface AdminAppOptions {
  admin: AdminService;
  /** Serves `GET /metrics` when given. */
  metrics?: Metrics;
  /** When set, mutating endpoints need `Authorization: Bearer <token>`. */
  token?: string;
  /** When false, mutating endpoints answer 403 (read-only API and dashboard). */
  mutable: boolean;
  /** When set, requests whose Host header names another host get 403. */
  allowedHosts?: readonly string[];
  /** This node's id, so its recovery progress can be read from `metrics`. */
  self?: string;
  /** The epoch log, newest first; without it only the current epoch is reported. */
  epochHistory?: () => Promise<EpochRecord[]>;
  /** Recovery progress of every node; without it, what `metrics` knows (idle elsewhere). */
  recovery?: () => Promise<RecoveryReport>;
  /** Where unexpected (500) failures are logged. */
  logger?: Logger;
}

/** An endpoint of the API, as `GET /api/v1` lists it. */
export interface Endpoint {
  method: "GET" | "POST" | "DELETE";
  path: string;
  description: string;
  mutating: boolean;
}

/** Every endpoint, in the order `GET /api/v1` lists them. */
export const ENDPOINTS: readonly Endpoint[] = [
  { method: "GET", path: "/", description: "The dashboard (HTML)", mutating: false },
  { method: "GET", path: "/api/v1", description: "This list of endpoints", mutating: false },
  {
    method: "GET",
    path: "/api/v1/cluster",
    description: "Status, copies, epoch, epoch history, redundancy state",
    mutating: false,
  },
  {
    method: "GET",
    path: "/api/v1/nodes",
    description: "Nodes: id, address, zone, vnodes, space used/free/total, state",
    mutating: false,
  },
  {
    method: "GET",
    path: "/api/v1/ring",
    description: "The hash ring: each node's vnode positions (fractions) and share",
    mutating: false,
  },
  {
    method: "GET",
    path: "/api/v1/vdis",
    description: "Every VDI and snapshot: size, allocation, tag, snap id, parent, attachment",
    mutating: false,
  },
  {
    method: "GET",
    path: "/api/v1/vdis/:name",
    description: "One VDI; NAME:SNAPID or NAME:TAG (URL-encoded) names a snapshot",
    mutating: false,
  },
  {
    method: "POST",
    path: "/api/v1/vdis",
    description: 'Create a VDI: {"name": "Dora", "size": "10G"} (size in bytes or K/M/G/T)',
    mutating: true,
  },
  {
    method: "POST",
    path: "/api/v1/vdis/:name/snapshot",
    description: 'Snapshot a working VDI: {"tag": "before-upgrade"} (tag optional)',
    mutating: true,
  },
  {
    method: "POST",
    path: "/api/v1/vdis/:name/clone",
    description: 'Clone the snapshot NAME:SNAP as a new VDI: {"name": "Dora2"}',
    mutating: true,
  },
  {
    method: "POST",
    path: "/api/v1/vdis/:name/resize",
    description: 'Resize a working VDI: {"size": "20G"}',
    mutating: true,
  },
  {
    method: "DELETE",
    path: "/api/v1/vdis/:name",
    description: "Delete a VDI or (NAME:SNAP) a snapshot",
    mutating: true,
  },
  {
    method: "GET",
    path: "/api/v1/recovery",
    description: "Recovery per node: objects done/total, rate",
    mutating: false,
  },
  {
    method: "GET",
    path: "/api/v1/scrub",
    description: "Scrub per node: state, objects checked/total, bytes verified, bad blocks, " +
      "copies repaired and not, newest findings",
    mutating: false,
  },
  {
    method: "POST",
    path: "/api/v1/scrub",
    description: 'Scrub every node now: {"vdi": "NAME"} for one VDI only (optional); a node ' +
      "already scrubbing reports its running pass",
    mutating: true,
  },
  {
    method: "GET",
    path: "/metrics",
    description: "Prometheus metrics (text format)",
    mutating: false,
  },
];

/** A VDI or snapshot as the API shows it: the admin row plus how to address it. */
export interface VdiView extends VdiRow {
  /** "NAME" for a working VDI, "NAME:SNAPID" for a snapshot: what the endpoints accept. */
  ref: string;
  /** The `ref` of the snapshot this one grew from, or null. */
  parent: string | null;
}

function refOf(row: VdiRow): string {
  return row.snapshot ? `${row.name}:${row.snapId}` : row.name;
}

function vdiViews(rows: VdiRow[]): VdiView[] {
  const byVid = new Map(rows.map((row) => [row.vid, row]));
  return rows.map((row) => {
    const parent = byVid.get(row.parentVid);
    return { ...row, ref: refOf(row), parent: parent ? refOf(parent) : null };
  });
}

function nodeView(
  row: NodeRow,
): NodeRow & { address: string; state: "up" | "degraded"; problem?: string } {
  const problem = nodeProblem(row.health, Date.now());
  return {
    ...row,
    address: `${row.host}:${row.port}`,
    state: problem ? "degraded" : "up",
    ...(problem ? { problem } : {}),
  };
}

/** How many copies each object really has, given the zones the ring spans. */
function redundancy(info: { status: string; copies: number; zones: number; strict: boolean }) {
  if (info.status !== "running") {
    return {
      state: "unavailable",
      copies: info.copies,
      zones: info.zones,
      message: "Not serving I/O",
    };
  }
  if (info.zones >= info.copies) {
    return {
      state: "full",
      copies: info.copies,
      zones: info.zones,
      message: `Every object has ${info.copies} ${info.copies === 1 ? "copy" : "copies"}`,
    };
  }
  return {
    state: info.zones === 0 ? "none" : "degraded",
    copies: info.copies,
    zones: info.zones,
    message: info.strict
      ? `Only ${info.zones} of ${info.copies} zones: writes are refused (strict mode)`
      : `Only ${info.zones} of ${info.copies} zones: objects have ${info.zones} copies`,
  };
}

async function readObjectBody(c: Context, allowed: string[]): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (text.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid("Invalid request body: it is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalid("Invalid request body: expected a JSON object");
  }
  const body = value as Record<string, unknown>;
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) {
    throw invalid(
      `Invalid request body: unknown field '${unknown[0]}' (accepted: ${allowed.join(", ")})`,
    );
  }
  return body;
}

function requireString(body: Record<string, unknown>, field: string): string {
  const value = body[field];
  if (typeof value !== "string" || value === "") {
    throw invalid(`Invalid request body: '${field}' must be a non-empty string`);
  }
  return value;
}

function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw invalid(`Invalid request body: '${field}' must be a string`);
  return value;
}

function sizeOf(
  body: Record<string, unknown>,
  field: string,
  required: boolean,
): number | undefined {
  const value = body[field];
  if (value === undefined && !required) return undefined;
  if (typeof value === "number") {
    if (Number.isSafeInteger(value) && value >= 0) return value;
    throw invalid(`Invalid size ${value}: use a whole number of bytes or a string like "10G"`);
  }
  if (typeof value === "string") {
    try {
      return parseSize(value);
    } catch (error) {
      throw invalid((error as Error).message);
    }
  }
  throw invalid(`Invalid request body: '${field}' is required (bytes, or a string like "10G")`);
}

function optionalInteger(body: Record<string, unknown>, field: string): number | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value === "number" && Number.isInteger(value)) return value;
  throw invalid(`Invalid request body: '${field}' must be an integer`);
}

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}

function hostnameOf(host: string): string {
  // "[::1]:7080" → "::1", "127.0.0.1:7080" → "127.0.0.1", "localhost" → "localhost"
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(host);
  if (bracketed) return bracketed[1]!.toLowerCase();
  return host.replace(/:\d+$/, "").toLowerCase();
}

/** The Host the client asked for ("127.0.0.1:7080"); from the URL when there is no header. */
function requestHost(c: Context): string {
  return c.req.header("host") ?? new URL(c.req.url).host;
}

/** Builds the admin app. */
export function createAdminApp(options: AdminAppOptions): Hono {
  const { admin, metrics } = options;
  const tokenDigest = options.token === undefined ? undefined : digest(options.token);
  const allowedHosts = options.allowedHosts?.map((h) => hostnameOf(h));
  const app = new Hono();

  app.onError((error, c) => {
    const { status, body, internal, logText } = errorResponse(error);
    if (internal) {
      options.logger?.error(`HTTP ${c.req.method} ${c.req.path} failed: ${logText ?? body.error}`);
    }
    if (status === 401) c.header("WWW-Authenticate", 'Bearer realm="sheepdog"');
    return c.json(body, status);
  });

  app.notFound((c) => {
    return c.json({
      error: `No such endpoint: ${c.req.method} ${c.req.path} (GET /api/v1 lists them)`,
      code: "NOT_FOUND",
      result: 0x93,
    }, 404);
  });

  app.use("*", async (c, next) => {
    if (allowedHosts) {
      const host = hostnameOf(requestHost(c));
      if (!allowedHosts.includes(host)) {
        throw new HttpError(
          403,
          "FORBIDDEN",
          `Refused: this API does not answer to host '${host}'`,
        );
      }
    }
    await next();
    c.header("Cache-Control", "no-store");
    c.header("X-Content-Type-Options", "nosniff");
  });

  const guard: MiddlewareHandler = async (c, next) => {
    if (!options.mutable) {
      throw new HttpError(
        403,
        "FORBIDDEN",
        "Refused: this admin API is read-only (it listens beyond loopback without a token; " +
          "set --http-token to allow changes)",
      );
    }
    if (tokenDigest) {
      const match = /^Bearer\s+(.+)$/i.exec(c.req.header("authorization") ?? "");
      if (!match || !timingSafeEqual(digest(match[1]!.trim()), tokenDigest)) {
        throw new HttpError(
          401,
          "UNAUTHORIZED",
          "Refused: this request changes the cluster and needs 'Authorization: Bearer <token>'",
        );
      }
    }
    const origin = c.req.header("origin");
    if (origin !== undefined) {
      let originHost: string;
      try {
        originHost = new URL(origin).host.toLowerCase();
      } catch {
        originHost = origin;
      }
      if (originHost !== requestHost(c).toLowerCase()) {
        throw new HttpError(403, "FORBIDDEN", `Refused: cross-origin request from '${origin}'`);
      }
    }
    await next();
  };
  const limit = bodyLimit({
    maxSize: 64 * 1024,
    onError: () => {
      throw new HttpError(413, "PAYLOAD_TOO_LARGE", "Request body is larger than 64 KiB");
    },
  });

  app.get("/", (c) => {
    c.header(
      "Content-Security-Policy",
      "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
    );
    c.header("Referrer-Policy", "no-referrer");
    return c.html(dashboardHtml);
  });

  app.get("/api/v1", (c) =>
    c.json({
      name: "sheepdog",
      api: "v1",
      self: options.self ?? null,
      mutable: options.mutable,
      tokenRequired: options.mutable && tokenDigest !== undefined,
      metrics: metrics !== undefined,
      endpoints: ENDPOINTS.filter((e) => e.path !== "/metrics" || metrics),
    }));

  app.get("/api/v1/cluster", async (c) => {
    const info = await admin.clusterInfo();
    const history = options.epochHistory
      ? await options.epochHistory()
      : info.epochs.length > 0
      ? info.epochs.map((e) => ({
        epoch: e.epoch,
        timeMs: e.timeMs,
        nodes: e.members.map((m) => m.id),
      }))
      : info.epoch > 0
      ? [{ epoch: info.epoch, nodes: info.nodes }]
      : [];
    return c.json({
      status: info.status,
      epoch: info.epoch,
      copies: info.copies,
      strict: info.strict,
      blockSizeShift: info.blockSizeShift,
      objectSize: info.blockSizeShift > 0 ? 2 ** info.blockSizeShift : 0,
      createdMs: info.ctimeMs,
      zones: info.zones,
      nodes: info.nodes,
      redundancy: redundancy(info),
      epochHistory: history,
    });
  });

  app.get("/api/v1/nodes", async (c) => c.json((await admin.nodes()).map(nodeView)));

  app.get("/api/v1/ring", async (c) => {
    const [info, nodes] = await Promise.all([admin.clusterInfo(), admin.nodes()]);
    return c.json({ epoch: info.epoch, ...ringLayout(nodes) });
  });

  app.get("/api/v1/vdis", async (c) => c.json(vdiViews(await admin.vdis())));

  async function viewOf(find: (row: VdiRow) => boolean, what: string): Promise<VdiView> {
    const view = vdiViews(await admin.vdis()).find(find);
    if (!view) {
      throw new SheepdogError(ResultCode.NO_VDI, `Cannot find ${what}: it was deleted meanwhile`);
    }
    return view;
  }

  app.get("/api/v1/vdis/:name", async (c) => {
    const row = await admin.vdi(c.req.param("name"));
    return c.json(await viewOf((r) => r.vid === row.vid, `VDI '${row.name}'`));
  });

  app.post("/api/v1/vdis", guard, limit, async (c) => {
    const body = await readObjectBody(c, ["name", "size", "copies"]);
    const name = requireString(body, "name");
    const sizeBytes = sizeOf(body, "size", true)!;
    const copies = optionalInteger(body, "copies");
    const vid = await admin.createVdi(
      copies === undefined ? { name, sizeBytes } : { name, sizeBytes, copies },
    );
    const view = await viewOf((r) => r.vid === vid, `VDI '${name}'`);
    c.header("Location", `/api/v1/vdis/${encodeURIComponent(view.ref)}`);
    return c.json(view, 201);
  });

  app.post("/api/v1/vdis/:name/snapshot", guard, limit, async (c) => {
    const name = c.req.param("name");
    const body = await readObjectBody(c, ["tag"]);
    const vid = await admin.snapshot(name, optionalString(body, "tag") ?? "");
    const view = await viewOf((r) => r.vid === vid, `the snapshot of '${name}'`);
    c.header("Location", `/api/v1/vdis/${encodeURIComponent(view.ref)}`);
    return c.json(view, 201);
  });

  app.post("/api/v1/vdis/:name/clone", guard, limit, async (c) => {
    const source = c.req.param("name");
    const body = await readObjectBody(c, ["name", "size"]);
    const name = requireString(body, "name");
    const vid = await admin.clone(source, name, sizeOf(body, "size", false));
    const view = await viewOf((r) => r.vid === vid, `VDI '${name}'`);
    c.header("Location", `/api/v1/vdis/${encodeURIComponent(view.ref)}`);
    return c.json(view, 201);
  });

  app.post("/api/v1/vdis/:name/resize", guard, limit, async (c) => {
    const name = c.req.param("name");
    const body = await readObjectBody(c, ["size"]);
    await admin.resize(name, sizeOf(body, "size", true)!);
    const row = await admin.vdi(name);
    return c.json(await viewOf((r) => r.vid === row.vid, `VDI '${name}'`));
  });

  app.delete("/api/v1/vdis/:name", guard, async (c) => {
    const name = c.req.param("name");
    await admin.deleteVdi(name);
    return c.json({ deleted: name });
  });

  app.get("/api/v1/recovery", async (c) => {
    if (options.recovery) return c.json(await options.recovery());
    // Every node's own report, gathered by the sheep answering (STAT_RECOVERY).
    const nodes = (await admin.recovery()).map((row): NodeRecovery => ({
      id: row.node,
      state: row.state === "gathering" || row.state === "recovering" ? "recovering" : "idle",
      done: row.done ?? 0,
      total: row.total ?? 0,
      rate: row.objectsPerSecond ?? 0,
    }));
    const state = nodes.some((n) => n.state === "recovering") ? "recovering" : "idle";
    return c.json({ state, nodes } satisfies RecoveryReport);
  });

  app.get("/api/v1/scrub", async (c) => c.json(scrubReport(await admin.scrubStatus())));

  app.post("/api/v1/scrub", guard, limit, async (c) => {
    const body = await readObjectBody(c, ["vdi"]);
    const vdi = optionalString(body, "vdi");
    if (vdi === "") throw invalid("Invalid request body: 'vdi' must be a non-empty string");
    const rows = await admin.startScrub(vdi === undefined ? {} : { vdi });
    return c.json(scrubReport(rows), 202);
  });

  app.get("/metrics", async (c) => {
    if (!metrics) throw new HttpError(404, "NOT_FOUND", "Metrics are not enabled on this sheep");
    const text = await metrics.text();
    return c.body(text, 200, { "Content-Type": metrics.contentType });
  });

  return app;
}
