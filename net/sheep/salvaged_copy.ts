/**
 * The payload of a salvaged or crash-suspect copy on the wire (GET_OBJ_SALVAGE replies,
 * PUT_SALVAGED_PEER requests), little-endian as the rest of the protocol: u32 n; n × u32 bad
 * block indexes; n × u32 the checksum each should have; n × u8 1 where that checksum is known;
 * u32 m, the number of blocks that changed since the copy's last sync before a crash (0xffffffff:
 * not known, every block may have); m × u32 their indexes; m × u32 the checksum each had at that
 * sync; m × u8 1 where that checksum is known; u8 what the receiver's copy must be for the copy
 * to be put in its place (0: anything, 1: none, 2: the copy of version hi × 2^32 + lo and digest
 * d: then u32 hi, u32 lo, u8 length of d, d in ASCII); then the object's bytes (bad blocks as
 * zeros, changed blocks as they are). A GET_OBJ_SALVAGE with UNVERIFIED is answered with the
 * changed blocks of a copy whose checksums a crash left unrebuilt (`SalvageOptions.suspect`).
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { ChangedBlock, SalvagedCopy } from "../../core/store/object_store.ts";

/**
 * The copy a repair read on a target and means to replace (null: the target had none). The
 * target replaces only that copy: one that took a write since must not be overwritten by a copy
 * read before the write (an acknowledged write would be lost there; sim seed 18724).
 */
export type ReplacedCopy = { readonly version: number; readonly digest: string } | null;

/**
 * A copy on the wire: salvaged blocks, a crash-suspect copy's uncertain blocks, and (on a
 * repair's PUT_SALVAGED_PEER) the copy it replaces.
 */
export interface WireCopy extends SalvagedCopy {
  changed?: readonly ChangedBlock[];
  replacing?: ReplacedCopy;
}

const UNKNOWN = 0xffffffff;
const ANY_COPY = 0;
const NO_COPY = 1;
const THIS_COPY = 2;

export function encodeSalvaged(copy: WireCopy): Uint8Array {
  const n = copy.badBlocks.length;
  const changed = copy.changed;
  const m = changed?.length ?? 0;
  const digest = copy.replacing ? new TextEncoder().encode(copy.replacing.digest) : undefined;
  if (digest && digest.length > 0xff) throw new RangeError("digest too long");
  const condition = 4 + 9 * n + 4 + 9 * m;
  const head = condition + 1 + (digest ? 9 + digest.length : 0);
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
  bytes[condition] = copy.replacing === undefined ? ANY_COPY : digest ? THIS_COPY : NO_COPY;
  if (copy.replacing && digest) {
    view.setUint32(condition + 1, Math.floor(copy.replacing.version / 2 ** 32), true);
    view.setUint32(condition + 5, copy.replacing.version >>> 0, true);
    bytes[condition + 9] = digest.length;
    bytes.set(digest, condition + 10);
  }
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
  const condition = at + (known ? 9 * m : 0);
  if (condition + 1 > bytes.length) throw malformed();
  let head = condition + 1;
  let replacing: ReplacedCopy | undefined;
  switch (bytes[condition]) {
    case ANY_COPY:
      break;
    case NO_COPY:
      replacing = null;
      break;
    case THIS_COPY: {
      if (condition + 10 > bytes.length) throw malformed();
      const length = bytes[condition + 9]!;
      head = condition + 10 + length;
      if (head > bytes.length) throw malformed();
      replacing = {
        version: view.getUint32(condition + 1, true) * 2 ** 32 +
          view.getUint32(condition + 5, true),
        digest: new TextDecoder().decode(bytes.subarray(condition + 10, head)),
      };
      break;
    }
    default:
      throw malformed();
  }
  const copy: WireCopy = { data: bytes.subarray(head), badBlocks, expected };
  if (replacing !== undefined) copy.replacing = replacing;
  if (known) {
    copy.changed = Array.from({ length: m }, (_, i) => ({
      block: view.getUint32(at + 4 * i, true),
      synced: bytes[at + 8 * m + i] === 1 ? view.getUint32(at + 4 * m + 4 * i, true) : null,
    }));
  }
  return copy;
}
