/**
 * Opening a store of an older build (store format 1, CRC-32 block checksums): every checksum
 * file is converted once, rot is not blessed on the way, a crash-suspect object's changed
 * blocks stay changed, an interrupted conversion resumes, and a newer store is refused.
 */

import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { ResultCode } from "../errors.ts";
import { CHECKSUM_BLOCK_BYTES as B } from "../limits.ts";
import { oidToHex } from "../vdi/oid.ts";
import { CHECKSUM_FORMAT, ChecksumMeta } from "./checksum_meta.ts";
import { writeAll } from "./disk.ts";
import { FsObjectStore } from "./fs_object_store.ts";
import { MemDisk } from "./mem_disk.ts";
import { fileBytes, isError, patternBytes } from "./store_test_env.ts";

const DIR = "/obj";

async function openStore(disk: MemDisk, log: string[] = []): Promise<FsObjectStore> {
  const store = new FsObjectStore(DIR, disk, { log: (line) => log.push(line) });
  await store.open();
  return store;
}

/** Writes `bytes` at `offset` of `file`, durably: what an older build or a landed write left. */
async function putBytes(disk: MemDisk, file: string, bytes: Uint8Array, offset: number) {
  const handle = await disk.open(file, "r+");
  await writeAll(handle, bytes, offset);
  await handle.datasync();
  await handle.close();
}

/**
 * Rewrites `oid`'s checksum file as a format-1 build wrote it: the same header with format 1 and
 * a CRC-32 of each block's bytes as they are on disk (or `entries` where given).
 */
async function downgrade(disk: MemDisk, oid: bigint, entries = new Map<number, number>()) {
  const hex = oidToHex(oid);
  const data = await fileBytes(disk, `${DIR}/${hex}`);
  const bytes = await fileBytes(disk, `${DIR}/${hex}.meta`);
  const meta = ChecksumMeta.parse(bytes) as ChecksumMeta;
  const view = new DataView(bytes.buffer);
  view.setUint16(4, 1, true);
  for (let index = 0; index < meta.blockCount; index++) {
    const crc = entries.get(index) ?? crc32(data.subarray(index * B, (index + 1) * B));
    view.setUint32(40 + 4 * index, crc, true);
  }
  view.setUint32(36, crc32(bytes.subarray(0, 36)), true);
  await putBytes(disk, `${DIR}/${hex}.meta`, bytes, 0);
}

async function setMarker(disk: MemDisk, text: string) {
  const handle = await disk.open(`${DIR}/.format`, "r+");
  await handle.truncate(0);
  await writeAll(handle, new TextEncoder().encode(text), 0);
  await handle.datasync();
  await handle.close();
}

async function format(disk: MemDisk, oid: bigint): Promise<number> {
  const meta = ChecksumMeta.parse(await fileBytes(disk, `${DIR}/${oidToHex(oid)}.meta`));
  return (meta as ChecksumMeta).format;
}

/**
 * A store of `count` flushed objects of 8 blocks, closed, then made format 1 by hand (its marker,
 * and the checksum files of `older`, default all).
 */
async function olderStore(
  count: number,
  older?: bigint[],
): Promise<{ disk: MemDisk; data: Uint8Array[] }> {
  const disk = new MemDisk();
  const store = await openStore(disk);
  const data: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    data.push(patternBytes(8 * B, i + 1));
    await store.create(BigInt(i), data[i]!, 0, { size: 8 * B, version: i + 1 });
  }
  await store.close();
  for (const oid of older ?? data.map((_, i) => BigInt(i))) await downgrade(disk, oid);
  await setMarker(disk, "sheepdog object store 1\n");
  return { disk, data };
}

Deno.test("a store of format 1 is converted at open: every object reads back, versions and digests kept", async () => {
  const { disk, data } = await olderStore(120);
  const log: string[] = [];
  const store = await openStore(disk, log);
  for (let i = 0; i < data.length; i++) {
    assert.deepEqual(await store.read(BigInt(i), 0, 8 * B), data[i], `object ${i}`);
    const meta = (await store.meta(BigInt(i)))!;
    assert.equal(meta.version, i + 1);
    assert.equal(meta.verified, true);
    assert.equal(await format(disk, BigInt(i)), CHECKSUM_FORMAT);
  }
  await store.close();
  assert.equal(
    new TextDecoder().decode(await fileBytes(disk, `${DIR}/.format`)),
    "sheepdog object store 2\n",
  );
  assert.match(log[0]!, /converting the block checksums of up to 120 objects to format 2/);
  assert.match(log.at(-1)!, /converted the block checksums of 120 objects$/);
  assert.ok(log.some((line) => /60 of 120 objects/.test(line)), "progress on the way");

  // A converted copy equals a copy this build writes: their digests compare.
  const fresh = await openStore(new MemDisk());
  await fresh.create(0n, data[0]!, 0, { size: 8 * B, version: 1 });
  const reopened = await openStore(disk, log.splice(0));
  assert.equal((await reopened.meta(0n))!.digest, (await fresh.meta(0n))!.digest);
  assert.deepEqual(log, [], "the second open converts nothing");
  await Promise.all([fresh.close(), reopened.close()]);
});

