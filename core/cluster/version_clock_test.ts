import assert from "node:assert/strict";
import { VersionClock } from "./version_clock.ts";

Deno.test("VersionClock issues increasing versions even when the wall clock stands still or goes back", () => {
  let now = 1_000;
  const clock = new VersionClock(() => now);
  const a = clock.next();
  const b = clock.next();
  assert.ok(b > a);
  now = 500;
  assert.ok(clock.next() > b);
});

Deno.test("VersionClock jumps past a version observed from another node", () => {
  const clock = new VersionClock(() => 1_000);
  clock.observe(99_999_999);
  assert.ok(clock.next() > 99_999_999);
  clock.observe(Number.NaN);
  clock.observe(5);
  assert.ok(clock.next() > 99_999_999);
});

Deno.test("VersionClock follows the wall clock: a later write outranks an old replica's version", () => {
  let now = 1_000;
  const early = new VersionClock(() => now);
  const old = early.next();
  now = 2_000;
  const fresh = new VersionClock(() => now); // another node, or a restart
  assert.ok(fresh.next() > old);
});
