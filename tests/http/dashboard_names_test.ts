/**
 * Goal: VDI names and snapshot tags are rendered as text on the dashboard, never as markup: a
 * name that is an HTML injection shows as the literal characters, creates no element and runs
 * no script. Method: one in-process sheep, VDIs and a tag made of markup, the dashboard in
 * headless Chromium (CI installs it), then the page's DOM and a flag the payload would set.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { chromium } from "playwright-core";
import { AdminService } from "../../net/admin/admin_service.ts";
import { startHttpService } from "../../net/http/node_server.ts";
import { TestCluster } from "../cluster_harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const NAME = `<img src=x onerror="window.__pwned=1">`;
const TAG = `</td><script>window.__pwned=2</script>`;

Deno.test("dashboard renders hostile VDI names and tags as text", async () => {
  assert.ok(
    fs.existsSync(CHROMIUM),
    `${CHROMIUM} is missing: install it (apt-get install -y chromium)`,
  );
  const cluster = await TestCluster.start({ nodes: 1, copies: 1 });
  const sheep = cluster.node(0);
  const admin = new AdminService(sheep.localClient());
  await admin.createVdi({ name: NAME, sizeBytes: 2 ** 30 });
  await admin.snapshot(NAME, TAG);
  const service = await startHttpService(sheep, { port: 0 });
  const userDataDir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
    ],
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    await page.goto(service.url + "/");
    const family = page.locator(".family").first();
    await family.waitFor({ timeout: 10_000 });
    const text = await page.locator("body").innerText();
    assert.ok(text.includes(NAME), "the name shows as its literal characters");
    assert.ok(text.includes(TAG), "the tag shows as its literal characters");
    assert.equal(await page.locator("img").count(), 0, "no element was made from a name");
    assert.equal(
      await page.evaluate(() => (globalThis as { __pwned?: number }).__pwned),
      undefined,
    );
  } finally {
    await context.close();
    await fsp.rm(userDataDir, { recursive: true, force: true });
    await service.close();
    await cluster.stop();
  }
});
