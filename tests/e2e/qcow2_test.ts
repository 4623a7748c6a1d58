// Goal: `img convert` with qcow2 as a user meets it, with the built ./sheepdog: a qcow2 made by
// qemu-img is recognised and imported (thin), exports to raw byte-identical to qemu-img's own
// conversion, exports to a qcow2 that `qemu-img check` and `qemu-img compare` accept; a VMDK
// and a VirtualBox VDI are refused by name in one line, creating nothing; an image found damaged
// halfway through leaves no half-imported VDI.
// Method: a daemonised sheep on a temp dir and a free loopback port; the real qemu-img/qemu-io.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { tempDir } from "../harness.ts";
import { ok as tool, requireTools } from "../nbd/tools.ts";
import { freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";

Deno.test("e2e: qcow2 in and out with ./sheepdog; other formats refused by name", async (t) => {
  requireExecutable();
  await requireTools();
  const dir = await tempDir("sd-e2e-qcow2-");
  const sheepDir = path.join(dir, "sd0");
  const port = await freePort();
  const env = { SHEEPDOG_CLUSTER: `127.0.0.1:${port}` };
  const ok = async (args: string[]) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")} failed: ${result.stderr}`);
    return result.stdout;
  };
  const file = (name: string) => path.join(dir, name);
  const sameFile = async (a: string, b: string) => {
    const [x, y] = [await fsp.readFile(a), await fsp.readFile(b)];
    assert.equal(x.length, y.length, `${a} and ${b}: lengths`);
    assert.ok(x.equals(y), `${a} and ${b} differ`);
  };
  try {
    await ok([
      ...["sheep", sheepDir, "--host", "127.0.0.1", "--port", String(port)],
      ...["--multicast", "off", "--no-http", "--no-nbd"],
    ]);
    await ok(["shepherd", "mkfs", "--copies=1"]);

    await t.step("a qcow2 made by qemu-img imports and exports byte-identical", async () => {
      const disk = file("disk.qcow2");
      await tool("qemu-img", ["create", "-q", "-f", "qcow2", disk, "48M"]);
      await tool("qemu-io", [
        ...["-c", "write -P 0xab 0 3M", "-c", "write -z 1M 64k", "-c", "write -P 0x5c 20M 100k"],
        ...["-c", "write -P 0x11 47M 1M", disk],
      ]);
      await tool("qemu-img", ["convert", "-O", "raw", disk, file("reference.raw")]);
      const summary = await ok(["img", "convert", "-p", disk, "Imported"]);
      assert.match(summary, /48 MB in [\d.]+ s, 4\.[01] MB written \(zero runs skipped\)/);
      const info = JSON.parse(await ok(["img", "info", "--json", "Imported"]));
      assert.equal(info.sizeBytes, 48 * 2 ** 20);
      // Objects 0 (data, and a zero cluster not stored), 5 (20 MiB) and 11 (47 MiB): thin.
      assert.equal(info.allocatedBytes, 12 * 2 ** 20);
      await ok(["img", "convert", "-O", "raw", "Imported", file("out.raw")]);
      await sameFile(file("out.raw"), file("reference.raw"));
    });

    await t.step(
      "a qcow2 found truncated halfway is refused and leaves no VDI behind",
      async () => {
        const cut = file("cut.qcow2");
        await fsp.copyFile(file("disk.qcow2"), cut);
        // The data written last (at 47 MiB) sits at the end of the file: cut half of it off.
        await fsp.truncate(cut, (await fsp.stat(cut)).size - 512 * 1024);
        const result = await sheepdog(["img", "convert", cut, "Truncated"], env);
        assert.equal(result.code, 1, result.stderr);
        assert.match(
          result.stderr,
          /Cannot read '.*cut\.qcow2': the data of virtual offset 0x2f[0-9a-f]{5} is at 0x[0-9a-f]+, past the end of the file \(\d+ bytes\): the qcow2 image is truncated or damaged/,
        );
        assert.equal(result.stderr.trim().split("\n").length, 1, `one line: ${result.stderr}`);
        const vdis = JSON.parse(await ok(["shepherd", "info", "-t", "vdi", "--json"]));
        assert.ok(!vdis.some((row: { name: string }) => row.name === "Truncated"), "deleted again");
      },
    );

    await t.step("a compressed v2 qcow2 imports too", async () => {
      const compressed = file("compressed.qcow2");
      await tool("qemu-img", [
        ...["convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10"],
        ...[file("reference.raw"), compressed],
      ]);
      await ok(["img", "convert", compressed, "sheepdog:Compressed"]);
      await ok(["img", "convert", "-O", "raw", "Compressed", file("compressed.raw")]);
      await sameFile(file("compressed.raw"), file("reference.raw"));
    });

    await t.step("export to qcow2: qemu-img checks it and finds it identical", async () => {
      const out = file("export.qcow2");
      await ok(["img", "convert", "-O", "qcow2", "Imported", out]);
      assert.match(await tool("qemu-img", ["check", out]), /No errors were found on the image/);
      assert.match(
        await tool("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", out, file("reference.raw")]),
        /Images are identical/,
      );
      const size = (await fsp.stat(out)).size;
      assert.ok(size < 5 * 2 ** 20, `only the data is stored (${size} bytes)`);
      const v2 = file("export-v2.qcow2");
      await ok(["img", "convert", "-O", "qcow2", "-o", "compat=0.10", "Imported", v2]);
      assert.match(await tool("qemu-img", ["info", v2]), /compat: 0\.10/);
      assert.match(await tool("qemu-img", ["check", v2]), /No errors were found on the image/);
    });

    await t.step("VMDK and VirtualBox VDI images are refused by name", async () => {
      for (
        const [format, name, pattern] of [
          ["vmdk", "disk.vmdk", /it is a VMDK image; convert it to raw or qcow2 first/],
          ["vdi", "disk.vdi", /it is a VirtualBox VDI image; convert it to raw or qcow2 first/],
        ] as const
      ) {
        await tool("qemu-img", ["create", "-q", "-f", format, file(name), "16M"]);
        const result = await sheepdog(["img", "convert", file(name), "Refused"], env);
        assert.equal(result.code, 1, result.stderr);
        assert.match(result.stderr, pattern);
        assert.match(result.stderr, /e\.g\. qemu-img convert -O raw /);
        assert.equal(result.stderr.trim().split("\n").length, 1, `one line: ${result.stderr}`);
      }
      const vdis = JSON.parse(await ok(["shepherd", "info", "-t", "vdi", "--json"]));
      assert.ok(!vdis.some((row: { name: string }) => row.name === "Refused"), "nothing created");
    });

    await t.step(
      "a qcow2 with a backing file is refused; -f raw imports the container as it is",
      async () => {
        const over = file("over.qcow2");
        await tool("qemu-img", [
          "create",
          "-q",
          "-f",
          "qcow2",
          "-b",
          file("disk.qcow2"),
          "-F",
          "qcow2",
          over,
        ]);
        const result = await sheepdog(["img", "convert", over, "Overlay"], env);
        assert.equal(result.code, 1);
        assert.match(result.stderr, /has a backing file '.*disk\.qcow2': flatten it first/);
        await ok(["img", "convert", "-f", "raw", over, "Container"]);
        await ok(["img", "convert", "-O", "raw", "Container", file("container.raw")]);
        await sameFile(file("container.raw"), over);
      },
    );
    await t.step("usage errors of the qcow2 options", async () => {
      for (
        const [args, pattern] of [
          [["-o", "compat=0.10", "Imported", file("x.raw")], /-o takes effect only with -O qcow2/],
          [
            ["-O", "qcow2", "-o", "cluster_size=4k", "Imported", file("x.qcow2")],
            /Unknown -o option/,
          ],
          [["-n", "-O", "qcow2", "Imported", file("x.qcow2")], /a qcow2 target is always created/],
          [["-O", "vmdk", "Imported", file("x.vmdk")], /Unknown format 'vmdk' for -O/],
        ] as const
      ) {
        const result = await sheepdog(["img", "convert", ...args], env);
        assert.equal(result.code, 2, result.stderr);
        assert.match(result.stderr, pattern);
      }
    });
  } finally {
    await stopDaemon(sheepDir).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
