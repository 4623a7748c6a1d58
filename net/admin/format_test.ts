import assert from "node:assert/strict";
import { formatSize, formatVdiLine, formatVdiTree, formatVmTable, parseSize } from "./format.ts";
import type { VdiRow } from "./admin_service.ts";

function row(fields: Partial<VdiRow>): VdiRow {
  return {
    name: "Alice's Disk",
    vid: 0x40000,
    sizeBytes: 256 * 2 ** 30,
    allocatedBytes: 0,
    sharedBytes: 0,
    createdMs: new Date(2009, 9, 15, 16, 17, 18).getTime(),
    snapshotMs: 0,
    snapId: 1,
    tag: "",
    snapshot: false,
    parentVid: 0,
    copies: 3,
    blockSizeShift: 22,
    ...fields,
  };
}

Deno.test("parseSize() takes binary suffixes and refuses junk", () => {
  assert.equal(parseSize("256G"), 256 * 2 ** 30);
  assert.equal(parseSize("10m"), 10 * 2 ** 20);
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("1.5K"), 1536);
  assert.equal(parseSize("2TiB"), 2 * 2 ** 40);
  assert.throws(() => parseSize("lots"), RangeError);
  assert.throws(() => parseSize("-1G"), RangeError);
  assert.equal(formatSize(256 * 2 ** 30), "256 GB");
});

Deno.test("formatVdiLine() prints the seed's format", () => {
  assert.equal(
    formatVdiLine(row({})),
    "40000 : Alice's Disk  256 GB (allocated: 0 MB, shared: 0 MB), 2009-10-15 16:17:18, tag:        0, current",
  );
});

Deno.test("formatVdiTree() draws snapshots, branches and you-are-here", () => {
  const t1 = new Date(2009, 9, 16, 10, 2, 31).getTime();
  const t2 = new Date(2009, 9, 16, 10, 5, 0).getTime();
  const rows = [
    row({ vid: 1, snapshot: true, snapshotMs: t1 }),
    row({ vid: 2, snapshot: true, snapshotMs: t2, parentVid: 1, snapId: 2 }),
    row({ vid: 3, parentVid: 2, snapId: 3 }),
    row({ vid: 9, name: "Charlie's Disk", parentVid: 1 }),
  ];
  assert.equal(
    formatVdiTree(rows),
    "Alice's Disk---[09-10-16 10:02:31]-+-[09-10-16 10:05:00]---(You Are Here)\n" +
      "                                   `-Charlie's Disk---(You Are Here)",
  );
});

Deno.test("formatVmTable() shows attachment", () => {
  const text = formatVmTable([
    row({ attachedTo: "127.0.0.1:40122" }),
    row({ vid: 2, snapshot: true }),
  ]);
  assert.equal(
    text,
    "Name         | Vdi size | Allocated | Shared | Status\n" +
      "Alice's Disk | 256 GB   | 0 MB      | 0 MB   | running on 127.0.0.1",
  );
});
