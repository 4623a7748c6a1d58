/**
 * Object ids (SHEEPDOG_REFERENCE.md §1.1): 64 bits, vid in bits 32-55, the data index in
 * bits 0-31, bit 63 for an inode, 62 for vmstate, 61 for an attribute object.
 *
 * @module
 */

/** A 64-bit object id. */
export type Oid = bigint;
/** A 24-bit VDI id (0 is invalid). */
export type Vid = number;

export const VDI_BIT = 1n << 63n;
export const VMSTATE_BIT = 1n << 62n;
export const VDI_ATTR_BIT = 1n << 61n;
const VDI_SPACE_SHIFT = 32n;
const VID_MASK = 0xffffffn;
const INDEX_MASK = 0xffffffffn;

/** The inode object of `vid`. */
export function vdiOid(vid: Vid): Oid {
  return VDI_BIT | (BigInt(vid) << VDI_SPACE_SHIFT);
}

/** Data object `index` owned by `vid`. */
export function dataOid(vid: Vid, index: number): Oid {
  return (BigInt(vid) << VDI_SPACE_SHIFT) | BigInt(index);
}

/** The vid an oid belongs to. */
export function oidToVid(oid: Oid): Vid {
  return Number((oid >> VDI_SPACE_SHIFT) & VID_MASK);
}

/** The data index (bits 0-31). */
export function oidToIndex(oid: Oid): number {
  return Number(oid & INDEX_MASK);
}

/** True for inode objects. */
export function isVdiOid(oid: Oid): boolean {
  return (oid & VDI_BIT) !== 0n;
}

/** True for plain data objects (no type bit set). */
export function isDataOid(oid: Oid): boolean {
  return (oid & (VDI_BIT | VMSTATE_BIT | VDI_ATTR_BIT | (0x1fn << 56n))) === 0n;
}

/** 16 lowercase hex digits: the object's file name. */
export function oidToHex(oid: Oid): string {
  return oid.toString(16).padStart(16, "0");
}

/** Parses 16 hex digits back to an oid, or undefined when `text` is not one. */
export function oidFromHex(text: string): Oid | undefined {
  if (!/^[0-9a-f]{16}$/.test(text)) return undefined;
  return BigInt("0x" + text);
}
