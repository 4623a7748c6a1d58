// A repair's copy replaces only the copy the repair read (LocalObjects.create with `replacing`):
// a write that reached the copy since, from another gateway, is never lost under it (sim seed
// 18724: an acknowledged, flushed write gone from one copy).
import assert from "node:assert/strict";
import { withSheep } from "../../tests/harness.ts";
import { isResult, ResultCode } from "../../core/errors.ts";
import { dataOid } from "../../core/vdi/oid.ts";

const SIZE = 1 << 22;
const oid = dataOid(0x1234, 5);

Deno.test("a repair's copy is refused where the copy took a write since the repair read it", async () => {
  await withSheep(async ({ sheep }) => {
    const local = sheep.local;
    await local.create(oid, new Uint8Array(4096).fill(1), 0, { size: SIZE, version: 10 });
    const read = (await local.meta(oid))!;
    const repair = new Uint8Array(SIZE).fill(2);
    // The write and the repair's create arrive together: the create is checked after the write
    // (writes are held off while it looks), so it sees the write and refuses.
    const write = local.write(oid, new Uint8Array(4096).fill(3), 8192, 11);
    const refused = local.create(oid, repair, 0, {
      size: SIZE,
      version: 10,
      replacing: { version: read.version, digest: read.digest },
    });
    assert.equal(await write, 10);
    await assert.rejects(refused, (error) => {
      assert.ok(isResult(error, ResultCode.AGAIN), String(error));
      assert.match((error as Error).message, /changed since the repair read it \(now version 11\)/);
      return true;
    });
    assert.deepEqual(await local.read(oid, 8192, 4096), new Uint8Array(4096).fill(3));
    assert.equal((await local.meta(oid))!.version, 11);

    // The copy as it is now may be replaced.
    const now = (await local.meta(oid))!;
    await local.create(oid, repair, 0, {
      size: SIZE,
      version: 11,
      replacing: { version: now.version, digest: now.digest },
    });
    assert.deepEqual(await local.read(oid, 8192, 4096), new Uint8Array(4096).fill(2));

    // A repair that found no copy does not replace one that appeared since.
    await assert.rejects(
      local.create(oid, new Uint8Array(SIZE), 0, { size: SIZE, version: 12, replacing: null }),
      (error) => isResult(error, ResultCode.AGAIN) && /now version 11/.test(String(error)),
    );
    assert.deepEqual(await local.read(oid, 8192, 4096), new Uint8Array(4096).fill(2));
    // Nor a copy that is gone since.
    await local.remove(oid);
    await assert.rejects(
      local.create(oid, repair, 0, { size: SIZE, version: 12, replacing: now }),
      (error) => isResult(error, ResultCode.AGAIN) && /now gone/.test(String(error)),
    );
    assert.equal(await local.meta(oid), undefined);
    await local.create(oid, repair, 0, { size: SIZE, version: 12, replacing: null });
    assert.equal((await local.meta(oid))!.version, 12);
  });
});
