/**
 * GET and POST /api/v1/scrub through `app.request()` against a fake three-node cluster whose
 * scrubbers answer START_SCRUB and STAT_SCRUB through the real handlers: the report sums the
 * nodes, POST starts a pass on every node and obeys the write rules (read-only, token, origin,
 * body checks) like every other POST.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dataOid } from "../../core/vdi/oid.ts";
import { AdminService } from "../../net/admin/admin_service.ts";
import { type AdminAppOptions, createAdminApp, ENDPOINTS } from "../../net/http/app.ts";
import { ObjectClient } from "../../net/object/client.ts";
import { FakeScrubCluster, FakeWorld } from "../scrub_fakes.ts";

async function withScrubApp(
  fn: (app: ReturnType<typeof createAdminApp>, fake: FakeScrubCluster) => Promise<void>,
  options: Partial<AdminAppOptions> = {},
): Promise<void> {
  const world = new FakeWorld({ nodes: 3, copies: 2 });
  for (let i = 0; i < 6; i++) world.put(dataOid(7, i));
  world.rot(world.targets(dataOid(7, 2))[1]!.id, dataOid(7, 2));
  const fake = new FakeScrubCluster(world);
  const admin = new AdminService(new ObjectClient(fake.transport(world.nodes[0]!.id)));
  try {
    await fn(createAdminApp({ admin, mutable: true, ...options }), fake);
  } finally {
    await fake.stop();
  }
}

// deno-lint-ignore no-explicit-any
async function json(response: Response): Promise<any> {
  assert.match(response.headers.get("content-type") ?? "", /application\/json/);
  return await response.json();
}

Deno.test("GET /api/v1/scrub reports every node; POST starts a pass whose findings it shows", async () => {
  await withScrubApp(async (app, fake) => {
    const idle = await json(await app.request("/api/v1/scrub"));
    assert.equal(idle.state, "idle");
    assert.deepEqual(idle.nodes.map((n: { pass: number }) => n.pass), [0, 0, 0]);

    const response = await app.request("/api/v1/scrub", { method: "POST", body: "{}" });
    assert.equal(response.status, 202);
    const started = await json(response);
    assert.equal(started.state, "running");
    assert.deepEqual(started.nodes.map((n: { started: boolean }) => n.started), [true, true, true]);
    await fake.settled();

    const report = await json(await app.request("/api/v1/scrub"));
    assert.equal(report.state, "idle");
    assert.equal(report.badBlocks, 1);
    assert.equal(report.repaired, 1);
    assert.equal(report.repairFailed, 0);
    assert.equal(report.findings, 1);
    assert.equal(report.objectsChecked, report.objectsTotal);
    assert.equal(report.bytesVerified, 12 * 2 ** 20, "six objects, two copies each");
    const finding = report.nodes.flatMap((n: { findings: unknown[] }) => n.findings)[0];
    assert.equal(finding.oid, dataOid(7, 2).toString(16).padStart(16, "0"));
    assert.equal(finding.repaired, true);
  });
});

Deno.test("POST /api/v1/scrub follows the write rules and checks its body", async () => {
  await withScrubApp(async (app, fake) => {
    const post = (body: string, headers: Record<string, string> = {}) =>
      app.request("/api/v1/scrub", { method: "POST", body, headers });
    assert.equal((await post("{}")).status, 401);
    assert.equal((await post("{}", { authorization: "Bearer wrong" })).status, 401);
    const bad = await post('{"vid": 7}', { authorization: "Bearer s3cret" });
    assert.equal(bad.status, 400);
    assert.match((await json(bad)).error, /unknown field 'vid'/);
    assert.equal((await post('{"vdi": ""}', { authorization: "Bearer s3cret" })).status, 400);
    const foreign = await post("{}", {
      authorization: "Bearer s3cret",
      origin: "http://evil.example",
    });
    assert.equal(foreign.status, 403);
    assert.ok([...fake.scrubbers.values()].every((s) => s.status().pass === 0), "nothing started");
    assert.equal((await post("", { authorization: "Bearer s3cret" })).status, 202);
    await fake.settled();
  }, { token: "s3cret" });

  await withScrubApp(async (app, fake) => {
    const response = await app.request("/api/v1/scrub", { method: "POST", body: "{}" });
    assert.equal(response.status, 403);
    assert.equal((await app.request("/api/v1/scrub")).status, 200, "reads stay open");
    assert.ok([...fake.scrubbers.values()].every((s) => s.status().pass === 0));
  }, { mutable: false });
});

Deno.test("GET /api/v1 lists the scrub endpoints", async () => {
  await withScrubApp(async (app) => {
    const body = await json(await app.request("/api/v1"));
    const listed = body.endpoints.map((e: { method: string; path: string }) =>
      `${e.method} ${e.path}`
    );
    assert.ok(listed.includes("GET /api/v1/scrub"));
    assert.ok(listed.includes("POST /api/v1/scrub"));
    assert.equal(
      ENDPOINTS.find((e) => e.method === "POST" && e.path === "/api/v1/scrub")!.mutating,
      true,
    );
  });
});
