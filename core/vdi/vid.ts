/**
 * VDI id allocation (SHEEPDOG_REFERENCE.md §1.2): vid = FNV-1a-64(name) & 0xFFFFFF, then
 * linear probing over the in-use bitmap. A family (a VDI and its snapshots) takes consecutive
 * free ids, so a lookup scans from the first free id after the hash back down to the hash.
 * Bits are never cleared: deleted inodes stay as tombstones so probe chains remain valid.
 *
 * @module
 */

import { fnv1a64 } from "../hash/fnv.ts";
import { VDI_SPACE } from "../limits.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import type { Vid } from "./oid.ts";

/** The starting vid of a name; 0 is invalid, so it becomes 1. */
export function vidHash(name: string): Vid {
  const vid = fnv1a64(new TextEncoder().encode(name))[1] & 0xffffff;
  return vid === 0 ? 1 : vid;
}

/** The 2^24-bit in-use bitmap (2 MiB), as READ_VDIS returns it. */
export class VdiBitmap {
  readonly bytes: Uint8Array;

  constructor(bytes: Uint8Array = new Uint8Array(VDI_SPACE / 8)) {
    if (bytes.length !== VDI_SPACE / 8) {
      throw new RangeError(`VDI bitmap must be ${VDI_SPACE / 8} bytes: got ${bytes.length}`);
    }
    this.bytes = bytes;
  }

  has(vid: Vid): boolean {
    return (this.bytes[vid >>> 3]! & (1 << (vid & 7))) !== 0;
  }

  set(vid: Vid): void {
    this.bytes[vid >>> 3] = this.bytes[vid >>> 3]! | (1 << (vid & 7));
  }

  /**
   * Clears a bit: only for an inode the cluster never learned of (`VdiRegistry.settle`); a
   * deleted VDI keeps its bit as a tombstone.
   */
  clear(vid: Vid): void {
    this.bytes[vid >>> 3] = this.bytes[vid >>> 3]! & ~(1 << (vid & 7));
  }

  /** The first clear bit at or after `start`, wrapping to 1; throws FULL_VDI when none. */
  firstFreeFrom(start: Vid): Vid {
    for (let step = 0, vid = start; step < VDI_SPACE; step++) {
      if (vid !== 0 && !this.has(vid)) return vid;
      vid = (vid + 1) % VDI_SPACE;
    }
    throw new SheepdogError(ResultCode.FULL_VDI);
  }

  /** Every vid in use, ascending. */
  *inUse(): Generator<Vid> {
    for (let byte = 0; byte < this.bytes.length; byte++) {
      const bits = this.bytes[byte]!;
      if (bits === 0) continue;
      for (let bit = 0; bit < 8; bit++) if (bits & (1 << bit)) yield byte * 8 + bit;
    }
  }
}

/**
 * The vids a lookup of `name` must scan, newest first: from the last used id of the probe
 * chain down to the hash (Sheepdog's `right-1 .. left`).
 */
export function probeChain(bitmap: VdiBitmap, name: string): Vid[] {
  const first = vidHash(name);
  const chain: Vid[] = [];
  for (let vid = first; bitmap.has(vid) && chain.length < VDI_SPACE; vid = nextVid(vid)) {
    chain.push(vid);
  }
  return chain.reverse();
}

function nextVid(vid: Vid): Vid {
  const next = (vid + 1) % VDI_SPACE;
  return next === 0 ? 1 : next;
}
