// Goal: issue 12's copies and moves and qemu-img's verbs, as a user runs them: img rename, cp
// (--deep), flatten, children, map, compare, check, bench and resize --shrink, with their bad
// input (one line, non-zero, nothing changed).
// Method: one daemonised sheep (1 copy) for the verbs, checked against the real qemu-img (map
// of the NBD export, compare of raw exports); a herd of two sheep (2 copies) for check's repair.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { tempDir } from "../harness.ts";
import { RawClient } from "../nbd/raw_client.ts";
import { freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";
import { eventually, Herd } from "./herd.ts";

const MiB = 1 << 20;

function tool(command: string, args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { maxBuffer: 1 << 26 }, (error, stdout) => {
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout });
    });
  });
}

/** A raw file: 0x11 over [0, 4M), random bytes over [8M, 12M), the rest a hole. */
function sampleRaw(file: string, size: number): Buffer {
  const bytes = Buffer.alloc(size);
  bytes.fill(0x11, 0, 4 * MiB);
  for (let i = 8 * MiB; i < 12 * MiB; i++) bytes[i] = (i * 2654435761) >>> 24;
  fs.writeFileSync(file, bytes);
  return bytes;
}

/** The object files of `vid` in a sheep's store, by data index. */
function dataIndexes(dir: string, vid: number): number[] {
  const prefix = vid.toString(16).padStart(8, "0");
  return fs.readdirSync(path.join(dir, "obj"))
    .filter((name) => /^[0-9a-f]{16}$/.test(name) && name.startsWith(prefix))
    .map((name) => parseInt(name.slice(8), 16)).sort((a, b) => a - b);
}

