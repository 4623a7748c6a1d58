import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as C from "./constants.ts";
import * as P from "./protocol.ts";
import { ExportError, nbdErrnoOf, NbdIoError } from "./export.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

Deno.test("greeting and client flags: exact bytes and round trip", () => {
  const g = P.encodeGreeting(C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES);
  assert.equal(g.subarray(0, 16).toString("latin1"), "NBDMAGICIHAVEOPT");
  assert.equal(hex(g.subarray(16)), "0003");
  assert.deepEqual(P.parseGreeting(g), { handshakeFlags: 3 });
  assert.throws(() => P.parseGreeting(g.subarray(0, 17)), P.NbdProtocolError);
  const bad = Buffer.from(g);
  bad[3] = 0;
  assert.throws(() => P.parseGreeting(bad), /NBDMAGIC/);
  const old = Buffer.from(g);
  old.writeBigUInt64BE(0x00420281861253n, 8);
  assert.throws(() => P.parseGreeting(old), /newstyle/);
  assert.equal(hex(P.encodeClientFlags(3)), "00000003");
  assert.equal(P.parseClientFlags(P.encodeClientFlags(0xffffffff)), 0xffffffff);
  assert.throws(() => P.parseClientFlags(Buffer.alloc(3)), P.NbdProtocolError);
});

Deno.test("option requests: every option round-trips; bad magic and short headers throw", () => {
  for (let option = 1; option <= 11; option++) {
    const data = Buffer.from(`data-${option}`);
    const frame = P.encodeOptionRequest(option, data);
    assert.equal(frame.subarray(0, 8).toString("latin1"), "IHAVEOPT");
    assert.deepEqual(P.parseOptionHeader(frame), { option, length: data.length });
    assert.deepEqual(frame.subarray(16), data);
  }
  assert.equal(P.encodeOptionRequest(C.NBD_OPT_ABORT).length, 16);
  const bad = P.encodeOptionRequest(C.NBD_OPT_LIST);
  bad[0] = 0x4a;
  assert.throws(() => P.parseOptionHeader(bad), /IHAVEOPT/);
  assert.throws(() => P.parseOptionHeader(Buffer.alloc(15)), /need 16 bytes/);
});

Deno.test("INFO/GO request data: round trip and malformed input", () => {
  const d = P.encodeInfoRequest("vdi:snap", [C.NBD_INFO_NAME, C.NBD_INFO_BLOCK_SIZE]);
  assert.equal(
    hex(d),
    "00000008" + Buffer.from("vdi:snap").toString("hex") + "0002" + "0001" + "0003",
  );
  assert.deepEqual(P.parseInfoRequest(d), { name: "vdi:snap", infos: [1, 3] });
  assert.deepEqual(P.parseInfoRequest(P.encodeInfoRequest("")), { name: "", infos: [] });
  assert.deepEqual(P.parseInfoRequest(P.encodeInfoRequest("ü")), { name: "ü", infos: [] });
  assert.throws(() => P.parseInfoRequest(Buffer.alloc(5)), P.NbdProtocolError);
  assert.throws(() => P.parseInfoRequest(d.subarray(0, d.length - 1)), /count/);
  assert.throws(() => P.parseInfoRequest(Buffer.concat([d, Buffer.alloc(2)])), /count/);
  const long = Buffer.from(d);
  long.writeUInt32BE(1000, 0);
  assert.throws(() => P.parseInfoRequest(long), /name too long/);
});

Deno.test("meta context request data: round trip and malformed input", () => {
  const d = P.encodeMetaContextRequest("vol", ["base:allocation", "qemu:dirty-bitmap:b"]);
  assert.deepEqual(P.parseMetaContextRequest(d), {
    exportName: "vol",
    queries: ["base:allocation", "qemu:dirty-bitmap:b"],
  });
  assert.deepEqual(P.parseMetaContextRequest(P.encodeMetaContextRequest("", [])), {
    exportName: "",
    queries: [],
  });
  assert.throws(() => P.parseMetaContextRequest(d.subarray(0, d.length - 1)), /query length/);
  assert.throws(() => P.parseMetaContextRequest(Buffer.concat([d, Buffer.from([0])])), /trailing/);
  const many = Buffer.from(P.encodeMetaContextRequest("v", []));
  many.writeUInt32BE(0xffffffff, 5);
  assert.throws(() => P.parseMetaContextRequest(many), /query count/);
  const name = Buffer.from(d);
  name.writeUInt32BE(0xffff, 0);
  assert.throws(() => P.parseMetaContextRequest(name), /export name length/);
  assert.throws(() => P.parseMetaContextRequest(Buffer.alloc(7)), P.NbdProtocolError);
});

