import assert from "node:assert/strict";
import type { Oid } from "../../core/vdi/oid.ts";
import { VirtualTime } from "../../tests/sim/virtual_time.ts";
import { CopyRestorer } from "./copy_restorer.ts";
import { COPY_RESTORE_FIRST_MS, COPY_RESTORE_TRIES_MAX } from "./retry_policy.ts";

/** A restorer whose repairs fail while `full` is set, each try logged with its virtual time. */
function fixture(time: VirtualTime) {
  const state = { full: true, tries: [] as { oid: Oid; at: number }[] };
  const start = time.now;
  const restorer = new CopyRestorer((oid) => {
    state.tries.push({ oid, at: time.now - start });
    return Promise.resolve(!state.full);
  });
  return { state, restorer };
}

Deno.test("CopyRestorer tries one object at a time while the disk refuses, then all at once", async () => {
  const time = new VirtualTime();
  time.install();
  try {
    const { state, restorer } = fixture(time);
    for (const oid of [1n, 2n, 3n] as Oid[]) restorer.add(oid);
    restorer.add(1n as Oid); // once only
    await time.advance(COPY_RESTORE_FIRST_MS * 7 - 1); // tries at 1, 3 (1+2) and 7 (3+4) x FIRST
    assert.deepEqual(state.tries.map((t) => t.at), [
      COPY_RESTORE_FIRST_MS,
      COPY_RESTORE_FIRST_MS * 3,
    ]);
    assert.deepEqual(state.tries.map((t) => t.oid), [1n, 2n], "a failed one goes to the back");
    state.full = false;
    await time.advance(1);
    assert.deepEqual(state.tries.slice(2).map((t) => t.oid), [3n, 1n, 2n]);
    assert.equal(restorer.size, 0);
    assert.equal(time.pendingTimers, 0, "nothing left to do: no timer");
    restorer.close();
  } finally {
    time.uninstall();
  }
});

Deno.test("CopyRestorer leaves an object to the scrub after its last try; close drops the rest", async () => {
  const time = new VirtualTime();
  time.install();
  try {
    const { state, restorer } = fixture(time);
    restorer.add(7n as Oid);
    await time.until(() => restorer.size === 0, 24 * 3600 * 1000);
    assert.equal(state.tries.length, COPY_RESTORE_TRIES_MAX);
    restorer.add(8n as Oid);
    restorer.close();
    restorer.add(9n as Oid);
    await time.advance(3600 * 1000);
    assert.equal(state.tries.length, COPY_RESTORE_TRIES_MAX, "closed: no more tries");
    assert.equal(time.pendingTimers, 0);
  } finally {
    time.uninstall();
  }
});
