import assert from "node:assert/strict";
import { Changes } from "./changes.ts";

Deno.test("Changes.until resolves at the change that makes the condition true, not before", async () => {
  const changes = new Changes();
  let epoch = 1;
  const waiting = changes.until(() => epoch >= 3, 10_000);
  let settled = false;
  void waiting.then(() => (settled = true));
  epoch = 2;
  changes.notify();
  await Promise.resolve();
  assert.equal(settled, false);
  epoch = 3;
  changes.notify();
  assert.equal(await waiting, true);
});

Deno.test("Changes.until is true at once when the condition holds, false when time runs out", async () => {
  const changes = new Changes();
  assert.equal(await changes.until(() => true, 10), true);
  assert.equal(await changes.until(() => false, 10), false);
});
