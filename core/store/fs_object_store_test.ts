import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { isCorruption, ResultCode } from "../errors.ts";
import { CHECKSUM_BLOCK_BYTES as B, OBJECT_BYTES_MAX } from "../limits.ts";
import type { Disk, DiskFile } from "./disk.ts";
import { fsDisk } from "./fs_disk.ts";
import { FsObjectStore } from "./fs_object_store.ts";
import {
  fileBytes,
  isCorrupt,
  isError,
  KINDS,
  patternBytes,
  truncateFile,
  withEnv,
} from "./store_test_env.ts";

const OID = 0x007c2b2500000001n;
const HEX = "007c2b2500000001";
const MIB4 = 4 * 1024 * 1024;

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}) creates a canonical sparse object of exactly its size`, async () => {
    await withEnv(kind, async ({ store, disk, dir }) => {
      await store.create(OID, new Uint8Array([1, 2, 3]), 4096, { size: MIB4, version: 1 });
      assert.ok(await store.exists(OID));
      assert.equal((await disk.stat(path.join(dir, HEX))).size, MIB4);
      const bytes = await store.read(OID, 0, 8192);
      assert.deepEqual([...bytes.subarray(4096, 4099)], [1, 2, 3]);
      assert.equal(bytes.reduce((a, b) => a + b, 0), 6);
      assert.deepEqual(await store.list(), [OID]);
      const names = (await disk.readdir(dir)).filter((name) => !name.startsWith("."));
      assert.deepEqual(names.sort(), [HEX, `${HEX}.meta`]);
      const meta = await store.meta(OID);
      assert.equal(meta?.size, MIB4);
      assert.equal(meta?.version, 1);
      assert.equal(meta?.verified, true);
      assert.equal(await store.meta(5n), undefined);
    });
  });

  Deno.test(`FsObjectStore (${kind}) a whole-object create stores only the blocks that are not zeros`, async () => {
    // Recovery, repairs and clones create copies from the whole object, mostly zeros in a thin
    // VDI: each took its full size on disk (4 MiB a copy) before zero blocks were left as holes.
    await withEnv(kind, async ({ store, disk, dir }) => {
      const whole = new Uint8Array(MIB4);
      whole.set(patternBytes(5000, 3), 8192);
      whole.set(patternBytes(100, 4), MIB4 - 100);
      await store.create(OID, whole, 0, { size: MIB4, version: 7 });
      assert.deepEqual(await store.read(OID, 0, MIB4), whole);
      if (kind === "fs") {
        const { blocks } = await fsp.stat(path.join(dir, HEX));
        // 512-byte units: the 3 blocks the pattern spans and the last one, not 1,024 blocks.
        assert.ok(blocks * 512 <= 16 * B, `${blocks * 512} bytes allocated`);
      }
      assert.equal((await disk.stat(path.join(dir, HEX))).size, MIB4);
    });
  });

  Deno.test(`FsObjectStore (${kind}) replicas that apply the same ops are byte-identical`, async () => {
    const images: Uint8Array[] = [];
    const digests: string[] = [];
    for (let replica = 0; replica < 2; replica++) {
      await withEnv(kind, async ({ store, disk, dir }) => {
        // The second replica got its first write in another order and a stale create first.
        if (replica === 1) {
          await store.create(OID, patternBytes(9000, 9), 0, { size: 65536, version: 1 });
        }
        await store.create(OID, patternBytes(5000, 1), 100, { size: 65536, version: 2 });
        const writes: [number, number][] = [[3, 7000], [4, 40000]];
        if (replica === 1) writes.reverse();
        for (const [seed, at] of writes) await store.write(OID, patternBytes(3000, seed), at, 3);
        await store.flush();
        images.push(await fileBytes(disk, path.join(dir, HEX)));
        digests.push((await store.meta(OID))!.digest);
      });
    }
    assert.equal(images[0]!.length, 65536);
    assert.deepEqual(images[0], images[1]);
    assert.equal(digests[0], digests[1]);
    await withEnv(kind, async ({ store }) => {
      await store.create(OID, patternBytes(5000, 2), 100, { size: 65536, version: 2 });
      assert.notEqual((await store.meta(OID))!.digest, digests[0]);
    });
  });

  Deno.test(`FsObjectStore (${kind}) keeps the highest version it was given`, async () => {
    await withEnv(kind, async (env) => {
      await env.store.create(OID, new Uint8Array(0), 0, { size: 8192, version: 5 });
      await env.store.write(OID, new Uint8Array([1]), 0, 3);
      assert.equal((await env.store.meta(OID))!.version, 5);
      await env.store.write(OID, new Uint8Array([2]), 0, 2 ** 53 - 1);
      assert.equal((await env.store.meta(OID))!.version, 2 ** 53 - 1);
      await env.store.write(OID, new Uint8Array([3]), 0, 7);
      const store = await env.reopen();
      assert.equal((await store.meta(OID))!.version, 2 ** 53 - 1);
      assert.deepEqual([...await store.read(OID, 0, 1)], [3]);
      await store.create(OID, new Uint8Array(0), 0, { size: 8192, version: 4 });
      assert.equal((await store.meta(OID))!.version, 4, "create replaces, version and all");
    });
  });

  Deno.test(`FsObjectStore (${kind}) unaligned writes and reads match a model`, async () => {
    await withEnv(kind, async (env) => {
      const size = 10 * B + 123; // a short last block, as an inode has
      const model = new Uint8Array(size);
      await env.store.create(OID, new Uint8Array(0), 0, { size, version: 1 });
      let state = 7;
      const next = (n: number) => (state = (state * 1103515245 + 12345) % 2 ** 31) % n;
      for (let i = 0; i < 60; i++) {
        const offset = next(size);
        const data = patternBytes(Math.min(next(3 * B), size - offset), i);
        model.set(data, offset);
        await env.store.write(OID, data, offset, i + 2);
      }
      for (let i = 0; i < 40; i++) {
        const offset = next(size);
        const length = next(size - offset + 1);
        assert.deepEqual(
          await env.store.read(OID, offset, length),
          model.subarray(offset, offset + length),
        );
      }
      assert.deepEqual(await env.store.verify(OID), []);
      const store = await env.reopen();
      assert.deepEqual(await store.read(OID, 0, size), model);
      assert.deepEqual(await store.verify(OID), []);
    });
  });

  Deno.test(`FsObjectStore (${kind}) concurrent writes into one block keep its checksum right`, async () => {
    await withEnv(kind, async (env) => {
      await env.store.create(OID, new Uint8Array(0), 0, { size: 4 * B, version: 1 });
      const expected = new Uint8Array(4 * B);
      const work = [];
      for (let i = 0; i < 32; i++) {
        const data = patternBytes(100, i + 1);
        expected.set(data, 1000 + i * 100);
        work.push(env.store.write(OID, data, 1000 + i * 100, 2));
        work.push(env.store.read(OID, 0, 2 * B));
      }
      await Promise.all(work);
      assert.deepEqual(await env.store.read(OID, 0, 4 * B), expected);
      const store = await env.reopen();
      assert.deepEqual(await store.verify(OID), []);
    });
  });

  Deno.test(`FsObjectStore (${kind}) a flipped data byte fails its block's checksum`, async () => {
    await withEnv(kind, async (env) => {
      const data = patternBytes(3 * B, 1);
      await env.store.create(OID, data, 0, { size: 3 * B, version: 1 });
      await env.flip(HEX, B + 5);
      assert.deepEqual(await env.store.read(OID, 0, 100), data.subarray(0, 100));
      await assert.rejects(
        env.store.read(OID, 10, B),
        isCorrupt(
          OID,
          /Object 007c2b2500000001: block 1 fails its checksum \(stored [0-9a-f]{8}, computed [0-9a-f]{8}\)/,
          [1],
        ),
      );
      const bad = await env.store.verify(OID);
      assert.deepEqual(bad.map((block) => block.index), [1]);
      assert.ok(env.store.health().checksumErrors >= 2);
      await env.store.write(OID, data.subarray(B, 2 * B), B, 2); // a repair rewrites the block
      assert.deepEqual(await env.store.verify(OID), []);
    });
  });

  Deno.test(`FsObjectStore (${kind}) a short data file is corruption, not zeros`, async () => {
    await withEnv(kind, async (env) => {
      await env.store.create(OID, patternBytes(3 * B, 1), 0, { size: 3 * B, version: 1 });
      await env.store.close();
      await truncateFile(env.disk, path.join(env.dir, HEX), B + 10);
      const store = await env.reopen();
      await assert.rejects(
        store.read(OID, 0, 10),
        isCorrupt(OID, /data file is 4106 bytes, not 12288/, [1, 2]),
      );
      assert.deepEqual((await store.verify(OID)).map((block) => block.index), [1, 2]);
      await assert.rejects(store.meta(OID), isCorrupt(OID, /data file/));
    });
  });

  Deno.test(`FsObjectStore (${kind}) a missing, damaged or wrong-length checksum file is corruption`, async () => {
    await withEnv(kind, async (env) => {
      const meta = path.join(env.dir, `${HEX}.meta`);
      const cases: [string, () => Promise<void>, RegExp][] = [
        ["header", () => env.flip(`${HEX}.meta`, 9), /header fails its checksum/],
        ["magic", () => env.flip(`${HEX}.meta`, 0), /bad magic/],
        ["length", () => truncateFile(env.disk, meta, 40 + 4 * 2), /is 48 bytes, not 52/],
        ["missing", () => env.disk.unlink(meta), /checksum file is missing/],
      ];
      for (const [name, damage, pattern] of cases) {
        let store = await env.reopen();
        await store.create(OID, patternBytes(100, 1), 0, { size: 3 * B, version: 1 });
        await store.close();
        await damage();
        store = await env.reopen();
        await assert.rejects(store.read(OID, 0, 1), isCorrupt(OID, pattern), name);
        const bad = await store.verify(OID);
        assert.deepEqual(bad.map((block) => block.index), [0, 1, 2], name);
        assert.ok(pattern.test(bad[0]!.reason), name);
        assert.deepEqual(await store.list(), [OID], name);
      }
    });
  });

  Deno.test(`FsObjectStore (${kind}) rejects bad ranges and versions before allocating`, async () => {
    await withEnv(kind, async ({ store }) => {
      await store.create(OID, new Uint8Array(0), 0, { size: 2 * B, version: 1 });
      const invalid = isError(ResultCode.INVALID_PARMS);
      for (
        const [offset, length] of [
          [-1, 1],
          [0.5, 1],
          [0, 2 * B + 1],
          [2 * B, 1],
          [0, 2 ** 31],
          [NaN, 1],
          [0, -1],
          [2 ** 60, 1],
        ]
      ) {
        await assert.rejects(
          store.read(OID, offset!, length!),
          invalid,
          `read ${offset} ${length}`,
        );
      }
      await assert.rejects(store.write(OID, new Uint8Array(2), 2 * B - 1, 2), invalid);
      await assert.rejects(store.write(OID, new Uint8Array(1), -4, 2), invalid);
      await assert.rejects(store.write(OID, new Uint8Array(1), 0, -1), invalid);
      await assert.rejects(store.write(OID, new Uint8Array(1), 0, 1.5), invalid);
      await assert.rejects(store.write(OID, new Uint8Array(1), 0, 2 ** 53), invalid);
      const create = (size: number, offset = 0) =>
        store.create(9n, new Uint8Array(4), offset, { size, version: 1 });
      await assert.rejects(create(OBJECT_BYTES_MAX + 1), invalid);
      await assert.rejects(create(3), invalid);
      await assert.rejects(create(-1), invalid);
      await assert.rejects(create(100, 97), invalid);
      assert.equal(await store.exists(9n), false);
      assert.deepEqual(await store.read(OID, 2 * B, 0), new Uint8Array(0));
    });
  });

  Deno.test(`FsObjectStore (${kind}) reports a missing object as NO_OBJ and removes idempotently`, async () => {
    await withEnv(kind, async ({ store, disk, dir }) => {
      const noObj = isError(ResultCode.NO_OBJ, /object 0000000000000005: no such object/);
      await assert.rejects(store.read(5n, 0, 1), noObj);
      await assert.rejects(store.write(5n, new Uint8Array(1), 0, 1), noObj);
      await assert.rejects(store.verify(5n), noObj);
      await store.create(5n, new Uint8Array(1), 0, { size: B, version: 1 });
      await store.remove(5n);
      await store.remove(5n);
      assert.equal(await store.exists(5n), false);
      assert.deepEqual((await disk.readdir(dir)).filter((name) => !name.startsWith(".")), []);
    });
  });

  Deno.test(`FsObjectStore (${kind}) markVerified persists`, async () => {
    await withEnv(kind, async (env) => {
      // An object from an older build (no checksum file) is adopted unverified.
      await env.store.close();
      await fsp.rm(path.join(env.dir, ".format")).catch(() => undefined);
      await env.disk.unlink(path.join(env.dir, ".format")).catch(() => undefined);
      const file = await env.disk.open(path.join(env.dir, HEX), "wx+");
      await file.write(patternBytes(5000, 3), 0);
      await file.datasync();
      await file.close();
      await env.disk.syncDir(env.dir);
      let store = await env.reopen();
      assert.deepEqual(await store.read(OID, 0, 5000), patternBytes(5000, 3));
      assert.deepEqual(await store.meta(OID), {
        ...(await store.meta(OID))!,
        version: 0,
        size: 2 * B,
        verified: false,
      });
      await store.markVerified(OID);
      store = await env.reopen();
      assert.equal((await store.meta(OID))!.verified, true);
      // Once every object has checksums, a missing checksum file is corruption again.
      await store.create(9n, new Uint8Array(1), 0, { size: B, version: 1 });
      await store.close();
      await env.disk.unlink(path.join(env.dir, "0000000000000009.meta"));
      store = await env.reopen();
      await assert.rejects(store.read(9n, 0, 1), isCorrupt(9n, /checksum file is missing/));
    });
  });

  Deno.test(`FsObjectStore (${kind}) open removes temp files and checksums without data`, async () => {
    await withEnv(kind, async (env) => {
      await env.store.create(7n, new Uint8Array([1, 1, 1]), 0, { size: B, version: 1 });
      await env.store.read(7n, 0, 3); // caches a handle to the old file
      await env.store.create(7n, new Uint8Array([2]), 0, { size: B, version: 2 });
      assert.deepEqual([...await env.store.read(7n, 0, 3)], [2, 0, 0]);
      for (const name of ["0000000000000007.1.1.tmp", "0000000000000008.meta"]) {
        const file = await env.disk.open(path.join(env.dir, name), "wx+");
        await file.write(new Uint8Array([1, 2]), 0);
        await file.close();
      }
      await env.reopen();
      const names = await env.disk.readdir(env.dir);
      assert.deepEqual(names.filter((name) => !name.startsWith(".")).sort(), [
        "0000000000000007",
        "0000000000000007.meta",
      ]);
    });
  });

  Deno.test(`FsObjectStore (${kind}) keeps working past its open-file limit`, async () => {
    await withEnv(kind, async ({ store }) => {
      for (let i = 0n; i < 600n; i++) {
        await store.create(i, new Uint8Array([Number(i % 250n)]), 0, { size: B, version: 1 });
      }
      await Promise.all(
        Array.from({ length: 600 }, (_, i) => store.write(BigInt(i), new Uint8Array([7]), 1, 2)),
      );
      await store.flush();
      for (let i = 0n; i < 600n; i += 37n) {
        assert.deepEqual([...await store.read(i, 0, 2)], [Number(i % 250n), 7]);
      }
      assert.equal((await store.list()).length, 600);
    });
  });
}

