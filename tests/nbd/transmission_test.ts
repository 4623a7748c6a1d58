/** Transmission phase driven by a raw-socket client: every command, errors, pipelining. */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as C from "../../net/nbd/constants.ts";
import * as P from "../../net/nbd/protocol.ts";
import { NbdIoError } from "../../net/nbd/mod.ts";
import { CHUNK, Gate } from "./memory_export.ts";
import { type RawClient } from "./raw_client.ts";
import { type Harness, KiB, MiB, pattern, sleep, until, withServer } from "./harness.ts";

const HOLE_ZERO = C.NBD_STATE_HOLE | C.NBD_STATE_ZERO;

async function attach(h: Harness, name = "vol", structured = true): Promise<RawClient> {
  const c = await h.connect();
  await c.start();
  await c.go(name, { structured });
  return c;
}

Deno.test("simple replies: write, read, errors without payload, connection continues", async () => {
  await withServer(async (h) => {
    const c = await attach(h, "vol", false);
    const data = pattern(100_000, 1);
    assert.equal((await c.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 12345 }, data)).errno, 0);
    assert.deepEqual(await c.readAt(2n, 12345, data.length), Buffer.from(data));
    // Past the end: error with no data after the header.
    c.request(C.NBD_CMD_READ, { handle: 3n, offset: 16 * MiB - 10, length: 20 });
    assert.deepEqual(await c.reply(), { kind: "simple", errno: C.NBD_EINVAL, handle: 3n });
    // BLOCK_STATUS without negotiation.
    assert.equal(
      (await c.command(C.NBD_CMD_BLOCK_STATUS, { handle: 4n, offset: 0, length: 4096 })).errno,
      C.NBD_EINVAL,
    );
    // DF is only valid once structured replies are negotiated.
    c.request(C.NBD_CMD_READ, { handle: 5n, offset: 0, length: 10, flags: C.NBD_CMD_FLAG_DF });
    assert.deepEqual(await c.reply(), { kind: "simple", errno: C.NBD_EINVAL, handle: 5n });
    assert.deepEqual(await c.readAt(6n, 12345, 3), Buffer.from(data.subarray(0, 3)));
  });
});

Deno.test("structured READ: one OFFSET_DATA chunk with DONE; zero length gives NONE", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    const data = pattern(5000, 2);
    await c.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 777 }, data);
    c.request(C.NBD_CMD_READ, { handle: 2n, offset: 777, length: 5000, flags: C.NBD_CMD_FLAG_DF });
    const chunks = await c.replyChunks();
    assert.equal(chunks.length, 1);
    const [chunk] = chunks;
    assert.ok(chunk?.kind === "structured");
    assert.equal(chunk.type, C.NBD_REPLY_TYPE_OFFSET_DATA);
    assert.equal(chunk.flags, C.NBD_REPLY_FLAG_DONE);
    assert.equal(chunk.handle, 2n);
    assert.equal(P.readU64(chunk.payload, 0), 777);
    assert.deepEqual(chunk.payload.subarray(8), Buffer.from(data));

    c.request(C.NBD_CMD_READ, { handle: 3n, offset: 0, length: 0 });
    const none = await c.replyChunks();
    assert.deepEqual(
      none.map((r) => r.kind === "structured" && [r.type, r.flags, r.payload.length]),
      [[C.NBD_REPLY_TYPE_NONE, C.NBD_REPLY_FLAG_DONE, 0]],
    );
    // Errors carry a message.
    c.request(C.NBD_CMD_READ, { handle: 4n, offset: 16 * MiB, length: 1 });
    const err = await c.replyChunks();
    assert.ok(err[0]?.kind === "structured");
    assert.equal(err[0].type, C.NBD_REPLY_TYPE_ERROR);
    assert.deepEqual(P.parseErrorPayload(err[0].type, err[0].payload), {
      errno: C.NBD_EINVAL,
      message: "read of 1 bytes at 16777216 is beyond the end of the export (16777216 bytes)",
    });
  });
});

