/**
 * The payload of a salvaged copy on the wire (GET_OBJ_SALVAGE replies, PUT_SALVAGED_PEER
 * requests), little-endian as the rest of the protocol: u32 n; n × u32 bad block indexes; n × u32
 * the checksum each should have; n × u8 1 where that checksum is known; then the object's bytes
 * (bad blocks as zeros).
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { SalvagedCopy } from "../../core/store/object_store.ts";

export function encodeSalvaged(copy: SalvagedCopy): Uint8Array {
  const n = copy.badBlocks.length;
  const head = 4 + 9 * n;
  const bytes = new Uint8Array(head + copy.data.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, n, true);
  copy.badBlocks.forEach((index, i) => {
    view.setUint32(4 + 4 * i, index, true);
    const expected = copy.expected[i];
    view.setUint32(4 + 4 * n + 4 * i, expected ?? 0, true);
    bytes[4 + 8 * n + i] = expected === undefined ? 0 : 1;
  });
  bytes.set(copy.data, head);
  return bytes;
}

export function decodeSalvaged(bytes: Uint8Array): SalvagedCopy {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.length >= 4 ? view.getUint32(0, true) : -1;
  if (n < 0 || 4 + 9 * n > bytes.length) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, "Malformed salvaged copy");
  }
  const badBlocks = Array.from({ length: n }, (_, i) => view.getUint32(4 + 4 * i, true));
  const expected = Array.from(
    { length: n },
    (_, i) => bytes[4 + 8 * n + i] === 1 ? view.getUint32(4 + 4 * n + 4 * i, true) : undefined,
  );
  return { data: bytes.subarray(4 + 9 * n), badBlocks, expected };
}
