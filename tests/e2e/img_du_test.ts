// Goal: `img du` shows provisioned, used and shared space per VDI and snapshot as `rbd du`
// does (each VDI's snapshots oldest first, then the VDI, `<TOTAL>` last), with the same counts
// `info -t vdi` prints; `--json` is the API's object; an unknown VDI or snapshot is one line and
// exit 1. `vdi lock break` of a VDI nobody has attached is refused the same way.
// Method: one daemonised sheep on a loopback port; every command runs the built ./sheepdog.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { randomBytes, tempDir } from "../harness.ts";
import { freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";

const MiB = 2 ** 20;

Deno.test("e2e: img du per VDI and snapshot, totals last; bad names are one line", async () => {
  requireExecutable();
  const dir = await tempDir("sd-e2e-du-");
  const port = await freePort();
  const env = { SHEEPDOG_CLUSTER: `127.0.0.1:${port}` };
  const ok = async (...args: string[]) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  const fails = async (args: string[], pattern: RegExp) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, 1, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
    assert.match(result.stderr, pattern);
    assert.equal(result.stdout, "");
  };
  await ok(
    ...["sheep", path.join(dir, "sd"), "--host", "127.0.0.1", "--port", String(port)],
    ...["--multicast", "off", "--no-http", "--no-nbd"],
  );
  try {
    await ok("shepherd", "mkfs", "--copies=1");
    assert.equal((await ok("img", "du")).trim(), "No VDIs");
    await ok("img", "create", "Alice's Disk", "1G");
    const raw = path.join(dir, "a.raw");
    await fsp.writeFile(raw, randomBytes(10 * MiB));
    await ok("img", "convert", "-n", raw, "Alice's Disk");
    await ok("img", "snapshot", "-c", "base", "Alice's Disk");
    await fsp.writeFile(raw, randomBytes(5 * MiB));
    await ok("img", "convert", "-n", raw, "Alice's Disk");
    await ok("img", "create", "-b", "Alice's Disk:base", "Bob");
    await ok("img", "create", "scratch", "2G");

    const table = (await ok("img", "du")).trimEnd().split("\n");
    assert.deepEqual(table.map((line) => line.split(/\s{2,}/)), [
      ["NAME", "PROVISIONED", "USED", "SHARED"],
      ["Alice's Disk:base", "1 GB", "12 MB", "0 B"],
      ["Alice's Disk", "1 GB", "8 MB", "4 MB"],
      ["Bob", "1 GB", "0 B", "12 MB"],
      ["scratch", "2 GB", "0 B", "0 B"],
      ["<TOTAL>", "4 GB", "20 MB", "16 MB"],
    ]);
    // The same used and shared as info -t vdi: one definition.
    const listed = JSON.parse(await ok("shepherd", "info", "-t", "vdi", "--json")) as {
      ref: string;
      allocatedBytes: number;
      sharedBytes: number;
    }[];
    const report = JSON.parse(await ok("img", "du", "--json")) as {
      vdis: { ref: string; allocatedBytes: number; sharedBytes: number }[];
      total: { sizeBytes: number; allocatedBytes: number; sharedBytes: number };
    };
    assert.equal(report.vdis.length, listed.length);
    for (const row of report.vdis) {
      const same = listed.find((l) => l.ref === row.ref)!;
      assert.deepEqual([row.allocatedBytes, row.sharedBytes], [
        same.allocatedBytes,
        same.sharedBytes,
      ]);
    }
    assert.deepEqual(report.total, {
      sizeBytes: 4 * 1024 * MiB,
      allocatedBytes: 20 * MiB,
      sharedBytes: 16 * MiB,
    });

    // One VDI: its snapshots and itself, totals last; one snapshot: that row alone.
    assert.deepEqual(
      (await ok("img", "du", "Alice's Disk")).trimEnd().split("\n").map((l) =>
        l.split(/\s{2,}/)[0]
      ),
      ["NAME", "Alice's Disk:base", "Alice's Disk", "<TOTAL>"],
    );
    assert.deepEqual(
      (await ok("img", "du", "sheepdog:Alice's Disk:1")).trimEnd().split("\n").length,
      2,
    );

    const before = await ok("img", "du");
    await fails(["img", "du", "nosuch"], /^img: Cannot find VDI 'nosuch': no such VDI$/m);
    await fails(
      ["img", "du", "Alice's Disk:nosuch"],
      /^img: Cannot find snapshot tag 'nosuch' of VDI 'Alice's Disk'$/m,
    );
    await fails(
      ["shepherd", "vdi", "lock", "break", "scratch"],
      /^shepherd: Cannot break the lock of 'scratch': it is not attached$/m,
    );
    assert.equal(await ok("img", "du"), before, "a refused command changed something");
    const usage = await sheepdog(["img", "du", "a", "b"], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /du takes at most one VDI name/);
    assert.match(await ok("img", "--help"), /du \[--json\] \[NAME\[:SNAP\]\]/);
  } finally {
    await stopDaemon(path.join(dir, "sd"));
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
