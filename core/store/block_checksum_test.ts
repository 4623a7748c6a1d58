import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { xxhash64 } from "hash-wasm";
import {
  assembleBlockChecksum,
  blockChecksumSource,
} from "../../scripts/gen_block_checksum_wasm.ts";
import { CHECKSUM_BLOCK_BYTES as B } from "../limits.ts";
import { blockChecksum, blockChecksums, zeroChecksum } from "./block_checksum.ts";

/** The reference: the low 32 bits of XXH64 (seed 0), from hash-wasm's implementation. */
async function reference(bytes: Uint8Array): Promise<number> {
  return parseInt((await xxhash64(bytes)).slice(8), 16);
}

function random(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(length, at + 65536)));
  }
  return bytes;
}

Deno.test("blockChecksum is XXH64's low 32 bits for every length up to a block", async () => {
  const bytes = random(B);
  // Every tail path of XXH64: under 32 bytes, whole stripes, 8-, 4- and 1-byte tails.
  const lengths = [...Array(300).keys(), 1023, 1024, 1025, 4063, 4064, 4065, B - 1, B];
  for (const length of lengths) {
    const block = bytes.subarray(0, length);
    assert.equal(blockChecksum(block), await reference(block), `${length} bytes`);
  }
  // Views at any offset of any buffer.
  const unaligned = bytes.subarray(3, 3 + 1000);
  assert.equal(blockChecksum(unaligned), await reference(unaligned));
});

Deno.test("blockChecksums hashes each block, across the module's 1 MiB scratch and a short tail", async () => {
  for (const length of [0, 1, B, B + 1, 1 << 20, (1 << 20) + B, 3 * (1 << 20) + 5 * B + 77]) {
    const bytes = random(length);
    const sums = blockChecksums(bytes);
    assert.equal(sums.length, Math.ceil(length / B));
    for (let index = 0; index < sums.length; index++) {
      const block = bytes.subarray(index * B, (index + 1) * B);
      assert.equal(sums[index], await reference(block), `${length} bytes, block ${index}`);
    }
  }
});

Deno.test("a flipped bit changes the checksum; zeroChecksum is that of zeros", () => {
  const block = random(B);
  const before = blockChecksum(block);
  for (const bit of [0, 7, 8 * 2048 + 3, 8 * B - 1]) {
    block[bit >> 3]! ^= 1 << (bit & 7);
    assert.notEqual(blockChecksum(block), before, `bit ${bit}`);
    block[bit >> 3]! ^= 1 << (bit & 7);
  }
  assert.equal(zeroChecksum(B), blockChecksum(new Uint8Array(B)));
  assert.equal(zeroChecksum(100), blockChecksum(new Uint8Array(100)));
  assert.throws(() => blockChecksum(new Uint8Array(B + 1)), /a block of 4097 bytes/);
});

Deno.test("block_checksum_wasm.ts is what block_checksum.wat assembles to (regenerate it if not)", () => {
  const committed = readFileSync(new URL("./block_checksum_wasm.ts", import.meta.url), "utf8");
  assert.equal(
    committed.replace(/\s+/g, ""),
    blockChecksumSource(assembleBlockChecksum()).replace(/\s+/g, ""),
    "run: deno run -A scripts/gen_block_checksum_wasm.ts && deno fmt core/store",
  );
});
