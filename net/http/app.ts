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
import { type AdminService, parseVdiRef, type VdiRow } from "../admin/admin_service.ts";
import { encodeVdiDiff, openDiffEnds } from "../../core/vdi/diff.ts";
import { parseSize } from "../admin/format.ts";
import {
  clusterView,
  type EpochRecord,
  nodeView,
  type RecoveryReport,
  recoveryReport,
  scrubReport,
  type VdiView,
  vdiViews,
} from "../admin/views.ts";
import type { Logger } from "../sheep/logger.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { dashboardHtml } from "./dashboard.ts";
import { errorResponse, HttpError, invalid } from "./errors.ts";
import { ringLayout } from "./ring_layout.ts";

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
    method: "GET",
    path: "/api/v1/vdis/:name/export-diff",
    description: "Download what changed as a Ceph rbd diff (v1), as 'img export-diff' writes it: " +
      "?from=SNAP (else since creation), ?to=SNAP (else the current data); needs the token",
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
    method: "POST",
    path: "/api/v1/vdis/:name/lock/break",
    description: "Release the VDI's attach lock whoever holds it (logged); 409 when not attached",
    mutating: true,
  },
  {
    method: "GET",
    path: "/api/v1/locks",
    description: "Attach locks: VDI, holder, the sheep it is attached through, since",
    mutating: false,
  },
  {
    method: "GET",
    path: "/api/v1/du",
    description: "Space per VDI and snapshot (provisioned, used, shared), as img du; totals",
    mutating: false,
  },
  {
    method: "GET",
    path: "/api/v1/du/:name",
    description: "Space of one VDI and its snapshots (NAME), or of one snapshot (NAME:SNAP)",
    mutating: false,
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

/**
 * A response body pulled from `chunks` as the client reads: memory stays bounded. A failure
 * midway aborts the response; the client then holds a diff without its end record, which any
 * reader refuses as truncated.
 */
function iteratorStream(chunks: AsyncGenerator<Uint8Array>): ReadableStream<Uint8Array> {
  return new ReadableStream({
    async pull(controller) {
      const { value, done } = await chunks.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel() {
      await chunks.return(undefined);
    },
  });
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
    return c.json(
      clusterView(info, options.epochHistory ? await options.epochHistory() : undefined),
    );
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

  // A whole disk's data: the same guard as changes (token, same origin, not read-only).
  app.get("/api/v1/vdis/:name/export-diff", guard, async (c) => {
    const { name, ref } = parseVdiRef(c.req.param("name"));
    const to = c.req.query("to");
    const from = c.req.query("from");
    if (to !== undefined && ref !== undefined) {
      throw invalid("Name the snapshot to diff to once: NAME:SNAP or ?to=SNAP, not both");
    }
    const snap = (text: string | undefined) =>
      text === undefined || text === "" ? undefined : parseVdiRef(`x:${text}`).ref;
    const toRef = ref ?? snap(to);
    const fromRef = snap(from);
    const ends = await openDiffEnds(admin.client, {
      name,
      ...(toRef === undefined ? {} : { to: toRef }),
      ...(fromRef === undefined ? {} : { from: fromRef }),
    });
    const file = [name, ends.header.from ?? "", ends.header.to ?? "now"].join("_")
      .replace(/[^A-Za-z0-9._-]/g, "_");
    return c.body(iteratorStream(encodeVdiDiff(admin.client, ends)), 200, {
      "Content-Type": "application/octet-stream",
      "Content-Disposition": `attachment; filename="${file}.rbd-diff"`,
    });
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

  app.post("/api/v1/vdis/:name/lock/break", guard, async (c) => {
    const name = c.req.param("name");
    return c.json({ released: name, holder: await admin.breakLock(name) });
  });

  app.get("/api/v1/locks", async (c) => c.json(await admin.locks()));

  app.get("/api/v1/du", async (c) => c.json(await admin.du()));

  app.get("/api/v1/du/:name", async (c) => c.json(await admin.du(c.req.param("name"))));

  app.get("/api/v1/recovery", async (c) => {
    if (options.recovery) return c.json(await options.recovery());
    // Every node's own report, gathered by the sheep answering (STAT_RECOVERY).
    return c.json(recoveryReport(await admin.recovery()));
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
