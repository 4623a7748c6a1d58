import assert from "node:assert/strict";
import { concatBytes } from "../bytes.ts";
import { DiffParser, memorySource } from "../format/rbd_diff.ts";
import { newInode, snapshotInodes } from "./cow.ts";
import { changedExtents, encodeVdiDiff, type Extent } from "./diff.ts";
import type { Inode } from "./inode.ts";
import { dataOid, type Oid } from "./oid.ts";

const SHIFT = 20;
const OBJ = 1 << SHIFT;
const BLOCK = 4096;

/** Data objects in memory, counting reads per object. */
class Objects {
  readonly map = new Map<Oid, Uint8Array>();
  readonly reads: Oid[] = [];

  readObject(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    this.reads.push(oid);
    const object = this.map.get(oid);
    if (!object) return Promise.reject(new Error(`no object ${oid.toString(16)}`));
    return Promise.resolve(object.slice(offset, offset + length));
  }
}

function filled(byte: number, length = OBJ): Uint8Array {
  return new Uint8Array(length).fill(byte);
}

/** The working VDI `vid` of 4 objects; index i owned by `owners[i]` (0: unallocated). */
function working(vid: number, sizeBytes = 4 * OBJ): Inode {
  return newInode({ name: "d", vid, sizeBytes, copies: 1, blockSizeShift: SHIFT, nowMs: 1 });
}

/** Everything `inode` reads, byte for byte. */
function contents(objects: Objects, inode: Inode): Uint8Array {
  const bytes = new Uint8Array(inode.vdiSize);
  for (let index = 0; index * OBJ < inode.vdiSize; index++) {
    const owner = inode.dataVdiId[index]!;
    if (owner === 0) continue;
    const end = Math.min(OBJ, inode.vdiSize - index * OBJ);
    bytes.set(objects.map.get(dataOid(owner, index))!.subarray(0, end), index * OBJ);
  }
  return bytes;
}

async function collect(
  objects: Objects,
  from: Inode | undefined,
  to: Inode,
): Promise<Omit<Extent, "data">[]> {
  const extents: Omit<Extent, "data">[] = [];
  for await (const { offset, length, zero } of changedExtents(objects, { from, to })) {
    extents.push({ offset, length, zero });
  }
  return extents;
}

/** A family: v1 written, snapshotted, then v2 changed by copy-on-write, discard and create. */
function family() {
  const objects = new Objects();
  const first = working(1);
  objects.map.set(dataOid(1, 0), filled(0xaa));
  objects.map.set(dataOid(1, 1), filled(0xbb));
  const third = new Uint8Array(OBJ); // index 3: one data block, zeros elsewhere
  third.set(filled(0xdd, BLOCK), 7 * BLOCK);
  objects.map.set(dataOid(1, 3), third);
  first.dataVdiId.set([1, 1, 0, 1]);
  const { frozen, next } = snapshotInodes(first, { newVid: 2, tag: "monday", nowMs: 2 });
  // Index 0: copied on write, block 5 changed and block 9 zeroed.
  const changed = filled(0xaa);
  changed.fill(0x11, 5 * BLOCK, 6 * BLOCK);
  changed.fill(0, 9 * BLOCK, 10 * BLOCK);
  objects.map.set(dataOid(2, 0), changed);
  // Index 1: discarded. Index 2: created, with one data block. Index 3: unchanged.
  const created = new Uint8Array(OBJ);
  created.fill(0x22, 0, BLOCK);
  objects.map.set(dataOid(2, 2), created);
  next.dataVdiId.set([2, 0, 2, 1]);
  return { objects, monday: frozen, now: next };
}

Deno.test("an incremental diff has only the changed blocks and never reads unchanged objects", async () => {
  const { objects, monday, now } = family();
  assert.deepEqual(await collect(objects, monday, now), [
    { offset: 5 * BLOCK, length: BLOCK, zero: false },
    { offset: 9 * BLOCK, length: BLOCK, zero: true },
    { offset: OBJ, length: OBJ, zero: true }, // discarded: zeros, not read
    { offset: 2 * OBJ, length: BLOCK, zero: false }, // new object: its zeros need no record
  ]);
  const read = new Set(objects.reads);
  assert.ok(read.has(dataOid(1, 0)) && read.has(dataOid(2, 0)), "index 0, old and new");
  assert.ok(read.has(dataOid(2, 2)), "index 2, new");
  assert.ok(!read.has(dataOid(1, 3)), "index 3 is the same object in both: not read");
  assert.ok(!read.has(dataOid(1, 1)), "index 1 is gone: not read");
  assert.equal(objects.reads.length, 3);
});

