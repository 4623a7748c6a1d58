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
