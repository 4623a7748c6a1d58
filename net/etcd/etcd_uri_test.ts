import assert from "node:assert/strict";
import { parseDriverUri } from "./etcd_uri.ts";

Deno.test("--cluster-driver: builtin, and etcd endpoints with an optional prefix", () => {
  assert.deepEqual(parseDriverUri("builtin"), { kind: "builtin" });
  assert.deepEqual(parseDriverUri("etcd://127.0.0.1:2379"), {
    kind: "etcd",
    endpoints: ["127.0.0.1:2379"],
    prefix: "/sheepdog/",
  });
  assert.deepEqual(parseDriverUri("etcd://a.example:1,[::1]:2,10.0.0.3:3/prod/sd/"), {
    kind: "etcd",
    endpoints: ["a.example:1", "[::1]:2", "10.0.0.3:3"],
    prefix: "/prod/sd/",
  });
});

Deno.test("--cluster-driver: anything else says what is wrong", () => {
  for (
    const [text, why] of [
      ["zookeeper://h:1", /use builtin or etcd:\/\//],
      ["etcd://", /use builtin or etcd/],
      ["etcd://h", /'h' is not HOST:PORT/],
      ["etcd://h:0", /'h:0' is not HOST:PORT/],
      ["etcd://h:70000", /is not HOST:PORT/],
      ["etcd://h:1,,h:2", /'' is not HOST:PORT/],
      ["etcd://h:1/a b", /the prefix may hold/],
      ["etcd://h:1/a//b", /the prefix may hold/],
      ["Builtin", /use builtin or etcd/],
    ] as const
  ) {
    assert.throws(() => parseDriverUri(text), why, text);
  }
});
