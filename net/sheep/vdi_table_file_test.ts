/**
 * Goal: the VDI table a sheep keeps reads back as written, after a crash too (written whole and
 * renamed into place); a file that is cut short, rotten or not one at all is refused whole, never
 * read in part; no file reads as no headers. A change is written later, with those after it; a
 * clean close writes what is due, a crash's does not.
 */

import assert from "node:assert/strict";
import { MemDisk } from "../../core/store/mem_disk.ts";
import type { InodeHeader } from "../../core/vdi/inode.ts";
import { newInode } from "../../core/vdi/cow.ts";
import { decodeTable, encodeTable, VdiTableFile } from "./vdi_table_file.ts";

function headerOf(vid: number, name: string, fields: Partial<InodeHeader> = {}): InodeHeader {
  const { dataVdiId: _table, ...header } = newInode({
    name,
    vid,
    sizeBytes: 1 << 30,
    copies: 2,
    blockSizeShift: 22,
    nowMs: 1_700_000_000_000,
  });
  return { ...header, ...fields };
}

const HEADERS = [
  headerOf(0x10, "alpha"),
  headerOf(0x11, "alpha", { snapId: 2, parentVdiId: 0x10, tag: "before upgrade", snapCtime: 5n }),
  headerOf(0x7c2b25, "Bob's Disk", { vdiSize: 2 ** 40 }),
];

Deno.test("VdiTableFile: what is written reads back, whole, across a crash", async () => {
  const disk = new MemDisk();
  await disk.mkdir("/sheep");
  const file = new VdiTableFile("/sheep", { disk, table: () => [], warn: () => {} });
  assert.deepEqual(await file.read(), [], "no file: no headers");
  await file.write(HEADERS);
  disk.crash();
  const back = await new VdiTableFile("/sheep", { disk, table: () => [], warn: () => {} }).read();
  assert.deepEqual(back.map((h) => [h.vdiId, h.name, h.tag, h.vdiSize, h.snapId]), [
    [0x10, "alpha", "", 1 << 30, 1],
    [0x11, "alpha", "before upgrade", 1 << 30, 2],
    [0x7c2b25, "Bob's Disk", "", 2 ** 40, 1],
  ]);
  await file.write([HEADERS[0]!]);
  assert.equal((await file.read()).length, 1, "rewritten whole");
  await file.remove();
  assert.deepEqual(await file.read(), []);
  await file.remove(); // none: no error
});

Deno.test("VdiTableFile: a file cut short, rotten or foreign is refused whole", () => {
  const bytes = encodeTable(HEADERS);
  assert.equal(decodeTable(bytes, "t").length, 3);
  for (const cut of [3, 10, bytes.length - 1, bytes.length - 5]) {
    assert.throws(() => decodeTable(bytes.subarray(0, cut), "t"), /t: .*; not used/, `cut ${cut}`);
  }
  for (const at of [8, 20, bytes.length - 2]) {
    const rotten = bytes.slice();
    rotten[at]! ^= 0x10;
    assert.throws(() => decodeTable(rotten, "t"), /checksum|header of|not a VDI table/, `at ${at}`);
  }
  assert.throws(() => decodeTable(new TextEncoder().encode("{}"), "t"), /not a VDI table file/);
  assert.deepEqual(decodeTable(encodeTable([]), "t"), [], "an empty table");
});

Deno.test("VdiTableFile: changes share one write; a clean close writes what is due, a crash's not", async () => {
  const disk = new MemDisk();
  await disk.mkdir("/sheep");
  let table: InodeHeader[] = [HEADERS[0]!];
  const warnings: string[] = [];
  const options = { disk, table: () => table, warn: (line: string) => warnings.push(line) };
  const file = new VdiTableFile("/sheep", options);
  file.changed();
  table = HEADERS; // a second change before the write: the write takes the table as it is then
  file.changed();
  await file.close(true);
  assert.equal((await file.read()).length, 3);
  const crashed = new VdiTableFile("/sheep", options);
  table = [];
  crashed.changed();
  await crashed.close(false);
  assert.equal((await crashed.read()).length, 3, "not written");
  assert.deepEqual(warnings, []);
  // Removed after the write under way; a write that fails says so in one line.
  const removing = new VdiTableFile("/sheep", options);
  removing.changed();
  await removing.remove();
  await removing.close(true);
  assert.deepEqual(await removing.read(), [], "written empty, after the removal");
  const failing = new VdiTableFile("/nowhere", options);
  failing.changed();
  await failing.close(true);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /^cannot keep the VDI table in \/nowhere: /);
});

Deno.test("VdiTableFile: a lone change is written at once, not a delay later", async () => {
  // A sheep killed a moment after a VDI change kept it (before: only 100 ms later).
  const disk = new MemDisk();
  await disk.mkdir("/sheep");
  const file = new VdiTableFile("/sheep", { disk, table: () => HEADERS, warn: () => {} });
  file.changed();
  // One turn of the timers (the write's, set first, runs first), then a crash: the write is
  // under way and its close waits for it. With the write a delay later, nothing is written.
  await new Promise((resolve) => setTimeout(resolve, 0));
  await file.close(false);
  assert.equal((await file.read()).length, 3, "a crash right after it keeps it");
});
