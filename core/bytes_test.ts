import assert from "node:assert/strict";
import { isZero } from "./bytes.ts";

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
