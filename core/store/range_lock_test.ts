import assert from "node:assert/strict";
import { RangeLock } from "./range_lock.ts";

Deno.test("RangeLock: uncontended locks are held at once; shared ranges overlap; exclusive ones wait", async () => {
  const locks = new RangeLock();
  const readA = locks.tryLock(0, 3, false);
  const readB = locks.tryLock(2, 5, false);
  assert.equal(typeof readA, "function", "uncontended: held at once, no promise");
  assert.equal(typeof readB, "function", "shared ranges do not conflict");
  assert.equal(locks.tryLock(3, 3, true), undefined, "a write into a read range must wait");
  const release = locks.tryLock(6, 9, true);
  assert.equal(typeof release, "function", "a write beside them does not");

  const order: string[] = [];
  const write = locks.lock(1, 4, true);
  assert.ok(write instanceof Promise);
  void write.then(() => order.push("write"));
  (readA as () => void)();
  await Promise.resolve();
  assert.deepEqual(order, [], "still one reader in the way");
  (readB as () => void)();
  const releaseWrite = await write;
  assert.deepEqual(order, ["write"]);
  assert.equal(locks.tryLock(4, 4, false), undefined, "the write now excludes readers");
  releaseWrite();
  release!();
  assert.ok(locks.idle);
});
