import assert from "node:assert/strict";
import { ResultCode } from "../errors.ts";
import { CHECKSUM_BLOCK_BYTES as B } from "../limits.ts";
import { oidToHex } from "../vdi/oid.ts";
import { zeroChecksum } from "./block_checksum.ts";
import { isError, KINDS, patternBytes, withEnv } from "./store_test_env.ts";

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}): salvage keeps the good blocks of a rotten copy and names the bad ones`, async () => {
    await withEnv(kind, async (env) => {
      const data = patternBytes(8 * B, 3);
      await env.store.create(7n, data, 0, { size: 8 * B, version: 4 });
      await env.store.flush();
      await env.flip(oidToHex(7n), 5 * B + 9);
      const { data: salvaged, badBlocks } = await env.store.salvage(7n);
      assert.deepEqual(badBlocks, [5]);
      assert.deepEqual(salvaged.subarray(0, 5 * B), data.subarray(0, 5 * B));
      assert.deepEqual(salvaged.subarray(5 * B, 6 * B), new Uint8Array(B), "a bad block is zeros");
      assert.deepEqual(salvaged.subarray(6 * B), data.subarray(6 * B));

      // A copy created from the salvage keeps block 5 bad: reading it is an I/O error.
      await env.store.create(8n, salvaged, 0, { size: 8 * B, version: 4, badBlocks });
      assert.deepEqual(await env.store.read(8n, 0, 5 * B), data.subarray(0, 5 * B));
      await assert.rejects(env.store.read(8n, 5 * B, 10), isError(ResultCode.EIO));
      assert.deepEqual((await env.store.verify(8n)).map((b) => b.index), [5]);
      assert.equal((await env.store.meta(8n))?.version, 4);
      // Its meta names the lost block (recovery looks for it elsewhere); a rotten copy's does
      // not (its rot is unknown until read).
      assert.deepEqual((await env.store.meta(8n))?.lostBlocks, [5]);
      assert.equal((await env.store.meta(7n))?.lostBlocks, undefined);
      // Written whole, the block is no longer lost.
      await env.store.write(8n, data.subarray(5 * B, 6 * B), 5 * B, 5);
      assert.equal((await env.store.meta(8n))?.lostBlocks, undefined);
    });
  });
}

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}): a small write into a rotten block fails and never blesses the rot`, async () => {
    await withEnv(kind, async (env) => {
      const data = patternBytes(4 * B, 5);
      await env.store.create(9n, data, 0, { size: 4 * B, version: 1 });
      await env.store.flush();
      await env.flip(oidToHex(9n), 2 * B + 100);
      await assert.rejects(
        env.store.write(9n, new Uint8Array([1, 2, 3]), 2 * B + 7, 2),
        isError(ResultCode.EIO, /fails its checksum/),
      );
      await assert.rejects(env.store.read(9n, 2 * B, B), isError(ResultCode.EIO));
      assert.equal((await env.store.meta(9n))?.version, 1, "the version did not move");
      // A whole-block write replaces the bad block: it is good again.
      await env.store.write(9n, patternBytes(B, 6), 2 * B, 3);
      assert.deepEqual(await env.store.read(9n, 2 * B, B), patternBytes(B, 6));
    });
  });
}

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}): a salvaged copy's bad block stays unreadable even when zeros match the checksum it should have`, async () => {
    await withEnv(kind, async (env) => {
      // Block 2 was all zeros when last synced (say, an inode table block never written): the
      // checksum it should have is the checksum of a zero block, which is what salvage fills it with.
      const data = patternBytes(4 * B, 7);
      data.fill(0, 2 * B, 3 * B);
      await env.store.create(7n, data, 0, { size: 4 * B, version: 5 });
      await env.store.flush();
      await env.flip(oidToHex(7n), 2 * B + 11);
      const salvaged = await env.store.salvage(7n);
      assert.deepEqual(salvaged.badBlocks, [2]);
      assert.deepEqual(salvaged.expected, [zeroChecksum(B)]);

      // The copy made from it: block 2 holds zeros and has the zero block's checksum, but its
      // real content is unknown: reading it must fail, never return zeros.
      await env.store.create(8n, salvaged.data, 0, {
        size: 4 * B,
        version: 5,
        badBlocks: salvaged.badBlocks,
        expected: salvaged.expected,
      });
      assert.deepEqual(await env.store.read(8n, 0, 2 * B), data.subarray(0, 2 * B));
      await assert.rejects(env.store.read(8n, 2 * B, 10), isError(ResultCode.EIO));
      await assert.rejects(env.store.read(8n, 0, 4 * B), isError(ResultCode.EIO));
      assert.deepEqual((await env.store.verify(8n)).map((b) => b.index), [2]);
      // A small write next to it must not bless it either.
      await assert.rejects(env.store.write(8n, new Uint8Array([1]), 2 * B + 5, 6));
      // Salvaging the copy again names the block and the checksum it should have.
      const again = await env.store.salvage(8n);
      assert.deepEqual(again.badBlocks, [2]);
      assert.deepEqual(again.expected, [zeroChecksum(B)]);
      assert.equal((await env.store.meta(8n))?.digest, (await env.store.meta(7n))?.digest);

      // It stays bad across a restart, and across a crash-style checksum rebuild.
      await env.store.flush();
      await env.reopen();
      await assert.rejects(env.store.read(8n, 2 * B, 10), isError(ResultCode.EIO));
      await env.store.write(8n, patternBytes(10, 8), 0, 7); // journals it
      await env.store.flush();
      await env.reopen();
      await assert.rejects(env.store.read(8n, 2 * B, 10), isError(ResultCode.EIO));

      // Filled from a good copy (a create of the whole object, or a write of the whole block):
      // it reads again.
      await env.store.create(9n, again.data, 0, {
        size: 4 * B,
        version: 5,
        badBlocks: again.badBlocks,
        expected: again.expected,
      });
      await env.store.create(8n, data, 0, { size: 4 * B, version: 5 });
      assert.deepEqual(await env.store.read(8n, 0, 4 * B), data);
      await env.store.write(9n, new Uint8Array(B), 2 * B, 6);
      assert.deepEqual(await env.store.read(9n, 2 * B, B), new Uint8Array(B));
      assert.deepEqual(await env.store.verify(9n), []);
      await env.store.flush();
      await env.reopen();
      assert.deepEqual(await env.store.read(9n, 0, 4 * B), data);
    });
  });
}