Deno.test("option replies: ACK, SERVER, INFO (all types), META_CONTEXT, errors", () => {
  const ack = P.encodeOptionReply(C.NBD_OPT_GO, C.NBD_REP_ACK);
  assert.equal(hex(ack), "0003e889045565a9" + "00000007" + "00000001" + "00000000");
  assert.deepEqual(P.parseOptionReplyHeader(ack), {
    option: C.NBD_OPT_GO,
    type: C.NBD_REP_ACK,
    length: 0,
  });
  const err = P.encodeOptionReply(C.NBD_OPT_GO, C.NBD_REP_ERR_POLICY, P.encodeString("locked"));
  assert.deepEqual(P.parseOptionReplyHeader(err), {
    option: 7,
    type: 0x80000002,
    length: 6,
  });
  assert.equal(err.subarray(20).toString(), "locked");
  const bad = Buffer.from(ack);
  bad[7] = 0;
  assert.throws(() => P.parseOptionReplyHeader(bad), /magic/);

  assert.deepEqual(P.parseRepServer(P.encodeRepServer("vm1", "a disk")), {
    name: "vm1",
    description: "a disk",
  });
  assert.deepEqual(P.parseRepServer(P.encodeRepServer("x")), { name: "x", description: "" });
  assert.throws(() => P.parseRepServer(Buffer.from([0, 0, 0, 9, 1])), /name too long/);

  const size = 4 * 2 ** 40; // 4 TiB
  assert.equal(hex(P.encodeInfoExport(size, 0x1ef)), "0000" + "0000040000000000" + "01ef");
  assert.deepEqual(P.parseInfoReply(P.encodeInfoExport(size, 0x1ef)), {
    type: C.NBD_INFO_EXPORT,
    sizeBytes: size,
    transmissionFlags: 0x1ef,
  });
  assert.deepEqual(P.parseInfoReply(P.encodeInfoName("vm1")), { type: 1, name: "vm1" });
  assert.deepEqual(P.parseInfoReply(P.encodeInfoDescription("d")), {
    type: 2,
    description: "d",
  });
  assert.deepEqual(P.parseInfoReply(P.encodeInfoBlockSize(1, 4096, 32 << 20)), {
    type: 3,
    minimum: 1,
    preferred: 4096,
    maximum: 32 << 20,
  });
  assert.deepEqual(P.parseInfoReply(Buffer.from([0, 9, 1, 2])), {
    type: 9,
    raw: Buffer.from([1, 2]),
  });
  assert.throws(() => P.parseInfoReply(Buffer.from([0, 0, 1])), /length must be 12/);
  assert.throws(() => P.parseInfoReply(Buffer.from([0, 3, 1])), /length must be 14/);

  assert.deepEqual(P.parseMetaContextReply(P.encodeMetaContextReply(1, "base:allocation")), {
    contextId: 1,
    name: "base:allocation",
  });
});

Deno.test("NBD_OPT_EXPORT_NAME reply with and without the 124 zero bytes", () => {
  const full = P.encodeExportNameReply(1 << 30, 0x3, false);
  assert.equal(full.length, 134);
  assert.ok(full.subarray(10).every((b) => b === 0));
  assert.deepEqual(P.parseExportNameReply(full), { sizeBytes: 1 << 30, transmissionFlags: 3 });
  assert.equal(P.encodeExportNameReply(1, 1, true).length, 10);
});

Deno.test("requests: every command round-trips, 64-bit offsets, malformed input", () => {
  const commands = [
    C.NBD_CMD_READ,
    C.NBD_CMD_WRITE,
    C.NBD_CMD_DISC,
    C.NBD_CMD_FLUSH,
    C.NBD_CMD_TRIM,
    C.NBD_CMD_CACHE,
    C.NBD_CMD_WRITE_ZEROES,
    C.NBD_CMD_BLOCK_STATUS,
    C.NBD_CMD_RESIZE,
  ];
  for (const type of commands) {
    const req = {
      type,
      flags: C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_NO_HOLE,
      handle: 0xfedcba9876543210n,
      offset: 4 * 2 ** 40 - 4096,
      length: 0xffffffff,
    };
    const frame = P.encodeRequest(req);
    assert.equal(frame.length, 28);
    assert.deepEqual(P.parseRequest(frame), req);
  }
  const frame = P.encodeRequest({ type: 1, flags: 1, handle: 7n, offset: 5, length: 512 });
  assert.equal(
    hex(frame),
    "25609513" + "0001" + "0001" + "0000000000000007" + "0000000000000005" + "00000200",
  );
  // Parsing at an offset inside a bigger buffer.
  assert.equal(P.parseRequest(Buffer.concat([Buffer.alloc(3), frame]), 3).length, 512);
  assert.throws(() => P.parseRequest(frame.subarray(0, 27)), /need 28 bytes/);
  const bad = Buffer.from(frame);
  bad[0] = 0x26;
  assert.throws(() => P.parseRequest(bad), /bad magic 0x26609513/);
  // Offsets ≥ 2^53 stay huge (never wrap to something small).
  const huge = Buffer.from(frame);
  huge.fill(0xff, 16, 24);
  assert.ok(P.parseRequest(huge).offset > 2 ** 63);
});

