import assert from "node:assert/strict";
import { decodeSalvaged, encodeSalvaged } from "./salvaged_copy.ts";

Deno.test("a salvaged copy round-trips with its bad blocks and its uncertain blocks", () => {
  const data = new Uint8Array(8192).map((_, i) => i % 251);
  const copy = {
    data,
    badBlocks: [1],
    expected: [0xdeadbeef],
    changed: [{ block: 0, synced: 0xfffffffe }, { block: 1, synced: null }],
  };
  const decoded = decodeSalvaged(encodeSalvaged(copy));
  assert.deepEqual(decoded.badBlocks, [1]);
  assert.deepEqual(decoded.expected, [0xdeadbeef]);
  assert.deepEqual(decoded.changed, copy.changed);
  assert.deepEqual(decoded.data, data);
});

Deno.test("a copy whose uncertain blocks are not known decodes without a list", () => {
  const data = new Uint8Array(4096).fill(7);
  const decoded = decodeSalvaged(encodeSalvaged({ data, badBlocks: [], expected: [] }));
  assert.equal(decoded.changed, undefined);
  assert.deepEqual(decoded.data, data);
  const none = decodeSalvaged(
    encodeSalvaged({ data, badBlocks: [], expected: [], changed: [] }),
  );
  assert.deepEqual(none.changed, []);
});

Deno.test("a truncated salvaged copy is refused, not read past its end", () => {
  const bytes = encodeSalvaged({
    data: new Uint8Array(0),
    badBlocks: [2, 3],
    expected: [1, undefined],
    changed: [{ block: 5, synced: 1 }, { block: 6, synced: 2 }, { block: 7, synced: null }],
  });
  for (const length of [0, 3, 4 + 9 * 2, 4 + 9 * 2 + 4 + 9 * 3 - 1]) {
    assert.throws(() => decodeSalvaged(bytes.subarray(0, length)), /Malformed salvaged copy/);
  }
  const huge = new Uint8Array(8);
  new DataView(huge.buffer).setUint32(4, 1000, true); // 1,000 changed blocks announced, none sent
  assert.throws(() => decodeSalvaged(huge), /Malformed salvaged copy/);
});

Deno.test("the copy a repair replaces travels with it: a version and digest, none, or no condition", () => {
  const data = new Uint8Array(4096).fill(9);
  const base = { data, badBlocks: [3], expected: [7] };
  for (
    const replacing of [
      { version: 2 ** 52 + 12345, digest: "unrebuilt:0123456789abcdef0123456789abcdef01234567" },
      null,
      undefined,
    ]
  ) {
    const decoded = decodeSalvaged(encodeSalvaged({ ...base, replacing }));
    assert.deepEqual(decoded.replacing, replacing);
    assert.deepEqual(decoded.badBlocks, [3]);
    assert.deepEqual(decoded.data, data);
  }
  const bytes = encodeSalvaged({ ...base, replacing: { version: 5, digest: "abc" } });
  const condition = 4 + 9 + 4;
  for (const length of [condition, condition + 9, condition + 12]) {
    assert.throws(() => decodeSalvaged(bytes.subarray(0, length)), /Malformed salvaged copy/);
  }
  const unknown = bytes.slice();
  unknown[condition] = 7;
  assert.throws(() => decodeSalvaged(unknown), /Malformed salvaged copy/);
});
