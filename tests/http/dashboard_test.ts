/**
 * The dashboard in headless Chromium (Debian's `chromium` driven by playwright-core) against
 * the HTTP service of a running in-process cluster (three sheep, two copies) holding a few
 * VDIs, a snapshot chain, a clone and an attached client (whose lock it breaks). Saves screenshots to tests/http/__screenshots__/. Fails when chromium is
 * missing: CI installs it.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { chromium } from "playwright-core";
import { AdminService } from "../../net/admin/admin_service.ts";
import { VdiIo } from "../../core/vdi/io.ts";
import { startHttpService } from "../../net/http/node_server.ts";
import { randomBytes } from "../harness.ts";
import { TestCluster } from "../cluster_harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOTS = path.join(import.meta.dirname!, "__screenshots__");

Deno.test("dashboard shows the nodes, the ring and each VDI family as a tree", async () => {
  assert.ok(
    fs.existsSync(CHROMIUM),
    `${CHROMIUM} is missing: install it (apt-get install -y chromium) to run the browser test`,
  );
  const cluster = await TestCluster.start({ nodes: 3, copies: 2 });
  const sheep = cluster.node(0);
  const client = cluster.admin(0).client;
  try {
    const admin = new AdminService(sheep.localClient());
    await admin.createVdi({ name: "Alice's Disk", sizeBytes: 10 * 2 ** 30 });
    const alice = await VdiIo.open(sheep.localClient(), "Alice's Disk");
    await alice.write(0, randomBytes(6 * 2 ** 20));
    await admin.snapshot("Alice's Disk", "base-install");
    const aliceAgain = await VdiIo.open(sheep.localClient(), "Alice's Disk");
    await aliceAgain.write(8 * 2 ** 20, randomBytes(2 ** 20));
    await admin.snapshot("Alice's Disk", "pre-upgrade");
    await admin.clone("Alice's Disk:1", "Bob's Disk");
    await admin.createVdi({ name: "scratch", sizeBytes: 2 ** 30 });
    await client.lockVdi("Alice's Disk");

    const service = await startHttpService(sheep, { port: 0 });
    const userDataDir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-chromium-"));
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1440, height: 900 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      const page = context.pages()[0] ?? await context.newPage();
      const problems: string[] = [];
      page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(`console: ${m.text()}`);
      });
      await page.goto(service.url + "/");

      // The node table: every sheep of the cluster, each with a capacity bar.
      for (const node of cluster.live()) {
        const nodeRow = page.locator(`#nodes-body tr[data-node="${node.id}"]`);
        await nodeRow.waitFor({ timeout: 10_000 });
        assert.match(await nodeRow.innerText(), new RegExp(node.id.replace(/\./g, "\\.")));
        assert.equal(await nodeRow.locator(".bar").count(), 1);
      }
      assert.match(await page.locator("#status").innerText(), /Running/);

      // The ring: one SVG, every node in its legend with its share of the arcs.
      assert.equal(await page.locator("#ring svg").count(), 1);
      const legend = await page.locator("#ring .legend").innerText();
      for (const node of cluster.live()) {
        assert.match(legend, new RegExp(node.id.replace(/\./g, "\\.")));
      }

      // Alice's family: two snapshots in a chain, the working VDI ("you are here", attached),
      // and Bob's Disk cloned from snapshot 1.
      const family = page.locator(`.family[data-family="Alice's Disk"]`);
      await family.waitFor();
      const tree = await family.innerText();
      assert.match(tree, /base-install/);
      assert.match(tree, /pre-upgrade/);
      assert.match(tree, /you are here/i);
      assert.match(tree, /attached · 127\.0\.0\.1/);
      assert.match(tree, /clone of Alice's Disk:1/);
      assert.equal(await family.locator(`.branch [data-ref="Bob's Disk"]`).count(), 1);
      assert.equal(await page.locator(`.family[data-family="scratch"]`).count(), 1);
      assert.match(await page.locator("#attached").innerText(), /Alice's Disk/);
      assert.match(await page.locator("#recovery").innerText(), /Idle/);

      // It refreshes itself: a new VDI appears without a reload.
      await admin.createVdi({ name: "late arrival", sizeBytes: 2 ** 20 });
      await page.locator(`.family[data-family="late arrival"]`).waitFor({ timeout: 5_000 });
      await admin.deleteVdi("late arrival");
      await page.locator(`.family[data-family="late arrival"]`).waitFor({
        state: "detached",
        timeout: 5_000,
      });

      await fsp.mkdir(SCREENSHOTS, { recursive: true });
      await page.emulateMedia({ colorScheme: "light" });
      await page.screenshot({ path: path.join(SCREENSHOTS, "dashboard.png"), fullPage: true });
      await page.emulateMedia({ colorScheme: "dark" });
      await page.screenshot({ path: path.join(SCREENSHOTS, "dashboard-dark.png"), fullPage: true });

      // Space per VDI and snapshot, as img du: the same counts as the API's.
      const du = await admin.du();
      for (const row of du.vdis) {
        const cells = await page.locator(`#space tr[data-du="${row.ref}"] td`).allInnerTexts();
        assert.equal(cells.length, 4, row.ref);
      }
      assert.match(await page.locator("#space tr.total").innerText(), /Total/);

      // The lock list has a Break button (loopback: changes allowed); it asks, then releases.
      page.on("dialog", (dialog) => void dialog.accept());
      await page.locator(`#attached tr[data-lock="Alice's Disk"] button`).click();
      await page.locator(`#attached tr[data-lock="Alice's Disk"]`).waitFor({
        state: "detached",
        timeout: 5_000,
      });
      assert.deepEqual(await admin.locks(), []);

      // When the sheep's API goes away, the page says so instead of showing stale data silently.
      await service.close();
      await page.locator("#banner.show").waitFor({ timeout: 5_000 });
      assert.match(await page.locator("#banner").innerText(), /Cannot reach/);
      assert.deepEqual(problems.filter((p) => !/Failed to load resource|fetch/i.test(p)), []);
    } finally {
      await context.close();
      await service.close();
      await client.releaseVdi(await client.lookupVdi("Alice's Disk")).catch(() => undefined);
      await fsp.rm(userDataDir, { recursive: true, force: true });
    }
  } finally {
    await cluster.stop();
  }
});