Deno.test("FsObjectStore reports a full disk (/dev/full) as NO_SPACE, keeping the copy and its version", async () => {
  await withEnv("fs", async (env) => {
    await env.store.create(9n, patternBytes(2 * B, 1), 0, { size: 2 * B, version: 4 });
    await env.store.close();
    // Writes to the object's data file go to /dev/full, whose every write fails with ENOSPC.
    const dataPath = path.join(env.dir, "0000000000000009");
    const full = {
      ...fsDisk,
      async open(file: string, mode: "r+" | "wx+" | "w+"): Promise<DiskFile> {
        const real = await fsDisk.open(file, mode);
        if (file !== dataPath) return real;
        const devFull = await fsDisk.open("/dev/full", "r+");
        return {
          ...real,
          read: real.read.bind(real),
          size: real.size.bind(real),
          truncate: real.truncate.bind(real),
          datasync: real.datasync.bind(real),
          write: devFull.write.bind(devFull),
          close: async () => (await real.close(), await devFull.close()),
        };
      },
    };
    const store = new FsObjectStore(env.dir, full);
    await store.open();
    try {
      await assert.rejects(
        store.write(9n, new Uint8Array(100), 4000, 5),
        isError(ResultCode.NO_SPACE, /^Cannot write object 0000000000000009: the disk is full$/),
      );
      assert.equal(store.health().noSpaceErrors, 1);
      assert.ok(store.health().noSpaceAtMs! > 0);
      assert.equal(store.health().roomAtMs, undefined, "no write succeeded since");
      assert.equal((await store.meta(9n))!.version, 4);
      assert.deepEqual(await store.verify(9n), []);
      assert.deepEqual(await store.read(9n, 0, 2 * B), patternBytes(2 * B, 1));
      await store.flush();
      // Another object (another file) can be stored: the disk has room again.
      await store.create(10n, patternBytes(B, 2), 0, { size: B, version: 1 });
      assert.ok(store.health().roomAtMs! >= store.health().noSpaceAtMs!);
    } finally {
      await store.close();
    }
  });
});

