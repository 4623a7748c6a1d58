import assert from "node:assert/strict";
import * as net from "node:net";
import {
  FrameReader,
  FramingError,
  requestPayloadLength,
  responsePayloadLength,
} from "./framing.ts";
import { Header, HEADER_SIZE } from "./header.ts";
import { Flag, Opcode, SD_PROTO_VER } from "./ops.ts";
import { withSheep } from "../../tests/harness.ts";
import { ResultCode } from "../../core/errors.ts";
import { requestHeader } from "./client.ts";

Deno.test("Header lays out Sheepdog 1.0's 48 little-endian bytes", () => {
  const header = new Header();
  header.protoVer = SD_PROTO_VER;
  header.opcode = Opcode.WRITE_OBJ;
  header.flags = Flag.WRITE | Flag.COW;
  header.epoch = 7;
  header.id = 0x01020304;
  header.dataLength = 4096;
  header.oid = 0x007c2b2500000001n;
  header.cowOid = 0x007c2b2400000001n;
  header.offset = 8192;
  const bytes = header.bytes;
  assert.equal(bytes.length, HEADER_SIZE);
  assert.deepEqual([...bytes.subarray(0, 4)], [0x02, 0x03, 0x03, 0x00]);
  assert.deepEqual([...bytes.subarray(8, 12)], [4, 3, 2, 1]);
  assert.deepEqual([...bytes.subarray(16, 24)], [1, 0, 0, 0, 0x25, 0x2b, 0x7c, 0]);
  assert.equal(new DataView(bytes.buffer).getBigUint64(40, true), 8192n, "offset as QEMU's u64");
  const back = new Header(bytes.slice());
  assert.equal(back.oid, header.oid);
  assert.equal(back.cowOid, header.cowOid);
  assert.equal(back.offset, 8192);
  assert.throws(() => new Header(new Uint8Array(47)), RangeError);
});

Deno.test("Header VDI and response fields sit where QEMU reads them", () => {
  const header = new Header();
  header.vdiSize = 256 * 2 ** 30;
  header.baseVdiId = 0x7c2b25;
  header.snapid = 1;
  assert.equal(new DataView(header.bytes.buffer).getBigUint64(16, true), 256n * 2n ** 30n);
  assert.equal(new DataView(header.bytes.buffer).getUint32(24, true), 0x7c2b25);
  const reply = header.reply(ResultCode.NO_VDI, 3);
  reply.rspVdiId = 0xabcdef;
  assert.equal(new DataView(reply.bytes.buffer).getUint32(16, true), ResultCode.NO_VDI);
  assert.equal(new DataView(reply.bytes.buffer).getUint32(24, true), 0xabcdef);
  assert.equal(reply.epoch, 3);
});

Deno.test("FrameReader reassembles messages split anywhere and refuses oversized ones", () => {
  const header = requestHeader(Opcode.WRITE_OBJ);
  header.flags = Flag.WRITE;
  header.dataLength = 10;
  const frame = new Uint8Array(HEADER_SIZE + 10);
  frame.set(header.bytes);
  frame.set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], HEADER_SIZE);
  const stream = new Uint8Array([...frame, ...frame]);
  for (let cut = 1; cut < stream.length; cut += 7) {
    const reader = new FrameReader(requestPayloadLength);
    const messages = [
      ...reader.push(stream.subarray(0, cut)),
      ...reader.push(stream.subarray(cut)),
    ];
    assert.equal(messages.length, 2);
    assert.deepEqual([...messages[1]!.data], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  }
  // A read request carries no payload even though data_length is set.
  const read = requestHeader(Opcode.READ_OBJ);
  read.dataLength = 4096;
  assert.equal(new FrameReader(requestPayloadLength).push(read.bytes).length, 1);
  const huge = requestHeader(Opcode.WRITE_OBJ);
  huge.flags = Flag.WRITE;
  huge.dataLength = 0xffffffff;
  assert.throws(() => new FrameReader(requestPayloadLength).push(huge.bytes), FramingError);
  assert.equal(new FrameReader(responsePayloadLength).push(new Uint8Array(10)).length, 0);
});

function exchange(port: number, bytes: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = [];
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.end(bytes));
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("close", () => resolve(new Uint8Array(Buffer.concat(chunks))));
    socket.on("error", () => resolve(new Uint8Array(Buffer.concat(chunks))));
  });
}

Deno.test("a sheep answers bad packets with errors or a closed connection, and keeps serving", async () => {
  await withSheep(async ({ sheep, client }) => {
    await client.newVdi({ name: "keep", sizeBytes: 1 << 20 });
    // Unknown opcode: an error reply naming it.
    const unknown = requestHeader(0x7f);
    const reply = new Header((await exchange(sheep.port, unknown.bytes)).slice(0, HEADER_SIZE));
    assert.equal(reply.result, ResultCode.NO_SUPPORT);
    // A future protocol version: VER_MISMATCH.
    const future = requestHeader(Opcode.GET_VDI_INFO);
    future.protoVer = 9;
    assert.equal(
      new Header((await exchange(sheep.port, future.bytes)).slice(0, 48)).result,
      ResultCode.VER_MISMATCH,
    );
    // A write past the end of an object: INVALID_PARMS, nothing written.
    const past = requestHeader(Opcode.WRITE_OBJ);
    past.flags = Flag.WRITE;
    past.oid = 1n << 32n;
    past.offset = 4 << 20;
    past.dataLength = 1;
    const frame = new Uint8Array([...past.bytes, 42]);
    assert.equal(
      new Header((await exchange(sheep.port, frame)).slice(0, 48)).result,
      ResultCode.INVALID_PARMS,
    );
    // A NEW_VDI with a short name payload.
    const short = requestHeader(Opcode.NEW_VDI);
    short.flags = Flag.WRITE;
    short.dataLength = 3;
    const shortFrame = new Uint8Array([...short.bytes, 1, 2, 3]);
    assert.equal(
      new Header((await exchange(sheep.port, shortFrame)).slice(0, 48)).result,
      ResultCode.INVALID_PARMS,
    );
    // Garbage, a truncated header, an absurd length: the connection closes, nothing else.
    // (Random bytes, but proto_ver 0xff so no stray request could ever be valid.)
    const garbage = crypto.getRandomValues(new Uint8Array(1000));
    for (let i = 0; i < garbage.length; i += 48) garbage[i] = 0xff;
    await exchange(sheep.port, garbage);
    await exchange(sheep.port, new Uint8Array(20));
    const absurd = requestHeader(Opcode.WRITE_OBJ);
    absurd.flags = Flag.WRITE;
    absurd.dataLength = 0xfffffff0;
    assert.equal((await exchange(sheep.port, absurd.bytes)).length, 0);
    // Still serving, data intact.
    assert.equal(await client.lookupVdi("keep"), await client.lookupVdi("keep"));
    assert.equal((await sheep.store.list()).length, 1);
  });
});
