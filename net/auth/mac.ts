/**
 * The one message authentication code of the cluster key: HMAC-SHA-256 truncated to
 * AUTH_MAC_BYTES, over a label (what the MAC is for, so a MAC made for one purpose is never
 * accepted for another) and the parts, each prefixed by its length.
 *
 * @module
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { AUTH_MAC_BYTES } from "../../core/limits.ts";

/** The MAC of `parts` under `key` for the purpose `label`. */
export function mac(key: Uint8Array, label: string, ...parts: Uint8Array[]): Uint8Array {
  const hmac = createHmac("sha256", key);
  hmac.update(label);
  const length = new Uint8Array(4);
  const view = new DataView(length.buffer);
  for (const part of parts) {
    view.setUint32(0, part.length, true);
    hmac.update(length);
    hmac.update(part);
  }
  return new Uint8Array(hmac.digest().subarray(0, AUTH_MAC_BYTES));
}

/** Compares two MACs in constant time. */
export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