Deno.test("FsObjectStore errors: a failed read is EIO, not corruption, and meta() reads no data", async () => {
  const { MemDisk } = await import("./mem_disk.ts");
  const disk = new MemDisk();
  const store = new FsObjectStore("/obj", disk);
  await store.open();
  await store.create(OID, patternBytes(100, 1), 0, { size: B, version: 3 });
  disk.failReads(`/obj/${HEX}`, true);
  assert.equal((await store.meta(OID))!.version, 3);
  const error = await store.read(OID, 0, 1).catch((e) => e);
  assert.equal(error.code, ResultCode.EIO);
  assert.equal(isCorruption(error), false);
  assert.match((await store.verify(OID))[0]!.reason, /cannot be read/);
  disk.failReads(`/obj/${HEX}`, false);
  await store.close();
});

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}): bad reads and writes say which object, in words`, async () => {
    // Goal: the messages built only on failure (the hot paths build none) name the object.
    await withEnv(kind, async ({ store }) => {
      await store.create(OID, new Uint8Array(B), 0, { size: 4 * B, version: 1 });
      const said = (text: RegExp) => (error: unknown) =>
        isError(ResultCode.INVALID_PARMS)(error) && text.test((error as Error).message);
      await assert.rejects(
        store.read(OID, 3 * B, 2 * B),
        said(new RegExp(`^Cannot read object ${HEX}: bytes \\[12288, \\+8192\\) are outside`)),
      );
      await assert.rejects(
        store.write(OID, new Uint8Array(8), 0, -1),
        said(new RegExp(`^Cannot write object ${HEX}: bad version -1$`)),
      );
      await assert.rejects(
        store.write(OID, new Uint8Array(8), 4 * B, 2),
        said(new RegExp(`^Cannot write object ${HEX}: bytes \\[16384, \\+8\\) are outside`)),
      );
      await assert.rejects(
        store.read(5n, 0, 8),
        (error: unknown) =>
          /^Cannot read object 0000000000000005: no such object/.test(
            String((error as Error).message),
          ),
      );
    });
  });
}

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}) readNow answers a short verified read of an open object, and nothing else`, async () => {
    await withEnv(kind, async (env) => {
      const data = patternBytes(3 * B, 1);
      await env.store.create(OID, data, 0, { size: 3 * B, version: 1 });
      await env.store.read(OID, 0, 1); // open in the cache
      assert.deepEqual(env.store.readNow(OID, 10, B), data.subarray(10, 10 + B));
      assert.deepEqual(env.store.readNow(OID, 0, 3 * B), data);
      // What it leaves to `read`: nothing, past the end, an object not open, a long read.
      assert.equal(env.store.readNow(OID, 0, 0), undefined);
      assert.equal(env.store.readNow(OID, 2 * B, B + 1), undefined);
      assert.equal(env.store.readNow(5n, 0, 1), undefined);
      const store = await env.reopen();
      assert.equal(store.readNow(OID, 0, B), undefined, "not open yet");
      await store.create(0x1n, patternBytes(MIB4, 2), 0, { size: MIB4, version: 1 });
      await store.read(0x1n, 0, 1);
      assert.equal(store.readNow(0x1n, 0, MIB4), undefined, "a long read goes to the pool");
      // A block that fails its checksum: nothing counted or thrown here, `read` reports it.
      await store.read(OID, 0, 1);
      await env.flip(HEX, B + 5);
      assert.deepEqual(store.readNow(OID, 0, B), data.subarray(0, B));
      assert.equal(store.readNow(OID, B, 10), undefined);
      assert.equal(store.health().checksumErrors, 0);
      await assert.rejects(store.read(OID, B, 10), isCorrupt(OID, /block 1 fails/, [1]));
      assert.equal(store.health().checksumErrors, 1);
    });
  });
}

