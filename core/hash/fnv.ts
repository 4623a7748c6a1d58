/**
 * FNV-1a 64 and Sheepdog's derived hashes (SHEEPDOG_REFERENCE.md §3.1).
 *
 * The 64-bit state is kept as two unsigned 32-bit halves: it is several times faster than
 * BigInt and exact, because every intermediate product stays below 2^53.
 *
 * @module
 */

/** A 64-bit hash as [high 32 bits, low 32 bits]. */
export type Hash64 = readonly [number, number];

const OFFSET_BASIS: Hash64 = [0xcbf29ce4, 0x84222325];
const PRIME_LOW = 0x1b3; // The prime is 2^40 + 0x1b3.

function multiplyByPrime(high: number, low: number): Hash64 {
  const lowProduct = low * PRIME_LOW;
  const carry = Math.floor(lowProduct / 0x1_0000_0000);
  const highProduct = high * PRIME_LOW + carry + ((low << 8) >>> 0);
  return [highProduct >>> 0, lowProduct >>> 0];
}

/** FNV-1a 64 over `bytes`, continuing from `start` (the offset basis by default). */
export function fnv1a64(bytes: Uint8Array, start: Hash64 = OFFSET_BASIS): Hash64 {
  let [high, low] = start;
  for (let i = 0; i < bytes.length; i++) {
    low = (low ^ bytes[i]!) >>> 0;
    [high, low] = multiplyByPrime(high, low);
  }
  return [high, low];
}

/** FNV-1a 64 over the 8 little-endian bytes of `value` (Sheepdog's `fnv_64a_64`). */
export function fnv1a64OfU64(value: Hash64, start: Hash64): Hash64 {
  let [high, low] = start;
  const [valueHigh, valueLow] = value;
  for (let i = 0; i < 8; i++) {
    const byte = i < 4 ? (valueLow >>> (8 * i)) & 0xff : (valueHigh >>> (8 * (i - 4))) & 0xff;
    low = (low ^ byte) >>> 0;
    [high, low] = multiplyByPrime(high, low);
  }
  return [high, low];
}

/** Converts a hash to a bigint, for ordering on the ring. */
export function hashToBigInt(hash: Hash64): bigint {
  return (BigInt(hash[0]) << 32n) | BigInt(hash[1]);
}

/** Splits a u64 bigint into halves. */
export function bigIntToHash(value: bigint): Hash64 {
  return [Number((value >> 32n) & 0xffffffffn), Number(value & 0xffffffffn)];
}

/** Sheepdog's `sd_hash`: FNV-1a over the buffer, then once more over the result itself. */
export function sdHash(bytes: Uint8Array): bigint {
  const first = fnv1a64(bytes);
  return hashToBigInt(fnv1a64OfU64(first, first));
}

/** Sheepdog's `sd_hash_oid`: where an object sits on the ring. */
export function sdHashOid(oid: bigint): bigint {
  const first = fnv1a64OfU64(bigIntToHash(oid), OFFSET_BASIS);
  return hashToBigInt(fnv1a64OfU64(first, first));
}

/** Sheepdog's `sd_hash_next`: the next vnode position after `hash`. */
export function sdHashNext(hash: bigint): bigint {
  const halves = bigIntToHash(hash);
  return hashToBigInt(fnv1a64OfU64(halves, halves));
}
