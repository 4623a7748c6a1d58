import assert from "node:assert/strict";
import { sameCopy, sortCopies } from "./copy_choice.ts";
import type { ObjectMeta } from "../store/object_store.ts";

function copy(id: string, version: number, digest: string, verified = true) {
  return { id, meta: { version, digest, verified, size: 4096 } satisfies ObjectMeta };
}
const rank = (id: string) => Number(id.slice(1));
const order = (copies: ReturnType<typeof copy>[]) =>
  sortCopies(copies, (c) => c.id, rank).map((c) => c.id);

Deno.test("sortCopies: the newest version wins, then verified beats a crash-suspect copy", () => {
  assert.deepEqual(order([copy("n0", 9, "a", false), copy("n1", 5, "b"), copy("n2", 7, "c")]), [
    "n0",
    "n2",
    "n1",
  ]);
  assert.deepEqual(order([copy("n0", 7, "a", false), copy("n1", 7, "b")]), ["n1", "n0"]);
});

Deno.test("sortCopies: equal versions with different bytes: the bytes most copies hold, then the earliest target", () => {
  // n0's checksum file rotted: its digest differs from the two copies that agree.
  assert.deepEqual(order([copy("n0", 5, "rot"), copy("n1", 5, "good"), copy("n2", 5, "good")]), [
    "n1",
    "n2",
    "n0",
  ]);
  // A tie of votes falls to the earliest target, the same on every node.
  assert.deepEqual(order([copy("n2", 5, "x"), copy("n1", 5, "y")]), ["n1", "n2"]);
});

Deno.test("sameCopy: the same version and digest; a version alone is not the same bytes", () => {
  assert.equal(sameCopy({ version: 7, digest: "a" }, { version: 7, digest: "a" }), true);
  assert.equal(sameCopy({ version: 7, digest: "a" }, { version: 7, digest: "b" }), false);
  assert.equal(sameCopy({ version: 7, digest: "a" }, { version: 8, digest: "a" }), false);
});