/**
 * A disk whose renames and unlinks of files named `name` wait until `release()`: the store's
 * window between closing an object and replacing (or removing) its files, held open.
 */
function pausingDisk(inner: Disk, name: string) {
  let release = () => {};
  let paused: Promise<void> | undefined;
  let reached = () => {};
  const arrived = new Promise<void>((resolve) => reached = resolve);
  let waiting = false;
  const pause = async (file: string) => {
    if (paused === undefined || path.basename(file) !== name) return;
    reached();
    waiting = true;
    await paused;
    waiting = false;
  };
  /** Opens of `name` while its rename or unlink waited (the store must not reopen it then). */
  const opensWhilePaused: string[] = [];
  const disk: Disk = {
    open: (file, mode) => {
      if (waiting && path.basename(file) === name) opensWhilePaused.push(file);
      return inner.open(file, mode);
    },
    readdir: (dir) => inner.readdir(dir),
    mkdir: (dir) => inner.mkdir(dir),
    syncDir: (dir) => inner.syncDir(dir),
    stat: (file) => inner.stat(file),
    space: (dir) => inner.space(dir),
    rename: async (from, to) => {
      await pause(to);
      return inner.rename(from, to);
    },
    unlink: async (file) => {
      await pause(file);
      return inner.unlink(file);
    },
  };
  return {
    disk,
    /** Renames and unlinks of `name` wait from now on, until `release()`. */
    arm() {
      paused = new Promise<void>((resolve) => release = resolve);
    },
    arrived,
    opensWhilePaused,
    release: () => release(),
  };
}

