/** Option haggling driven by a raw-socket client. */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as C from "../../net/nbd/constants.ts";
import * as P from "../../net/nbd/protocol.ts";
import { NbdServer } from "../../net/nbd/mod.ts";
import { MemoryExportProvider } from "./memory_export.ts";
import { RawClient } from "./raw_client.ts";
import { MiB, withServer } from "./harness.ts";

const WRITABLE_FLAGS = C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_FUA |
  C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_WRITE_ZEROES;

Deno.test("greeting advertises fixed newstyle and no-zeroes; unknown client flags close", async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    const flags = await c.start(0x80);
    assert.equal(flags, C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES);
    assert.deepEqual(await c.waitClosed(), { extra: 0 });
  });
});

Deno.test("NBD_OPT_LIST lists exports with descriptions; bad requests get errors", async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    const rs = await c.ask(C.NBD_OPT_LIST);
    assert.equal(rs.at(-1)?.type, C.NBD_REP_ACK);
    const servers = rs.filter((r) => r.type === C.NBD_REP_SERVER).map((r) =>
      P.parseRepServer(r.data)
    );
    assert.deepEqual(servers, [
      { name: "vol", description: "test volume" },
      { name: "big", description: "" },
      { name: "ro", description: "a snapshot" },
    ]);
    // Data on LIST is invalid.
    const [bad] = await c.ask(C.NBD_OPT_LIST, Buffer.from("x"));
    assert.equal(bad?.type, C.NBD_REP_ERR_INVALID);
    assert.equal(bad?.option, C.NBD_OPT_LIST);
    // Unknown and unsupported options.
    const [unk] = await c.ask(4242);
    assert.equal(unk?.type, C.NBD_REP_ERR_UNSUP);
    assert.equal(unk?.option, 4242);
    assert.match(unk?.data.toString() ?? "", /not supported/);
    const [tls] = await c.ask(C.NBD_OPT_STARTTLS);
    assert.equal(tls?.type, C.NBD_REP_ERR_POLICY);
    const [ext] = await c.ask(C.NBD_OPT_EXTENDED_HEADERS);
    assert.equal(ext?.type, C.NBD_REP_ERR_UNSUP);
    const [sr] = await c.ask(C.NBD_OPT_STRUCTURED_REPLY, Buffer.from([1]));
    assert.equal(sr?.type, C.NBD_REP_ERR_INVALID);
    // Still haggling: ABORT is acknowledged, then the server closes.
    const [ack] = await c.ask(C.NBD_OPT_ABORT);
    assert.deepEqual([ack?.option, ack?.type, ack?.data.length], [
      C.NBD_OPT_ABORT,
      C.NBD_REP_ACK,
      0,
    ]);
    await c.waitClosed();
  });
});

Deno.test("NBD_OPT_INFO describes an export without attaching it", async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    const rs = await c.ask(
      C.NBD_OPT_INFO,
      P.encodeInfoRequest("vol", [C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION, C.NBD_INFO_BLOCK_SIZE]),
    );
    assert.equal(rs.at(-1)?.type, C.NBD_REP_ACK);
    const infos = rs.filter((r) => r.type === C.NBD_REP_INFO).map((r) => P.parseInfoReply(r.data));
    assert.deepEqual(infos, [
      { type: C.NBD_INFO_EXPORT, sizeBytes: 16 * MiB, transmissionFlags: WRITABLE_FLAGS },
      { type: C.NBD_INFO_BLOCK_SIZE, minimum: 1, preferred: 4096, maximum: 32 * MiB },
      { type: C.NBD_INFO_NAME, name: "vol" },
      { type: C.NBD_INFO_DESCRIPTION, description: "test volume" },
    ]);
    assert.equal(h.provider.volume("vol").holder, null, "INFO must not keep the lock");

    const [unknown] = await c.ask(C.NBD_OPT_INFO, P.encodeInfoRequest("nope"));
    assert.equal(unknown?.type, C.NBD_REP_ERR_UNKNOWN);
    assert.equal(unknown?.data.toString(), 'export "nope" does not exist');

    // Name length beyond the data.
    const broken = Buffer.from([0, 0, 0, 200, 0x61, 0, 0]);
    const [inv] = await c.ask(C.NBD_OPT_GO, broken);
    assert.equal(inv?.type, C.NBD_REP_ERR_INVALID);

    // Read-only export: READ_ONLY and CAN_MULTI_CONN, no write features. Structured → DF.
    await c.ask(C.NBD_OPT_STRUCTURED_REPLY);
    const ro = await c.ask(C.NBD_OPT_INFO, P.encodeInfoRequest("ro"));
    const exp = P.parseInfoReply(ro[0]?.data ?? Buffer.alloc(0));
    assert.deepEqual(exp, {
      type: C.NBD_INFO_EXPORT,
      sizeBytes: 1 * MiB,
      transmissionFlags: C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_READ_ONLY |
        C.NBD_FLAG_CAN_MULTI_CONN | C.NBD_FLAG_SEND_DF,
    });
    // Still usable afterwards.
    const go = await c.go("vol", { structured: false, meta: false });
    assert.equal(go.flags, WRITABLE_FLAGS | C.NBD_FLAG_SEND_DF);
  });
});