Deno.test("every command: FUA, FLUSH, TRIM, WRITE_ZEROES (+NO_HOLE), BLOCK_STATUS", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    const v = h.provider.volume("vol");
    // Fresh volume: one hole.
    assert.deepEqual(await c.blockStatus(1n, 0, 16 * MiB), [
      { length: 16 * MiB, flags: HOLE_ZERO },
    ]);
    // Data in chunks 2..3 (128 KiB at 128 KiB), with FUA.
    const data = pattern(2 * CHUNK, 3);
    assert.equal(
      (await c.command(C.NBD_CMD_WRITE, {
        handle: 2n,
        offset: 2 * CHUNK,
        flags: C.NBD_CMD_FLAG_FUA,
      }, data)).errno,
      0,
    );
    assert.deepEqual(h.provider.events.at(-1), {
      op: "write",
      volume: "vol",
      offset: 2 * CHUNK,
      length: 2 * CHUNK,
      fua: true,
    });
    assert.deepEqual(await c.blockStatus(3n, 0, 8 * CHUNK), [
      { length: 2 * CHUNK, flags: HOLE_ZERO },
      { length: 2 * CHUNK, flags: 0 },
      { length: 4 * CHUNK, flags: HOLE_ZERO },
    ]);
    // REQ_ONE: a single extent, not longer than asked.
    assert.deepEqual(
      await c.blockStatus(4n, 2 * CHUNK + 100, 5 * CHUNK, C.NBD_CMD_FLAG_REQ_ONE),
      [{ length: 2 * CHUNK - 100, flags: 0 }],
    );
    // Unaligned query is clipped to the request.
    assert.deepEqual(await c.blockStatus(5n, 100, 1000), [{ length: 1000, flags: HOLE_ZERO }]);

    assert.equal((await c.command(C.NBD_CMD_FLUSH, { handle: 6n })).errno, 0);
    assert.equal(h.provider.events.at(-1)?.op, "flush");

    // TRIM of chunk 2 makes it a hole again; with FUA a flush follows.
    const before = h.provider.events.length;
    assert.equal(
      (await c.command(C.NBD_CMD_TRIM, {
        handle: 7n,
        offset: 2 * CHUNK,
        length: CHUNK,
        flags: C.NBD_CMD_FLAG_FUA,
      })).errno,
      0,
    );
    assert.deepEqual(h.provider.events.slice(before).map((e) => e.op), ["trim", "flush"]);
    assert.deepEqual(v.allocated(), [3]);
    assert.deepEqual(await c.blockStatus(8n, 0, 8 * CHUNK), [
      { length: 3 * CHUNK, flags: HOLE_ZERO },
      { length: CHUNK, flags: 0 },
      { length: 4 * CHUNK, flags: HOLE_ZERO },
    ]);
    assert.deepEqual(await c.readAt(9n, 2 * CHUNK, CHUNK), Buffer.alloc(CHUNK));

    // WRITE_ZEROES with NO_HOLE allocates; without it punches.
    assert.equal(
      (await c.command(C.NBD_CMD_WRITE_ZEROES, {
        handle: 10n,
        offset: 5 * CHUNK,
        length: CHUNK,
        flags: C.NBD_CMD_FLAG_NO_HOLE,
      })).errno,
      0,
    );
    assert.deepEqual(h.provider.events.at(-1), {
      op: "writeZeroes",
      volume: "vol",
      offset: 5 * CHUNK,
      length: CHUNK,
      fua: false,
      noHole: true,
    });
    assert.deepEqual(v.allocated(), [3, 5]);
    assert.equal(
      (await c.command(C.NBD_CMD_WRITE_ZEROES, { handle: 11n, offset: 3 * CHUNK, length: CHUNK }))
        .errno,
      0,
    );
    assert.deepEqual(v.allocated(), [5]);
    assert.deepEqual(await c.readAt(12n, 3 * CHUNK, CHUNK), Buffer.alloc(CHUNK));
    // Zero-length TRIM / WRITE_ZEROES succeed without touching the export.
    const n = h.provider.events.length;
    assert.equal((await c.command(C.NBD_CMD_TRIM, { handle: 13n, offset: 0, length: 0 })).errno, 0);
    assert.equal(
      (await c.command(C.NBD_CMD_WRITE_ZEROES, { handle: 14n, offset: 0, length: 0 })).errno,
      0,
    );
    assert.equal(h.provider.events.length, n);
  });
});

