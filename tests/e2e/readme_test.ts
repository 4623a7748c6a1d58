// Goal: the README's tour works with the built executable, as separate processes, and bad
// input gets one clear line and the right exit status. Method: a daemonised sheep on a temp
// dir and a free loopback port; every command runs ./sheepdog with a clean environment.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { randomBytes, tempDir } from "../harness.ts";
import { freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";

Deno.test("e2e: the README tour with ./sheepdog", async (t) => {
  requireExecutable();
  const dir = await tempDir("sd-e2e-");
  const sheepDir = path.join(dir, "sd0");
  const port = await freePort();
  const env = { SHEEPDOG_CLUSTER: `127.0.0.1:${port}` };
  const ok = async (args: string[]) => {
    const result = await sheepdog(args, env);
    if (result.code !== 0) {
      // The sheep's own account of what happened, before its directory goes.
      const log = await fsp.readFile(path.join(sheepDir, "sheep.log"), "utf8").catch(() => "");
      console.error(`--- sheep.log, last 30 lines:\n${log.split("\n").slice(-30).join("\n")}`);
    }
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")} failed: ${result.stderr}`);
    return result.stdout;
  };
  const fails = async (args: string[], code: number, pattern: RegExp) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, code, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, pattern);
    assert.ok(!/\n\s+at /.test(result.stderr), "no stack trace");
  };
  const raw = path.join(dir, "raw.img");
  const image = new Uint8Array(12 << 20);
  image.set(randomBytes(3 << 20), 1 << 20);
  image.set(randomBytes(4096), 10 << 20);
  await fsp.writeFile(raw, image);
  try {
    await t.step("the sheep daemonises and answers", async () => {
      // Three distinct ports: freePort() may hand out one that is free only until the sheep binds
      // the first (a sheep given the same port twice cannot start).
      let http = String(await freePort());
      while (http === String(port)) http = String(await freePort());
      let nbd = String(await freePort());
      while (nbd === http || nbd === String(port)) nbd = String(await freePort());
      const out = await ok([
        ...["sheep", sheepDir, "--port", String(port), "--multicast", "off", "--host", "127.0.0.1"],
        ...["--http-port", http, "--nbd-port", nbd],
      ]);
      assert.match(out, /sheep serving/);
      await fsp.access(path.join(sheepDir, "sheep.pid"));
      await fails(["img", "create", "early", "1G"], 1, /Waiting for cluster to be formatted/);
      await fails(
        [
          "sheep",
          sheepDir,
          "--port",
          String(await freePort()),
          "--no-http",
          "--no-nbd",
          "--host",
          "127.0.0.1",
        ],
        1,
        /locked by another sheep/,
      );
      const api = await fetch(`http://127.0.0.1:${http}/api/v1/cluster`);
      assert.equal((await api.json()).status, "waiting-for-format");
      await fails(
        [
          ...["sheep", path.join(dir, "other"), "--port", String(await freePort())],
          ...["--nbd-port", nbd, "--host", "127.0.0.1"],
        ],
        1,
        /NBD|EADDRINUSE|in use/,
      );
    });
    await t.step("mkfs, create, import, export", async () => {
      assert.match(await ok(["shepherd", "mkfs", "--copies=1"]), /formatted with 1 copy/);
      await ok(["img", "create", "Alice's Disk", "256G"]);
      await ok(["img", "convert", raw, "Bob's Disk"]);
      const out = path.join(dir, "out.raw");
      await ok(["img", "convert", "-O", "raw", "Bob's Disk", out]);
      assert.deepEqual(new Uint8Array(await fsp.readFile(out)), image);
    });
    await t.step("snapshot, clone, write into the clone", async () => {
      await ok(["img", "snapshot", "-c", "before-upgrade", "Alice's Disk"]);
      assert.match(await ok(["img", "snapshot", "-l", "Alice's Disk"]), /1\s+before-upgrade/);
      await ok(["img", "create", "-b", "Alice's Disk:1", "Charlie's Disk"]);
      await ok(["img", "convert", "-n", raw, "sheepdog:Charlie's Disk"]);
      const out = path.join(dir, "charlie.raw");
      await ok(["img", "convert", "-O", "raw", `sheepdog://127.0.0.1:${port}/Charlie's Disk`, out]);
      assert.equal((await fsp.stat(out)).size, 256 * 2 ** 30, "a sparse 256 GB export");
      const file = await fsp.open(out);
      const head = new Uint8Array(image.length + 4096);
      await file.read(head, 0, head.length, 0);
      await file.close();
      assert.deepEqual(head.subarray(0, image.length), image);
      assert.deepEqual(head.subarray(image.length), new Uint8Array(4096));
      assert.match(await ok(["img", "info", "Alice's Disk"]), /virtual size: 256 GB/);
    });
    await t.step("info in the seed's formats and as JSON", async () => {
      const list = await ok(["shepherd", "info", "-t", "vdi"]);
      assert.match(
        list,
        /^\s*[0-9a-f]+ : Alice's Disk {2}256 GB \(allocated: 0 MB, shared: 0 MB\), \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, tag: +0, current$/m,
      );
      assert.match(list, /Bob's Disk {2}12 MB \(allocated: 8 MB, shared: 0 MB\)/);
      assert.match(list, /Alice's Disk .* tag: before-upgrade, not current/);
      const tree = await ok(["shepherd", "info", "-t", "vdi", "-f", "tree"]);
      assert.match(tree, /^Alice's Disk---\[\d\d-\d\d-\d\d \d\d:\d\d:\d\d\]-\+-\(You Are Here\)$/m);
      assert.match(tree, /`-Charlie's Disk---\(You Are Here\)/);
      const vm = await ok(["shepherd", "info", "-t", "vm"]);
      assert.match(vm, /^Name\s+\| Vdi size \| Allocated \| Shared \| Status$/m);
      assert.match(vm, /Charlie's Disk \| 256 GB\s+\| 8 MB\s+\| 0 MB\s+\| not running/);
      const json = JSON.parse(await ok(["shepherd", "info", "-t", "vdi", "--json"]));
      assert.equal(json.length, 4);
    });
    await t.step("bad input: one line, right status, nothing lost", async () => {
      await fails(["frobnicate"], 2, /unknown command 'frobnicate'/);
      await fails(
        ["sheep", path.join(dir, "x"), "--port", "seventy"],
        2,
        /Invalid --port 'seventy'/,
      );
      await fails(["sheep", path.join(dir, "x"), "--log-level", "loud"], 2, /log level|loud/i);
      await fails(["sheep"], 2, /sheep takes one directory/);
      await fails(["shepherd", "info", "-t", "weather"], 2, /Unknown info type 'weather'/);
      await fails(["shepherd", "mkfs", "--copies=lots"], 2, /Invalid --copies/);
      await fails(["shepherd", "mkfs", "--copies=40", "--force"], 1, /Invalid copies 40/);
      await fails(["img", "create", "--bogus", "x", "1G"], 2, /Unknown option --bogus/);
      await fails(["img", "create", "n".repeat(256), "1G"], 1, /at most 255/);
      await fails(["img", "create", "big", "5T"], 1, /Invalid VDI size/);
      await fails(["img", "create", "huh", "lots"], 1, /Invalid size 'lots'/);
      await fails(["img", "create", "Alice's Disk", "1G"], 1, /exists already/);
      await fails(["img", "create", "-b", "Bob's Disk", "Eve"], 1, /only a snapshot can be cloned/);
      await fails(["img", "convert", "-n", raw, "Alice's Disk:1"], 1, /snapshot/);
      await fails(["img", "convert", path.join(dir, "missing.raw"), "X"], 1, /no such file/);
      await fails(["img", "info", "Nobody"], 1, /Cannot find VDI 'Nobody'/);
      await fails(["img", "info", "Alice's Disk:7"], 1, /Cannot find snapshot 7/);
      await fails(
        ["shepherd", "info", "--cluster", "127.0.0.1:1"],
        1,
        /Cannot reach the cluster at 127\.0\.0\.1:1/,
      );
      await fails(["shepherd", "mkfs", "--copies=1"], 1, /formatted already/);
      // Nothing above changed the data.
      const out = path.join(dir, "again.raw");
      await ok(["img", "convert", "-O", "raw", "Bob's Disk", out]);
      assert.deepEqual(new Uint8Array(await fsp.readFile(out)), image);
    });
    await t.step("delete reclaims space", async () => {
      const bob = JSON.parse(await ok(["img", "info", "--json", "Bob's Disk"]));
      const prefix = "00" + bob.vid.toString(16).padStart(6, "0");
      // Data files are named by 16 hex digits (their checksums sit beside them in *.meta).
      const owned = (names: string[]) =>
        names.filter((name) => name.length === 16 && name.startsWith(prefix));
      const before = await fsp.readdir(path.join(sheepDir, "obj"));
      assert.equal(
        owned(before).length,
        2,
        "Bob owns 2 data objects",
      );
      await ok(["shepherd", "vdi", "delete", "Bob's Disk"]);
      const after = await fsp.readdir(path.join(sheepDir, "obj"));
      assert.deepEqual(
        after.filter((name) => name.startsWith(prefix)),
        [],
        "data and checksums go",
      );
      assert.doesNotMatch(await ok(["shepherd", "info", "-t", "vdi"]), /Bob's Disk/);
    });
  } catch (error) {
    // The sheep's own account of what happened, before its directory goes.
    const log = await fsp.readFile(path.join(sheepDir, "sheep.log"), "utf8").catch(() => "");
    console.error(
      `--- ${sheepDir}/sheep.log (last 30 lines):\n` + log.split("\n").slice(-30).join("\n"),
    );
    throw error;
  } finally {
    await stopDaemon(sheepDir).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
