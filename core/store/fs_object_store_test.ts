import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { FsObjectStore } from "./fs_object_store.ts";
import { ResultCode, SheepdogError } from "../errors.ts";

async function withStore(fn: (store: FsObjectStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-store-"));
  const store = new FsObjectStore(path.join(dir, "obj"));
  await store.open();
  try {
    await fn(store, dir);
  } finally {
    await store.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

Deno.test("FsObjectStore creates, writes positionally and reads zeros where unwritten", async () => {
  await withStore(async (store, dir) => {
    const oid = 0x007c2b2500000001n;
    await store.create(oid, new Uint8Array([1, 2, 3]), 4096);
    assert.ok(await store.exists(oid));
    await store.write(oid, new Uint8Array([9]), 10);
    const bytes = await store.read(oid, 0, 8192);
    assert.equal(bytes[10], 9);
    assert.deepEqual([...bytes.subarray(4096, 4099)], [1, 2, 3]);
    assert.equal(bytes.reduce((a, b) => a + b, 0), 15);
    await store.flush();
    assert.deepEqual(await store.list(), [oid]);
    const names = await fsp.readdir(path.join(dir, "obj"));
    assert.deepEqual(names, ["007c2b2500000001"]);
  });
});

Deno.test("FsObjectStore reports a missing object as NO_OBJ and removes idempotently", async () => {
  await withStore(async (store) => {
    await assert.rejects(
      store.read(5n, 0, 1),
      (e: unknown) => e instanceof SheepdogError && e.code === ResultCode.NO_OBJ,
    );
    await assert.rejects(
      store.write(5n, new Uint8Array(1), 0),
      (e: unknown) => e instanceof SheepdogError && e.code === ResultCode.NO_OBJ,
    );
    await store.create(5n, new Uint8Array(1), 0);
    await store.remove(5n);
    await store.remove(5n);
    assert.equal(await store.exists(5n), false);
  });
});

Deno.test("FsObjectStore.create() replaces an object atomically and cleans temp files on open", async () => {
  await withStore(async (store, dir) => {
    await store.create(7n, new Uint8Array([1, 1, 1]), 0);
    await store.read(7n, 0, 3); // caches a handle to the old file
    await store.create(7n, new Uint8Array([2]), 0);
    assert.deepEqual([...await store.read(7n, 0, 3)], [2, 0, 0]);
    await fsp.writeFile(path.join(dir, "obj", "0000000000000007.1.1.tmp"), "junk");
    await store.open();
    assert.deepEqual(await fsp.readdir(path.join(dir, "obj")), ["0000000000000007"]);
  });
});

Deno.test("FsObjectStore keeps working past its open-file limit", async () => {
  await withStore(async (store) => {
    for (let i = 0n; i < 600n; i++) await store.create(i, new Uint8Array([Number(i % 250n)]), 0);
    for (let i = 0n; i < 600n; i++) await store.write(i, new Uint8Array([7]), 1);
    await store.flush();
    for (let i = 0n; i < 600n; i += 37n) {
      assert.deepEqual([...await store.read(i, 0, 2)], [Number(i % 250n), 7]);
    }
  });
});

Deno.test("FsObjectStore reports a full disk as NO_SPACE with a clear message", async () => {
  await withStore(async (store, dir) => {
    // /dev/full fails every write with ENOSPC: an object file pointing there is a full disk.
    await fsp.symlink("/dev/full", path.join(dir, "obj", "0000000000000009"));
    await assert.rejects(
      store.write(9n, new Uint8Array(4096), 0),
      (e: unknown) =>
        e instanceof SheepdogError && e.code === ResultCode.NO_SPACE &&
        /Cannot write object 0000000000000009: the disk is full/.test(e.message),
    );
  });
});