Deno.test("simple replies round-trip", () => {
  const r = P.encodeSimpleReply(C.NBD_EPERM, 42n);
  assert.equal(hex(r), "67446698" + "00000001" + "000000000000002a");
  assert.deepEqual(P.parseSimpleReply(r), { errno: 1, handle: 42n });
  assert.throws(() => P.parseSimpleReply(Buffer.alloc(16)), /bad magic/);
  assert.throws(() => P.parseSimpleReply(r.subarray(0, 15)), P.NbdProtocolError);
});

Deno.test("structured chunks: OFFSET_DATA, OFFSET_HOLE, NONE, ERROR, BLOCK_STATUS", () => {
  const data = P.encodeOffsetDataHeader(9n, 2 ** 40, 4096);
  assert.equal(data.length, 28);
  assert.deepEqual(P.parseStructuredHeader(data), {
    flags: C.NBD_REPLY_FLAG_DONE,
    type: C.NBD_REPLY_TYPE_OFFSET_DATA,
    handle: 9n,
    length: 8 + 4096,
  });
  assert.equal(P.readU64(data, 20), 2 ** 40);
  assert.equal(P.parseStructuredHeader(P.encodeOffsetDataHeader(1n, 0, 1, 0)).flags, 0);

  const hole = P.encodeOffsetHoleChunk(3n, 512, 1024, 0);
  assert.deepEqual(P.parseStructuredHeader(hole), {
    flags: 0,
    type: C.NBD_REPLY_TYPE_OFFSET_HOLE,
    handle: 3n,
    length: 12,
  });
  assert.equal(hole.readUInt32BE(28), 1024);

  const none = P.encodeNoneChunk(5n);
  assert.equal(hex(none), "668e33ef" + "0001" + "0000" + "0000000000000005" + "00000000");

  const err = P.encodeErrorChunk(6n, C.NBD_EIO, "bad sector");
  const h = P.parseStructuredHeader(err);
  assert.deepEqual(h, { flags: 1, type: C.NBD_REPLY_TYPE_ERROR, handle: 6n, length: 16 });
  assert.deepEqual(P.parseErrorPayload(h.type, err.subarray(20)), {
    errno: C.NBD_EIO,
    message: "bad sector",
  });
  const withOffset = Buffer.alloc(6 + 2 + 8);
  withOffset.writeUInt32BE(C.NBD_EIO, 0);
  withOffset.writeUInt16BE(2, 4);
  withOffset.write("hi", 6);
  P.writeU64(withOffset, 8, 4096);
  assert.deepEqual(P.parseErrorPayload(C.NBD_REPLY_TYPE_ERROR_OFFSET, withOffset), {
    errno: 5,
    message: "hi",
    offset: 4096,
  });
  assert.throws(() => P.parseErrorPayload(C.NBD_REPLY_TYPE_NONE, withOffset), /not an error/);
  assert.throws(
    () => P.parseErrorPayload(C.NBD_REPLY_TYPE_ERROR, Buffer.from([0, 0, 0, 5, 0, 9])),
    /exceeds/,
  );

  const bs = P.encodeBlockStatusChunk(7n, 1, [
    { length: 65536, flags: 3 },
    { length: 4096, flags: 0 },
  ]);
  const bh = P.parseStructuredHeader(bs);
  assert.deepEqual(bh, { flags: 1, type: C.NBD_REPLY_TYPE_BLOCK_STATUS, handle: 7n, length: 20 });
  assert.deepEqual(P.parseBlockStatusPayload(bs.subarray(20)), {
    contextId: 1,
    descriptors: [{ length: 65536, flags: 3 }, { length: 4096, flags: 0 }],
  });
  assert.throws(() => P.encodeBlockStatusChunk(1n, 1, []), RangeError);
  assert.throws(() => P.parseBlockStatusPayload(Buffer.alloc(13)), /bad length/);
  const badMagic = Buffer.from(none);
  badMagic[0] = 0;
  assert.throws(() => P.parseStructuredHeader(badMagic), /bad magic/);
});