Deno.test("a diff since creation has every data block, zero runs left out", async () => {
  const { objects, now } = family();
  assert.deepEqual(await collect(objects, undefined, now), [
    { offset: 0, length: 9 * BLOCK, zero: false },
    { offset: 10 * BLOCK, length: OBJ - 10 * BLOCK, zero: false },
    { offset: 2 * OBJ, length: BLOCK, zero: false },
    { offset: 3 * OBJ + 7 * BLOCK, length: BLOCK, zero: false },
  ]);
});

Deno.test("adjacent discarded objects make one zero record; a partial last object is clipped", async () => {
  const objects = new Objects();
  const size = 3 * OBJ + 5000;
  const first = working(1, size);
  for (let index = 0; index < 4; index++) objects.map.set(dataOid(1, index), filled(0x5a));
  first.dataVdiId.set([1, 1, 1, 1]);
  const { frozen, next } = snapshotInodes(first, { newVid: 2, tag: "t", nowMs: 2 });
  next.dataVdiId.set([1, 0, 0, 0]);
  assert.deepEqual(await collect(objects, frozen, next), [
    { offset: OBJ, length: 2 * OBJ + 5000, zero: true },
  ]);
  // Data records stay per object (a record's bytes are held in memory until written).
  assert.deepEqual(await collect(objects, undefined, frozen), [
    { offset: 0, length: OBJ, zero: false },
    { offset: OBJ, length: OBJ, zero: false },
    { offset: 2 * OBJ, length: OBJ, zero: false },
    { offset: 3 * OBJ, length: 5000, zero: false },
  ]);
});

/** Applies an encoded diff to `image` the way import-diff does, checking it as it goes. */
async function applyTo(image: Uint8Array, diff: Uint8Array): Promise<void> {
  const parser = new DiffParser(memorySource(diff), "x");
  await parser.readHeader();
  for (let record = await parser.next(); record; record = await parser.next()) {
    if (record.kind === "z") image.fill(0, record.offset, record.offset + record.length);
    else image.set(await parser.readData(record.length), record.offset);
  }
}

async function encode(objects: Objects, from: Inode | undefined, to: Inode): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const header = {
    from: from?.tag,
    to: to.tag === "" ? undefined : to.tag,
    size: to.vdiSize,
  };
  for await (const chunk of encodeVdiDiff(objects, { from, to, header })) chunks.push(chunk);
  return concatBytes(chunks);
}

Deno.test("a full diff then an incremental one rebuild the newer version byte for byte", async () => {
  const { objects, monday, now } = family();
  const image = new Uint8Array(now.vdiSize);
  await applyTo(image, await encode(objects, undefined, monday));
  assert.deepEqual(image, contents(objects, monday));
  await applyTo(image, await encode(objects, monday, now));
  assert.deepEqual(image, contents(objects, now));
});

Deno.test("random changes over several snapshots: every diff chain rebuilds its target", async () => {
  let seed = 12345;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const objects = new Objects();
  let current = working(1, 6 * OBJ);
  let vid = 1;
  const snapshots: Inode[] = [];
  for (let day = 0; day < 4; day++) {
    for (let change = 0; change < 8; change++) {
      const index = random(6);
      const owner = current.dataVdiId[index]!;
      if (random(5) === 0) {
        current.dataVdiId[index] = 0; // a discard
        continue;
      }
      const object = owner === 0 ? new Uint8Array(OBJ) : objects.map.get(dataOid(owner, index))!;
      const copy = owner === current.vdiId ? object : object.slice();
      const at = random(OBJ / BLOCK) * BLOCK;
      copy.fill(random(3) === 0 ? 0 : 1 + random(255), at, at + BLOCK * (1 + random(3)));
      objects.map.set(dataOid(current.vdiId, index), copy);
      current.dataVdiId[index] = current.vdiId;
    }
    const { frozen, next } = snapshotInodes(current, { newVid: ++vid, tag: `day${day}`, nowMs: 2 });
    snapshots.push(frozen);
    current = next;
  }
  const image = new Uint8Array(current.vdiSize);
  await applyTo(image, await encode(objects, undefined, snapshots[0]!));
  for (let day = 1; day < snapshots.length; day++) {
    await applyTo(image, await encode(objects, snapshots[day - 1]!, snapshots[day]!));
    assert.deepEqual(image, contents(objects, snapshots[day]!), `day ${day}`);
  }
  // Skipping days works too: day0 straight to day3.
  const skipped = new Uint8Array(current.vdiSize);
  await applyTo(skipped, await encode(objects, undefined, snapshots[0]!));
  await applyTo(skipped, await encode(objects, snapshots[0]!, snapshots[3]!));
  assert.deepEqual(skipped, contents(objects, snapshots[3]!));
});
