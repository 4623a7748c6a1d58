// Goal: a disk filled by client data never stops the sheep from persisting its epoch log (a sheep
// that cannot leaves the group, and the cluster loses a vote): the object store refuses data that
// would eat into METADATA_RESERVE_BYTES with NO_SPACE, its objects stay intact, and the epoch log
// on the same file system still takes records, durably. Without the reserve (reserveBytes 0) the
// same writes fill the disk and the epoch log fails with ENOSPC: the case the reserve is for.
// Method: a MemDisk with a capacity holds both the store (DIR/obj) and the epoch log (DIR/epoch);
// the store is filled the way a client fills it (writes into thin objects, then creates) until it
// refuses; then a record is appended, the disk crashes, and the record is read back.
import assert from "node:assert/strict";
import { isResult, ResultCode } from "../../core/errors.ts";
import { METADATA_RESERVE_BYTES } from "../../core/limits.ts";
import { FsObjectStore } from "../../core/store/fs_object_store.ts";
import { MemDisk } from "../../core/store/mem_disk.ts";
import type { EpochRecord } from "../group/mod.ts";
import { EpochLog } from "./epoch_log.ts";

const MiB = 1024 * 1024;
const DIR = "/sd";

function record(epoch: number): EpochRecord {
  const member = { id: "127.0.0.1:7000", incarnation: 1, witness: false, info: {} };
  return { cluster: "c", era: 1, epoch, slot: epoch, seq: 0, members: [member], pids: [] };
}

/**
 * Writes 1 MiB pieces into thin 4 MiB objects until the store refuses; returns the refusal and
 * the object it refused (created, not written whole).
 */
async function fill(store: FsObjectStore): Promise<{ refusal: unknown; oid: bigint }> {
  const piece = new Uint8Array(MiB).fill(0xab);
  for (let oid = 1n; oid < 1000n; oid++) {
    try {
      await store.create(oid, new Uint8Array(0), 0, { size: 4 * MiB, version: 1 });
      for (let at = 0; at < 4 * MiB; at += MiB) await store.write(oid, piece, at, 1);
    } catch (refusal) {
      return { refusal, oid };
    }
  }
  throw new Error("the store never refused");
}

Deno.test("EpochLog.append() persists after client writes filled the disk under the store", async () => {
  const disk = new MemDisk();
  disk.setCapacity(METADATA_RESERVE_BYTES + 24 * MiB);
  const store = new FsObjectStore(`${DIR}/obj`, disk);
  await store.open();
  const log = new EpochLog(DIR, disk);
  await log.append([record(1)], 1000);

  const { refusal, oid: thin } = await fill(store);
  assert.ok(isResult(refusal, ResultCode.NO_SPACE), `refused as NO_SPACE: ${refusal}`);
  assert.match((refusal as Error).message, /the disk is full \(the last 8 MB stay free/);
  assert.equal(store.health().noSpaceErrors, 1, "counted as a full disk (info -t node)");
  const { freeBytes } = await disk.space(DIR);
  assert.ok(freeBytes >= METADATA_RESERVE_BYTES, `the reserve is free: ${freeBytes}`);
  // Another write that may fill a hole and a create are refused too, cleanly: nothing of them
  // is stored.
  const last = 3 * MiB;
  await assert.rejects(store.write(thin, new Uint8Array(MiB), last, 2), {
    code: ResultCode.NO_SPACE,
  });
  await assert.rejects(
    // Not zeros: a create stores only the blocks that are not (zeros take no space).
    store.create(5000n, new Uint8Array(MiB).fill(1), 0, { size: MiB, version: 1 }),
    { code: ResultCode.NO_SPACE },
  );
  assert.equal(await store.exists(5000n), false);
  assert.deepEqual(await store.read(thin, last, 4), new Uint8Array(4), "the hole stays a hole");
  // An object written whole takes its overwrites (a VM rewriting its blocks goes on), and they
  // take no space.
  await store.write(1n, new Uint8Array(MiB).fill(0xcd), 0, 2);
  assert.deepEqual(await store.read(1n, 0, 4), new Uint8Array(4).fill(0xcd));
  assert.deepEqual((await store.read(1n, MiB, 4))[0], 0xab, "what was stored reads back");
  assert.equal((await disk.space(DIR)).freeBytes, freeBytes, "the overwrite took no space");

  for (let epoch = 2; epoch <= 100; epoch++) await log.append([record(epoch)], 1000 + epoch);
  await store.close();
  disk.crash();
  const after = new EpochLog(DIR, disk);
  assert.equal((await after.last())?.epoch, 100, "every record is durable");
  assert.equal((await after.list()).length, 100);
});

Deno.test("EpochLog.append() fails with ENOSPC on a disk the store filled without a reserve", async () => {
  const disk = new MemDisk();
  disk.setCapacity(24 * MiB);
  const store = new FsObjectStore(`${DIR}/obj`, disk, { reserveBytes: 0 });
  await store.open();
  const { refusal } = await fill(store);
  assert.ok(isResult(refusal, ResultCode.NO_SPACE), `the disk itself refused: ${refusal}`);
  await assert.rejects(new EpochLog(DIR, disk).append([record(1)], 1000), { code: "ENOSPC" });
  await store.close();
});

Deno.test("EpochLog: a record the disk lost or changed is skipped, and said once", async () => {
  const disk = new MemDisk();
  const warnings: string[] = [];
  const log = new EpochLog(DIR, disk, (line) => warnings.push(line));
  for (let epoch = 1; epoch <= 3; epoch++) await log.append([record(epoch)], 1000 + epoch);
  const file = `${DIR}/epoch/00000003`;
  for (
    const [bytes, why] of [[new Uint8Array([0x7b, 0x22]), /\(not an epoch record: not JSON\)/], [
      enc("[1]"),
      /not an epoch record/,
    ]] as const
  ) {
    await disk.unlink(file);
    const handle = await disk.open(file, "wx+");
    await handle.write(bytes, 0);
    await handle.close();
    warnings.length = 0;
    const fresh = new EpochLog(DIR, disk, (line) => warnings.push(line));
    assert.equal((await fresh.last())?.epoch, 2, "the record before it");
    assert.equal((await fresh.list()).length, 2);
    assert.equal(warnings.length, 1, "said once");
    assert.match(warnings[0]!, /^epoch record .*\/epoch\/00000003 cannot be read \(/);
    assert.match(warnings[0]!, why);
  }
});

function enc(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