Deno.test("a block that fails its old CRC-32 is not blessed by the conversion: it reads as corrupt", async () => {
  const { disk, data } = await olderStore(2);
  // Rot in block 3 of object 1, before the upgrade: its CRC no longer matches.
  const rotten = data[1]!.slice(3 * B, 4 * B);
  rotten[17]! ^= 0x40;
  await putBytes(disk, `${DIR}/${oidToHex(1n)}`, rotten, 3 * B);
  const log: string[] = [];
  const store = await openStore(disk, log);
  assert.match(log.at(-1)!, /1 blocks failed their old checksum and read as corrupt/);
  await assert.rejects(store.read(1n, 3 * B, 100), isError(ResultCode.EIO, /block 3 was lost/));
  assert.deepEqual(await store.read(1n, 0, 3 * B), data[1]!.subarray(0, 3 * B));
  assert.deepEqual(await store.read(1n, 4 * B, 4 * B), data[1]!.subarray(4 * B));
  assert.deepEqual((await store.verify(1n)).map((bad) => bad.index), [3]);
  assert.notEqual((await store.meta(1n))!.digest, (await store.meta(0n))!.digest);
  // A good copy's block, written whole, heals it.
  await store.write(1n, data[1]!.subarray(3 * B, 4 * B), 3 * B, 3);
  assert.deepEqual(await store.read(1n, 0, 8 * B), data[1]);
  assert.deepEqual(await store.verify(1n), []);
  await store.close();
});

Deno.test("a crash-suspect object of format 1 keeps a landed write as a changed block, not as rot", async () => {
  const disk = new MemDisk();
  let store = await openStore(disk);
  const data = patternBytes(8 * B, 9);
  await store.create(5n, data, 0, { size: 8 * B, version: 1 });
  await store.flush();
  await store.write(5n, new Uint8Array(B).fill(0xee), 2 * B, 2); // journaled, never synced
  disk.crash(); // the write is lost, the journal entry is not
  await downgrade(disk, 5n); // the older build's checksums of the last sync
  await setMarker(disk, "sheepdog object store 1\n");
  // The write landed after all (a crash keeps what it keeps).
  await putBytes(disk, `${DIR}/${oidToHex(5n)}`, new Uint8Array(B).fill(0xee), 2 * B);
  store = await openStore(disk);
  assert.deepEqual(await store.read(5n, 2 * B, B), new Uint8Array(B).fill(0xee));
  const meta = (await store.meta(5n))!;
  assert.equal(meta.verified, false, "suspect until recovery compares it");
  assert.deepEqual(meta.changed?.map(({ block }) => block), [2]);
  assert.equal(await format(disk, 5n), CHECKSUM_FORMAT);
  await store.close();
});

Deno.test("an interrupted conversion resumes: files already converted are kept, the rest converted", async () => {
  // A start that converted objects 0 and 1, then stopped before it wrote the marker.
  const { disk, data } = await olderStore(4, [2n, 3n]);
  const converted = await fileBytes(disk, `${DIR}/${oidToHex(0n)}.meta`);
  const log: string[] = [];
  const store = await openStore(disk, log);
  assert.match(log.at(-1)!, /converted the block checksums of 2 objects$/);
  assert.deepEqual(await fileBytes(disk, `${DIR}/${oidToHex(0n)}.meta`), converted);
  for (let i = 0; i < 4; i++) {
    assert.deepEqual(await store.read(BigInt(i), 0, 8 * B), data[i]);
    assert.equal(await format(disk, BigInt(i)), CHECKSUM_FORMAT);
  }
  await store.close();
});

Deno.test("a store of a newer or unknown format is refused at open, and left as it is", async () => {
  for (
    const [text, pattern] of [
      ["sheepdog object store 3\n", /names object store format 3: this build reads formats 1 to 2/],
      ["something else\n", /names no object store format/],
    ] as const
  ) {
    const { disk } = await olderStore(1);
    await setMarker(disk, text);
    const before = await fileBytes(disk, `${DIR}/${oidToHex(0n)}.meta`);
    await assert.rejects(openStore(disk), pattern);
    assert.deepEqual(await fileBytes(disk, `${DIR}/${oidToHex(0n)}.meta`), before);
    assert.equal(new TextDecoder().decode(await fileBytes(disk, `${DIR}/.format`)), text);
  }
});

Deno.test("a checksum file of an unknown format is corrupt; one of format 1 that open left reads as corrupt", async () => {
  const { disk, data } = await olderStore(2);
  // Object 1's data file is a block short: open cannot convert it, and leaves it as it is.
  const handle = await disk.open(`${DIR}/${oidToHex(1n)}`, "r+");
  await handle.truncate(7 * B);
  await handle.datasync();
  await handle.close();
  const store = await openStore(disk);
  assert.deepEqual(await store.read(0n, 0, 8 * B), data[0]);
  await assert.rejects(
    store.read(1n, 0, B),
    isError(ResultCode.EIO, /checksum file is of format 1 .*not converted/),
  );
  await store.close();
  const bytes = await fileBytes(disk, `${DIR}/${oidToHex(0n)}.meta`);
  new DataView(bytes.buffer).setUint16(4, 7, true);
  new DataView(bytes.buffer).setUint32(36, crc32(bytes.subarray(0, 36)), true);
  assert.equal(ChecksumMeta.parse(bytes), "format 7 is unknown");
});