Deno.test("e2e: img rename, cp, flatten, children, map, compare, bench, resize --shrink", async (t) => {
  requireExecutable();
  const dir = await tempDir("sd-e2e-verbs-");
  const port = await freePort();
  const nbdPort = await freePort();
  const env = { SHEEPDOG_CLUSTER: `127.0.0.1:${port}` };
  const nbd = (name: string) => `nbd://127.0.0.1:${nbdPort}/${encodeURIComponent(name)}`;
  const ok = async (args: string[]) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  /** Bad input: exit `code`, one line on stderr matching `pattern` (a usage error: then usage). */
  const fails = async (args: string[], pattern: RegExp, code = 1) => {
    const result = await sheepdog(args, env);
    assert.equal(result.code, code, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    const lines = result.stderr.trimEnd().split("\n");
    if (!/^Usage:/m.test(result.stderr)) assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0]!, pattern);
    return result;
  };
  const qemuIo = async (command: string, name: string) => {
    const result = await tool("qemu-io", ["-f", "raw", "-c", command, nbd(name)]);
    assert.equal(result.code, 0, `qemu-io ${command}`);
  };
  const exported = async (name: string) => {
    const file = path.join(dir, `${name.replace(/\W/g, "_")}.raw`);
    await ok(["img", "convert", "-O", "raw", name, file]);
    return file;
  };
  const same = async (a: string, b: string) => {
    const result = await sheepdog(["img", "compare", a, b], env);
    assert.equal(result.code, 0, `${a} and ${b} differ: ${result.stdout}${result.stderr}`);
  };
  const info = async (name: string) =>
    JSON.parse(await ok(["img", "info", "--json", name])) as {
      vid: number;
      sizeBytes: number;
      parentVid: number;
      snapshots: { tag: string; snapId: number }[];
    };
  await ok([
    ...["sheep", path.join(dir, "sd"), "--host", "127.0.0.1", "--port", String(port)],
    ...["--multicast", "off", "--no-http", "--nbd-port", String(nbdPort)],
  ]);
  try {
    await ok(["shepherd", "mkfs", "--copies=1"]);
    const raw = path.join(dir, "a.raw");
    sampleRaw(raw, 16 * MiB);
    await ok(["img", "create", "src", "16M"]);
    await ok(["img", "convert", "-n", raw, "src"]);
    await ok(["img", "snapshot", "-c", "s1", "src"]);
    await qemuIo("write -P 0x22 4M 64k", "src");
    await qemuIo("write -P 0 12M 4M", "src"); // an allocated object of zeros
    await ok(["img", "snapshot", "-c", "s2", "src"]);
    await qemuIo("write -P 0x23 5M 4k", "src");

    await t.step(
      "cp: an independent copy of the data only; --deep keeps the snapshots",
      async () => {
        const out = await ok(["img", "cp", "-p", "src", "copy"]);
        assert.match(out, /Copied 'src' to 'copy': 16 MB, /);
        await same("src", "copy");
        const copy = await info("copy");
        assert.equal(copy.parentVid, 0);
        assert.deepEqual(copy.snapshots, []);
        // Objects 0-2 hold data; the zero object 3 is not stored.
        assert.deepEqual(dataIndexes(path.join(dir, "sd"), copy.vid), [0, 1, 2]);
        await ok(["img", "cp", "--deep", "src", "deep"]);
        assert.deepEqual((await info("deep")).snapshots.map((s) => s.tag), ["s1", "s2"]);
        for (const snap of ["s1", "s2"]) await same(`deep:${snap}`, `src:${snap}`);
        await same("deep", "src");
        await ok(["img", "cp", "src:s1", "first"]);
        await same("first", "src:s1");
        // Independent: writing the copy changes nothing in the source.
        await qemuIo("write -P 0x77 0 4k", "first");
        await same("src:s1", raw);
      },
    );

    await t.step("cp onto an existing name is refused, nothing changed", async () => {
      const before = fs.readFileSync(await exported("copy"));
      await fails(
        ["img", "cp", "src:s1", "copy"],
        /^img: Cannot copy to 'copy': .* exists already$/m,
      );
      await fails(["img", "cp", "nope", "x"], /^img: Cannot find VDI 'nope': no such VDI$/m);
      assert.ok(before.equals(fs.readFileSync(await exported("copy"))));
      await fails(["img", "info", "x"], /no such VDI/);
    });

    await t.step(
      "map: the JSON qemu-img map gives of the NBD export, depth for shared data",
      async () => {
        const ours = await ok(["img", "map", "--output=json", "copy"]);
        const theirs = await tool("qemu-img", ["map", "--output=json", "-f", "raw", nbd("copy")]);
        assert.equal(theirs.code, 0);
        assert.equal(ours.trim(), theirs.stdout.trim());
        const extents = JSON.parse(await ok(["img", "map", "--output=json", "src"])) as {
          start: number;
          depth: number;
          data: boolean;
        }[];
        // Object 0 is s1's (two parent links up), object 1 the working VDI's own.
        assert.deepEqual(extents.map((e) => [e.start / MiB, e.depth, e.data]), [
          [0, 2, true],
          [4, 0, true],
          [8, 2, true],
          [12, 1, true],
        ]);
        assert.match(await ok(["img", "map", "src"]), /^0x400000 +0x400000 +0x400000 +src$/m);
      },
    );

    await t.step("compare: exit 0/1 and the offset qemu-img compare prints", async () => {
      await ok(["img", "cp", "src", "other"]);
      await qemuIo("write -P 0x33 3145828 1", "other"); // 1 byte at 3M + 100
      const ours = await sheepdog(["img", "compare", "src", "other"], env);
      const theirs = await tool("qemu-img", [
        ...["compare", "-f", "raw", "-F", "raw"],
        ...[await exported("src"), await exported("other")],
      ]);
      assert.deepEqual([ours.code, ours.stdout], [1, "Content mismatch at offset 3145728!\n"]);
      assert.deepEqual([theirs.code, theirs.stdout], [ours.code, ours.stdout]);
      // Sizes differ: the extra part must be zeros, unless -s.
      await ok(["img", "cp", "src", "bigger"]);
      await ok(["img", "resize", "bigger", "20M"]);
      const grown = await sheepdog(["img", "compare", "src", "bigger"], env);
      assert.deepEqual([grown.code, grown.stdout], [
        0,
        "Warning: Image size mismatch!\nImages are identical.\n",
      ]);
      const strict = await sheepdog(["img", "compare", "-s", "src", "bigger"], env);
      assert.deepEqual([strict.code, strict.stdout], [1, "Strict mode: Image size mismatch!\n"]);
      await qemuIo("write -P 1 18M 512", "bigger");
      const extra = await sheepdog(["img", "compare", "src", "bigger"], env);
      assert.deepEqual([extra.code, extra.stdout], [
        1,
        "Warning: Image size mismatch!\nContent mismatch at offset 18874368!\n",
      ]);
      // A file on one side works too; an unknown image is exit 2.
      await same("src:s1", raw);
      await fails(["img", "compare", "src", "nope"], /^img: Cannot find VDI 'nope'/, 2);
    });

    await t.step(
      "rename: snapshots follow; onto an existing name or while attached refused",
      async () => {
        await ok(["img", "rename", "src", "moved"]);
        assert.deepEqual((await info("moved")).snapshots.map((s) => s.tag), ["s1", "s2"]);
        await same("moved:s1", raw);
        await fails(["img", "info", "src"], /^img: Cannot find VDI 'src': no such VDI$/m);
        await fails(
          ["img", "rename", "moved", "copy"],
          /^img: Cannot rename 'moved' to 'copy': a VDI named 'copy' exists already$/m,
        );
        await fails(["img", "rename", "nope", "x"], /^img: Cannot find VDI 'nope': no such VDI$/m);
        await fails(["img", "rename", "moved", "a:b"], /^img: Invalid VDI name "a:b"/m);
        await same("moved", "copy");
        // The old name is free again.
        await ok(["img", "create", "src", "1M"]);
        await ok(["shepherd", "vdi", "delete", "src"]);
      },
    );

    await t.step(
      "children and flatten: the parent snapshot can go, the clone reads on",
      async () => {
        await ok(["img", "create", "-b", "moved:s1", "clone"]);
        await qemuIo("write -P 0x44 0 64k", "clone");
        assert.match(await ok(["img", "children", "moved:s1"]), /^clone /m);
        assert.equal(await ok(["img", "children", "moved:s2"]), "");
        await fails(["img", "children", "moved"], /name a snapshot/);
        const expected = fs.readFileSync(await exported("clone"));
        await fails(
          ["img", "flatten", "moved"],
          /^img: Cannot flatten 'moved': it is not a clone$/m,
        );
        await fails(["img", "flatten", "nope"], /no such VDI/);
        assert.match(await ok(["img", "flatten", "clone"]), /1 objects copied .* it stands alone/);
        assert.equal((await info("clone")).parentVid, 0);
        assert.equal(await ok(["img", "children", "moved:s1"]), "");
        const depths = JSON.parse(await ok(["img", "map", "--output=json", "clone"])) as {
          depth: number;
        }[];
        assert.ok(depths.every((e) => e.depth === 0));
        await fails(["img", "flatten", "clone"], /it is not a clone/);
        await ok(["img", "snapshot", "-d", "s1", "moved"]);
        assert.ok(expected.equals(fs.readFileSync(await exported("clone"))));
      },
    );

    await t.step("resize --shrink: objects past the end go, a grow reads zeros", async () => {
      await ok(["img", "create", "shrinkme", "16M"]);
      await ok(["img", "convert", "-n", raw, "shrinkme"]);
      await ok(["img", "snapshot", "-c", "keep", "shrinkme"]);
      await qemuIo("write -P 0x55 8M 4M", "shrinkme"); // object 2, the working VDI's own
      const vid = (await info("shrinkme")).vid;
      assert.deepEqual(dataIndexes(path.join(dir, "sd"), vid), [2]);
      await fails(["img", "resize", "shrinkme", "6M"], /use --shrink/);
      await fails(["img", "resize", "--shrink", "shrinkme", "0"], /Invalid VDI size/);
      await fails(["img", "resize", "--shrink", "shrinkme", "banana"], /banana/);
      await fails(["img", "resize", "--shrink", "nope", "1M"], /no such VDI/);
      assert.equal((await info("shrinkme")).sizeBytes, 16 * MiB);
      await ok(["img", "resize", "--shrink", "shrinkme", "6M"]);
      assert.equal((await info("shrinkme")).sizeBytes, 6 * MiB);
      assert.deepEqual(dataIndexes(path.join(dir, "sd"), vid), [], "object 2 is reclaimed");
      await ok(["img", "resize", "shrinkme", "16M"]);
      const grown = fs.readFileSync(await exported("shrinkme"));
      const original = fs.readFileSync(raw);
      assert.ok(grown.subarray(0, 6 * MiB).equals(original.subarray(0, 6 * MiB)));
      assert.ok(grown.subarray(6 * MiB).every((byte) => byte === 0), "past the old end: zeros");
      // The snapshot keeps its size and data: it does not constrain the shrink.
      await same("shrinkme:keep", raw);
    });

    await t.step("bench: writes and reads with a result line a script can parse", async () => {
      await ok(["img", "create", "bench", "64M"]);
      const line = /^ops=(\d+) ops\/s=[\d.]+ bytes\/s=\d+ elapsed=[\d.]+$/m;
      const write = await ok([
        ...["img", "bench", "-t", "write", "-s", "64K", "-q", "8", "-c", "64"],
        ...["--pattern", "seq", "bench"],
      ]);
      assert.equal(line.exec(write)?.[1], "64");
      // 64 writes of 64 KiB from offset 0: the first 4 MiB object holds 0xa5.
      const data = fs.readFileSync(await exported("bench"));
      assert.ok(data.subarray(0, 4 * MiB).every((byte) => byte === 0xa5));
      assert.ok(data.subarray(4 * MiB).every((byte) => byte === 0));
      const read = await ok(["img", "bench", "-c", "100", "--pattern", "rand", "bench"]);
      assert.equal(line.exec(read)?.[1], "100");
      await fails(["img", "bench", "-s", "0", "bench"], /Invalid -s/);
      await fails(["img", "bench", "-t", "trim", "bench"], /Unknown -t/, 2);
      await fails(["img", "bench", "-t", "write", "moved:s2"], /snapshot/);
    });

    await t.step("attached: rename, shrink, flatten and write bench are refused", async () => {
      await ok(["img", "create", "-b", "moved:s2", "vm"]);
      const holder = await RawClient.connect({ port: nbdPort });
      try {
        await holder.start();
        await holder.go("vm");
        const attached = /attached by 127\.0\.0\.1:\d+/;
        await fails(["img", "rename", "vm", "vm2"], attached);
        await fails(["img", "resize", "--shrink", "vm", "1M"], attached);
        await fails(["img", "flatten", "vm"], attached);
        await fails(["img", "bench", "-t", "write", "vm"], attached);
      } finally {
        holder.socket.destroy();
        await holder.closed;
      }
      const vm = await info("vm");
      assert.equal(vm.sizeBytes, 16 * MiB);
      assert.notEqual(vm.parentVid, 0, "vm is still a clone");
      await eventually("the rename once vm is detached", async () => {
        const result = await sheepdog(["img", "rename", "vm", "vm2"], env);
        return result.code === 0 ? true : undefined;
      }, 10_000);
      await same("vm2", "moved:s2");
    });

    await t.step("check: a bad copy with no good one left is reported, exit 2", async () => {
      assert.match(await ok(["img", "check", "copy"]), /No errors were found on the image\./);
      const vid = (await info("copy")).vid;
      const file = path.join(dir, "sd", "obj", `${vid.toString(16).padStart(8, "0")}00000002`);
      const fd = fs.openSync(file, "r+");
      fs.writeSync(fd, Buffer.from([0xee]), 0, 1, 100);
      fs.closeSync(fd);
      const result = await sheepdog(["img", "check", "copy"], env);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stdout, /1 could not be repaired/);
      assert.match(result.stderr, /^img: 1 bad copies could not be repaired$/m);
    });
  } finally {
    await stopDaemon(path.join(dir, "sd"));
  }
});