/** A store of `kind` on a `pausingDisk` that pauses object HEX, and the disk beneath it. */
async function withPausingStore(
  kind: "fs" | "mem",
  fn: (
    env: { store: FsObjectStore; gate: ReturnType<typeof pausingDisk>; inner: Disk; dir: string },
  ) => Promise<void>,
): Promise<void> {
  await withEnv(kind, async ({ disk: inner, dir }) => {
    const gate = pausingDisk(inner, HEX);
    const store = new FsObjectStore(dir, gate.disk);
    await store.open();
    try {
      await fn({ store, gate, inner, dir });
    } finally {
      await store.close();
    }
  });
}

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}) a use while a create replaces the files waits for it`, async () => {
    await withPausingStore(kind, async ({ store, gate, inner, dir }) => {
      await store.create(OID, patternBytes(MIB4, 1), 0, { size: MIB4, version: 1 });
      gate.arm();
      const created = store.create(OID, patternBytes(MIB4, 2), 0, { size: MIB4, version: 5 });
      await gate.arrived;
      // Issued while the old files are closed and the new ones not yet in place.
      const meta = store.meta(OID);
      const written = store.write(OID, patternBytes(B, 3), 8 * B, 6);
      assert.equal(store.readNow(OID, 0, B), undefined, "the old copy was read at once");
      assert.deepEqual(gate.opensWhilePaused, [], "the old files were opened again");
      gate.release();
      await created;
      assert.equal((await meta)?.version, 5);
      assert.equal(await written, 5, "the write went to the new copy");
      await store.flush();
      const want = patternBytes(MIB4, 2);
      want.set(patternBytes(B, 3), 8 * B);
      assert.deepEqual(await fileBytes(inner, path.join(dir, HEX)), want);
      assert.deepEqual(await store.read(OID, 0, MIB4), want);
      assert.equal((await store.meta(OID))?.version, 6);
    });
  });

  Deno.test(`FsObjectStore (${kind}) a use while a remove unlinks the files finds no object`, async () => {
    await withPausingStore(kind, async ({ store, gate }) => {
      await store.create(OID, patternBytes(B, 1), 0, { size: B, version: 1 });
      gate.arm();
      const removed = store.remove(OID);
      await gate.arrived;
      const meta = store.meta(OID);
      const read = store.read(OID, 0, B).then(() => "read", (error: unknown) => error);
      assert.equal(store.readNow(OID, 0, B), undefined, "the removed copy was read at once");
      assert.deepEqual(gate.opensWhilePaused, [], "the files were opened again");
      gate.release();
      await removed;
      assert.equal(await meta, undefined);
      assert.ok(isError(ResultCode.NO_OBJ)(await read), `read after the remove: ${await read}`);
      assert.equal(await store.exists(OID), false);
    });
  });
}

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}) heals a rotted block in place only with the bytes its checksum names`, async () => {
    await withEnv(kind, async (env) => {
      const { store } = env;
      const good = patternBytes(4 * B, 5);
      await store.create(OID, good, 0, { size: 4 * B, version: 3 });
      await store.flush();
      await env.flip(HEX, 2 * B + 17);
      assert.deepEqual((await store.verify(OID)).map((b) => b.index), [2]);
      const block = (i: number) => good.slice(i * B, (i + 1) * B);
      const before = (await store.meta(OID))!;
      // Bytes that are not the block's last write (another copy's newer write): refused.
      assert.deepEqual(await store.healBlocks(OID, [{ index: 2, data: patternBytes(B, 9) }]), []);
      assert.deepEqual((await store.verify(OID)).map((b) => b.index), [2]);
      // A block out of range, or of the wrong length: ignored.
      assert.deepEqual(
        await store.healBlocks(OID, [{ index: 9, data: block(2) }, { index: 2, data: good }]),
        [],
      );
      // The block's own bytes: healed, nothing else moves.
      assert.deepEqual(await store.healBlocks(OID, [{ index: 2, data: block(2) }]), [2]);
      assert.deepEqual(await store.verify(OID), []);
      assert.deepEqual(await store.read(OID, 0, 4 * B), good);
      const after = (await store.meta(OID))!;
      assert.equal(after.version, before.version);
      assert.equal(after.digest, before.digest);
      // A write that reached the block first wins: the old bytes no longer match its checksum.
      await env.flip(HEX, B + 5);
      const written = patternBytes(B, 7);
      await store.write(OID, written, B, 4);
      assert.deepEqual(await store.healBlocks(OID, [{ index: 1, data: block(1) }]), []);
      assert.deepEqual(await store.read(OID, B, B), written);
    });
  });
}

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}) with verifyReads off (the benchmark's control) reads by the same paths, unchecked`, async () => {
    await withEnv(kind, async (env) => {
      const data = patternBytes(3 * B, 3);
      await env.store.create(OID, data, 0, { size: 3 * B, version: 1 });
      await env.store.create(0x1n, patternBytes(MIB4, 4), 0, { size: MIB4, version: 1 });
      await env.store.close();
      const store = new FsObjectStore(env.dir, env.disk, { verifyReads: false });
      await store.open();
      try {
        await store.read(OID, 0, 1); // open in the cache
        assert.deepEqual(store.readNow(OID, 10, B), data.subarray(10, 10 + B), "answered at once");
        await store.read(0x1n, 0, 1);
        assert.equal(store.readNow(0x1n, 0, MIB4), undefined, "a long read goes to the pool");
        assert.deepEqual(
          await store.read(0x1n, 5, MIB4 - 10),
          patternBytes(MIB4, 4).subarray(5, MIB4 - 5),
        );
        // Rot is not checked for: the bytes as they are on disk, and nothing counted.
        await env.flip(HEX, B + 5);
        const rotten = data.slice();
        rotten[B + 5]! ^= 0xff;
        assert.deepEqual(store.readNow(OID, 0, 3 * B), rotten);
        assert.deepEqual(await store.read(OID, B, 10), rotten.subarray(B, B + 10));
        assert.equal(store.health().checksumErrors, 0);
      } finally {
        await store.close();
      }
      env.store = new FsObjectStore(env.dir, env.disk);
      await env.store.open();
    });
  });
}
