// Goal: the qcow2 reader reads every image QEMU makes exactly as `qemu-img convert -O raw` does
// (versions 2 and 3, clusters of 512 B to 2 MiB, compressed, zero and extended-L2 clusters,
// unaligned sizes), refuses hostile or unsupported files with one clear line and never a crash,
// and the writer's images pass `qemu-img check` and `qemu-img compare`.
// Method: images made by the real qemu-img and qemu-io (Debian's qemu-utils, required), read
// through the same convert path the CLI uses; damaged files are valid images patched by hand.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { convertImage, type ImageEnd } from "../cmd/img_convert.ts";
import { SheepdogError } from "../core/errors.ts";
import { decodeHeader } from "../core/format/qcow2.ts";
import { Qcow2Reader, type RandomAccessSource } from "../core/format/qcow2_reader.ts";
import { MemoryFile } from "../core/format/memory_file.ts";
import { randomBytes, tempDir, withSheep } from "./harness.ts";
import { ok, requireTools, run } from "./nbd/tools.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const NO_CLUSTER = { host: "127.0.0.1", port: 1 };

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  await requireTools();
  const dir = await tempDir("sd-qcow2-");
  try {
    await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Converts `source` (format told from its magic unless given) to a raw file. */
async function toRaw(
  source: string,
  target: string,
  format?: "raw" | "qcow2",
): Promise<{ bytes: number; writtenBytes: number }> {
  const from: ImageEnd = { kind: "file", path: source, format };
  return await convertImage({
    source: from,
    target: { kind: "file", path: target, format: "raw" },
    createTarget: true,
    cluster: NO_CLUSTER,
  });
}

/** Asserts two files hold the same bytes, naming the first difference. */
async function assertSameFile(actual: string, expected: string): Promise<void> {
  const [a, b] = [await fsp.readFile(actual), await fsp.readFile(expected)];
  assert.equal(a.length, b.length, `${actual}: length`);
  const differs = a.findIndex((byte, i) => byte !== b[i]);
  assert.equal(differs, -1, `${actual} differs from ${expected} at byte ${differs}`);
}

/** Reads a file as a RandomAccessSource (the reader's view of it). */
async function fileSource(file: string): Promise<RandomAccessSource & { close(): Promise<void> }> {
  const handle = await fsp.open(file, "r");
  return {
    size: (await handle.stat()).size,
    async readInto(target, position) {
      return (await handle.read(target, 0, target.length, position)).bytesRead;
    },
    close: () => handle.close(),
  };
}

/** An image exercising data, unaligned writes, zero clusters (with and without unmap), a tail. */
async function makeImage(file: string, options: string, size: number): Promise<void> {
  await ok("qemu-img", ["create", "-q", "-f", "qcow2", "-o", options, file, String(size)]);
  const writes = [
    "write -P 0xab 0 1M",
    "write -P 0x5a 3145984 70000", // 3 MiB + 256: not aligned to anything
    "write -z 3149824 8192", // zeros inside that data
    "write -z -u 0 65536", // zeros where data was
    "write -P 0x77 8M 512k",
    "write -z 8454144 131072", // 8 MiB + 64 KiB
    `write -P 0xee ${size - 1024} 1024`, // the last KiB
  ];
  await ok("qemu-io", ["-f", "qcow2", ...writes.flatMap((w) => ["-c", w]), file]);
}

/**
 * Raw data that compresses in parts: random (QEMU stores it uncompressed), half-random
 * nibbles in [512 KiB, 1.5 MiB) (about half size), a pattern, zeros, a random last 4 KiB.
 */
async function makeMixedRaw(file: string, size: number): Promise<void> {
  const image = new Uint8Array(size);
  image.set(randomBytes(512 * KiB), 0);
  image.set(randomBytes(MiB).map((byte) => byte & 0x0f), 512 * KiB);
  for (let i = 1536 * KiB; i < 2 * MiB; i++) image[i] = i % 251;
  image.set(randomBytes(4096), size - 4096);
  await fsp.writeFile(file, image);
}

const SIZE = 9 * MiB + 1536;
/** Compressed images are smaller: QEMU compresses 512-byte clusters slowly. */
const COMPRESSED_SIZE = 3 * MiB + 1536;

Deno.test("qcow2 reader: every layout QEMU writes reads as qemu-img convert -O raw does", async (t) => {
  await withDir(async (dir) => {
    const cases: { name: string; options: string }[] = [];
    for (const compat of ["0.10", "1.1"]) {
      for (const clusterSize of [512, 4096, 65536, 2 * MiB]) {
        cases.push({
          name: `compat=${compat} cluster_size=${clusterSize}`,
          options: `compat=${compat},cluster_size=${clusterSize}`,
        });
      }
    }
    cases.push({ name: "extended L2, 64 KiB", options: "extended_l2=on,cluster_size=65536" });
    cases.push({ name: "extended L2, 2 MiB", options: "extended_l2=on,cluster_size=2M" });
    cases.push({ name: "preallocated metadata", options: "preallocation=metadata" });
    for (const { name, options } of cases) {
      await t.step(name, async () => {
        const image = path.join(dir, "image.qcow2");
        await makeImage(image, options, SIZE);
        await ok("qemu-img", [
          "convert",
          "-f",
          "qcow2",
          "-O",
          "raw",
          image,
          path.join(dir, "ref.raw"),
        ]);
        const summary = await toRaw(image, path.join(dir, "ours.raw"));
        assert.equal(summary.bytes, SIZE);
        await assertSameFile(path.join(dir, "ours.raw"), path.join(dir, "ref.raw"));
      });
    }
    await t.step("compressed, every cluster size and both versions", async () => {
      const raw = path.join(dir, "mixed.raw");
      await makeMixedRaw(raw, COMPRESSED_SIZE);
      for (const compat of ["0.10", "1.1"]) {
        for (const clusterSize of [512, 4096, 65536, 2 * MiB]) {
          const image = path.join(dir, `c-${compat}-${clusterSize}.qcow2`);
          await ok("qemu-img", [
            ...["convert", "-c", "-f", "raw", "-O", "qcow2"],
            ...["-o", `compat=${compat},cluster_size=${clusterSize}`, raw, image],
          ]);
          assert.match(await ok("qemu-img", ["check", image]), /[1-9][\d.]*% compressed clusters/);
          await toRaw(image, path.join(dir, "ours.raw"));
          await assertSameFile(path.join(dir, "ours.raw"), raw);
        }
      }
    });
    await t.step("a dirty v3 image with lazy refcounts is read", async () => {
      const image = path.join(dir, "lazy.qcow2");
      await makeImage(image, "lazy_refcounts=on", SIZE);
      await ok("qemu-img", ["convert", "-O", "raw", image, path.join(dir, "ref.raw")]);
      await patch(image, (view) => view.setBigUint64(72, view.getBigUint64(72) | 1n));
      await toRaw(image, path.join(dir, "ours.raw"));
      await assertSameFile(path.join(dir, "ours.raw"), path.join(dir, "ref.raw"));
    });
  });
});

Deno.test("qcow2 reader: unallocated and zero clusters read as undefined, so imports stay thin", async () => {
  await withDir(async (dir) => {
    const image = path.join(dir, "thin.qcow2");
    await ok("qemu-img", ["create", "-q", "-f", "qcow2", image, "64M"]);
    await ok("qemu-io", [
      ...["-c", "write -P 1 0 64k", "-c", "write -P 2 1M 64k", "-c", "write -z 1M 64k"],
      ...["-c", "write -P 3 40M 128k", image],
    ]);
    const source = await fileSource(image);
    try {
      const reader = await Qcow2Reader.open(source, image);
      assert.equal(reader.size, 64 * MiB);
      assert.notEqual(await reader.read(0, 4 * MiB), undefined);
      assert.equal(await reader.read(4 * MiB, 32 * MiB), undefined, "unallocated");
      assert.equal(await reader.read(MiB, 64 * KiB), undefined, "a zero cluster");
      const data = await reader.read(40 * MiB - 100, 200);
      assert.deepEqual(data, new Uint8Array(200).fill(3, 100));
    } finally {
      await source.close();
    }
  });
});

/** Patches a file's bytes in place through a DataView. */
async function patch(file: string, fn: (view: DataView, bytes: Uint8Array) => void): Promise<void> {
  const bytes = new Uint8Array(await fsp.readFile(file));
  fn(new DataView(bytes.buffer), bytes);
  await fsp.writeFile(file, bytes);
}

/** Converting `file` fails with one SheepdogError line matching `pattern`. */
async function assertRefused(file: string, pattern: RegExp, dir: string): Promise<void> {
  await assert.rejects(toRaw(file, path.join(dir, "refused.raw")), (error: unknown) => {
    assert.ok(error instanceof SheepdogError, `${file}: ${error}`);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  });
}

/** Host offset of the first L2 table, and of the data cluster its first entry maps. */
function firstTables(bytes: Uint8Array): { l2: number; firstEntry: bigint } {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const header = decodeHeader(bytes)!;
  const l2 = Number(view.getBigUint64(header.l1TableOffset) & 0x00fffffffffffe00n);
  return { l2, firstEntry: view.getBigUint64(l2) };
}

Deno.test("qcow2 reader: damaged and unsupported images get one clear line each", async (t) => {
  await withDir(async (dir) => {
    const base = path.join(dir, "base.qcow2");
    await makeImage(base, "cluster_size=65536", SIZE);
    const fresh = async (name: string) => {
      const file = path.join(dir, name);
      await fsp.copyFile(base, file);
      return file;
    };
    const baseBytes = new Uint8Array(await fsp.readFile(base));
    const { l2 } = firstTables(baseBytes);
    const header = decodeHeader(baseBytes)!;

    await t.step("truncated files", async () => {
      const cuts: [number, RegExp][] = [
        [50, /ends inside the header \(50 bytes\)/],
        [100, /ends inside the header \(100 bytes\)/],
        [65536, /L1 table .* lies past the end of the file \(65536 bytes\)/],
        [l2 + 100, /L2 table at 0x[0-9a-f]+, past the end of the file/],
        [l2 + 65536, /data of virtual offset 0x[0-9a-f]+ is at 0x[0-9a-f]+, past the end/],
      ];
      assert.ok(header.l1TableOffset < l2, "qemu puts the L1 table before the first L2 table");
      for (const [length, pattern] of cuts) {
        const file = await fresh(`cut-${length}.qcow2`);
        await fsp.truncate(file, length);
        await assertRefused(file, pattern, dir);
      }
    });
    await t.step("an L1 table offset past the end of the file", async () => {
      const file = await fresh("l1.qcow2");
      await patch(file, (view) => view.setBigUint64(40, 1n << 40n));
      await assertRefused(file, /L1 table \(8 bytes at 0x10000000000\) lies past the end/, dir);
      await patch(file, (view) => view.setBigUint64(40, 12345n));
      await assertRefused(file, /L1 table offset 0x3039 is not a cluster boundary/, dir);
    });
    await t.step("an L2 entry pointing past the end of the file", async () => {
      const file = await fresh("l2.qcow2");
      await patch(file, (view) => view.setBigUint64(l2 + 16 * 8, (1n << 63n) | (1n << 40n)));
      await assertRefused(file, /at 0x10000000000, past the end of the file/, dir);
      await patch(file, (view) => view.setBigUint64(l2 + 16 * 8, (1n << 63n) | 0x10200n));
      await assertRefused(file, /at 0x10200, not at a cluster boundary/, dir);
    });
    await t.step("a huge L1 table or virtual size", async () => {
      const file = await fresh("huge.qcow2");
      await patch(file, (view) => view.setUint32(36, 0xffffffff));
      await assertRefused(file, /L1 table has 4294967295 entries, more than the 4194304/, dir);
      await patch(file, (view) => {
        view.setUint32(36, 1);
        view.setBigUint64(24, 1n << 62n);
      });
      await assertRefused(file, /virtual size \d+ is too large/, dir);
      await patch(file, (view) => view.setBigUint64(24, 1n << 50n));
      await assertRefused(file, /L1 table has 1 entries, the virtual size \d+ needs 2097152/, dir);
    });
    await t.step("bad cluster sizes and header lengths", async () => {
      const file = await fresh("bits.qcow2");
      await patch(file, (view) => view.setUint32(20, 40));
      await assertRefused(file, /cluster size 2\^40 is outside 2\^9..2\^21/, dir);
      await patch(file, (view) => {
        view.setUint32(20, 16);
        view.setUint32(100, 7);
      });
      await assertRefused(file, /header length 7 is invalid/, dir);
    });
    await t.step("compressed clusters with a bad length or offset", async () => {
      const raw = path.join(dir, "mixed.raw");
      await makeMixedRaw(raw, COMPRESSED_SIZE);
      const image = path.join(dir, "c.qcow2");
      await ok("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", raw, image]);
      const bytes = new Uint8Array(await fsp.readFile(image));
      const view = new DataView(bytes.buffer);
      const { l2: table } = firstTables(bytes);
      // Cluster 8 (512 KiB) holds nibbles: about 32 KiB of stream, many sectors.
      const entryAt = table + 8 * 8;
      const entry = view.getBigUint64(entryAt);
      assert.equal((entry >> 62n) & 1n, 1n, "cluster 8 is compressed");
      const offsetMask = (1n << 54n) - 1n;
      const short = path.join(dir, "short.qcow2");
      await fsp.writeFile(short, bytes);
      await patch(short, (v) => v.setBigUint64(entryAt, (1n << 62n) | (entry & offsetMask)));
      await assertRefused(
        short,
        /compressed cluster of virtual offset 0x80000 .* does not inflate/,
        dir,
      );
      const far = path.join(dir, "far.qcow2");
      await fsp.writeFile(far, bytes);
      await patch(far, (v) => v.setBigUint64(entryAt, (entry & ~offsetMask) | (1n << 45n)));
      await assertRefused(far, /compressed cluster .* lies past the end of the file/, dir);
      const noise = path.join(dir, "noise.qcow2");
      await fsp.writeFile(noise, bytes);
      await patch(noise, (_, b) => b.set(randomBytes(600), Number(entry & offsetMask)));
      await assertRefused(noise, /compressed cluster .* (does not inflate|inflates to)/, dir);
    });
    await t.step("a backing file", async () => {
      const over = path.join(dir, "over.qcow2");
      await ok("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", over]);
      await assertRefused(
        over,
        new RegExp(`has a backing file '${base}': flatten it first with qemu-img convert`),
        dir,
      );
    });
    await t.step("encryption (AES, LUKS)", async () => {
      const aes = await fresh("aes.qcow2");
      await patch(aes, (view) => view.setUint32(32, 1));
      await assertRefused(aes, /it is encrypted \(AES\); decrypt it first/, dir);
      const luks = path.join(dir, "luks.qcow2");
      const made = await run("qemu-img", [
        ...["create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,data=123456"],
        ...["-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", luks, "1M"],
      ]).catch((error: Error) => ({ code: -1, stdout: "", stderr: error.message }));
      if (made.code !== 0) {
        // qemu-img times LUKS key derivation, which can fail or take long on a busy machine.
        console.warn(`qemu-img could not make a LUKS image (${made.stderr.trim()}); patched one`);
        await fsp.copyFile(base, luks);
        await patch(luks, (view) => view.setUint32(32, 2));
      }
      await assertRefused(luks, /it is encrypted \(LUKS\); decrypt it first/, dir);
    });
    await t.step(
      "corrupt, external data file, zstd, extended L2 misuse, unknown features",
      async () => {
        const corrupt = await fresh("corrupt.qcow2");
        await patch(corrupt, (view) => view.setBigUint64(72, 2n));
        await assertRefused(
          corrupt,
          /it is marked corrupt; repair it first with qemu-img check -r all/,
          dir,
        );
        const external = path.join(dir, "external.qcow2");
        await ok("qemu-img", [
          "create",
          "-q",
          "-f",
          "qcow2",
          "-o",
          `data_file=${external}.data`,
          external,
          "1M",
        ]);
        await assertRefused(external, /its data is in an external data file/, dir);
        const zstd = await fresh("zstd.qcow2");
        await patch(zstd, (view) => {
          view.setBigUint64(72, 8n);
          view.setUint8(104, 1);
        });
        await assertRefused(zstd, /compressed with zstd, only deflate is supported/, dir);
        const extended = await fresh("xl.qcow2");
        await patch(extended, (view) => {
          view.setBigUint64(72, 16n);
          view.setUint32(20, 12);
        });
        await assertRefused(extended, /extended L2 entries need clusters of 16 KiB or more/, dir);
        const future = await fresh("future.qcow2");
        await patch(future, (view) => view.setBigUint64(72, (1n << 7n) | (1n << 40n)));
        await assertRefused(
          future,
          /incompatible qcow2 features this reader does not know: bit 7, bit 40/,
          dir,
        );
      },
    );
    await t.step(
      "-f qcow2 on a file that is not qcow2; -f raw takes a qcow2 file as it is",
      async () => {
        const raw = path.join(dir, "plain.raw");
        await fsp.writeFile(raw, new Uint8Array(MiB).fill(9));
        await assert.rejects(
          toRaw(raw, path.join(dir, "x.raw"), "qcow2"),
          /it is not a qcow2 image/,
        );
        await toRaw(base, path.join(dir, "container.raw"), "raw");
        await assertSameFile(path.join(dir, "container.raw"), base);
      },
    );
  });
});