Deno.test("TRIM and WRITE_ZEROES over 32 MiB are split into slices the export accepts", async () => {
  await withServer(async (h) => {
    const c = await attach(h, "big");
    const r = await c.command(C.NBD_CMD_WRITE_ZEROES, { handle: 1n, offset: 1, length: 80 * MiB });
    assert.equal(r.errno, 0);
    assert.deepEqual(
      h.provider.events.map((e) => [e.op, e.offset, e.length]),
      [
        ["writeZeroes", 1, 32 * MiB],
        ["writeZeroes", 1 + 32 * MiB, 32 * MiB],
        ["writeZeroes", 1 + 64 * MiB, 16 * MiB],
      ],
    );
    assert.equal((await c.command(C.NBD_CMD_TRIM, { handle: 2n, length: 96 * MiB })).errno, 0);
    assert.equal(h.provider.events.filter((e) => e.op === "trim").length, 3);
  });
});

Deno.test("invalid requests get the proper errno and the connection continues", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    const cases: [string, number, Parameters<RawClient["command"]>[1], number][] = [
      ["read past end", C.NBD_CMD_READ, { handle: 1n, offset: 16 * MiB - 1, length: 2 }, 22],
      ["read over 32 MiB", C.NBD_CMD_READ, { handle: 2n, offset: 0, length: 32 * MiB + 1 }, 22],
      ["huge offset", C.NBD_CMD_READ, { handle: 3n, offset: 2 ** 60, length: 1 }, 22],
      ["unknown command", 99, { handle: 4n }, C.NBD_EINVAL],
      ["CACHE (not advertised)", C.NBD_CMD_CACHE, { handle: 5n, length: 4096 }, C.NBD_EINVAL],
      ["NO_HOLE on READ", C.NBD_CMD_READ, {
        handle: 6n,
        length: 1,
        flags: C.NBD_CMD_FLAG_NO_HOLE,
      }, C.NBD_EINVAL],
      ["FAST_ZERO (not advertised)", C.NBD_CMD_WRITE_ZEROES, {
        handle: 7n,
        length: 4096,
        flags: C.NBD_CMD_FLAG_FAST_ZERO,
      }, C.NBD_EINVAL],
      ["unknown flag", C.NBD_CMD_FLUSH, { handle: 8n, flags: 0x8000 }, C.NBD_EINVAL],
      ["trim past end", C.NBD_CMD_TRIM, { handle: 9n, offset: 16 * MiB, length: 1 }, 22],
      ["zeroes past end", C.NBD_CMD_WRITE_ZEROES, {
        handle: 10n,
        offset: 16 * MiB,
        length: 1,
      }, C.NBD_ENOSPC],
      ["block status 0 bytes", C.NBD_CMD_BLOCK_STATUS, { handle: 11n, length: 0 }, C.NBD_EINVAL],
      ["block status past end", C.NBD_CMD_BLOCK_STATUS, {
        handle: 12n,
        offset: 16 * MiB - 512,
        length: 1024,
      }, C.NBD_EINVAL],
    ];
    for (const [what, type, fields, errno] of cases) {
      const r = await c.command(type, fields);
      assert.equal(r.errno, errno, what);
      assert.notEqual(r.message, "", `${what}: message expected`);
    }
    // Write past the end: ENOSPC; the payload is consumed, so the stream stays in sync.
    assert.equal(
      (await c.command(C.NBD_CMD_WRITE, { handle: 20n, offset: 16 * MiB - 2 }, pattern(4, 1)))
        .errno,
      C.NBD_ENOSPC,
    );
    // Over 32 MiB: payload discarded, EINVAL, next request fine.
    const huge = Buffer.alloc(32 * MiB + 4096, 0x5a);
    const r = await c.command(C.NBD_CMD_WRITE, { handle: 21n, offset: 0 }, huge);
    assert.equal(r.errno, C.NBD_EINVAL);
    assert.match(r.message, /exceeds the maximum/);
    assert.deepEqual(await c.readAt(22n, 0, 16), Buffer.alloc(16));
    assert.ok(!h.provider.events.some((e) => e.op === "write"), "nothing may have been written");
  });
});