Deno.test("base:allocation extents: clip, merge, drop garbage, REQ_ONE, never empty", () => {
  const H = C.NBD_STATE_HOLE | C.NBD_STATE_ZERO;
  assert.deepEqual(
    P.extentsToDescriptors(
      [
        { length: 100, hole: true, zero: true },
        { length: 50, hole: true, zero: true },
        { length: 200, hole: false, zero: false },
        { length: 1000, hole: false, zero: true },
      ],
      400,
      false,
    ),
    [{ length: 150, flags: H }, { length: 200, flags: 0 }, { length: 50, flags: 2 }],
  );
  assert.deepEqual(
    P.extentsToDescriptors(
      [{ length: 10, hole: false, zero: false }, {
        length: 10,
        hole: true,
        zero: true,
      }],
      100,
      true,
    ),
    [{ length: 10, flags: 0 }],
  );
  assert.deepEqual(P.extentsToDescriptors([], 4096, false), [{ length: 4096, flags: 0 }]);
  assert.deepEqual(
    P.extentsToDescriptors([{ length: 0, hole: true, zero: true }], 4096, false),
    [{ length: 4096, flags: 0 }],
  );
  assert.deepEqual(
    P.extentsToDescriptors(
      [{ length: 10, hole: true, zero: true }, {
        length: NaN,
        hole: false,
        zero: false,
      }],
      4096,
      false,
    ),
    [{ length: 10, flags: H }],
  );
});

Deno.test("strings are capped at 4096 bytes on a character boundary", () => {
  assert.equal(P.encodeString("x".repeat(5000)).length, 4096);
  const s = P.encodeString("é".repeat(3000)); // 2 bytes each
  assert.equal(s.length, 4096);
  assert.equal(s.toString("utf8"), "é".repeat(2048));
  const t = P.encodeString("a" + "é".repeat(3000));
  assert.equal(t.length, 4095);
  assert.ok(!t.toString("utf8").includes("\ufffd"));
});

Deno.test("u64 helpers are exact for export-sized numbers", () => {
  const b = Buffer.alloc(8);
  for (const n of [0, 1, 2 ** 32 - 1, 2 ** 32, 4 * 2 ** 40, 2 ** 53 - 1]) {
    P.writeU64(b, 0, n);
    assert.equal(P.readU64(b, 0), n);
    assert.equal(b.readBigUInt64BE(0), BigInt(n));
  }
});

Deno.test("errors: ExportError kinds map to option replies, I/O errors to NBD errnos", () => {
  assert.equal(ExportError.unknown("x").replyType, C.NBD_REP_ERR_UNKNOWN);
  const locked = ExportError.locked("vm", "10.0.0.5:4000");
  assert.equal(locked.replyType, C.NBD_REP_ERR_POLICY);
  assert.equal(locked.message, 'export "vm" is locked by 10.0.0.5:4000');
  assert.equal(new ExportError("shutdown", "bye").replyType, C.NBD_REP_ERR_SHUTDOWN);
  assert.equal(new ExportError("tls-required", "tls").replyType, C.NBD_REP_ERR_TLS_REQD);
  assert.equal(nbdErrnoOf(new NbdIoError(C.NBD_ENOSPC, "full")), C.NBD_ENOSPC);
  assert.equal(nbdErrnoOf(new NbdIoError(999, "odd")), C.NBD_EIO);
  assert.equal(nbdErrnoOf(new Error("boom")), C.NBD_EIO);
  assert.equal(nbdErrnoOf("string"), C.NBD_EIO);
  assert.equal(nbdErrnoOf(Object.assign(new Error(), { code: "ENOSPC", errno: -28 })), 28);
  assert.equal(nbdErrnoOf(Object.assign(new Error(), { code: "EFBIG" })), C.NBD_ENOSPC);
  assert.equal(nbdErrnoOf(Object.assign(new Error(), { code: "EACCES" })), C.NBD_EPERM);
  assert.equal(nbdErrnoOf({ errno: C.NBD_EOVERFLOW }), C.NBD_EOVERFLOW);
});
