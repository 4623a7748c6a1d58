/**
 * Goal: every message survives the datagram codec unchanged, and nothing malformed gets
 * through. Method: round-trip one message of each type; then truncate, corrupt, mislabel and
 * feed random garbage, expecting an error value every time and never a throw.
 */

import assert from "node:assert/strict";
import { crc32, decodeDatagram, encodeDatagram, groupTagOf, isMessage } from "./codec.ts";
import type { Entry, GroupMessage, MemberInfo } from "./types.ts";

const base = { inc: 7, cluster: "10.0.0.1:7000/1", era: 1 };
const ballot = { round: 3, id: "10.0.0.1:7000" };
const member: MemberInfo = {
  id: "10.0.0.2:7000",
  incarnation: 2,
  witness: false,
  info: { zone: 1, vnodes: 128, tags: ["a", null, true] },
};
const viewEntry: Entry = { kind: "view", epoch: 4, seq: 9, members: [member], left: [] };
const eventsEntry: Entry = {
  kind: "events",
  events: [
    { seq: 10, origin: "10.0.0.2:7000", incarnation: 2, pid: 1, payload: new Uint8Array([1, 2]) },
    { seq: 11, origin: "10.0.0.3:7000", incarnation: 1, pid: 5, payload: new Uint8Array(0) },
  ],
};

const samples: GroupMessage[] = [
  {
    ...base,
    type: "hello",
    witness: true,
    info: { zone: 3 },
    state: "primary",
    former: "",
    joinCluster: "",
    epoch: 4,
    applied: 12,
    seq: 11,
    leading: true,
    ballot,
    leader: "10.0.0.1:7000",
    leaving: false,
    record: { era: 1, epoch: 4, seq: 9, members: [{ id: "10.0.0.2:7000", incarnation: 2 }] },
    peers: ["10.0.0.2:7000", "10.0.0.3:7000"],
    pids: [["10.0.0.2:7000#2", 1]],
  },
  { ...base, type: "prepare", ballot },
  {
    ...base,
    type: "promise",
    ballot,
    applied: -1,
    accepted: { slot: 0, ballot, entry: viewEntry },
  },
  { ...base, type: "promise", ballot, applied: 5, accepted: null },
  { ...base, type: "nack", ballot },
  { ...base, type: "accept", ballot, slot: 13, entry: eventsEntry },
  { ...base, type: "accepted", ballot, slot: 13 },
  { ...base, type: "commit", ballot, slot: 13 },
  { ...base, type: "fetch", from: -1 },
  {
    ...base,
    type: "entries",
    entries: [{ slot: 12, entry: viewEntry }, { slot: 13, entry: eventsEntry }],
    more: false,
  },
  {
    ...base,
    type: "snapshot",
    slot: 13,
    seq: 11,
    view: { epoch: 4, slot: 12, members: [member] },
    pids: [["10.0.0.2:7000#2", 1]],
    ballot,
    leader: "10.0.0.1:7000",
  },
  { ...base, type: "propose", pid: 4, after: 3, payload: new Uint8Array([9, 8, 7]) },
  { ...base, type: "leave" },
];

const tag = groupTagOf("sheepdog");

Deno.test("encodeDatagram()/decodeDatagram() round-trip every message type", () => {
  for (const msg of samples) {
    const decoded = decodeDatagram(encodeDatagram("10.0.0.9:7000", msg, tag));
    assert.ok(decoded.ok, `${msg.type}: ${decoded.ok ? "" : decoded.error}`);
    assert.equal(decoded.from, "10.0.0.9:7000");
    assert.equal(decoded.groupTag, tag);
    assert.deepEqual(decoded.msg, msg);
  }
});

Deno.test("decodeDatagram() rejects truncation, bit flips and trailing bytes", () => {
  for (const msg of samples) {
    const bytes = encodeDatagram("10.0.0.9:7000", msg, tag);
    for (const length of [0, 5, 19, 20, bytes.length - 1]) {
      assert.equal(
        decodeDatagram(bytes.subarray(0, length)).ok,
        false,
        `${msg.type} cut at ${length}`,
      );
    }
    for (let index = 0; index < bytes.length; index += Math.max(1, bytes.length >> 5)) {
      const copy = bytes.slice();
      copy[index] = copy[index]! ^ 0x10;
      assert.equal(decodeDatagram(copy).ok, false, `${msg.type} flipped at ${index}`);
    }
    const longer = new Uint8Array(bytes.length + 1);
    longer.set(bytes);
    assert.equal(decodeDatagram(longer).ok, false);
  }
});

Deno.test("decodeDatagram() never throws on random garbage", () => {
  let state = 12345;
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0);
  for (let i = 0; i < 2000; i++) {
    const bytes = new Uint8Array(random() % 300);
    for (let j = 0; j < bytes.length; j++) bytes[j] = random() & 0xff;
    if (i % 2 === 0 && bytes.length >= 4) bytes.set([0x4d, 0x47, 0x44, 0x53]); // our magic
    const result = decodeDatagram(bytes);
    assert.equal(result.ok, false);
  }
});

Deno.test("decodeDatagram() rejects well-framed JSON that is not a valid message", () => {
  const frame = (json: string) => {
    const body = new TextEncoder().encode(json);
    const out = new Uint8Array(20 + body.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, 0x5344474d, true);
    view.setUint8(4, 1);
    view.setUint32(8, tag, true);
    view.setUint32(12, body.length, true);
    out.set(body, 20);
    view.setUint32(16, crc32(out.subarray(20), crc32(out.subarray(0, 16))), true);
    return out;
  };
  const good = frame(JSON.stringify({ from: "a:1", msg: { ...base, type: "leave" } }));
  assert.ok(decodeDatagram(good).ok);
  const bad = [
    "not json",
    "[]",
    JSON.stringify({ from: 5, msg: { ...base, type: "leave" } }),
    JSON.stringify({ from: "a:1", msg: { ...base, type: "explode" } }),
    JSON.stringify({ from: "a:1", msg: { ...base, type: "fetch", from: -2 } }),
    JSON.stringify({ from: "a:1", msg: { ...base, type: "commit", ballot, slot: 1.5 } }),
    JSON.stringify({
      from: "a:1",
      msg: { ...base, type: "propose", pid: 1, after: 0, payload: "x" },
    }),
    JSON.stringify({
      from: "a:1",
      msg: { ...base, type: "propose", pid: 1, after: 0, payload: { $blob: 0 } },
    }),
    JSON.stringify({
      from: "a:1",
      msg: { type: "leave", inc: 1, cluster: "x".repeat(101), era: 0 },
    }),
  ];
  for (const json of bad) assert.equal(decodeDatagram(frame(json)).ok, false, json);
  assert.equal(isMessage({ ...base, type: "toString" }), false);
});

Deno.test("encodeDatagram() refuses a datagram over the size limit", () => {
  const msg: GroupMessage = {
    ...base,
    type: "propose",
    pid: 1,
    after: 0,
    payload: new Uint8Array(70_000),
  };
  assert.throws(() => encodeDatagram("a:1", msg, tag), RangeError);
});

Deno.test("groupTagOf() and crc32() match their reference vectors", () => {
  assert.equal(groupTagOf(""), 0x811c9dc5);
  assert.equal(groupTagOf("a"), 0xe40c292c);
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});