Deno.test("export failures map to NBD errnos with their message", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    h.provider.beforeOp = (e) => {
      if (e.offset === 4096) throw new Error("disk on fire");
      if (e.offset === 8192) throw new NbdIoError(C.NBD_ENOSPC, "cluster full");
      if (e.offset === 12288) throw Object.assign(new Error("quota"), { code: "EDQUOT" });
      if (e.offset === 16384) throw Object.assign(new Error("ro fs"), { code: "EROFS" });
    };
    assert.deepEqual(
      await c.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 4096 }, pattern(8, 1)),
      {
        errno: C.NBD_EIO,
        message: "disk on fire",
      },
    );
    await assert.rejects(c.readAt(2n, 4096, 10), /NBD error 5: disk on fire/);
    assert.deepEqual(
      await c.command(C.NBD_CMD_WRITE_ZEROES, { handle: 3n, offset: 8192, length: 10 }),
      { errno: C.NBD_ENOSPC, message: "cluster full" },
    );
    assert.equal(
      (await c.command(C.NBD_CMD_TRIM, { handle: 4n, offset: 12288, length: 10 })).errno,
      C.NBD_ENOSPC,
    );
    assert.equal(
      (await c.command(C.NBD_CMD_WRITE, { handle: 5n, offset: 16384 }, pattern(8, 1))).errno,
      C.NBD_EPERM,
    );
    await assert.rejects(c.blockStatus(6n, 4096, 10), /NBD error 5/);
    // A read returning the wrong length is an I/O error, not a protocol desync.
    h.provider.beforeOp = null;
    const exp = h.provider.opened[0];
    assert.ok(exp !== undefined);
    exp.read = () => Promise.resolve(new Uint8Array(3));
    await assert.rejects(c.readAt(7n, 0, 10), /NBD error 5: export returned 3 bytes, not 10/);
  });
});

Deno.test("read-only export: reads work, WRITE/TRIM/WRITE_ZEROES get EPERM", async () => {
  await withServer(async (h) => {
    h.provider.volume("ro").write(0, Buffer.from("snapshot data"));
    const c = await attach(h, "ro");
    assert.equal((await c.readAt(1n, 0, 13)).toString(), "snapshot data");
    for (
      const [type, handle, payload] of [
        [C.NBD_CMD_WRITE, 2n, Buffer.from("x")],
        [C.NBD_CMD_TRIM, 3n, undefined],
        [C.NBD_CMD_WRITE_ZEROES, 4n, undefined],
      ] as const
    ) {
      const r = await c.command(type, { handle, offset: 0, length: 1 }, payload);
      assert.deepEqual(r, { errno: C.NBD_EPERM, message: 'export "ro" is read-only' });
    }
    assert.equal((await c.command(C.NBD_CMD_FLUSH, { handle: 5n })).errno, 0);
    assert.equal((await c.readAt(6n, 0, 13)).toString(), "snapshot data");
  });
});

Deno.test("pipelining: many requests in flight, replies matched by handle, out of order", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    // Random delays make completion order differ from submission order.
    let seed = 7;
    h.provider.beforeOp = () => sleep((seed = (seed * 1103515245 + 12345) % 2147483648) % 7);
    const n = 100;
    for (let i = 0; i < n; i++) {
      c.request(C.NBD_CMD_WRITE, { handle: BigInt(i), offset: i * 8192 }, pattern(8192, i));
    }
    const seen = new Set<bigint>();
    const order: bigint[] = [];
    for (let i = 0; i < n; i++) {
      const r = await c.reply();
      assert.equal(r.kind, "simple");
      assert.ok(r.kind === "simple" && r.errno === 0);
      seen.add(r.handle);
      order.push(r.handle);
    }
    assert.equal(seen.size, n);
    assert.notDeepEqual(order, [...order].sort((a, b) => Number(a - b)), "expected reordering");
    for (let i = 0; i < n; i++) {
      c.request(C.NBD_CMD_READ, { handle: BigInt(1000 + i), offset: i * 8192, length: 8192 });
    }
    const got = new Map<bigint, Buffer>();
    for (let i = 0; i < n; i++) {
      const r = await c.reply();
      assert.ok(r.kind === "structured" && r.type === C.NBD_REPLY_TYPE_OFFSET_DATA);
      assert.equal(P.readU64(r.payload, 0), Number(r.handle - 1000n) * 8192);
      got.set(r.handle, r.payload.subarray(8));
    }
    for (let i = 0; i < n; i++) {
      assert.deepEqual(got.get(BigInt(1000 + i)), Buffer.from(pattern(8192, i)));
    }
    assert.ok(h.provider.maxActive > 10, `only ${h.provider.maxActive} requests ran concurrently`);
  });
});

