import assert from "node:assert/strict";
import { RateLimiter } from "./rate_limiter.ts";

Deno.test("RateLimiter does not burst to catch up after a long stall", async () => {
  let now = 0;
  const sleeps: number[] = [];
  const limiter = new RateLimiter(1000, {
    now: () => now,
    sleep: (ms) => {
      sleeps.push(ms);
      now += ms;
      return Promise.resolve();
    },
  });
  await limiter.take(1000); // due at 1 s
  now += 60_000; // a minute-long stall
  await limiter.take(1000); // counted afresh: no credit of 59 s
  await limiter.take(1000);
  assert.deepEqual(sleeps, [1000, 0, 1000]);
  assert.throws(() => new RateLimiter(0, { now: () => 0, sleep: () => Promise.resolve() }));
});

Deno.test("RateLimiter sleeps whole milliseconds, rounded up, and keeps the average rate", async () => {
  // The simulation's virtual clock is integer milliseconds: a fractional sleep put fractional
  // times in its schedule. 1 MiB at 3 MiB/s is 333.33 ms: the waits round up, and the total
  // stays on the rate (3 MiB in 1 s).
  let now = 0;
  const sleeps: number[] = [];
  const limiter = new RateLimiter(3 * 2 ** 20, {
    now: () => now,
    sleep: (ms) => {
      sleeps.push(ms);
      now += ms;
      return Promise.resolve();
    },
  });
  for (let i = 0; i < 3; i++) await limiter.take(2 ** 20);
  assert.ok(sleeps.every(Number.isInteger), `sleeps ${sleeps}`);
  assert.deepEqual(sleeps, [334, 333, 333]);
  assert.equal(now, 1000);
});
