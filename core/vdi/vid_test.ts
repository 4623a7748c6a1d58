import assert from "node:assert/strict";
import { probeChain, VdiBitmap, vidHash } from "./vid.ts";

Deno.test("vidHash() matches Sheepdog's vectors", () => {
  assert.equal(vidHash("test"), 0x7c2b25);
  assert.equal(vidHash("alpha"), 0xed202b);
});

Deno.test("VdiBitmap.firstFreeFrom() probes linearly and wraps past the end", () => {
  const bitmap = new VdiBitmap();
  bitmap.set(0x7c2b25);
  bitmap.set(0x7c2b26);
  assert.equal(bitmap.firstFreeFrom(0x7c2b25), 0x7c2b27);
  bitmap.set(0xffffff);
  assert.equal(bitmap.firstFreeFrom(0xffffff), 1);
  assert.deepEqual([...bitmap.inUse()], [0x7c2b25, 0x7c2b26, 0xffffff]);
});

Deno.test("probeChain() lists the used run from the hash, newest first", () => {
  const bitmap = new VdiBitmap();
  for (const vid of [0x7c2b25, 0x7c2b26, 0x7c2b27]) bitmap.set(vid);
  assert.deepEqual(probeChain(bitmap, "test"), [0x7c2b27, 0x7c2b26, 0x7c2b25]);
  assert.deepEqual(probeChain(bitmap, "alpha"), []);
});

Deno.test("VdiBitmap rejects a bitmap of the wrong size", () => {
  assert.throws(() => new VdiBitmap(new Uint8Array(10)), RangeError);
});
