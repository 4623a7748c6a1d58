/**
 * HEAL_BLOCKS_PEER on the wire, little-endian as the rest of the protocol. Request: u32 n; n ×
 * (u32 block index, u32 length); then the n blocks' bytes one after the other. Reply: u32 m;
 * m × u32 the indexes of the blocks rewritten (`ObjectStore.healBlocks`).
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { CHECKSUM_BLOCK_BYTES } from "../../core/limits.ts";
import type { HealedBlock } from "../../core/store/object_store.ts";

export function encodeHealBlocks(blocks: readonly HealedBlock[]): Uint8Array {
  const head = 4 + 8 * blocks.length;
  const bytes = new Uint8Array(head + blocks.reduce((sum, b) => sum + b.data.length, 0));
  const view = new DataView(bytes.buffer);
  view.setUint32(0, blocks.length, true);
  let at = head;
  blocks.forEach(({ index, data }, i) => {
    view.setUint32(4 + 8 * i, index, true);
    view.setUint32(8 + 8 * i, data.length, true);
    bytes.set(data, at);
    at += data.length;
  });
  return bytes;
}

export function decodeHealBlocks(bytes: Uint8Array): HealedBlock[] {
  const malformed = (why: string) =>
    new SheepdogError(ResultCode.INVALID_PARMS, `Malformed block heal: ${why}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) throw malformed("no count");
  const n = view.getUint32(0, true);
  const head = 4 + 8 * n;
  if (head > bytes.length) throw malformed(`${n} blocks announced in ${bytes.length} bytes`);
  const blocks: HealedBlock[] = [];
  let at = head;
  for (let i = 0; i < n; i++) {
    const index = view.getUint32(4 + 8 * i, true);
    const length = view.getUint32(8 + 8 * i, true);
    if (length === 0 || length > CHECKSUM_BLOCK_BYTES) {
      throw malformed(`a block of ${length} bytes`);
    }
    if (at + length > bytes.length) throw malformed("truncated");
    blocks.push({ index, data: bytes.subarray(at, at + length) });
    at += length;
  }
  if (at !== bytes.length) throw malformed(`${bytes.length - at} bytes past the blocks`);
  return blocks;
}

export function encodeHealed(indexes: readonly number[]): Uint8Array {
  const bytes = new Uint8Array(4 + 4 * indexes.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, indexes.length, true);
  indexes.forEach((index, i) => view.setUint32(4 + 4 * i, index, true));
  return bytes;
}

export function decodeHealed(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.length >= 4 ? view.getUint32(0, true) : -1;
  if (n < 0 || bytes.length !== 4 + 4 * n) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, "Malformed block heal reply");
  }
  return Array.from({ length: n }, (_, i) => view.getUint32(4 + 4 * i, true));
}