Deno.test("e2e: img check repairs a bad copy from the good one, as the scrub does", async () => {
  await Herd.with({ nodes: 2, copies: 2, prefix: "sd-e2e-check-" }, async (herd) => {
    await herd.img(["create", "disk", "8M"]);
    const raw = path.join(herd.root, "a.raw");
    sampleRaw(raw, 8 * MiB);
    await herd.img(["convert", "-n", raw, "disk"]);
    const { vid } = JSON.parse(await herd.img(["info", "--json", "disk"])) as { vid: number };
    const oid = `${vid.toString(16).padStart(8, "0")}00000000`;
    const file = herd.objectPath(1, oid);
    const fd = fs.openSync(file, "r+");
    fs.writeSync(fd, Buffer.from([0xee]), 0, 1, 4096 * 3 + 7);
    fs.closeSync(fd);
    const out = await herd.img(["check", "disk"]);
    assert.match(out, /1 copies repaired, 0 could not be repaired/);
    assert.match(
      out,
      new RegExp(`${oid} on ${herd.id(1).replace(/\./g, "\\.")}: .*\\(repaired\\)`),
    );
    assert.match(out, /No errors were found on the image\./);
    assert.deepEqual(herd.replicaProblems(), []);
    assert.match(await herd.img(["check", "disk"]), /0 copies repaired, 0 could not be repaired/);
  });
});
