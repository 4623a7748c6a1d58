import assert from "node:assert/strict";
import { formatMapJson, mapExtents } from "./img_inspect.ts";
import { benchOffset, formatBenchResult } from "./img_bench.ts";

const OBJ = 4 << 20;

Deno.test("mapExtents() merges runs by data and depth, as qemu-img maps a raw device", () => {
  // Own (vid 5), own, hole, parent's (vid 3), hole up to a partial last object.
  const table = new Uint32Array([5, 5, 0, 3, 0]);
  const extents = mapExtents(table, 4 * OBJ + 4096, OBJ, [5, 3]);
  assert.deepEqual(extents.map((e) => [e.start / OBJ, e.length, e.depth, e.data, e.zero]), [
    [0, 2 * OBJ, 0, true, false],
    [2, OBJ, 0, false, true],
    [3, OBJ, 1, true, false],
    [4, 4096, 0, false, true],
  ]);
  // An owner off the chain (a deleted snapshot's object) is one level up.
  assert.equal(mapExtents(new Uint32Array([9]), OBJ, OBJ, [5])[0]!.depth, 1);
  assert.equal(
    formatMapJson(extents.slice(0, 1)),
    `[{ "start": 0, "length": ${2 * OBJ}, "depth": 0, "present": true, "zero": false, ` +
      `"data": true, "offset": 0}]`,
  );
});

Deno.test("benchOffset(): sequential wraps at the end, random stays aligned inside", () => {
  const options = { size: 4096, pattern: "seq" as const };
  assert.deepEqual([0, 1, 4, 5].map((n) => benchOffset(n, options, 4 * 4096)), [0, 4096, 0, 4096]);
  const random = { size: 4096, pattern: "rand" as const };
  assert.equal(benchOffset(0, random, 4 * 4096 + 100, () => 0.999), 3 * 4096);
  assert.equal(
    formatBenchResult({ ops: 10, bytes: 40960, elapsedMs: 2000, unallocatedReads: 0 }),
    "ops=10 ops/s=5.0 bytes/s=20480 elapsed=2.000",
  );
});
