import assert from "node:assert/strict";
import { CLOCK_ADOPT_MAX_MS } from "../limits.ts";
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

Deno.test("VersionClock takes in a peer's timeline that is ahead and carries it forward on the monotonic clock", () => {
  let wall = 1_000_000;
  let mono = 50;
  const behind = new VersionClock(() => wall, () => mono);
  const peer = wall + 3_600_000; // a node an hour ahead
  const adoption = behind.adoptTimeline(peer);
  assert.deepEqual(adoption, { aheadOfWallMs: 3_600_000, adopted: true, refused: false });
  assert.equal(behind.timelineMs(), peer);
  mono += 250;
  wall += 250;
  assert.equal(behind.timelineMs(), peer + 250);
  // A write issued now outranks one the peer issued when it answered.
  assert.ok(behind.next() > peer * 1024 + 1023);
  // The wall clock stepped back changes nothing; stepped past the timeline, it leads again.
  wall -= 10_000;
  assert.equal(behind.timelineMs(), peer + 250);
  wall += 7_200_000;
  assert.equal(behind.timelineMs(), wall);
});

Deno.test("VersionClock keeps its own timeline when a peer's is behind, and refuses one a day ahead", () => {
  const wall = 1_000_000;
  const clock = new VersionClock(() => wall, () => 0);
  assert.deepEqual(clock.adoptTimeline(wall - 5_000), {
    aheadOfWallMs: -5_000,
    adopted: false,
    refused: false,
  });
  assert.equal(clock.timelineMs(), wall);
  const broken = wall + CLOCK_ADOPT_MAX_MS + 1;
  assert.equal(clock.adoptTimeline(broken).refused, true);
  assert.equal(clock.adoptTimeline(Number.NaN).refused, true);
  assert.equal(clock.timelineMs(), wall);
  // A day ahead exactly is still a skew, followed.
  assert.equal(clock.adoptTimeline(wall + CLOCK_ADOPT_MAX_MS).adopted, true);
});

Deno.test("VersionClock timelines adopted back and forth never run ahead of the latest clock", () => {
  // Three nodes asking each other over and over: the timelines meet at the fastest clock, and
  // an answer's age (the time it took to arrive) is never added on top.
  let t = 0;
  const offsets = [0, 900, -400];
  const clocks = offsets.map((o) => new VersionClock(() => 1_000_000 + t + o, () => t));
  for (let round = 0; round < 50; round++) {
    for (const [i, asking] of clocks.entries()) {
      for (const [j, answering] of clocks.entries()) {
        if (i === j) continue;
        const reading = answering.timelineMs();
        t += 3; // in flight
        asking.adoptTimeline(reading);
      }
    }
  }
  for (const clock of clocks) {
    assert.ok(clock.timelineMs() <= 1_000_000 + t + 900, "never ahead of the fastest clock");
    assert.ok(
      clock.timelineMs() >= 1_000_000 + t + 900 - 3 * 2,
      "within two answers' flight of it",
    );
  }
});
