import assert from "node:assert/strict";
import { decodeCopyList, encodeCopyList, type ListedCopy } from "./recovery.ts";

const plain = { version: 3, size: 8192, digest: "aa", verified: true };

Deno.test("GET_OBJ_LIST: a copy's lost blocks travel, with or without changed blocks", () => {
  const copies: ListedCopy[] = [
    { oid: 1n, meta: plain },
    { oid: 2n, meta: { ...plain, lostBlocks: [1, 4] } },
    {
      oid: 3n,
      meta: { ...plain, verified: false, changed: [{ block: 0, synced: null }], lostBlocks: [2] },
    },
    { oid: 4n, meta: { ...plain, verified: false, changed: [{ block: 5, synced: 7 }] } },
  ];
  assert.deepEqual(decodeCopyList(encodeCopyList(copies)), copies);
});

Deno.test("GET_OBJ_LIST: a row without lost blocks decodes as none lost", () => {
  const rows = JSON.stringify([
    ["1", 3, 8192, "aa", 1],
    ["2", 3, 8192, "aa", 0, [{ block: 5, synced: 7 }]],
  ]);
  const decoded = decodeCopyList(new TextEncoder().encode(rows));
  assert.equal(decoded[0]!.meta.lostBlocks, undefined);
  assert.deepEqual(decoded[1]!.meta, {
    version: 3,
    size: 8192,
    digest: "aa",
    verified: false,
    changed: [{ block: 5, synced: 7 }],
  });
});
