// Recovery yields to clients: paced at the rate while a client request is recent, free
// otherwise, and what moved while clients were quiet is no debt when they come back. Virtual
// time: the clock only moves when the test (or a sleep) moves it.
import assert from "node:assert/strict";
import { BusyHolders, preferQuiet, RecoveryThrottle } from "./recovery_throttle.ts";

const MiB = 2 ** 20;

function world(bytesPerSecond = 32 * MiB) {
  const t = { now: 0, sleeps: [] as number[] };
  const throttle = new RecoveryThrottle({ bytesPerSecond, quietMs: 500 }, {
    now: () => t.now,
    sleep: (ms) => {
      t.sleeps.push(ms);
      t.now += ms;
      return Promise.resolve();
    },
  });
  return { t, throttle };
}

Deno.test("with no client about, recovery is not held back", async () => {
  const { t, throttle } = world();
  for (let i = 0; i < 64; i++) await throttle.take(4 * MiB);
  assert.equal(throttle.yielding, false);
  assert.deepEqual(t.sleeps, []);
});

Deno.test("while clients are busy, recovery moves at the rate", async () => {
  const { t, throttle } = world(32 * MiB);
  throttle.client();
  assert.equal(throttle.yielding, true);
  // Four concurrent pulls of 4 MiB at 32 MiB/s: 16 MiB take half a second (this fake clock
  // moves by each sleep as it starts, so every pull waits 125 ms after the one before).
  const started = t.now;
  await Promise.all([0, 1, 2, 3].map(() => throttle.take(4 * MiB)));
  assert.deepEqual(t.sleeps, [125, 125, 125, 125]);
  assert.equal(t.now - started, 500);
});

Deno.test("clients that went quiet release recovery, and bring no debt back with them", async () => {
  const { t, throttle } = world(32 * MiB);
  throttle.client();
  await throttle.take(4 * MiB); // paced: 125 ms
  t.now += 500; // no client request for the quiet time
  assert.equal(throttle.yielding, false);
  for (let i = 0; i < 16; i++) await throttle.take(4 * MiB); // free: 64 MiB at once
  assert.deepEqual(t.sleeps, [125]);
  // A client again: pacing starts afresh, not owing for the 64 MiB moved meanwhile.
  throttle.client();
  await throttle.take(4 * MiB);
  assert.deepEqual(t.sleeps, [125, 125]);
});

Deno.test("a client request within the quiet time keeps recovery paced", async () => {
  const { t, throttle } = world(32 * MiB);
  throttle.client();
  t.now += 499;
  assert.equal(throttle.yielding, true);
  throttle.client(); // another one: busy for 500 ms from now
  t.now += 499;
  await throttle.take(4 * MiB);
  assert.deepEqual(t.sleeps, [125]);
});

Deno.test("rate 0 (--recovery-rate off) never holds recovery back; a negative rate is refused", async () => {
  const { t, throttle } = world(0);
  throttle.client();
  assert.equal(throttle.yielding, false);
  for (let i = 0; i < 8; i++) await throttle.take(4 * MiB);
  assert.deepEqual(t.sleeps, []);
  assert.throws(() => world(-1), RangeError);
  assert.throws(() => world(NaN), RangeError);
});

function copy(node: string, version: number, digest: string, verified = true) {
  return { node: { id: node }, meta: { version, digest, verified } };
}

Deno.test("recovery takes a copy from a quiet holder before a busy one, never a worse copy", () => {
  const busy = new Set(["a", "c"]);
  const ids = (list: { node: { id: string } }[]) => list.map((c) => c.node.id);
  // a, b and c hold the best copy; d an older one; e the best bytes, but unverified.
  const candidates = [
    copy("a", 7, "x"),
    copy("b", 7, "x"),
    copy("c", 7, "x"),
    copy("d", 6, "w"),
    copy("e", 7, "x", false),
  ];
  assert.deepEqual(ids(preferQuiet(candidates, (n) => busy.has(n))), ["b", "a", "c", "d", "e"]);
  // The only holder of the best copy is busy: it stays first (it serves, paced).
  assert.deepEqual(
    ids(preferQuiet([copy("a", 7, "x"), copy("b", 6, "w")], (n) => busy.has(n))),
    ["a", "b"],
  );
  // Nobody busy: the order is the one given.
  assert.deepEqual(ids(preferQuiet(candidates, () => false)), ["a", "b", "c", "d", "e"]);
});

Deno.test("a busy holder is avoided for a while, then asked again", () => {
  let now = 0;
  const holders = new BusyHolders(2_000, () => now);
  assert.equal(holders.has("a"), false);
  holders.busy("a");
  now += 1_999;
  assert.equal(holders.has("a"), true);
  assert.equal(holders.has("b"), false);
  now += 1;
  assert.equal(holders.has("a"), false);
});