Deno.test("overlapping writes keep arrival order; reads wait for earlier overlapping writes", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    const slow = new Gate();
    h.provider.beforeOp = (e) => e.op === "write" && e.offset === 0 ? slow.promise : undefined;
    // 1: slow write [0, 64K) of A. 2: write [32K, 96K) of B overlaps it. 3: write far away.
    // 4: read [0, 96K) must see A then B. 5: zeroes inside B after it.
    c.request(C.NBD_CMD_WRITE, { handle: 1n, offset: 0 }, Buffer.alloc(64 * KiB, 0xaa));
    c.request(C.NBD_CMD_WRITE, { handle: 2n, offset: 32 * KiB }, Buffer.alloc(64 * KiB, 0xbb));
    c.request(C.NBD_CMD_WRITE, { handle: 3n, offset: 1 * MiB }, Buffer.alloc(4 * KiB, 0xcc));
    c.request(C.NBD_CMD_READ, { handle: 4n, offset: 0, length: 96 * KiB });
    c.request(C.NBD_CMD_WRITE_ZEROES, {
      handle: 5n,
      offset: 90 * KiB,
      length: 2 * KiB,
      flags: C.NBD_CMD_FLAG_NO_HOLE,
    });
    // Only the independent write may complete while #1 is held.
    const first = await c.reply();
    assert.equal(first.handle, 3n);
    await sleep(30);
    assert.deepEqual(
      h.provider.events.filter((e) => e.op === "write").map((e) => e.offset),
      [0, 1 * MiB],
      "the overlapping write must not have started",
    );
    slow.open();
    const rest: bigint[] = [];
    let read: Buffer | null = null;
    for (let i = 0; i < 4; i++) {
      const r = await c.reply();
      rest.push(r.handle);
      if (r.handle === 4n && r.kind === "structured") read = r.payload.subarray(8);
    }
    assert.deepEqual(rest.slice(0, 2), [1n, 2n]);
    const expected = Buffer.concat([Buffer.alloc(32 * KiB, 0xaa), Buffer.alloc(64 * KiB, 0xbb)]);
    assert.deepEqual(read, expected);
    const final = await c.readAt(6n, 0, 96 * KiB);
    expected.fill(0, 90 * KiB, 92 * KiB);
    assert.deepEqual(final, expected);
  });
});

Deno.test("backpressure: requests in flight and bytes in flight are bounded", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    const gate = new Gate();
    h.provider.beforeOp = () => gate.promise;
    for (let i = 0; i < 50; i++) {
      c.request(C.NBD_CMD_WRITE, { handle: BigInt(i), offset: i * 4096 }, pattern(4096, i));
    }
    await until(() => h.provider.active === 4, 2000, "4 active requests");
    await sleep(50);
    assert.equal(h.provider.active, 4, "no more than maxInFlightRequests at once");
    gate.open();
    for (let i = 0; i < 50; i++) assert.equal((await c.reply()).kind, "simple");
    assert.equal(h.provider.maxActive, 4);

    // Bytes: 48 KiB writes against a 100 KiB budget → at most 2 at once.
    const gate2 = new Gate();
    h.provider.beforeOp = () => gate2.promise;
    h.provider.maxActive = 0;
    for (let i = 0; i < 6; i++) {
      c.request(
        C.NBD_CMD_WRITE,
        { handle: BigInt(100 + i), offset: i * MiB },
        pattern(48 * KiB, i),
      );
    }
    await until(() => h.provider.active === 2, 2000, "2 active requests");
    await sleep(50);
    assert.equal(h.provider.active, 2);
    gate2.open();
    for (let i = 0; i < 6; i++) assert.equal((await c.reply()).kind, "simple");
    assert.equal(h.provider.maxActive, 2);
  }, {
    limits: { maxInFlightRequests: 4, maxInFlightBytes: 100 * KiB, maxBufferedInput: 64 * KiB },
  });
});

