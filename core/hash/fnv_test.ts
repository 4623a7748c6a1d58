import assert from "node:assert/strict";
import { fnv1a64, hashToBigInt, sdHash, sdHashNext, sdHashOid } from "./fnv.ts";

const text = (s: string) => new TextEncoder().encode(s);

function referenceFnv(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h;
}

function referenceOfU64(value: bigint, start: bigint): bigint {
  let h = start;
  for (let i = 0n; i < 8n; i++) {
    h = ((h ^ ((value >> (8n * i)) & 0xffn)) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h;
}

Deno.test("fnv1a64() matches the published vectors", () => {
  assert.equal(hashToBigInt(fnv1a64(text("a"))), 0xaf63dc4c8601ec8cn);
  assert.equal(hashToBigInt(fnv1a64(text("test"))), 0xf9e6e6ef197c2b25n);
  assert.equal(hashToBigInt(fnv1a64(new Uint8Array())), 0xcbf29ce484222325n);
});

Deno.test("fnv1a64() agrees with a BigInt reference on random input", () => {
  for (let n = 0; n < 200; n++) {
    const bytes = crypto.getRandomValues(new Uint8Array(n));
    assert.equal(hashToBigInt(fnv1a64(bytes)), referenceFnv(bytes));
  }
});

Deno.test("sdHash() and sdHashOid() hash twice as Sheepdog does", () => {
  const bytes = text("127.0.0.1:7000");
  const once = referenceFnv(bytes);
  assert.equal(sdHash(bytes), referenceOfU64(once, once));
  const oid = 0x007c2b2500000001n;
  const first = referenceOfU64(oid, 0xcbf29ce484222325n);
  assert.equal(sdHashOid(oid), referenceOfU64(first, first));
  assert.equal(sdHashNext(first), referenceOfU64(first, first));
});
