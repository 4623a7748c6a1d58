/**
 * Goal: the cluster key's pieces refuse what they must: datagrams with a wrong MAC or seen
 * before, handshakes with another key, public requests from addresses not allowed, key files
 * that are open to others, empty, short or missing; and accept what they must.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { tempDir } from "../../tests/harness.ts";
import { Header } from "../object/header.ts";
import { Opcode } from "../object/ops.ts";
import { requestHeader } from "../object/client.ts";
import { ResultCode } from "../../core/errors.ts";
import { ClientAddresses } from "./client_addresses.ts";
import {
  generateKey,
  keyNotePath,
  readKeyFile,
  removeKeyNote,
  sheepKey,
  writeKeyNote,
  writeNewKeyFile,
} from "./cluster_key.ts";
import { ConnectionAccess } from "./connection_access.ts";
import { DatagramSeal } from "./datagram_seal.ts";
import { answerHello, checkProof, newNonce, proveToServer } from "./handshake.ts";
import { type RefusalKind, Refusals } from "./refusals.ts";

const datagram = new TextEncoder().encode("SDGM a group datagram");

Deno.test("a sealed datagram opens once under the same key, never under another", () => {
  const key = generateKey();
  const sender = new DatagramSeal(key, 1000);
  const receiver = new DatagramSeal(key, 2000);
  const sealed = sender.seal(datagram);
  const opened = receiver.open(sealed, "10.0.0.1:7000");
  assert.ok(opened.ok);
  assert.deepEqual(opened.datagram, datagram);
  assert.deepEqual(receiver.open(sealed, "10.0.0.1:7000"), { ok: false, reason: "replay" });
  const stranger = new DatagramSeal(generateKey(), 3000);
  assert.deepEqual(stranger.open(sender.seal(datagram), "10.0.0.1:7000"), {
    ok: false,
    reason: "bad MAC",
  });
  for (const i of [0, 5, sealed.length - 9, sealed.length - 1]) {
    const flipped = sender.seal(datagram);
    flipped[i]! ^= 0x01;
    assert.equal(receiver.open(flipped, "10.0.0.1:7000").ok, false, `bit flip at ${i}`);
  }
  assert.deepEqual(receiver.open(sealed.subarray(0, 10), "x:1"), {
    ok: false,
    reason: "malformed",
  });
  assert.deepEqual(receiver.open(new Uint8Array(0), "x:1"), { ok: false, reason: "malformed" });
});

Deno.test("the replay window takes late datagrams once and refuses ones older than it", () => {
  const key = generateKey();
  const sender = new DatagramSeal(key, 1000);
  const receiver = new DatagramSeal(key, 1000);
  const sealed = Array.from({ length: 300 }, () => sender.seal(datagram));
  assert.ok(receiver.open(sealed[10]!, "a:1").ok);
  assert.ok(receiver.open(sealed[5]!, "a:1").ok, "late, inside the window");
  assert.equal(receiver.open(sealed[5]!, "a:1").ok, false, "late and seen");
  assert.ok(receiver.open(sealed[299]!, "a:1").ok);
  assert.deepEqual(receiver.open(sealed[20]!, "a:1"), { ok: false, reason: "replay" });
  assert.ok(receiver.open(sealed[20]!, "b:1").ok, "each sender has its own window");
  // A restarted sender starts above where it was.
  const restarted = new DatagramSeal(key, 1001);
  assert.ok(receiver.open(restarted.seal(datagram), "a:1").ok);
});

Deno.test("the handshake succeeds with one key and fails both ways with two", () => {
  const key = generateKey();
  const nonce = newNonce();
  const answer = answerHello(key, nonce)!;
  const proof = proveToServer(key, nonce, answer.reply)!;
  assert.ok(checkProof(answer.expectedProof, proof));
  // The client refuses a server with another key, before proving anything.
  assert.equal(proveToServer(generateKey(), nonce, answer.reply), undefined);
  // The server refuses a client with another key.
  const other = generateKey();
  const otherAnswer = answerHello(other, nonce)!;
  const wrongProof = proveToServer(other, nonce, otherAnswer.reply)!;
  assert.equal(checkProof(answer.expectedProof, wrongProof), false);
  // A recorded proof does not answer a fresh challenge.
  const fresh = answerHello(key, nonce)!;
  assert.equal(checkProof(fresh.expectedProof, proof), false);
  assert.equal(answerHello(key, new Uint8Array(5)), undefined);
  assert.equal(proveToServer(key, nonce, new Uint8Array(3)), undefined);
});

Deno.test("--allow-clients networks, loopback always, and bad entries named", () => {
  const clients = ClientAddresses.parse("10.0.0.0/24, 192.168.7.9");
  for (
    const ok of ["127.0.0.1", "127.9.9.9", "::1", "10.0.0.200", "::ffff:10.0.0.1", "192.168.7.9"]
  ) {
    assert.ok(clients.allows(ok), ok);
  }
  for (const no of ["10.0.1.1", "192.168.7.10", "8.8.8.8", "fe80::1", ""]) {
    assert.equal(clients.allows(no), false, no);
  }
  assert.equal(ClientAddresses.loopbackOnly.allows("10.0.0.1"), false);
  assert.ok(ClientAddresses.parse("0.0.0.0/0").allows("203.0.113.5"));
  for (const bad of ["10.0.0.0/33", "10.0.0/24", "example.com", "10.0.0.0/x", "300.1.1.1"]) {
    assert.throws(() => ClientAddresses.parse(bad), new RegExp(`'${bad.replace(/\./g, "\\.")}'`));
  }
});

Deno.test("key files: made 0600, never replaced, refused when open, empty, short or missing", async () => {
  const dir = await tempDir("sd-key-");
  try {
    const file = path.join(dir, "k");
    writeNewKeyFile(file);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const key = readKeyFile(file);
    assert.equal(key.length, 32);
    assert.throws(() => writeNewKeyFile(file), /exists already/);
    assert.deepEqual(readKeyFile(file), key, "the refused keygen left the key alone");
    fs.chmodSync(file, 0o644);
    assert.throws(
      () => readKeyFile(file),
      /others can read or change it \(mode 0644\); run chmod 600/,
    );
    fs.chmodSync(file, 0o600);
    const write = (name: string, text: string) => {
      fs.writeFileSync(path.join(dir, name), text, { mode: 0o600 });
      return path.join(dir, name);
    };
    assert.throws(() => readKeyFile(write("empty", "\n")), /it is empty/);
    assert.throws(() => readKeyFile(write("short", "abcd\n")), /too short/);
    assert.throws(() => readKeyFile(write("text", "not a key at all\n")), /hex digits/);
    assert.throws(
      () => readKeyFile(path.join(dir, "none")),
      /no such file or directory.*shepherd keygen/,
    );
    assert.throws(() => readKeyFile(dir), /not a file/);
    // A sheep with no --key-file makes DIR/cluster.key once and keeps it.
    const made = sheepKey(path.join(dir, "sheep"), undefined);
    assert.ok(made.created);
    const again = sheepKey(path.join(dir, "sheep"), undefined);
    assert.equal(again.created, false);
    assert.deepEqual(again.key, made.key);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("a sheep's key note is per network namespace and port, and removed only by its sheep", () => {
  // Port 0 is never noted by a real sheep (it notes the port it got), so no note is disturbed.
  const note = keyNotePath(0);
  const namespace = /\[(\d+)\]/.exec(fs.readlinkSync("/proc/self/ns/net"))![1];
  assert.equal(
    path.basename(note),
    `key-file.${namespace}.0`,
    "sheep in two namespaces may share a port",
  );
  try {
    writeKeyNote(0, "/a/cluster.key");
    removeKeyNote(0, "/another/cluster.key");
    assert.equal(
      fs.readFileSync(note, "utf8").trim(),
      "/a/cluster.key",
      "another sheep's note stays",
    );
    removeKeyNote(0, "/a/cluster.key");
    assert.equal(fs.existsSync(note), false);
  } finally {
    fs.rmSync(note, { force: true });
  }
});

function accessFor(remote: string, clients = ClientAddresses.loopbackOnly) {
  const refused: RefusalKind[] = [];
  const key = generateKey();
  const refusals = new Refusals({ log: () => {}, count: (kind) => refused.push(kind) });
  const access = new ConnectionAccess({ key, clients, refusals }, `${remote}:5555`, remote);
  return { access, refused, key };
}

function message(opcode: number, data: Uint8Array = new Uint8Array(0)) {
  return { header: requestHeader(opcode), data };
}

Deno.test("a connection: internal requests need the key, public ones an allowed address", () => {
  // Loopback: public requests served, internal ones refused with NOT_AUTHORIZED.
  const local = accessFor("127.0.0.1");
  assert.equal(local.access.decide(message(Opcode.READ_OBJ)).kind, "serve");
  const mkfs = local.access.decide(message(Opcode.MAKE_FS));
  assert.equal(mkfs.kind, "reply");
  assert.equal(mkfs.kind === "reply" && mkfs.response.header.result, ResultCode.NOT_AUTHORIZED);
  assert.deepEqual(local.refused, ["connection not authenticated"]);
  // A stranger's address: even public requests close the connection.
  const far = accessFor("10.9.9.9");
  assert.equal(far.access.decide(message(Opcode.READ_OBJ)).kind, "close");
  assert.deepEqual(far.refused, ["client address not allowed"]);
  assert.ok(far.access.mustAuthenticate);
  // An allowed network: public requests served.
  const allowed = accessFor("10.9.9.9", ClientAddresses.parse("10.9.0.0/16"));
  assert.equal(allowed.access.decide(message(Opcode.WRITE_OBJ)).kind, "serve");
  // The handshake from a far sheep with the key: everything served afterwards.
  const peer = accessFor("10.9.9.9");
  const nonce = newNonce();
  const hello = peer.access.decide(message(Opcode.AUTH_HELLO, nonce));
  assert.ok(hello.kind === "reply" && hello.response.header.result === ResultCode.SUCCESS);
  const proof = proveToServer(
    peer.key,
    nonce,
    hello.kind === "reply" ? hello.response.data : new Uint8Array(),
  )!;
  const proved = peer.access.decide(message(Opcode.AUTH_PROVE, proof));
  assert.ok(proved.kind === "reply" && proved.response.header.result === ResultCode.SUCCESS);
  assert.equal(peer.access.decide(message(Opcode.MAKE_FS)).kind, "serve");
  assert.equal(peer.access.decide(message(Opcode.READ_PEER)).kind, "serve");
  // Another key: refused, and the connection closes.
  const wrong = accessFor("10.9.9.9");
  const hello2 = wrong.access.decide(message(Opcode.AUTH_HELLO, nonce));
  assert.ok(hello2.kind === "reply");
  const otherKey = generateKey();
  const otherProof = proveToServer(otherKey, nonce, answerHello(otherKey, nonce)!.reply)!;
  const refused = wrong.access.decide(message(Opcode.AUTH_PROVE, otherProof));
  assert.ok(refused.kind === "reply" && refused.close);
  assert.equal(
    refused.kind === "reply" && refused.response.header.result,
    ResultCode.NOT_AUTHORIZED,
  );
  assert.deepEqual(wrong.refused, ["connection wrong key"]);
  // A proof without a hello is refused too.
  const bare = accessFor("127.0.0.1");
  const bareProof = bare.access.decide(message(Opcode.AUTH_PROVE, new Uint8Array(16)));
  assert.ok(bareProof.kind === "reply" && bareProof.close);
  assert.ok(new Header().bytes.length === 48);
});

Deno.test("refusals are all counted, but logged once per peer address per minute", () => {
  let now = 0;
  const lines: string[] = [];
  const counted: string[] = [];
  const refusals = new Refusals({
    log: (line) => lines.push(line),
    count: (kind) => counted.push(kind),
    now: () => now,
  });
  for (let i = 0; i < 100; i++) refusals.report("datagram bad MAC", `10.0.0.5:${7000 + i}`, "bad");
  refusals.report("datagram bad MAC", "10.0.0.6:7000", "bad");
  assert.equal(counted.length, 101);
  assert.deepEqual(lines, ["refused 10.0.0.5:7000: bad", "refused 10.0.0.6:7000: bad"]);
  now += 60_000;
  refusals.report("datagram replay", "10.0.0.5:7001", "again");
  assert.equal(lines.at(-1), "refused 10.0.0.5:7001: again");
});