Deno.test("garbage and truncated frames close the connection and release the export once", async () => {
  await withServer(async (h) => {
    // Garbage instead of a request.
    const a = await attach(h);
    a.write(Buffer.alloc(28, 0xee));
    await a.waitClosed();
    await until(() => h.provider.closes.length === 1, 2000, "export released");

    // Half a request header, then EOF.
    const b = await attach(h);
    b.write(
      P.encodeRequest({ type: 0, flags: 0, handle: 1n, offset: 0, length: 1 }).subarray(0, 13),
    );
    b.socket.end();
    await b.waitClosed();
    await until(() => h.provider.closes.length === 2, 2000, "export released");

    // A write whose payload never fully arrives.
    const d = await attach(h);
    d.write(
      P.encodeRequest({ type: C.NBD_CMD_WRITE, flags: 0, handle: 1n, offset: 0, length: 100 }),
    );
    d.write(Buffer.alloc(40));
    d.socket.end();
    await d.waitClosed();
    await until(() => h.provider.closes.length === 3, 2000, "export released");
    assert.ok(!h.provider.events.some((e) => e.op === "write"));
  });
});

Deno.test("a client vanishing with requests in flight does not break the server", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    const gate = new Gate();
    h.provider.beforeOp = () => gate.promise;
    for (let i = 0; i < 20; i++) {
      c.request(C.NBD_CMD_READ, { handle: BigInt(i), offset: i * 65536, length: 65536 });
      c.request(
        C.NBD_CMD_WRITE,
        { handle: BigInt(100 + i), offset: 4 * MiB + i * 4096 },
        pattern(4096, i),
      );
    }
    await until(() => h.provider.active === 40, 2000, "requests in flight");
    await c.destroy();
    await sleep(20);
    assert.equal(h.provider.closes.length, 0, "export must stay open while requests run");
    gate.open();
    await until(() => h.server.connections === 0, 2000, "session end");
    assert.equal(h.provider.closes.length, 1);
    // The server still serves others.
    const d = await attach(h);
    assert.deepEqual(await d.readAt(1n, 4 * MiB, 4096), Buffer.from(pattern(4096, 0)));
  });
});

Deno.test("NBD_CMD_DISC answers requests in flight first, then closes", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    h.provider.beforeOp = () => sleep(30);
    c.request(C.NBD_CMD_WRITE, { handle: 1n, offset: 0 }, pattern(4096, 1));
    c.request(C.NBD_CMD_DISC, { handle: 2n });
    const r = await c.reply();
    assert.deepEqual(r, { kind: "simple", errno: 0, handle: 1n });
    assert.deepEqual(await c.waitClosed(), { extra: 0 });
    await until(() => h.provider.closes.length === 1, 2000, "export released");
  });
});

Deno.test("a client that half-closes still gets every reply before the server closes", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    h.provider.beforeOp = () => sleep(20);
    c.request(C.NBD_CMD_WRITE, { handle: 1n, offset: 0 }, pattern(4096, 1));
    c.request(C.NBD_CMD_READ, { handle: 2n, offset: 0, length: 4096 });
    c.socket.end();
    assert.deepEqual(await c.reply(), { kind: "simple", errno: 0, handle: 1n });
    const r = await c.reply();
    assert.ok(r.kind === "structured" && r.handle === 2n);
    assert.deepEqual(r.payload.subarray(8), Buffer.from(pattern(4096, 1)));
    assert.deepEqual(await c.waitClosed(), { extra: 0 });
    await until(() => h.provider.closes.length === 1, 2000, "export released");
  });
});

Deno.test("server.close() finishes requests in flight, closes sessions and releases exports", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    const idle = await h.connect(); // still haggling
    await idle.start();
    const gate = new Gate();
    h.provider.beforeOp = () => gate.promise;
    c.request(C.NBD_CMD_READ, { handle: 1n, offset: 0, length: 4096 });
    await until(() => h.provider.active === 1, 2000, "read in flight");
    let closed = false;
    const closing = h.server.close().then(() => (closed = true));
    await idle.waitClosed();
    await sleep(20);
    assert.equal(closed, false, "close() waits for the request in flight");
    gate.open();
    const r = await c.reply();
    assert.ok(r.kind === "structured" && r.handle === 1n && r.payload.length === 8 + 4096);
    await closing;
    await c.waitClosed();
    assert.equal(h.provider.closes.length, 1);
  });
});

