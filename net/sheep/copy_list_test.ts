import assert from "node:assert/strict";
import { ResultCode } from "../../core/errors.ts";
import {
  checkListFormat,
  decodeCopyList,
  encodeCopyList,
  encodeListFormat,
  type ListedCopy,
} from "./recovery.ts";

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

Deno.test("GET_OBJ_LIST: a node of another format is refused; no format, nothing to compare", () => {
  const mine = encodeListFormat(1796044388480);
  checkListFormat(mine, 1796044388480);
  checkListFormat(new Uint8Array(0), 1796044388480); // a lister without a config
  checkListFormat(mine, undefined); // a node not formatted yet holds nothing
  assert.throws(
    () => checkListFormat(encodeListFormat(1796044300000), 1796044388480),
    (error: Error & { code?: number }) =>
      error.code === ResultCode.INVALID_CTIME &&
      /^Copies not listed: this node's store is of the format of 2026-11-30T\S+, the asking node's of 2026-11-30T/
        .test(error.message),
  );
});
