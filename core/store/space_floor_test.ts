// Goal: SpaceFloor admits writes without a look while far from the reserve, decides on a fresh
// look near it, refuses what would eat into it, and errs on the full side for writes in flight.
// Method: a fake file system whose free space the test sets, counting the looks; a fake clock.
import assert from "node:assert/strict";
import { SpaceFloor } from "./space_floor.ts";

const MiB = 1024 * 1024;

function fakeSpace(freeBytes: number) {
  const fs = {
    free: freeBytes,
    looks: 0,
    look: () => {
      fs.looks++;
      return Promise.resolve({ totalBytes: 1024 * MiB, freeBytes: fs.free });
    },
  };
  return fs;
}

Deno.test("SpaceFloor.admit() looks first, then admits at once until half the headroom is charged", async () => {
  const fs = fakeSpace(108 * MiB);
  const floor = new SpaceFloor(fs.look, { reserveBytes: 8 * MiB, recheckMs: 1000, now: () => 0 });
  assert.equal(await floor.admit(MiB), true); // the first look
  floor.done(MiB);
  assert.equal(fs.looks, 1);
  // 100 MiB of headroom: 50 MiB may be charged before the next look.
  for (let i = 1; i < 50; i++) {
    assert.equal(floor.admit(MiB), true);
    floor.done(MiB);
  }
  assert.equal(fs.looks, 1);
  fs.free -= 50 * MiB;
  const next = floor.admit(MiB);
  assert.ok(next instanceof Promise, "past half the headroom: a fresh look decides");
  assert.equal(await next, true);
  assert.equal(fs.looks, 2);
});

Deno.test("SpaceFloor.admit() refuses what would leave less than the reserve free, and admits again once space is freed", async () => {
  const fs = fakeSpace(10 * MiB);
  const floor = new SpaceFloor(fs.look, { reserveBytes: 8 * MiB, recheckMs: 1000, now: () => 0 });
  assert.equal(await floor.admit(MiB), true);
  floor.done(MiB);
  fs.free -= MiB;
  assert.equal(await floor.admit(MiB), true); // 9 MiB free: 8 MiB would stay
  floor.done(MiB);
  fs.free -= MiB;
  assert.equal(await floor.admit(1), false, "8 MiB free: not one byte more");
  assert.equal(await floor.admit(0), true, "a write that allocates nothing still goes");
  floor.done(0);
  fs.free += 4 * MiB; // an object removed
  assert.equal(await floor.admit(4 * MiB), true);
  floor.done(4 * MiB);
});

Deno.test("SpaceFloor keeps charging writes still in flight when a look starts, and concurrent writes share a look", async () => {
  const fs = fakeSpace(12 * MiB);
  const floor = new SpaceFloor(fs.look, { reserveBytes: 8 * MiB, recheckMs: 1000, now: () => 0 });
  // Near the reserve: each decides on a look, the two share it, the second does not fit.
  const [first, second] = await Promise.all([floor.admit(3 * MiB), floor.admit(3 * MiB)]);
  assert.deepEqual([first, second], [true, false]);
  assert.equal(fs.looks, 1);
  // The first write has not landed: a new look does not see it, yet it is still charged.
  assert.equal(await floor.admit(2 * MiB), false);
  assert.equal(fs.looks, 2);
  floor.done(3 * MiB);
  fs.free -= 3 * MiB; // it landed
  assert.equal(await floor.admit(MiB), true);
  floor.done(MiB);
  assert.throws(() => floor.done(1), /more than was admitted/);
});

Deno.test("SpaceFloor looks again in the background once its look is older than the recheck interval", async () => {
  const fs = fakeSpace(1024 * MiB);
  let now = 0;
  const floor = new SpaceFloor(fs.look, { reserveBytes: 8 * MiB, recheckMs: 1000, now: () => now });
  assert.equal(await floor.admit(MiB), true);
  assert.equal(floor.admit(MiB), true);
  assert.equal(fs.looks, 1);
  now = 1000;
  fs.free = 9 * MiB; // another process filled the file system
  assert.equal(floor.admit(MiB), true, "far by the old look: admitted at once");
  await Promise.resolve();
  assert.equal(fs.looks, 2, "and a look taken meanwhile");
  assert.equal(await floor.admit(2 * MiB), false, "the next write is decided on it");
});

Deno.test("SpaceFloor with no reserve never looks", () => {
  const fs = fakeSpace(0);
  const floor = new SpaceFloor(fs.look, { reserveBytes: 0, recheckMs: 1000, now: () => 0 });
  assert.equal(floor.admit(MiB), true);
  floor.done(MiB);
  assert.equal(fs.looks, 0);
});