Deno.test("storage failures are logged, once per ten seconds per session with the count between", async () => {
  const warnings: Record<string, unknown>[] = [];
  const quiet = () => {};
  const logger = {
    debug: quiet,
    info: quiet,
    error: quiet,
    warn: (msg: string, fields?: Record<string, unknown>) => {
      if (msg === "nbd: request failed") warnings.push(fields ?? {});
    },
  };
  await withServer(async (h) => {
    const c = await attach(h);
    h.provider.beforeOp = () => {
      throw new NbdIoError(C.NBD_EIO, "no node present holds it", { cause: new Error("NO_OBJ") });
    };
    for (let i = 0; i < 3; i++) {
      const reply = await c.command(
        C.NBD_CMD_WRITE,
        { handle: BigInt(i), offset: 0 },
        pattern(8, 1),
      );
      assert.deepEqual(reply, { errno: C.NBD_EIO, message: "no node present holds it" });
    }
    // A client's own mistake mapped by the export (no cause) is not the operator's business.
    h.provider.beforeOp = () => {
      throw new NbdIoError(C.NBD_EINVAL, "bad request");
    };
    assert.equal(
      (await c.command(C.NBD_CMD_WRITE, { handle: 9n, offset: 0 }, pattern(8, 1))).errno,
      C.NBD_EINVAL,
    );
  }, { logger });
  assert.equal(warnings.length, 1, JSON.stringify(warnings));
  assert.equal(warnings[0]!.error, "no node present holds it");
});

Deno.test("reads the export answers at once (readNow) are served in order with the rest, and fall back to read", async () => {
  await withServer(async (h) => {
    const c = await attach(h);
    const data = pattern(64 * KiB, 3);
    assert.equal((await c.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 0 }, data)).errno, 0);
    const ops = () => h.provider.events.filter((e) => e.op.startsWith("read")).map((e) => e.op);

    // Answered at once: no `read` at all.
    h.provider.readsNow = () => "bytes";
    assert.deepEqual(await c.readAt(2n, 100, 4 * KiB), Buffer.from(data.subarray(100, 4196)));
    assert.deepEqual(ops(), ["readNow"]);

    // A failure there is not the client's answer: `read` takes the request again.
    h.provider.events.length = 0;
    h.provider.readsNow = () => "throw";
    assert.deepEqual(await c.readAt(3n, 0, 512), Buffer.from(data.subarray(0, 512)));
    assert.deepEqual(ops(), ["readNow", "read"]);

    // A write in flight over the range: the read waits for it, through `read`; elsewhere not.
    h.provider.events.length = 0;
    h.provider.readsNow = () => "bytes";
    const slow = new Gate();
    h.provider.beforeOp = (e) => e.op === "write" ? slow.promise : undefined;
    const fresh = pattern(4 * KiB, 4);
    c.request(C.NBD_CMD_WRITE, { handle: 4n, offset: 0 }, fresh);
    c.request(C.NBD_CMD_READ, { handle: 5n, offset: 0, length: 4 * KiB });
    c.request(C.NBD_CMD_READ, { handle: 6n, offset: 32 * KiB, length: 4 * KiB });
    const far = await c.reply();
    assert.equal(far.handle, 6n, "the read away from the write is answered first");
    assert.ok(far.kind === "structured");
    assert.deepEqual(far.payload.subarray(8), Buffer.from(data.subarray(32 * KiB, 36 * KiB)));
    slow.open();
    const replies = [await c.reply(), await c.reply()];
    assert.deepEqual(replies.map((r) => r.handle), [4n, 5n]);
    const read = replies[1]!;
    assert.ok(read.kind === "structured");
    assert.deepEqual(read.payload.subarray(8), Buffer.from(fresh), "the read saw the write");
    assert.deepEqual(ops(), ["readNow", "read"]);

    // Many at once (one batch of the socket): every reply, matched by handle.
    h.provider.beforeOp = null;
    const n = 32;
    for (let i = 0; i < n; i++) {
      c.request(C.NBD_CMD_READ, { handle: BigInt(100 + i), offset: i * 2 * KiB, length: 2 * KiB });
    }
    const want = Buffer.concat([Buffer.from(fresh), Buffer.from(data.subarray(4 * KiB))]);
    for (let i = 0; i < n; i++) {
      const r = await c.reply();
      assert.ok(r.kind === "structured");
      const at = Number(r.handle - 100n) * 2 * KiB;
      assert.deepEqual(r.payload.subarray(8), want.subarray(at, at + 2 * KiB));
    }
    assert.deepEqual(h.provider.violations, []);
  });
});
