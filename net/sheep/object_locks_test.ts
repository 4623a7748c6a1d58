import assert from "node:assert/strict";
import { ObjectLocks } from "./object_locks.ts";

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

Deno.test("ObjectLocks: shared holders run together, an exclusive one waits for them", async () => {
  const locks = new ObjectLocks<number>();
  const order: string[] = [];
  const gate = deferred();
  const a = locks.shared(1, async () => {
    order.push("a start");
    await gate.promise;
    order.push("a end");
  });
  const b = locks.shared(1, () => {
    order.push("b");
    return Promise.resolve();
  });
  const x = locks.exclusive(1, () => {
    order.push("x");
    return Promise.resolve();
  });
  const c = locks.shared(1, () => {
    order.push("c");
    return Promise.resolve();
  });
  await b;
  assert.deepEqual(order, ["a start", "b"]);
  gate.resolve();
  await Promise.all([a, x, c]);
  assert.deepEqual(order, ["a start", "b", "a end", "x", "c"]);
  assert.equal(locks.busy(1), false);
});

Deno.test("ObjectLocks: keys are independent and a failing holder releases", async () => {
  const locks = new ObjectLocks<string>();
  await assert.rejects(locks.exclusive("k", () => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(locks.busy("k"), false);
  const gate = deferred();
  const held = locks.exclusive("k", () => gate.promise);
  let other = false;
  await locks.exclusive("j", () => Promise.resolve(void (other = true)));
  assert.ok(other);
  gate.resolve();
  await held;
});
