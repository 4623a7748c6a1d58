import assert from "node:assert/strict";
import { type ClusterEvent, decodeEvent, encodeEvent } from "./cluster_events.ts";

const bytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

Deno.test("cluster events: every kind survives encoding", () => {
  const events: ClusterEvent[] = [
    {
      type: "mkfs",
      config: { ctimeMs: 1, flags: 0, copies: 3, blockSizeShift: 22, shutdown: false },
      force: false,
    },
    {
      type: "vdi",
      event: { type: "create", name: "a", sizeBytes: 1, copies: 1, blockSizeShift: 22, nowMs: 1 },
    },
    { type: "vdi", event: { type: "delete", vid: 7 } },
    { type: "vdi", event: { type: "resize", vid: 7, sizeBytes: 4096 } },
    { type: "vdi", event: { type: "resize", vid: 7, sizeBytes: 4096, shrink: true } },
    { type: "vdi", event: { type: "rename", vid: 7, name: "b" } },
    { type: "vdi", event: { type: "flatten", vid: 7 } },
    { type: "lock", vid: 1, client: "c", node: "n", sinceMs: 0, force: false },
    { type: "unlock", vid: 1 },
    { type: "recovered", node: "n", epoch: 2 },
    { type: "found", headers: "AAAA" },
  ];
  for (const event of events) assert.deepEqual(decodeEvent(encodeEvent(event)), event);
});

Deno.test("cluster events: a malformed one is refused whole, naming what is wrong", () => {
  for (
    const [value, why] of [
      ["not an object", /no type/],
      [{ type: "lock", vid: 1, node: "n", sinceMs: 0, force: false }, /lock: client is missing/],
      [{ type: "vdi", event: { type: "create", name: "x" } }, /vdi create: sizeBytes is missing/],
      [{ type: "vdi", event: { type: "resize", vid: "1", sizeBytes: 1 } }, /vid is not a number/],
      [{ type: "vdi", event: { type: "explode" } }, /unknown VDI event type/],
      [{ type: "mkfs", config: { copies: 3 }, force: false }, /mkfs config: ctimeMs is missing/],
      [{ type: "recovered", node: "n", epoch: Infinity }, /epoch is not a number/],
      [{ type: "found", headers: 7 }, /found: headers is not a string/],
    ] as const
  ) {
    assert.throws(() => decodeEvent(bytes(value)), why, JSON.stringify(value));
  }
  assert.throws(() => decodeEvent(new TextEncoder().encode("{oops")), /Malformed cluster event/);
});

Deno.test("cluster events: a type this version does not know passes (the machine ignores it)", () => {
  assert.deepEqual(decodeEvent(bytes({ type: "future", x: 1 })), { type: "future", x: 1 });
});
