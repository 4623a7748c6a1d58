import assert from "node:assert/strict";
import { LogThrottle } from "./log_throttle.ts";

Deno.test("LogThrottle says a line at most once per interval and counts the ones held back", () => {
  const throttle = new LogThrottle(1_000);
  assert.equal(throttle.say(5_000), 0, "the first line is said");
  assert.equal(throttle.say(5_001), undefined);
  assert.equal(throttle.say(5_999), undefined);
  assert.equal(throttle.say(6_000), 2, "a full interval later: said, with the two held back");
  assert.equal(throttle.say(6_500), undefined);
  assert.equal(throttle.say(9_000), 1);
  assert.equal(throttle.say(20_000), 0, "nothing held back since");
});

Deno.test("LogThrottle: two throttles do not silence each other", () => {
  const disk = new LogThrottle(10_000);
  const clock = new LogThrottle(10_000);
  assert.equal(disk.say(0), 0);
  assert.equal(clock.say(1), 0);
  assert.equal(disk.say(2), undefined);
});
