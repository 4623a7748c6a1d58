/**
 * The dashboard's scrub panel in headless Chromium (Debian's `chromium`, as dashboard_test.ts):
 * the admin app serves a one-node cluster whose scrub status comes from a fake three-node
 * cluster of real Scrubbers. The panel must say "never run", then show a running pass's
 * progress, then the finished pass's counts and its finding. Fails when chromium is missing.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { createAdaptorServer } from "@hono/node-server";
import { chromium } from "playwright-core";
import { dataOid, oidToHex } from "../../core/vdi/oid.ts";
import { AdminService, type ClusterInfo } from "../../net/admin/admin_service.ts";
import { createAdminApp } from "../../net/http/app.ts";
import { ObjectClient } from "../../net/object/client.ts";
import { FakeScrubCluster, FakeWorld } from "../scrub_fakes.ts";

const CHROMIUM = "/usr/bin/chromium";

Deno.test("dashboard shows the scrub: never run, a running pass's progress, then its findings", async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  const world = new FakeWorld({ nodes: 3, copies: 2 });
  for (let i = 0; i < 6; i++) world.put(dataOid(7, i));
  const rotten = dataOid(7, 4);
  world.rot(world.targets(rotten)[0]!.id, rotten);
  const fake = new FakeScrubCluster(world);
  const scrubAdmin = new AdminService(new ObjectClient(fake.transport(world.nodes[0]!.id)));
  const node = world.nodes[0]!;
  const info: ClusterInfo = {
    status: "running",
    ctimeMs: Date.now(),
    copies: 2,
    blockSizeShift: 22,
    strict: false,
    epoch: 1,
    zones: 1,
    redundancyReduced: false,
    master: null,
    nodes: [node.id],
    epochs: [],
  };
  // The rest of the page from canned answers; the scrub from the fake cluster's handlers.
  const admin = {
    clusterInfo: () => Promise.resolve(info),
    nodes: () => Promise.resolve([{ ...node, usedBytes: 1, freeBytes: 9, totalBytes: 10 }]),
    vdis: () => Promise.resolve([]),
    recovery: () => Promise.resolve([]),
    scrubStatus: () => scrubAdmin.scrubStatus(),
  } as unknown as AdminService;
  const app = createAdminApp({ admin, mutable: true });
  const server = createAdaptorServer({ fetch: app.fetch, overrideGlobalObjects: false }) as Server;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const userDataDir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    await page.goto(url);
    const panel = page.locator("#scrub");
    await page.locator("#scrub .sub").waitFor({ timeout: 10_000 });
    assert.match(await panel.innerText(), /Never run/);

    // A pass held mid-way: the panel shows it running, with progress.
    let open!: () => void;
    world.verifyGate = new Promise((resolve) => (open = resolve));
    await scrubAdmin.startScrub();
    await page.locator("#scrub-progress").waitFor({ timeout: 5_000 });
    assert.equal(await page.locator("#scrub-state").innerText(), "running");
    assert.match(await page.locator("#scrub-progress").innerText(), /^0 \/ \d+ objects · 0/);

    open();
    await fake.settled();
    await page.locator("#scrub-progress").waitFor({ state: "detached", timeout: 5_000 });
    const text = await panel.innerText();
    assert.equal(await page.locator("#scrub-state").innerText(), "idle");
    assert.match(await page.locator("#scrub-findings").innerText(), /^1 finding$/);
    assert.match(text, /1 bad block/);
    assert.match(text, /1 repaired/);
    assert.match(text, /0 not repaired/);
    assert.ok(text.includes(oidToHex(rotten)), text);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    await fake.stop();
    await fsp.rm(userDataDir, { recursive: true, force: true });
  }
});
