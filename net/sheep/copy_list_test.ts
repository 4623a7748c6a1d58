import assert from "node:assert/strict";
import { decodeCopyList, encodeCopyList, type ListedCopy } from "./recovery.ts";

const plain = { version: 3, size: 8192, digest: "aa", verified: true };

Deno.test("GET_OBJ_LIST: a copy's lost blocks travel, with or without changed blocks", () => {
  const copies: ListedCopy[] = [
    { oid: 1n, meta: plain },
    { oid: 2n, meta: { ...plain, lostBlocks: [1, 4] } },
    {
      oid: 3n,
      meta: {
        ...plain,
        verified: false,
        changedBlocks: [0],
        syncedChecksums: [null],
        lostBlocks: [2],
      },
    },
    { oid: 4n, meta: { ...plain, verified: false, changedBlocks: [5], syncedChecksums: [7] } },
  ];
  assert.deepEqual(decodeCopyList(encodeCopyList(copies)), copies);
});

Deno.test("GET_OBJ_LIST: a row of an older build (no lost blocks) decodes as none lost", () => {
  const rows = JSON.stringify([["1", 3, 8192, "aa", 1], ["2", 3, 8192, "aa", 0, [5], [7]]]);
  const decoded = decodeCopyList(new TextEncoder().encode(rows));
  assert.equal(decoded[0]!.meta.lostBlocks, undefined);
  assert.deepEqual(decoded[1]!.meta, {
    version: 3,
    size: 8192,
    digest: "aa",
    verified: false,
    changedBlocks: [5],
    syncedChecksums: [7],
  });
});