/** A small PRNG for reproducible damage. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

Deno.test("qcow2 reader: random damage to the metadata gives a clear error or data, never a crash", async () => {
  await withDir(async (dir) => {
    const raw = path.join(dir, "mixed.raw");
    await makeMixedRaw(raw, 2 * MiB + 4096);
    const image = path.join(dir, "fuzz.qcow2");
    // 512-byte clusters: many L2 tables and compressed clusters in a small file.
    await ok("qemu-img", [
      ...["convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512"],
      ...[raw, image],
    ]);
    const pristine = new Uint8Array(await fsp.readFile(image));
    const header = decodeHeader(pristine)!;
    // Where metadata lives: the header, the L1 table, the L2 tables it points at.
    const view = new DataView(pristine.buffer);
    const regions: [number, number][] = [[0, 112], [header.l1TableOffset, header.l1Size * 8]];
    for (let i = 0; i < header.l1Size; i++) {
      const l2 = Number(view.getBigUint64(header.l1TableOffset + i * 8) & 0x00fffffffffffe00n);
      if (l2 !== 0) regions.push([l2, 512]);
    }
    const random = xorshift(20261129);
    let refused = 0;
    const started = Date.now();
    const ROUNDS = 200;
    for (let round = 0; round < ROUNDS; round++) {
      const bytes = pristine.slice();
      for (let flip = 0; flip < 1 + Math.floor(random() * 4); flip++) {
        const [start, length] = regions[Math.floor(random() * regions.length)]!;
        bytes[start + Math.floor(random() * length)] = Math.floor(random() * 256);
      }
      try {
        const reader = await Qcow2Reader.open(new MemoryFile(bytes), `round ${round}`);
        const readable = Math.min(reader.size, 4 * MiB);
        for (let offset = 0; offset < readable; offset += 4 * MiB) {
          await reader.read(offset, Math.min(4 * MiB, readable - offset));
        }
      } catch (error) {
        assert.ok(error instanceof SheepdogError, `round ${round}: ${(error as Error).stack}`);
        assert.ok(!error.message.includes("\n"), "one line");
        refused++;
      }
    }
    console.log(`random damage: ${refused} of ${ROUNDS} images refused, the rest read`);
    assert.ok(refused > ROUNDS / 4, `most damage is noticed (${refused} of ${ROUNDS})`);
    assert.ok(Date.now() - started < 60_000, "no round hangs");
  });
});

Deno.test("qcow2 writer: a VDI with data and holes exports to a qcow2 that qemu-img checks and compares equal", async () => {
  await requireTools();
  await withSheep(async ({ sheep, dir }) => {
    const cluster = { host: "127.0.0.1", port: sheep.port };
    const raw = path.join(dir, "disk.raw");
    const size = 40 * MiB + 4096; // not a whole number of clusters
    const image = new Uint8Array(size);
    image.set(randomBytes(3 * MiB + 5), 0);
    image.set(randomBytes(200 * KiB), 17 * MiB - 100);
    image.set(randomBytes(4096), size - 4096);
    await fsp.writeFile(raw, image);
    await convertImage({
      source: { kind: "file", path: raw },
      target: { kind: "vdi", vdi: "holes" },
      createTarget: true,
      cluster,
    });
    for (const version of [3, 2] as const) {
      const out = path.join(dir, `holes-v${version}.qcow2`);
      const summary = await convertImage({
        source: { kind: "vdi", vdi: "holes" },
        target: { kind: "file", path: out, format: "qcow2", qcow2Version: version },
        createTarget: true,
        cluster,
      });
      assert.equal(summary.bytes, size);
      const check = JSON.parse(await ok("qemu-img", ["check", "--output=json", out]));
      assert.equal(check["check-errors"], 0);
      assert.equal(check.corruptions ?? 0, 0, "no corruptions");
      assert.equal(check.leaks ?? 0, 0, "no leaked clusters");
      assert.match(
        await ok("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", out, raw]),
        /identical/,
      );
      const info = JSON.parse(await ok("qemu-img", ["info", "--output=json", out]));
      assert.equal(info["virtual-size"], size);
      assert.equal(info["format-specific"].data.compat, version === 3 ? "1.1" : "0.10");
      // Data (3 MiB + 64 KiB, 256 KiB, 64 KiB rounded to clusters) plus a few metadata clusters.
      const fileBytes = (await fsp.stat(out)).size;
      assert.ok(fileBytes < 4 * MiB, `the file holds data only (${fileBytes} bytes)`);
      // And our reader reads back what we wrote.
      await toRaw(out, path.join(dir, "back.raw"));
      await assertSameFile(path.join(dir, "back.raw"), raw);
    }
  });
});
