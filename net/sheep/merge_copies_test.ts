import assert from "node:assert/strict";
import { CHECKSUM_BLOCK_BYTES as B } from "../../core/limits.ts";
import { blockChecksum } from "../../core/store/block_checksum.ts";
import { mergeCopies, type MergeSource } from "./recovery.ts";

/** A two-block copy whose blocks are filled with `first` and `second`. */
function bytes(first: number, second: number): Uint8Array {
  const data = new Uint8Array(2 * B);
  data.fill(first, 0, B);
  data.fill(second, B);
  return data;
}

function copy(
  data: Uint8Array,
  version: number,
  changed: number[] | undefined,
  synced: [number, number][] = [],
): MergeSource {
  const known = new Map(synced);
  return {
    data,
    version,
    changed: changed?.map((block) => ({ block, synced: known.get(block) ?? null })),
  };
}

const block = (value: number) => blockChecksum(new Uint8Array(B).fill(value));

Deno.test("mergeCopies: a block unchanged on a newest copy comes from it", () => {
  const merged = mergeCopies([
    copy(bytes(1, 2), 9, [1]),
    copy(bytes(3, 4), 9, [0]),
  ]);
  assert.deepEqual(merged, { data: bytes(1, 4), lost: [] });
});

Deno.test("mergeCopies: an older copy's block is taken only where it has the newest copy's synced bytes", () => {
  // Block 0 changed on the newest copy (rot, say) and the older copy has what it had at its
  // sync: taken from the older one. Block 1 changed on the newest too, but the older copy's
  // block is older than that sync (a write the newest synced since): the newest's bytes stay.
  const merged = mergeCopies([
    copy(bytes(0xee, 7), 9, [0, 1], [[0, block(5)], [1, block(6)]]),
    copy(bytes(5, 4), 3, []),
  ]);
  assert.deepEqual(merged, { data: bytes(5, 7), lost: [] });
});

Deno.test("mergeCopies: with nothing known of a block, the best copy's bytes are taken", () => {
  const merged = mergeCopies([
    copy(bytes(1, 2), 9, undefined),
    copy(bytes(3, 4), 3, []),
  ]);
  assert.deepEqual(merged, { data: bytes(1, 2), lost: [] });
});

Deno.test("mergeCopies: a salvaged copy gives the blocks it vouches for, never its bad ones", () => {
  // Seed 5613 of the data-path simulation: rot changed block 0 of the only readable copy after
  // its last sync, and a crash's rebuild counted it changed; the other copy's checksums were left
  // unrebuilt (full disk), so it is salvaged: its block 0 matches its last sync (good), its block
  // 1 does not (bad, zeros). Block 0 comes from the salvaged copy, block 1 from the readable one.
  const merged = mergeCopies([
    copy(bytes(0xff, 7), 9, [0, 1], [[0, block(5)]]),
    { ...copy(bytes(5, 0), 0, undefined), bad: [1] },
  ]);
  assert.deepEqual(merged, { data: bytes(5, 7), lost: [] });
});

Deno.test("mergeCopies: a block bad on every copy is lost, with the checksum it should have", () => {
  const merged = mergeCopies([
    { ...copy(bytes(0, 7), 9, [0], [[0, block(5)]]), bad: [0] },
    { ...copy(bytes(0, 7), 0, undefined), bad: [0] },
  ]);
  assert.deepEqual(merged, { data: bytes(0, 7), lost: [{ block: 0, synced: block(5) }] });
});

Deno.test("mergeCopies: a block changed on every copy takes the bytes most of them hold", () => {
  // Seed 8440: an unsynced write landed on all three copies (0x0d) and rot then changed one of
  // them (0xff); the rotten one came first. Two copies that differ cannot be told apart.
  const changedEverywhere = (data: Uint8Array) => copy(data, 9, [0], [[0, block(1)]]);
  assert.deepEqual(
    mergeCopies([bytes(0xff, 7), bytes(0x0d, 7), bytes(0x0d, 7)].map(changedEverywhere)).data,
    bytes(0x0d, 7),
  );
  assert.deepEqual(
    mergeCopies([bytes(0xff, 7), bytes(0x0d, 7)].map(changedEverywhere)).data,
    bytes(0xff, 7),
  );
});