Deno.test("meta contexts: base:allocation listed and selected, others ignored", async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    const early = await c.ask(
      C.NBD_OPT_SET_META_CONTEXT,
      P.encodeMetaContextRequest("vol", [C.BASE_ALLOCATION]),
    );
    assert.equal(early.length, 1);
    assert.equal(early[0]?.type, C.NBD_REP_ERR_INVALID, "SET needs structured replies first");

    await c.ask(C.NBD_OPT_STRUCTURED_REPLY);
    const listAll = await c.ask(C.NBD_OPT_LIST_META_CONTEXT, P.encodeMetaContextRequest("vol", []));
    assert.deepEqual(listAll.map((r) => r.type), [C.NBD_REP_META_CONTEXT, C.NBD_REP_ACK]);
    assert.deepEqual(P.parseMetaContextReply(listAll[0]?.data ?? Buffer.alloc(0)), {
      contextId: 0,
      name: "base:allocation",
    });
    const listBase = await c.ask(
      C.NBD_OPT_LIST_META_CONTEXT,
      P.encodeMetaContextRequest("vol", ["base:"]),
    );
    assert.equal(listBase.length, 2);
    const listOther = await c.ask(
      C.NBD_OPT_LIST_META_CONTEXT,
      P.encodeMetaContextRequest("vol", ["qemu:dirty-bitmap:x"]),
    );
    assert.deepEqual(listOther.map((r) => r.type), [C.NBD_REP_ACK]);

    const set = await c.ask(
      C.NBD_OPT_SET_META_CONTEXT,
      P.encodeMetaContextRequest("vol", ["qemu:dirty-bitmap:x", C.BASE_ALLOCATION, "base:"]),
    );
    assert.deepEqual(set.map((r) => r.type), [C.NBD_REP_META_CONTEXT, C.NBD_REP_ACK]);
    assert.deepEqual(P.parseMetaContextReply(set[0]?.data ?? Buffer.alloc(0)), {
      contextId: C.BASE_ALLOCATION_ID,
      name: "base:allocation",
    });
    const malformed = await c.ask(C.NBD_OPT_SET_META_CONTEXT, Buffer.from([0, 0, 0, 9, 1]));
    assert.deepEqual(malformed.map((r) => r.type), [C.NBD_REP_ERR_INVALID]);
  });
});

Deno.test("NBD_OPT_EXPORT_NAME: with and without zero padding; unknown export closes", async () => {
  await withServer(async (h) => {
    const a = await h.connect();
    await a.start(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES);
    a.option(C.NBD_OPT_EXPORT_NAME, Buffer.from("vol"));
    const short = P.parseExportNameReply(await a.read(10));
    assert.deepEqual(short, { sizeBytes: 16 * MiB, transmissionFlags: WRITABLE_FLAGS });
    // Transmission with simple replies works right away.
    assert.deepEqual(
      await a.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 0 }, Buffer.from("hi")),
      { errno: 0, message: "" },
    );
    assert.equal((await a.readAt(2n, 0, 2)).toString(), "hi");
    await a.destroy();

    const b = await h.connect();
    await b.start(C.NBD_FLAG_C_FIXED_NEWSTYLE);
    b.option(C.NBD_OPT_EXPORT_NAME, Buffer.from("ro"));
    const full = await b.read(C.EXPORT_NAME_REPLY_LENGTH);
    assert.equal(P.parseExportNameReply(full).sizeBytes, 1 * MiB);
    assert.ok(full.subarray(10).every((x) => x === 0));

    const d = await h.connect();
    await d.start();
    d.option(C.NBD_OPT_EXPORT_NAME, Buffer.from("missing"));
    assert.deepEqual(await d.waitClosed(), { extra: 0 });
  });
});

