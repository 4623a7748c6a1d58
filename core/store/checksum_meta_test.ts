import assert from "node:assert/strict";
import { blockChecksum, zeroChecksum } from "./block_checksum.ts";
import { blockCount, CHECKSUM_FORMAT, ChecksumMeta } from "./checksum_meta.ts";

Deno.test("ChecksumMeta round-trips version, size, flags and entries", () => {
  const meta = ChecksumMeta.create(3 * 4096 + 100, 2 ** 53 - 1);
  assert.equal(meta.bytes.length, 40 + 4 * 4);
  assert.equal(meta.format, CHECKSUM_FORMAT);
  assert.equal(meta.checksum(0), blockChecksum(new Uint8Array(4096)));
  assert.equal(meta.checksum(3), blockChecksum(new Uint8Array(100)), "a short last block");
  meta.setChecksum(1, 0xdeadbeef);
  meta.setUnverified(true);
  const parsed = ChecksumMeta.parse(meta.bytes.slice());
  assert.ok(parsed instanceof ChecksumMeta);
  assert.equal(parsed.version, 2 ** 53 - 1);
  assert.equal(parsed.size, 3 * 4096 + 100);
  assert.equal(parsed.unverified, true);
  assert.equal(parsed.checksum(1), 0xdeadbeef);
  assert.equal(parsed.digest(), meta.digest());
  assert.equal(blockCount(0), 0);
  assert.equal(zeroChecksum(4096), blockChecksum(new Uint8Array(4096)));
});

Deno.test("ChecksumMeta.parse names what is wrong", () => {
  const good = ChecksumMeta.create(8192, 1).bytes;
  const flipped = (at: number) => {
    const copy = good.slice();
    copy[at]! ^= 1;
    return copy;
  };
  assert.match(ChecksumMeta.parse(flipped(0)) as string, /magic/);
  assert.match(ChecksumMeta.parse(flipped(8)) as string, /header fails its checksum/);
  assert.match(ChecksumMeta.parse(good.subarray(0, 44)) as string, /44 bytes, not 48/);
  assert.match(ChecksumMeta.parse(good.subarray(0, 10)) as string, /shorter than its header/);
  assert.ok(
    ChecksumMeta.parse(flipped(40)) instanceof ChecksumMeta,
    "entries are checked by reads",
  );
});

Deno.test("ChecksumMeta digest depends on content, not version or flags", () => {
  const a = ChecksumMeta.create(8192, 1);
  const b = ChecksumMeta.create(8192, 9);
  b.setUnverified(true);
  assert.equal(a.digest(), b.digest());
  b.setChecksum(0, 1);
  assert.notEqual(a.digest(), b.digest());
  assert.notEqual(ChecksumMeta.create(4096, 1).digest(), ChecksumMeta.create(8192, 1).digest());
});

Deno.test("ChecksumMeta records bad blocks: they survive a parse, clear in place, stay out of the digest", () => {
  const plain = ChecksumMeta.create(5 * 4096, 3);
  const meta = ChecksumMeta.create(5 * 4096, 3, 0, [4, 1, 1, 9]);
  assert.deepEqual(meta.badBlocks, [1, 4], "deduplicated, sorted, inside the object");
  assert.equal(meta.bytes.length, 40 + 4 * 5 + 4 * 2);
  assert.equal(meta.digest(), plain.digest());
  const parsed = ChecksumMeta.parse(new Uint8Array(meta.bytes));
  assert.ok(parsed instanceof ChecksumMeta);
  assert.deepEqual(parsed.badBlocks, [1, 4]);
  assert.ok(parsed.isBad(4) && !parsed.isBad(0));
  assert.ok(parsed.clearBad(4));
  assert.ok(!parsed.clearBad(4));
  const again = ChecksumMeta.parse(new Uint8Array(parsed.bytes));
  assert.ok(again instanceof ChecksumMeta);
  assert.deepEqual(again.badBlocks, [1]);
  assert.equal(typeof ChecksumMeta.parse(meta.bytes.subarray(0, meta.bytes.length - 4)), "string");
});
