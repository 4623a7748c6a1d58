import assert from "node:assert/strict";
import { deflateRawSync } from "node:zlib";
import { AssertionError } from "../assert.ts";
import { SheepdogError } from "../errors.ts";
import { decodeHeader, decodeL2Entry, encodeHeader, HEADER_V3_BYTES } from "./qcow2.ts";
import { Qcow2Reader } from "./qcow2_reader.ts";
import { Qcow2Writer, refcountLayout } from "./qcow2_writer.ts";
import { MemoryFile } from "./memory_file.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

Deno.test("decodeL2Entry() splits a compressed descriptor at x = 62 - (cluster_bits - 8)", () => {
  for (let clusterBits = 9; clusterBits <= 21; clusterBits++) {
    const offsetBits = 62 - (clusterBits - 8);
    const hostOffset = 0x1_2345_6789 % 2 ** Math.min(offsetBits, 40);
    const extraSectors = (1 << (clusterBits - 8)) - 1;
    const entry = (1n << 62n) | (BigInt(extraSectors) << BigInt(offsetBits)) | BigInt(hostOffset);
    const high = Number(entry >> 32n);
    const low = Number(entry & 0xffffffffn);
    assert.deepEqual(decodeL2Entry(high, low, clusterBits), {
      kind: "compressed",
      hostOffset,
      bytes: (extraSectors + 1) * 512 - (hostOffset % 512),
    }, `cluster_bits ${clusterBits}`);
  }
  assert.deepEqual(decodeL2Entry(0x80000000, 0x50000, 16), { kind: "data", hostOffset: 0x50000 });
  assert.deepEqual(decodeL2Entry(0x80000000, 0x50001, 16), { kind: "zero" });
  assert.deepEqual(decodeL2Entry(0, 0, 16), { kind: "unallocated" });
});

Deno.test("encodeHeader() and decodeHeader() agree for versions 2 and 3", () => {
  const header = {
    version: 3,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: 16,
    size: 5 * 2 ** 40 + 512,
    cryptMethod: 0,
    l1Size: 10241,
    l1TableOffset: 65536,
    refcountTableOffset: 3 * 65536,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: 1n,
    compatibleFeatures: 1n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: HEADER_V3_BYTES,
    compressionType: 0,
  };
  assert.deepEqual(decodeHeader(encodeHeader(header)), header);
  const v2 = { ...header, version: 2, headerLength: 72, incompatibleFeatures: 0n };
  const bytes = encodeHeader(v2);
  assert.equal(bytes.length, 72);
  assert.deepEqual(decodeHeader(bytes), { ...v2, compatibleFeatures: 0n });
  assert.equal(decodeHeader(new Uint8Array(72)), undefined, "no magic, no header");
});

Deno.test("refcountLayout() counts every cluster, its own included", () => {
  for (const clusters of [2, 3, 32767, 32768, 32769, 100_000, 268_435_456, 2 ** 36]) {
    const layout = refcountLayout(clusters);
    assert.equal(layout.totalClusters, clusters + layout.blocks + layout.tableClusters);
    assert.ok(layout.blocks * 32768 >= layout.totalClusters, `${clusters}: blocks cover all`);
    assert.ok(layout.blocks * 32768 < layout.totalClusters + 32768, `${clusters}: no spare block`);
    assert.ok(layout.tableClusters * 8192 >= layout.blocks, `${clusters}: table lists blocks`);
  }
});

Deno.test("Qcow2Writer output reads back through Qcow2Reader, holes as undefined", async () => {
  const size = 10 * MiB + 12345;
  const file = new MemoryFile();
  const writer = new Qcow2Writer(file, { size });
  const runs = [
    { offset: 9 * MiB + 64 * KiB, length: size - 9 * MiB - 64 * KiB }, // the partial tail
    { offset: 0, length: 64 * KiB },
    { offset: 4 * MiB, length: 2 * MiB },
    { offset: 128 * KiB, length: 192 * KiB },
  ];
  const image = new Uint8Array(size);
  // Concurrent writes in any order, as the convert loop issues them.
  await Promise.all(runs.map((run, i) => {
    const data = pattern(run.length, i + 1);
    image.set(data, run.offset);
    return writer.write(run.offset, data);
  }));
  const fileBytes = await writer.finish();
  assert.equal(file.size, fileBytes);
  // Header, L1, one L2, the data clusters (the tail's last one partial), table, one block.
  const dataClusters = 1 + 32 + 3 + Math.ceil((size - 9 * MiB - 64 * KiB) / (64 * KiB));
  assert.equal(fileBytes, (1 + 1 + 1 + dataClusters + 1 + 1) * 64 * KiB);
  const reader = await Qcow2Reader.open(file, "mem.qcow2");
  assert.equal(reader.size, size);
  assert.deepEqual(await reader.read(0, size), image);
  assert.equal(await reader.read(64 * KiB, 64 * KiB), undefined, "never written");
  assert.equal(await reader.read(6 * MiB, 3 * MiB), undefined, "never written");
  assert.deepEqual(
    await reader.read(4 * MiB - 100, 200),
    image.subarray(4 * MiB - 100, 4 * MiB + 100),
  );
});

