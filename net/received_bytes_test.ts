import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { ReceivedBytes } from "./received_bytes.ts";

/** Bytes 0..n-1 of a pattern that differs from position to position. */
function stream(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
}

/** `got` holds exactly the bytes `want` holds. */
function same(got: Uint8Array, want: Uint8Array, message?: string): void {
  assert.equal(got.length, want.length, message);
  assert.ok(Buffer.from(got.buffer, got.byteOffset, got.length).equals(want), message);
}

Deno.test("ReceivedBytes: a chunk that holds what is asked gives a view, else a join", () => {
  const bytes = new ReceivedBytes();
  const source = stream(300_000);
  const first = source.slice(0, 100_000);
  bytes.add(first);
  const view = bytes.take(50_000);
  assert.equal(view.buffer, first.buffer, "taken without a copy");
  same(view, source.subarray(0, 50_000));
  bytes.add(source.slice(100_000, 200_000));
  const joined = bytes.take(100_000);
  assert.notEqual(joined.buffer, first.buffer);
  same(joined, source.subarray(50_000, 150_000));
  assert.equal(bytes.length, 50_000);
  same(bytes.take(50_000), source.subarray(150_000, 200_000));
  assert.equal(bytes.take(0).length, 0);
});

Deno.test("ReceivedBytes: a gathered message is collected as it arrives, whatever the chunks", () => {
  const bytes = new ReceivedBytes();
  const source = stream(3 * 1024 * 1024 + 100);
  bytes.add(source.slice(0, 5000)); // a header and the start of its payload
  same(bytes.take(48), source.subarray(0, 48));
  const length = 3 * 1024 * 1024;
  bytes.gather(length);
  let at = 5000;
  while (at < source.length) {
    const next = Math.min(source.length, at + 65_536 + (at % 1000));
    bytes.add(source.slice(at, next));
    at = next;
  }
  assert.equal(bytes.length, source.length - 48);
  same(bytes.take(length), source.subarray(48, 48 + length));
  same(bytes.take(52), source.subarray(48 + length));
  assert.equal(bytes.length, 0);
});

Deno.test("ReceivedBytes: nothing is gathered while nothing is here (a chunk may bring it all)", () => {
  const bytes = new ReceivedBytes();
  const source = stream(10_000);
  bytes.gather(8000);
  const chunk = source.slice(0, 10_000);
  bytes.add(chunk);
  const view = bytes.take(8000);
  assert.equal(view.buffer, chunk.buffer, "taken as a view of the chunk");
  same(view, source.subarray(0, 8000));
});

Deno.test("ReceivedBytes: drops, and refuses what would lose bytes", () => {
  const bytes = new ReceivedBytes();
  const source = stream(1000);
  bytes.add(source.slice(0, 600));
  bytes.add(source.slice(600));
  bytes.drop(400);
  same(bytes.take(600), source.subarray(400));
  assert.throws(() => bytes.take(1), /1 bytes asked, 0 here/);
  bytes.add(source.slice(0, 5));
  bytes.gather(10);
  assert.throws(() => bytes.drop(1), /while gathering/);
  assert.throws(() => bytes.take(7), /7 bytes asked, 5 here/);
});
