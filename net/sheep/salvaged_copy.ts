/**
 * The payload of a salvaged or crash-suspect copy on the wire (GET_OBJ_SALVAGE replies,
 * PUT_SALVAGED_PEER requests), little-endian as the rest of the protocol: u32 n; n × u32 bad
 * block indexes; n × u32 the checksum each should have; n × u8 1 where that checksum is known;
 * u32 m, the number of blocks that changed since the copy's last sync before a crash (0xffffffff:
 * not known, every block may have); m × u32 their indexes; m × u32 the checksum each had at that
 * sync; m × u8 1 where that checksum is known; then the object's bytes (bad blocks as zeros).
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { ChangedBlock, SalvagedCopy } from "../../core/store/object_store.ts";

/** A copy on the wire: salvaged blocks, and a crash-suspect copy's uncertain blocks. */
export interface WireCopy extends SalvagedCopy {
  changed?: readonly ChangedBlock[];
}

const UNKNOWN = 0xffffffff;

export function encodeSalvaged(copy: WireCopy): Uint8Array {
  const n = copy.badBlocks.length;
  const changed = copy.changed;
  const m = changed?.length ?? 0;
  const head = 4 + 9 * n + 4 + 9 * m;
  const bytes = new Uint8Array(head + copy.data.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, n, true);
  copy.badBlocks.forEach((index, i) => {
    view.setUint32(4 + 4 * i, index, true);
    const expected = copy.expected[i];
    view.setUint32(4 + 4 * n + 4 * i, expected ?? 0, true);
    bytes[4 + 8 * n + i] = expected === undefined ? 0 : 1;
  });
  view.setUint32(4 + 9 * n, changed === undefined ? UNKNOWN : m, true);
  const at = 4 + 9 * n + 4;
  changed?.forEach(({ block, synced }, i) => {
    view.setUint32(at + 4 * i, block, true);
    view.setUint32(at + 4 * m + 4 * i, synced ?? 0, true);
    bytes[at + 8 * m + i] = synced === null || synced === undefined ? 0 : 1;
  });
  bytes.set(copy.data, head);
  return bytes;
}

export function decodeSalvaged(bytes: Uint8Array): WireCopy {
  const malformed = () => new SheepdogError(ResultCode.INVALID_PARMS, "Malformed salvaged copy");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.length >= 4 ? view.getUint32(0, true) : -1;
  if (n < 0 || 4 + 9 * n + 4 > bytes.length) throw malformed();
  const badBlocks = Array.from({ length: n }, (_, i) => view.getUint32(4 + 4 * i, true));
  const expected = Array.from(
    { length: n },
    (_, i) => bytes[4 + 8 * n + i] === 1 ? view.getUint32(4 + 4 * n + 4 * i, true) : undefined,
  );
  const m = view.getUint32(4 + 9 * n, true);
  const known = m !== UNKNOWN;
  const at = 4 + 9 * n + 4;
  const head = at + (known ? 9 * m : 0);
  if (head > bytes.length) throw malformed();
  const copy: WireCopy = { data: bytes.subarray(head), badBlocks, expected };
  if (known) {
    copy.changed = Array.from({ length: m }, (_, i) => ({
      block: view.getUint32(at + 4 * i, true),
      synced: bytes[at + 8 * m + i] === 1 ? view.getUint32(at + 4 * m + 4 * i, true) : null,
    }));
  }
  return copy;
}