Deno.test("Qcow2Writer writes every refcount as one and the copied flag on every entry", async () => {
  const file = new MemoryFile();
  const writer = new Qcow2Writer(file, { size: 3 * 512 * MiB, version: 2 });
  await writer.write(0, pattern(64 * KiB, 1));
  await writer.write(1024 * MiB, pattern(128 * KiB, 2));
  await writer.finish();
  const header = decodeHeader(file.bytes)!;
  assert.equal(header.version, 2);
  assert.equal(header.l1Size, 3);
  const view = new DataView(file.bytes.buffer);
  const clusters = file.size / (64 * KiB);
  const tableAt = header.refcountTableOffset;
  const block = Number(view.getBigUint64(tableAt));
  for (let cluster = 0; cluster < 32768; cluster++) {
    assert.equal(view.getUint16(block + cluster * 2), cluster < clusters ? 1 : 0, `${cluster}`);
  }
  const l1 = [0, 1, 2].map((i) => view.getBigUint64(header.l1TableOffset + i * 8));
  assert.equal(l1[1], 0n);
  for (const entry of [l1[0]!, l1[2]!]) {
    assert.equal(entry >> 63n, 1n, "L1 entries of refcount one carry the copied flag");
    const l2 = Number(entry & 0x00fffffffffffe00n);
    assert.equal(view.getBigUint64(l2) >> 63n, 1n, "so do L2 entries");
  }
});

Deno.test("Qcow2Writer refuses what it cannot write and asserts what callers must not do", async () => {
  assert.throws(() => new Qcow2Writer(new MemoryFile(), { size: 0 }), SheepdogError);
  assert.throws(() => new Qcow2Writer(new MemoryFile(), { size: 2 ** 60 }), SheepdogError);
  const writer = new Qcow2Writer(new MemoryFile(), { size: MiB });
  await assert.rejects(writer.write(512, new Uint8Array(64 * KiB)), AssertionError);
  await assert.rejects(writer.write(0, new Uint8Array(1000)), AssertionError);
  await writer.write(0, new Uint8Array(64 * KiB).fill(1));
  await assert.rejects(writer.write(0, new Uint8Array(64 * KiB)), /written twice/);
});

/** A qcow2 image by hand: 512 B clusters, one L2 table, a compressed cluster at virtual 0. */
function handMadeCompressed(stream: Uint8Array, extraSectors: number): MemoryFile {
  const header = encodeHeader({
    version: 3,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: 9,
    size: 4096,
    cryptMethod: 0,
    l1Size: 1,
    l1TableOffset: 512,
    refcountTableOffset: 0,
    refcountTableClusters: 0,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: HEADER_V3_BYTES,
    compressionType: 0,
  });
  const bytes = new Uint8Array(3 * 512 + stream.length);
  const view = new DataView(bytes.buffer);
  bytes.set(header);
  view.setBigUint64(512, (1n << 63n) | 1024n); // L1[0] -> L2 at 1024
  const entry = (1n << 62n) | (BigInt(extraSectors) << 61n) | 1536n;
  view.setBigUint64(1024, entry);
  bytes.set(stream, 1536);
  return new MemoryFile(bytes);
}

Deno.test("Qcow2Reader inflates a compressed cluster, and names one that does not inflate", async () => {
  const cluster = pattern(512, 7).fill(0, 100, 400);
  const good = handMadeCompressed(deflateRawSync(cluster), 1);
  const reader = await Qcow2Reader.open(good, "hand.qcow2");
  const expected = new Uint8Array(4096);
  expected.set(cluster);
  assert.deepEqual(await reader.read(0, 4096), expected);
  assert.deepEqual(await reader.read(100, 20), expected.subarray(100, 120));

  const garbage = handMadeCompressed(pattern(600, 9), 1);
  await assert.rejects(
    (await Qcow2Reader.open(garbage, "bad.qcow2")).read(0, 512),
    (error: unknown) =>
      error instanceof SheepdogError &&
      /compressed cluster of virtual offset 0x0 .* does not inflate/.test(error.message),
  );
  // A stream that inflates to more than a cluster is cut at the cluster, not buffered.
  const bomb = handMadeCompressed(deflateRawSync(new Uint8Array(64 * MiB)).subarray(0, 1024), 1);
  await assert.rejects(
    (await Qcow2Reader.open(bomb, "bomb.qcow2")).read(0, 512),
    /does not inflate|inflates to/,
  );
});
