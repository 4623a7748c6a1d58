import assert from "node:assert/strict";
import { unfilledBytes } from "../bytes.ts";
import { type DiskFile, readFully } from "./disk.ts";
import { MemDisk, seededRandom } from "./mem_disk.ts";

async function contents(disk: MemDisk, file: string): Promise<number[]> {
  const handle = await disk.open(file, "r+");
  const bytes = new Uint8Array(await handle.size());
  await readFully(handle, bytes, 0);
  await handle.close();
  return [...bytes];
}

async function newFile(disk: MemDisk, file: string): Promise<DiskFile> {
  await disk.mkdir("/d");
  return await disk.open(file, "wx+");
}

Deno.test("MemDisk keeps synced writes and loses unsynced ones in a crash", async () => {
  const disk = new MemDisk();
  const file = await newFile(disk, "/d/a");
  await disk.syncDir("/d");
  await file.write(new Uint8Array([1, 2]), 0);
  await file.datasync();
  await file.write(new Uint8Array([9]), 0);
  assert.deepEqual(await contents(disk, "/d/a"), [9, 2], "reads see the page cache");
  disk.crash();
  assert.deepEqual(await contents(disk, "/d/a"), [1, 2]);
  await assert.rejects(file.read(new Uint8Array(1), 0), { code: "EBADF" });
});

Deno.test("MemDisk makes creates and renames durable only when the directory is synced", async () => {
  const disk = new MemDisk();
  const file = await newFile(disk, "/d/a");
  await file.datasync();
  disk.crash();
  assert.deepEqual(await disk.readdir("/d"), []);
  const again = await disk.open("/d/a", "wx+");
  await again.write(new Uint8Array([5]), 0);
  await again.datasync();
  await disk.syncDir("/d");
  await disk.rename("/d/a", "/d/b");
  assert.deepEqual(await disk.readdir("/d"), ["b"]);
  disk.crash();
  assert.deepEqual(await disk.readdir("/d"), ["a"]);
  await disk.rename("/d/a", "/d/b");
  await disk.syncDir("/d");
  await disk.unlink("/d/b");
  disk.crash();
  assert.deepEqual(await contents(disk, "/d/b"), [5]);
});

Deno.test("MemDisk.failNextSync fails with EIO and the data never reaches the disk", async () => {
  const disk = new MemDisk();
  const file = await newFile(disk, "/d/a");
  await disk.syncDir("/d");
  await file.write(new Uint8Array([1]), 0);
  disk.failNextSync("/d/a");
  await assert.rejects(file.datasync(), { code: "EIO" });
  await file.datasync(); // "succeeds": the failed pages were dropped, as on Linux
  assert.deepEqual(await contents(disk, "/d/a"), [1]);
  disk.crash();
  assert.deepEqual(await contents(disk, "/d/a"), []);
});

Deno.test("MemDisk capacity: a write that does not fit writes what fits, then ENOSPC", async () => {
  const disk = new MemDisk();
  const file = await newFile(disk, "/d/a");
  disk.setCapacity(2 * 4096);
  assert.equal(await file.write(new Uint8Array(3 * 4096).fill(1), 0), 2 * 4096);
  await assert.rejects(file.write(new Uint8Array(1), 2 * 4096), { code: "ENOSPC" });
  assert.equal(await file.write(new Uint8Array([7]), 5), 1, "overwrites need no space");
  await file.truncate(100 * 4096); // sparse: takes nothing
  assert.equal((await disk.space("/d")).freeBytes, 0);
});

Deno.test("MemDisk.crash(random) replays by seed and tears writes at sector boundaries", async () => {
  const outcomes = new Set<string>();
  for (let seed = 0; seed < 64; seed++) {
    const run = async () => {
      const disk = new MemDisk();
      const file = await newFile(disk, "/d/a");
      await file.write(new Uint8Array(4096).fill(1), 0);
      await file.datasync();
      await disk.syncDir("/d");
      await file.write(new Uint8Array(4096).fill(2), 0);
      disk.crash(seededRandom(seed));
      return await contents(disk, "/d/a");
    };
    const bytes = await run();
    assert.deepEqual(bytes, await run(), "same seed, same crash");
    const twos = bytes.filter((byte) => byte === 2).length;
    assert.equal(twos % 512, 0, "whole sectors only");
    assert.ok(bytes.slice(0, twos).every((byte) => byte === 2), "a prefix of the write");
    outcomes.add(String(twos));
  }
  assert.ok(outcomes.has("0") && outcomes.has("4096"), [...outcomes].join());
  assert.ok(outcomes.size > 2, "some crash tore the write");
});

Deno.test("MemDisk.rot flips a stored byte; failReads fails reads", async () => {
  const disk = new MemDisk();
  const file = await newFile(disk, "/d/a");
  await file.write(new Uint8Array([1, 2, 3]), 0);
  await file.datasync();
  disk.rot("/d/a", 1);
  assert.deepEqual(await contents(disk, "/d/a"), [1, 0xfd, 3]);
  disk.failReads("/d/a", true);
  await assert.rejects(file.read(new Uint8Array(1), 0), { code: "EIO" });
});

Deno.test("MemDisk.attach: after a crash the old life can neither write nor sync nor rename", async () => {
  const disk = new MemDisk();
  const before = disk.attach();
  await before.mkdir("/d");
  const file = await before.open("/d/a", "wx+");
  await before.syncDir("/d");
  await file.write(new Uint8Array([1]), 0);
  disk.crash();
  // A store closing after the crash flushes by path: it must not make anything durable.
  await assert.rejects(before.open("/d/a", "r+"), { code: "EIO" });
  await assert.rejects(before.open("/d/b", "wx+"), { code: "EIO" });
  await assert.rejects(before.rename("/d/a", "/d/c"), { code: "EIO" });
  await assert.rejects(before.syncDir("/d"), { code: "EIO" });
  await assert.rejects(file.datasync(), { code: "EBADF" });
  const after = disk.attach();
  assert.deepEqual(await after.readdir("/d"), ["a"]);
  assert.deepEqual(await contents(disk, "/d/a"), [], "the unsynced write is gone");
  await after.open("/d/b", "wx+");
  assert.deepEqual(await after.readdir("/d"), ["a", "b"]);
});

Deno.test("readFully zeroes what a short file leaves of a buffer that held other bytes", async () => {
  const disk = new MemDisk();
  const file = await newFile(disk, "/d/short");
  await file.write(new Uint8Array([1, 2, 3]), 0);
  // unfilledBytes is not zeroed: stand in for the heap's leftovers with 0xff.
  const buffer = unfilledBytes(8).fill(0xff);
  assert.equal(buffer.constructor, Uint8Array, "a plain Uint8Array, not a Buffer");
  assert.equal(await readFully(file, buffer, 1), 2);
  assert.deepEqual([...buffer], [2, 3, 0, 0, 0, 0, 0, 0]);
  assert.equal(await readFully(file, buffer.fill(0xff), 5), 0);
  assert.deepEqual([...buffer], [0, 0, 0, 0, 0, 0, 0, 0]);
});
