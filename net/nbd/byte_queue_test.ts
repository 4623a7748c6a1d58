import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { ByteQueue } from "./byte_queue.ts";

Deno.test("ByteQueue: views within a chunk, copies across chunks", async () => {
  const q = new ByteQueue();
  const a = Buffer.from("hello world");
  q.push(a);
  const hello = q.tryTake(5);
  assert.equal(hello?.toString(), "hello");
  assert.equal(hello?.buffer, a.buffer, "a view, not a copy");
  assert.equal(q.tryTake(100), null);
  q.push(Buffer.from("!!"));
  assert.equal(q.length, 8);
  assert.equal((await q.take(8))?.toString(), " world!!");
  assert.equal(q.length, 0);
});

Deno.test("ByteQueue: waiting reads, hooks, EOF", async () => {
  let wants = 0;
  let consumed = 0;
  const q = new ByteQueue({ onWant: () => wants++, onConsume: () => consumed++ });
  const p = q.take(6);
  assert.equal(wants, 1);
  assert.equal(q.wanted, 6);
  q.push(Buffer.from("abc"));
  q.push(Buffer.from("defg"));
  assert.equal((await p)?.toString(), "abcdef");
  assert.ok(consumed >= 1);
  await assert.rejects(Promise.all([q.take(5), q.take(5)]), /concurrent/);
  q.end();
  assert.equal(await q.take(2), null);
  assert.equal(q.ended, true);
  q.push(Buffer.from("ignored"));
  assert.equal(q.length, 1);
});

Deno.test("ByteQueue: skip discards without buffering, across pushes", async () => {
  const q = new ByteQueue();
  q.push(Buffer.from("0123"));
  const skipped = q.skip(10);
  q.push(Buffer.from("4567"));
  assert.equal(q.length, 0);
  q.push(Buffer.from("89AB"));
  assert.equal(await skipped, true);
  assert.equal(q.tryTake(2)?.toString(), "AB");
  const cut = q.skip(5);
  q.end();
  assert.equal(await cut, false);
});