Deno.test("GO to a missing export errors and lets the client try again", async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    await assert.rejects(c.go("missing"), /GO refused: 0x80000006 export "missing" does not exist/);
    const r = await c.go("vol", {
      structured: false,
      meta: false,
      infos: [C.NBD_INFO_BLOCK_SIZE, C.NBD_INFO_NAME],
    });
    assert.equal(r.sizeBytes, 16 * MiB);
    assert.ok(r.infos.some((i) => i.type === C.NBD_INFO_NAME));
  });
});

Deno.test("second writer is refused with a message naming the holder; lock released on disconnect", async () => {
  await withServer(async (h) => {
    const first = await h.connect();
    await first.start();
    await first.go("vol");
    const holder = `127.0.0.1:${first.socket.localPort}`;

    const second = await h.connect();
    await second.start();
    second.option(C.NBD_OPT_GO, P.encodeInfoRequest("vol"));
    const [refusal] = await second.optionReplies();
    assert.equal(refusal?.type, C.NBD_REP_ERR_POLICY);
    assert.equal(refusal?.data.toString(), `export "vol" is locked by ${holder}`);

    // Read-only exports have no lock: two readers at once.
    await second.go("ro");
    const third = await h.connect();
    await third.start();
    await third.go("ro");

    first.request(C.NBD_CMD_DISC, { handle: 9n });
    await first.waitClosed();
  });

  // Same scenario, checking that a later writer gets in once the first has gone.
  await withServer(async (h) => {
    const first = await h.connect();
    await first.start();
    await first.go("vol");
    first.request(C.NBD_CMD_DISC, { handle: 1n });
    await first.waitClosed();
    const next = await h.connect();
    await next.start();
    const r = await next.go("vol");
    assert.equal(r.sizeBytes, 16 * MiB);
    assert.deepEqual(h.provider.closes.map((x) => x.volume), ["vol"]);
  });
});

Deno.test("protocol violations during the handshake close the connection", async () => {
  await withServer(async (h) => {
    // Bad option magic.
    const a = await h.connect();
    await a.start();
    a.write(Buffer.alloc(16, 0x55));
    await a.waitClosed();
    // Absurd option length.
    const b = await h.connect();
    await b.start();
    const head = P.encodeOptionRequest(C.NBD_OPT_LIST);
    head.writeUInt32BE(C.MAX_OPTION_LENGTH + 1, 12);
    b.write(head);
    await b.waitClosed();
    // Truncated option then EOF.
    const d = await h.connect();
    await d.start();
    d.write(P.encodeOptionRequest(C.NBD_OPT_GO, P.encodeInfoRequest("vol")).subarray(0, 20));
    d.socket.end();
    await d.waitClosed();
    assert.equal(h.provider.opened.length, 0);
  });
});

Deno.test("handshake timeout drops idle clients", async () => {
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    const t0 = Date.now();
    await c.waitClosed();
    assert.ok(Date.now() - t0 < 2000);
  }, { limits: { handshakeTimeoutMs: 100 } });
});

Deno.test("Unix socket: listen({ path }) and the client is reported as unix", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/nbd.sock`;
  const provider = new MemoryExportProvider();
  provider.add("vol", 1 * MiB);
  const server = new NbdServer({ provider });
  try {
    assert.deepEqual(await server.listen({ path }), { path });
    const a = await RawClient.connect({ path });
    await a.start();
    await a.go("vol");
    assert.deepEqual(
      await a.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 5 }, Buffer.from("unix")),
      { errno: 0, message: "" },
    );
    assert.equal((await a.readAt(2n, 5, 4)).toString(), "unix");
    const b = await RawClient.connect({ path });
    await b.start();
    await assert.rejects(b.go("vol"), /locked by unix/);
    await a.destroy();
    await b.destroy();
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(provider.closes.length, 1);
});
