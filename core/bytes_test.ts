import assert from "node:assert/strict";
import { ByteSlab, equalBytes, isZero, nonZeroRanges, trimTrailingZeros } from "./bytes.ts";

Deno.test("isZero() answers for views at any offset and length", () => {
  const buffer = new Uint8Array(256);
  for (let start = 0; start < 17; start++) {
    for (const length of [0, 1, 7, 8, 9, 63, 64, 100]) {
      const view = buffer.subarray(start, start + length);
      assert.equal(isZero(view), true, `zeros at ${start}+${length}`);
      for (let at = 0; at < length; at++) {
        view[at] = 1;
        assert.equal(isZero(view), false, `a one at ${at} of ${start}+${length}`);
        view[at] = 0;
      }
    }
  }
});

Deno.test("isZero() and trimTrailingZeros() see a byte anywhere in buffers longer than one compare", () => {
  // Longer than the 64 KiB of zeros the helpers compare with: the pieces, their seams, the tail.
  const bytes = new Uint8Array(4 * 65536 + 13);
  const view = bytes.subarray(3); // not at the start of its buffer
  assert.equal(isZero(view), true);
  assert.equal(trimTrailingZeros(view).length, 0);
  for (const at of [0, 65535, 65536, 65537, 131071, 3 * 65536 + 5, view.length - 1]) {
    view[at] = 7;
    assert.equal(isZero(view), false, `a byte at ${at}`);
    assert.equal(trimTrailingZeros(view).length, at + 1, `trimmed after ${at}`);
    view[at] = 0;
  }
  view[10] = 1;
  view[70000] = 2;
  assert.equal(trimTrailingZeros(view).length, 70001, "the last non-zero byte ends it");
});

Deno.test("equalBytes() compares views, lengths first", () => {
  const a = new Uint8Array([9, 1, 2, 3, 9]);
  const b = new Uint8Array([1, 2, 3]);
  assert.equal(equalBytes(a.subarray(1, 4), b), true);
  assert.equal(equalBytes(a.subarray(1, 5), b), false);
  assert.equal(equalBytes(a.subarray(0, 3), b), false);
  assert.equal(equalBytes(new Uint8Array(0), new Uint8Array(0)), true);
});

Deno.test("ByteSlab: short pieces share a slab without overlapping; long ones get their own buffer", () => {
  const slab = new ByteSlab();
  const a = slab.take(4096);
  const b = slab.take(100);
  const c = slab.take(4096);
  assert.equal(a.length, 4096);
  assert.equal(a.buffer, c.buffer, "cut from one slab");
  assert.ok(a.byteOffset + a.length <= b.byteOffset && b.byteOffset + 104 <= c.byteOffset);
  assert.equal(c.byteOffset % 8, 0, "8-byte aligned");
  a.fill(1);
  c.fill(3);
  b.fill(2);
  assert.ok(a.every((x) => x === 1) && c.every((x) => x === 3));
  const long = slab.take(ByteSlab.PIECE_MAX + 1);
  assert.equal(long.byteOffset, 0);
  assert.equal(long.buffer.byteLength, ByteSlab.PIECE_MAX + 1, "its own: it may move to a worker");
  // A slab that cannot fit the next piece is replaced; the pieces already handed out stay.
  const pieces = Array.from({ length: ByteSlab.SLAB_BYTES / 4096 + 1 }, () => slab.take(4096));
  assert.notEqual(pieces[0]!.buffer, pieces[pieces.length - 1]!.buffer);
});

Deno.test("nonZeroRanges() names the file blocks that hold anything but zeros, neighbours joined", () => {
  const B = 4096;
  const bytes = new Uint8Array(6 * B);
  assert.deepEqual(nonZeroRanges(bytes, 0, B), []);
  bytes[B + 7] = 1; // block 1
  bytes[2 * B] = 2; // block 2: joined to block 1
  bytes[5 * B - 1] = 3; // block 4
  assert.deepEqual(nonZeroRanges(bytes, 0, B), [
    { start: B, end: 3 * B },
    { start: 4 * B, end: 5 * B },
  ]);
  // Written at 100 bytes into a block: ranges follow the file's blocks, not the array's.
  const at = 100;
  const ranges = nonZeroRanges(bytes, at, B);
  assert.deepEqual(ranges, [
    { start: B - at, end: 3 * B - at },
    { start: 5 * B - at, end: 6 * B - at }, // the last byte of block 4 is in the file's block 5
  ]);
  // A view into a larger buffer, a short tail.
  const outer = new Uint8Array(B + 10);
  outer[B + 9] = 9;
  assert.deepEqual(nonZeroRanges(outer.subarray(5), 0, B), [{ start: B, end: B + 5 }]);
  // What the ranges leave out is zeros, so the file reads the same.
  const file = new Uint8Array(at + bytes.length);
  for (const r of ranges) file.set(bytes.subarray(r.start, r.end), at + r.start);
  assert.deepEqual(file.subarray(at), bytes);
});
