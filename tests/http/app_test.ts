/**
 * The HTTP admin API through `app.request()` (no sockets) against a real in-process sheep:
 * every endpoint, every error mapping, token enforcement, read-only mode and origin checks.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { AdminService } from "../../net/admin/admin_service.ts";
import { type AdminAppOptions, createAdminApp, ENDPOINTS } from "../../net/http/app.ts";
import { withSheep } from "../harness.ts";

const GiB = 2 ** 30;

type App = ReturnType<typeof createAdminApp>;

async function call(
  app: App,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; body: any; headers: Headers }> {
  const init: RequestInit = { method, headers };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const response = await app.request(path, init);
  const text = await response.text();
  let parsed: unknown = text;
  if (response.headers.get("content-type")?.includes("application/json")) parsed = JSON.parse(text);
  return { status: response.status, body: parsed, headers: response.headers };
}

function withApp(
  fn: (app: App, context: Parameters<Parameters<typeof withSheep>[0]>[0]) => Promise<void>,
  options: Partial<AdminAppOptions> = {},
  sheepOptions: { copies?: number; format?: boolean } = {},
): Promise<void> {
  return withSheep(async (context) => {
    const admin = new AdminService(context.sheep.localClient());
    const app = createAdminApp({
      admin,
      mutable: true,
      metrics: context.sheep.metrics,
      self: context.sheep.id,
      ...options,
    });
    await fn(app, context);
  }, sheepOptions);
}

function v(name: string): string {
  return `/api/v1/vdis/${encodeURIComponent(name)}`;
}

Deno.test("GET /api/v1 lists every endpoint", async () => {
  await withApp(async (app) => {
    const { status, body } = await call(app, "GET", "/api/v1");
    assert.equal(status, 200);
    assert.equal(body.mutable, true);
    assert.equal(body.tokenRequired, false);
    assert.deepEqual(body.endpoints, ENDPOINTS);
    const listed = body.endpoints.map((e: { method: string; path: string }) =>
      `${e.method} ${e.path}`
    );
    for (
      const expected of [
        "GET /api/v1/cluster",
        "GET /api/v1/nodes",
        "GET /api/v1/ring",
        "GET /api/v1/vdis",
        "GET /api/v1/vdis/:name",
        "POST /api/v1/vdis",
        "POST /api/v1/vdis/:name/snapshot",
        "POST /api/v1/vdis/:name/clone",
        "POST /api/v1/vdis/:name/resize",
        "DELETE /api/v1/vdis/:name",
        "GET /api/v1/recovery",
        "GET /metrics",
        "GET /",
      ]
    ) assert.ok(listed.includes(expected), expected);
  });
});

Deno.test("GET /api/v1/cluster reports status, copies, epoch, history and redundancy", async () => {
  await withApp(async (app, { sheep }) => {
    const { status, body } = await call(app, "GET", "/api/v1/cluster");
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.status, "running");
    assert.equal(body.copies, 1);
    assert.equal(body.epoch, 1);
    assert.equal(body.zones, 1);
    assert.equal(body.objectSize, 4 * 2 ** 20);
    assert.deepEqual(body.nodes, [sheep.id]);
    assert.deepEqual(body.epochHistory, [{ epoch: 1, nodes: [sheep.id] }]);
    assert.equal(body.redundancy.state, "full");
  });
  await withApp(
    async (app) => {
      const { body } = await call(app, "GET", "/api/v1/cluster");
      assert.equal(body.redundancy.state, "degraded");
      assert.match(body.redundancy.message, /Only 1 of 2 zones/);
    },
    {},
    { copies: 2 },
  );
});

Deno.test("GET /api/v1/cluster of an unformatted sheep; VDI calls answer 503", async () => {
  await withApp(
    async (app) => {
      const cluster = await call(app, "GET", "/api/v1/cluster");
      assert.equal(cluster.status, 200);
      assert.equal(cluster.body.status, "waiting-for-format");
      assert.equal(cluster.body.redundancy.state, "unavailable");
      assert.deepEqual(cluster.body.epochHistory, []);
      const vdis = await call(app, "GET", "/api/v1/vdis");
      assert.equal(vdis.status, 503);
      assert.equal(vdis.body.code, "WAIT_FOR_FORMAT");
      assert.equal(vdis.body.result, ResultCode.WAIT_FOR_FORMAT);
    },
    {},
    { format: false },
  );
});

Deno.test("GET /api/v1/nodes and /api/v1/ring describe this node", async () => {
  await withApp(async (app, { sheep }) => {
    const nodes = await call(app, "GET", "/api/v1/nodes");
    assert.equal(nodes.status, 200);
    assert.equal(nodes.body.length, 1);
    const [node] = nodes.body;
    assert.equal(node.id, sheep.id);
    assert.equal(node.address, `127.0.0.1:${sheep.port}`);
    assert.equal(node.state, "up");
    assert.equal(node.vnodes, 128);
    assert.ok(node.totalBytes > 0 && node.freeBytes > 0 && node.usedBytes >= 0);
    const ring = await call(app, "GET", "/api/v1/ring");
    assert.equal(ring.status, 200);
    assert.equal(ring.body.epoch, 1);
    assert.equal(ring.body.points, 128);
    assert.equal(ring.body.nodes[0].id, sheep.id);
    assert.equal(ring.body.nodes[0].positions.length, 128);
    assert.ok(Math.abs(ring.body.nodes[0].share - 1) < 1e-9);
  });
});

Deno.test("POST /api/v1/vdis creates; GET lists and shows; errors map to statuses", async () => {
  await withApp(async (app) => {
    const created = await call(app, "POST", "/api/v1/vdis", { name: "Dora", size: "10G" });
    assert.equal(created.status, 201);
    assert.equal(created.headers.get("location"), "/api/v1/vdis/Dora");
    assert.equal(created.body.name, "Dora");
    assert.equal(created.body.sizeBytes, 10 * GiB);
    assert.equal(created.body.ref, "Dora");
    assert.equal(created.body.snapshot, false);
    assert.equal(created.body.parent, null);

    // curl -d sends form encoding; the JSON body is read regardless.
    const bytes = await call(
      app,
      "POST",
      "/api/v1/vdis",
      JSON.stringify({ name: "a b&c", size: 4096 }),
      {
        "content-type": "application/x-www-form-urlencoded",
      },
    );
    assert.equal(bytes.status, 201);
    assert.equal(bytes.body.sizeBytes, 4096);
    assert.equal(bytes.headers.get("location"), "/api/v1/vdis/a%20b%26c");
    const shown = await call(app, "GET", v("a b&c"));
    assert.equal(shown.status, 200);
    assert.equal(shown.body.name, "a b&c");

    const list = await call(app, "GET", "/api/v1/vdis");
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.map((r: { name: string }) => r.name).sort(), ["Dora", "a b&c"]);
    for (
      const field of [
        "vid",
        "sizeBytes",
        "allocatedBytes",
        "sharedBytes",
        "tag",
        "snapId",
        "parentVid",
      ]
    ) {
      assert.ok(field in list.body[0], field);
    }

    const exists = await call(app, "POST", "/api/v1/vdis", { name: "Dora", size: "1G" });
    assert.equal(exists.status, 409);
    assert.equal(exists.body.code, "VDI_EXIST");
    assert.equal(exists.body.result, ResultCode.VDI_EXIST);

    const missing = await call(app, "GET", v("x"));
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.body, {
      error: "Cannot find VDI 'x': no such VDI",
      code: "NO_VDI",
      result: 8,
    });

    const bad: [unknown, RegExp][] = [
      ["{not json", /not JSON/],
      [[1, 2], /expected a JSON object/],
      [{ size: "1G" }, /'name' must be a non-empty string/],
      [{ name: "", size: "1G" }, /'name' must be a non-empty string/],
      [{ name: "e" }, /'size' is required/],
      [{ name: "e", size: "ten gigs" }, /Invalid size 'ten gigs'/],
      [{ name: "e", size: -1 }, /Invalid size -1/],
      [{ name: "e", size: 1.5 }, /Invalid size 1.5/],
      [{ name: "e", size: "1G", sise: 3 }, /unknown field 'sise'/],
      [{ name: "e", size: "1G", copies: "two" }, /'copies' must be an integer/],
      ["", /'name' must be a non-empty string/],
    ];
    for (const [body, message] of bad) {
      const response = await call(app, "POST", "/api/v1/vdis", body);
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.equal(response.body.code, "INVALID_PARMS");
      assert.equal(response.body.result, ResultCode.INVALID_PARMS);
      assert.match(response.body.error, message);
    }
    const huge = await call(app, "POST", "/api/v1/vdis", { name: "x".repeat(70_000), size: 1 });
    assert.equal(huge.status, 413);
    assert.equal(huge.body.code, "PAYLOAD_TOO_LARGE");
  });
});

Deno.test("snapshot, clone, resize and delete through the API", async () => {
  await withApp(async (app) => {
    await call(app, "POST", "/api/v1/vdis", { name: "Dora", size: "1G" });
    const snap = await call(app, "POST", v("Dora") + "/snapshot", { tag: "base" });
    assert.equal(snap.status, 201);
    assert.equal(snap.body.snapshot, true);
    assert.equal(snap.body.tag, "base");
    assert.equal(snap.body.snapId, 1);
    assert.equal(snap.body.ref, "Dora:1");
    assert.equal(snap.headers.get("location"), "/api/v1/vdis/Dora%3A1");
    const untagged = await call(app, "POST", v("Dora") + "/snapshot");
    assert.equal(untagged.status, 201);
    assert.equal(untagged.body.ref, "Dora:2");

    assert.equal((await call(app, "GET", v("Dora:1"))).body.tag, "base");
    assert.equal((await call(app, "GET", v("Dora:base"))).body.snapId, 1);
    const noTag = await call(app, "GET", v("Dora:nope"));
    assert.equal(noTag.status, 404);
    assert.equal(noTag.body.code, "NO_TAG");

    const working = await call(app, "GET", v("Dora"));
    assert.equal(working.body.parent, "Dora:2");

    const clone = await call(app, "POST", v("Dora:1") + "/clone", { name: "Dora2" });
    assert.equal(clone.status, 201);
    assert.equal(clone.body.name, "Dora2");
    assert.equal(clone.body.parent, "Dora:1");
    assert.equal(clone.body.sizeBytes, GiB);
    const fromWorking = await call(app, "POST", v("Dora") + "/clone", { name: "Dora3" });
    assert.equal(fromWorking.status, 400);
    assert.equal(fromWorking.body.code, "INVALID_PARMS");
    assert.match(fromWorking.body.error, /only a snapshot can be cloned/);
    const cloneExists = await call(app, "POST", v("Dora:1") + "/clone", { name: "Dora2" });
    assert.equal(cloneExists.status, 409);
    const cloneMissing = await call(app, "POST", v("Nobody:1") + "/clone", { name: "N" });
    assert.equal(cloneMissing.status, 404);
    const cloneNoName = await call(app, "POST", v("Dora:1") + "/clone", {});
    assert.equal(cloneNoName.status, 400);

    const snapMissing = await call(app, "POST", v("Nobody") + "/snapshot", {});
    assert.equal(snapMissing.status, 404);
    const snapBadTag = await call(app, "POST", v("Dora") + "/snapshot", { tag: 7 });
    assert.equal(snapBadTag.status, 400);

    const resized = await call(app, "POST", v("Dora") + "/resize", { size: "2G" });
    assert.equal(resized.status, 200);
    assert.equal(resized.body.sizeBytes, 2 * GiB);
    const resizeNoSize = await call(app, "POST", v("Dora") + "/resize", {});
    assert.equal(resizeNoSize.status, 400);
    const resizeMissing = await call(app, "POST", v("Nobody") + "/resize", { size: "2G" });
    assert.equal(resizeMissing.status, 404);

    const deleted = await call(app, "DELETE", v("Dora2"));
    assert.equal(deleted.status, 200);
    assert.deepEqual(deleted.body, { deleted: "Dora2" });
    assert.equal((await call(app, "GET", v("Dora2"))).status, 404);
    const deleteSnap = await call(app, "DELETE", v("Dora:2"));
    assert.equal(deleteSnap.status, 200);
    const deleteAgain = await call(app, "DELETE", v("Dora2"));
    assert.equal(deleteAgain.status, 404);
    assert.equal(deleteAgain.body.code, "NO_VDI");
  });
});

Deno.test("deleting an attached VDI answers 409 VDI_LOCKED; the list shows the attachment", async () => {
  await withApp(async (app, { client }) => {
    await call(app, "POST", "/api/v1/vdis", { name: "busy", size: "1G" });
    const vid = await client.lockVdi("busy");
    const row = (await call(app, "GET", "/api/v1/vdis")).body.find((r: { name: string }) =>
      r.name === "busy"
    );
    // Our client's attach is held by its connection, named by it.
    assert.match(row.attachedTo, /^127\.0\.0\.1:\d+$/);
    const refused = await call(app, "DELETE", v("busy"));
    assert.equal(refused.status, 409);
    assert.equal(refused.body.code, "VDI_LOCKED");
    assert.match(refused.body.error, /attached by 127\.0\.0\.1/);
    await client.releaseVdi(vid);
    assert.equal((await call(app, "DELETE", v("busy"))).status, 200);
  });
});

Deno.test("GET /api/v1/recovery is idle on every node; GET /metrics serves Prometheus text", async () => {
  await withApp(async (app, { sheep }) => {
    const recovery = await call(app, "GET", "/api/v1/recovery");
    assert.equal(recovery.status, 200);
    assert.deepEqual(recovery.body, {
      state: "idle",
      // Idle and current: the epoch the cluster is at (1 once formatted), not 0.
      nodes: [{
        id: sheep.id,
        epoch: 1,
        state: "idle",
        phase: "idle",
        done: 0,
        total: 0,
        failed: 0,
        rate: 0,
      }],
    });
    const metrics = await app.request("/metrics");
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get("content-type")!, /^text\/plain/);
    assert.match(await metrics.text(), /# TYPE sheepdog_requests_total counter/);
  });
  await withApp(async (app, { sheep }) => {
    // The API reports what the sheep's recovery says (STAT_RECOVERY), here a run in progress.
    const status = sheep.recovery.status();
    sheep.recovery.status = () => ({
      ...status,
      state: "recovering",
      epoch: 2,
      done: 5,
      total: 20,
      objectsPerSecond: 2.5,
    });
    const recovery = await call(app, "GET", "/api/v1/recovery");
    assert.deepEqual(recovery.body, {
      state: "recovering",
      nodes: [{
        id: sheep.id,
        epoch: 2,
        state: "recovering",
        phase: "recovering",
        done: 5,
        total: 20,
        failed: 0,
        rate: 2.5,
      }],
    });
  }, {});
});

Deno.test("GET /metrics answers 404 when metrics are off; unknown paths answer JSON 404", async () => {
  await withSheep(async ({ sheep }) => {
    const app = createAdminApp({ admin: new AdminService(sheep.localClient()), mutable: true });
    const metrics = await call(app, "GET", "/metrics");
    assert.equal(metrics.status, 404);
    assert.equal(metrics.body.code, "NOT_FOUND");
    const index = await call(app, "GET", "/api/v1");
    assert.ok(!index.body.endpoints.some((e: { path: string }) => e.path === "/metrics"));
    const unknown = await call(app, "GET", "/api/v2/everything");
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.error, /No such endpoint: GET \/api\/v2\/everything/);
    const wrongMethod = await call(app, "PUT", "/api/v1/vdis");
    assert.equal(wrongMethod.status, 404);
  });
});

Deno.test("GET / serves the dashboard with a strict content security policy", async () => {
  await withApp(async (app) => {
    const response = await app.request("/");
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type")!, /^text\/html/);
    assert.match(response.headers.get("content-security-policy")!, /default-src 'none'/);
    const html = await response.text();
    assert.match(html, /<title>sheepdog<\/title>/);
    assert.doesNotMatch(html, /https?:\/\/(?!www\.w3\.org)/, "no external resources");
  });
});

Deno.test("a token guards mutating endpoints only", async () => {
  await withApp(async (app) => {
    const bearer = { authorization: "Bearer s3cret" };
    assert.equal((await call(app, "GET", "/api/v1/vdis")).status, 200);
    assert.equal((await call(app, "GET", "/api/v1")).body.tokenRequired, true);
    const anonymous = await call(app, "POST", "/api/v1/vdis", { name: "t", size: "1G" });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.body.code, "UNAUTHORIZED");
    assert.equal(anonymous.headers.get("www-authenticate"), 'Bearer realm="sheepdog"');
    const wrong = await call(app, "POST", "/api/v1/vdis", { name: "t", size: "1G" }, {
      authorization: "Bearer nope",
    });
    assert.equal(wrong.status, 401);
    assert.equal(
      (await call(app, "POST", "/api/v1/vdis", { name: "t", size: "1G" }, bearer)).status,
      201,
    );
    for (
      const [method, path] of [
        ["POST", v("t") + "/snapshot"],
        ["POST", v("t:1") + "/clone"],
        ["POST", v("t") + "/resize"],
        ["DELETE", v("t")],
      ] as const
    ) {
      const refused = await call(app, method, path, {});
      assert.equal(refused.status, 401, `${method} ${path}`);
    }
    assert.equal((await call(app, "POST", v("t") + "/snapshot", {}, bearer)).status, 201);
    assert.equal((await call(app, "DELETE", v("t:1"), undefined, bearer)).status, 200);
  }, { token: "s3cret" });
});

Deno.test("read-only mode answers 403 to every mutating endpoint, token or not", async () => {
  await withApp(async (app) => {
    assert.equal((await call(app, "GET", "/api/v1")).body.mutable, false);
    assert.equal((await call(app, "GET", "/api/v1/vdis")).status, 200);
    for (
      const [method, path] of [
        ["POST", "/api/v1/vdis"],
        ["POST", v("t") + "/snapshot"],
        ["POST", v("t:1") + "/clone"],
        ["POST", v("t") + "/resize"],
        ["DELETE", v("t")],
      ] as const
    ) {
      const refused = await call(app, method, path, { name: "t", size: "1G" }, {
        authorization: "Bearer s3cret",
      });
      assert.equal(refused.status, 403, `${method} ${path}`);
      assert.equal(refused.body.code, "FORBIDDEN");
      assert.match(refused.body.error, /read-only/);
    }
  }, { mutable: false, token: "s3cret" });
});

Deno.test("cross-origin mutations and foreign Host headers are refused", async () => {
  await withApp(async (app) => {
    const evil = await call(app, "POST", "/api/v1/vdis", { name: "x", size: "1G" }, {
      origin: "http://evil.example",
    });
    assert.equal(evil.status, 403);
    assert.match(evil.body.error, /cross-origin request from 'http:\/\/evil\.example'/);
    const same = await call(app, "POST", "/api/v1/vdis", { name: "x", size: "1G" }, {
      origin: "http://localhost",
    });
    assert.equal(same.status, 201);
    const rebound = await call(app, "GET", "/api/v1/cluster", undefined, {
      host: "evil.example:7080",
    });
    assert.equal(rebound.status, 403);
    assert.match(rebound.body.error, /does not answer to host 'evil\.example'/);
    assert.equal(
      (await call(app, "GET", "/api/v1/cluster", undefined, { host: "127.0.0.1:7080" })).status,
      200,
    );
  }, { allowedHosts: ["localhost", "127.0.0.1"] });
});

function failingAdmin(error: unknown): AdminService {
  const fail = () => Promise.reject(error);
  return { clusterInfo: fail, nodes: fail, vdis: fail, vdi: fail } as unknown as AdminService;
}

Deno.test("every Sheepdog result code maps to its HTTP status through one error handler", async () => {
  const cases: [number, number][] = [
    [ResultCode.NO_VDI, 404],
    [ResultCode.NO_TAG, 404],
    [ResultCode.VDI_EXIST, 409],
    [ResultCode.INVALID_PARMS, 400],
    [ResultCode.READONLY, 409],
    [ResultCode.VDI_LOCKED, 409],
    [ResultCode.WAIT_FOR_FORMAT, 503],
    [ResultCode.NETWORK_ERROR, 502],
    [ResultCode.EIO, 500],
    [ResultCode.SYSTEM_ERROR, 500],
  ];
  const logged: string[] = [];
  for (const [code, status] of cases) {
    const app = createAdminApp({
      admin: failingAdmin(new SheepdogError(code, `failure ${code}`)),
      mutable: true,
      logger: { debug() {}, info() {}, warn() {}, error: (m) => logged.push(m) },
    });
    const response = await call(app, "GET", "/api/v1/cluster");
    assert.equal(response.status, status, `code ${code}`);
    assert.equal(response.body.result, code);
    assert.equal(response.body.error, `failure ${code}`);
    assert.equal(ResultCode[response.body.code as keyof typeof ResultCode], code);
  }
  const crash = createAdminApp({
    admin: failingAdmin(new TypeError("Cannot read properties of undefined (reading 'x')")),
    mutable: true,
    logger: { debug() {}, info() {}, warn() {}, error: (m) => logged.push(m) },
  });
  const response = await call(crash, "GET", "/api/v1/nodes");
  assert.equal(response.status, 500);
  // A JavaScript error's text stays in the sheep's log; the client gets a sentence.
  assert.deepEqual(response.body, {
    error: "Internal error: the sheep's log has the details",
    code: "SYSTEM_ERROR",
    result: ResultCode.SYSTEM_ERROR,
  });
  assert.deepEqual(logged, [
    "HTTP GET /api/v1/cluster failed: failure 3",
    "HTTP GET /api/v1/cluster failed: failure 6",
    "HTTP GET /api/v1/nodes failed: Cannot read properties of undefined (reading 'x')",
  ]);
});
