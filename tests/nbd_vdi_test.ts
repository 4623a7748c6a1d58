/**
 * The NBD export of real VDIs, driven by real clients (qemu-img, qemu-io, nbdinfo, nbdcopy) and
 * by a raw in-process client where timing matters (a snapshot under a writing client). One
 * in-process sheep per test, NBD on 127.0.0.1 port 0.
 */
import { ObjectClient, requestHeader } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";
import { Flag, Opcode } from "../net/object/ops.ts";
import { dataOid } from "../core/vdi/oid.ts";
import { ResultCode } from "../core/errors.ts";
import { convertImage } from "../cmd/img_convert.ts";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { AdminService } from "../net/admin/admin_service.ts";
import { constants as C } from "../net/nbd/mod.ts";
import type { Sheep } from "../net/sheep/sheep.ts";
import { startNbdService } from "../net/sheep/vdi_exports.ts";
import { randomBytes, withSheep } from "./harness.ts";
import { RawClient } from "./nbd/raw_client.ts";
import { ok, run } from "./nbd/tools.ts";

const MiB = 1024 * 1024;
const OBJ = 4 * MiB;
interface Ctx {
  sheep: Sheep;
  admin: AdminService;
  port: number;
  uri: (name: string) => string;
  dir: string;
}

async function withNbd(fn: (ctx: Ctx) => Promise<void>): Promise<void> {
  await withSheep(async ({ sheep, dir }) => {
    const service = await startNbdService(sheep, { host: "127.0.0.1", port: 0 });
    assert.ok("port" in service.address);
    const port = service.address.port;
    const files = path.join(dir, "files");
    await fsp.mkdir(files);
    try {
      await fn({
        sheep,
        admin: new AdminService(sheep.localClient()),
        port,
        uri: (name) => `nbd://127.0.0.1:${port}/${encodeURIComponent(name)}`,
        dir: files,
      });
    } finally {
      await service.close();
    }
    assert.equal(sheep.locks.size, 0, "every lock is released once the clients are gone");
  });
}

/** Random bytes with zero ranges. */
function dataWithHoles(length: number, zeroRanges: [number, number][]): Uint8Array {
  const out = randomBytes(length);
  for (const [start, end] of zeroRanges) out.fill(0, start, end);
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(
    Buffer.from(b.buffer, b.byteOffset, b.length),
  );
}

/** nbdinfo --map lines as [offset, length, description]. */
async function nbdMap(uri: string): Promise<[number, number, string][]> {
  const text = await ok("nbdinfo", ["--map", uri]);
  return text.trim().split("\n").map((line) => {
    const [offset, length, , ...desc] = line.trim().split(/\s+/);
    return [Number(offset), Number(length), desc.join(" ")];
  });
}

/** Retries `fn` until it stops throwing (a connection's lock is released after it closes). */
async function eventually(fn: () => Promise<void>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

Deno.test("qemu-img convert: a raw file with holes into a VDI and back out, byte-identical", async () => {
  await withNbd(async ({ admin, uri, dir }) => {
    const size = 20 * MiB;
    await admin.createVdi({ name: "disk", sizeBytes: size });
    const data = dataWithHoles(size, [[3 * MiB, 9 * MiB], [17 * MiB + 12345, 18 * MiB]]);
    await fsp.writeFile(`${dir}/in.raw`, data);
    await ok("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", `${dir}/in.raw`, uri("disk")]);
    // Object 1 ([4, 8) MiB) held only zeros: nothing was allocated for it.
    assert.deepEqual(await nbdMap(uri("disk")), [
      [0, OBJ, "data"],
      [OBJ, OBJ, "hole,zero"],
      [2 * OBJ, 3 * OBJ, "data"],
    ]);
    await ok("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri("disk"), `${dir}/out.raw`]);
    const back = await fsp.readFile(`${dir}/out.raw`);
    assert.equal(back.length, size);
    assert.ok(same(back, data), "round trip is not byte-identical");
    await ok("qemu-img", ["compare", "-f", "raw", "-F", "raw", `${dir}/in.raw`, uri("disk")]);
  });
});

Deno.test("qemu-io: unaligned and cross-object writes read back, pipelined into new objects", async () => {
  await withNbd(async ({ admin, uri }) => {
    await admin.createVdi({ name: "io", sizeBytes: 24 * MiB });
    await ok("qemu-io", [
      "-f",
      "raw",
      "-c",
      "write -P 0xab 4193000 3000", // crosses the 4 MiB boundary
      "-c",
      "read -P 0xab 4193000 3000",
      "-c",
      "read -P 0 4190000 3000",
      "-c",
      "write -P 0xcd 8388508 9437184", // 8M-100 .. 17M-100: three objects
      "-c",
      "read -P 0xcd 8388508 9437184",
      "-c",
      "write -P 0x5a 8388608 1", // one byte inside that range
      "-c",
      "read -P 0xcd 8388508 100",
      "-c",
      "read -P 0x5a 8388608 1",
      "-c",
      "read -P 0xcd 8388609 4096",
      // Pipelined writes into one object that does not exist yet.
      "-c",
      "aio_write -P 0x11 20M 512k",
      "-c",
      "aio_write -P 0x22 20.5M 512k",
      "-c",
      "aio_write -P 0x33 21M 1k",
      "-c",
      "aio_flush",
      "-c",
      "write -z 22M 64k",
      "-c",
      "flush",
      uri("io"),
    ]);
    // A new connection sees the same bytes.
    await ok("qemu-io", [
      "-r",
      "-f",
      "raw",
      "-c",
      "read -P 0xab 4193000 3000",
      "-c",
      "read -P 0 4196000 4096",
      "-c",
      "read -P 0xcd 8388508 100",
      "-c",
      "read -P 0x5a 8388608 1",
      "-c",
      "read -P 0xcd 8388609 9437083",
      "-c",
      "read -P 0x11 20M 512k",
      "-c",
      "read -P 0x22 20.5M 512k",
      "-c",
      "read -P 0x33 21M 1k",
      "-c",
      "read -P 0 22021120 3144704",
      uri("io"),
    ]);
  });
});

Deno.test("nbdinfo --map: holes after thin creation, data after writes, holes after TRIM", async () => {
  await withNbd(async ({ admin, uri }) => {
    await admin.createVdi({ name: "thin", sizeBytes: 16 * MiB });
    assert.deepEqual(await nbdMap(uri("thin")), [[0, 16 * MiB, "hole,zero"]]);
    await ok("qemu-io", ["-f", "raw", "-c", "write -P 0x77 5M 2M", uri("thin")]);
    assert.deepEqual(await nbdMap(uri("thin")), [
      [0, OBJ, "hole,zero"],
      [OBJ, OBJ, "data"],
      [2 * OBJ, 2 * OBJ, "hole,zero"],
    ]);
    // A partial discard releases nothing; a discard of the whole object does.
    await ok("qemu-io", ["-f", "raw", "-c", "discard 5M 1M", uri("thin")]);
    assert.equal((await nbdMap(uri("thin")))[1]?.[2], "data");
    await ok("qemu-io", ["-f", "raw", "-c", "discard 4M 4M", uri("thin")]);
    assert.deepEqual(await nbdMap(uri("thin")), [[0, 16 * MiB, "hole,zero"]]);
    await ok("qemu-io", ["-r", "-f", "raw", "-c", "read -P 0 4M 4M", uri("thin")]);
  });
});

Deno.test("nbdcopy both ways, and nbdinfo --list shows VDIs and snapshots", async () => {
  await withNbd(async ({ admin, uri, dir, port }) => {
    const size = 12 * MiB + 512;
    await admin.createVdi({ name: "copy", sizeBytes: size });
    const data = dataWithHoles(size, [[2 * MiB, 6 * MiB]]);
    await fsp.writeFile(`${dir}/in.raw`, data);
    await ok("nbdcopy", [`${dir}/in.raw`, uri("copy")]);
    await ok("nbdcopy", [uri("copy"), `${dir}/out.raw`]);
    assert.ok(same(await fsp.readFile(`${dir}/out.raw`), data));
    await admin.snapshot("copy", "golden");
    await ok("qemu-io", ["-f", "raw", "-c", "write -P 0x42 0 1M", uri("copy")]);
    // A snapshot is read-only, so it may be read over several connections.
    await ok("nbdcopy", ["--connections=4", uri("copy:golden"), `${dir}/snap.raw`]);
    assert.ok(same(await fsp.readFile(`${dir}/snap.raw`), data));
    await ok("nbdcopy", [uri("copy:1"), `${dir}/snap1.raw`]);
    assert.ok(same(await fsp.readFile(`${dir}/snap1.raw`), data));

    await admin.createVdi({ name: "other disk", sizeBytes: 4 * MiB });
    const text = await ok("nbdinfo", ["--list", `nbd://127.0.0.1:${port}`]);
    assert.match(
      text,
      new RegExp(`export="copy":\\n\\s+description: VDI\\n\\s+export-size: ${size}`),
    );
    assert.match(text, /export="copy:1":\n\s+description: snapshot 'golden' of copy\n/);
    assert.match(text, /export="other disk":/);
    const json = JSON.parse(await ok("nbdinfo", ["--json", "--list", `nbd://127.0.0.1:${port}`]));
    const byName = Object.fromEntries(
      (json.exports as Record<string, unknown>[]).map((e) => [e["export-name"], e]),
    );
    assert.deepEqual(Object.keys(byName).sort(), ["copy", "copy:1", "other disk"]);
    assert.equal((byName["copy"] as Record<string, unknown>)["is_read_only"], false);
    assert.equal((byName["copy:1"] as Record<string, unknown>)["is_read_only"], true);
  });
});

Deno.test("a snapshot export refuses writes", async () => {
  await withNbd(async ({ admin, uri, dir }) => {
    await admin.createVdi({ name: "base", sizeBytes: 8 * MiB });
    await ok("qemu-io", ["-f", "raw", "-c", "write -P 0x61 0 64k", uri("base")]);
    await admin.snapshot("base", "v1");
    for (const name of ["base:1", "base:v1"]) {
      const w = await run("qemu-io", ["-f", "raw", "-c", "write -P 1 0 4k", uri(name)]);
      assert.notEqual(w.code, 0);
      assert.match(w.stderr + w.stdout, /Permission denied|read-only/i);
      await ok("qemu-io", ["-r", "-f", "raw", "-c", "read -P 0x61 0 64k", uri(name)]);
    }
    await fsp.writeFile(`${dir}/small.raw`, new Uint8Array(4096));
    const c = await run("nbdcopy", [`${dir}/small.raw`, uri("base:1")]);
    assert.notEqual(c.code, 0);
    assert.match(c.stderr, /read-only/);
    const missing = await run("qemu-io", ["-r", "-f", "raw", "-c", "read 0 4k", uri("base:9")]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /does not exist/);
  });
});

Deno.test("one writer per VDI: a second client gets it read-only, writable after the first leaves", async () => {
  await withNbd(async ({ admin, uri, port }) => {
    await admin.createVdi({ name: "vm", sizeBytes: 8 * MiB });
    await ok("qemu-io", ["-f", "raw", "-c", "write -P 0x61 0 64k", uri("vm")]);
    const holder = await RawClient.connect({ port });
    try {
      await holder.start();
      await holder.go("vm");
      // A writer's open fails on the read-only flag; a reader's works, and sees the data.
      const r = await run("qemu-io", ["-f", "raw", "-c", "write 0 4k", uri("vm")]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /Permission denied|read-only/i);
      await ok("qemu-io", ["-r", "-f", "raw", "-c", "read -P 0x61 0 64k", uri("vm")]);
      assert.match(await ok("nbdinfo", [uri("vm")]), /is_read_only: true/);
      // `info -t vm`: the VDI is attached, from the holder's address.
      const row = (await admin.vdis()).find((v) => v.name === "vm");
      assert.equal(row?.attachedTo, `127.0.0.1:${holder.socket.localPort}`);
      // Listing does not need the lock.
      assert.match(await ok("nbdinfo", ["--list", `nbd://127.0.0.1:${port}`]), /export="vm"/);
    } finally {
      await holder.destroy();
    }
    await eventually(async () => {
      await ok("qemu-io", ["-f", "raw", "-c", "write -P 9 0 4k", uri("vm")]);
    });
    assert.equal((await admin.vdis()).find((v) => v.name === "vm")?.attachedTo, undefined);
  });
});

/** Sends WRITEs of `block` bytes of `fill` over [start, end) without waiting for replies. */
function sendWrites(
  client: RawClient,
  start: number,
  end: number,
  block: number,
  fill: number,
  firstHandle: bigint,
): Map<bigint, number> {
  const sent = new Map<bigint, number>();
  let handle = firstHandle;
  for (let offset = start; offset < end; offset += block) {
    client.request(C.NBD_CMD_WRITE, { handle, offset }, new Uint8Array(block).fill(fill));
    sent.set(handle++, offset);
  }
  return sent;
}

/** Collects one reply per handle (in any order); resolves with the offsets in reply order. */
async function collectReplies(
  client: RawClient,
  sent: Map<bigint, number>,
  onReply?: (acked: number[]) => Promise<void>,
): Promise<number[]> {
  const order: number[] = [];
  while (order.length < sent.size) {
    const chunks = await client.replyChunks();
    const handle = chunks[0]!.handle;
    for (const r of chunks) {
      if (r.kind === "simple") assert.equal(r.errno, 0, `write ${handle} failed`);
      else assert.equal(r.type & C.NBD_REPLY_TYPE_ERROR_BIT, 0, `write ${handle} failed`);
    }
    const offset = sent.get(handle);
    assert.ok(offset !== undefined, `unexpected reply ${handle}`);
    order.push(offset);
    await onReply?.(order);
  }
  return order;
}

Deno.test("a snapshot under a writing client: writes go on to the working VDI, the snapshot stays frozen", async () => {
  await withNbd(async ({ admin, sheep, uri, port, dir }) => {
    const size = 16 * MiB;
    await admin.createVdi({ name: "live", sizeBytes: size });
    const block = 64 * 1024;
    const client = await RawClient.connect({ port });
    let ackedBeforeSnapshot = new Set<number>();
    try {
      await client.start();
      await client.go("live");
      // 0xA1 over [0, 8 MiB), acknowledged.
      await collectReplies(client, sendWrites(client, 0, 8 * MiB, block, 0xa1, 1n));
      // 0xB2 over [4, 12 MiB) in flight while the snapshot is taken.
      const sent = sendWrites(client, 4 * MiB, 12 * MiB, block, 0xb2, 1000n);
      let snapshot: Promise<number> | undefined;
      await collectReplies(client, sent, async (acked) => {
        if (acked.length !== 16) return;
        ackedBeforeSnapshot = new Set(acked);
        snapshot = admin.snapshot("live", "mid");
        // `info -t vm` still shows the client on the VDI, now a new vid.
        await snapshot;
        const rows = await admin.vdis();
        const working = rows.find((r) => r.name === "live" && !r.snapshot);
        const frozen = rows.find((r) => r.name === "live" && r.snapshot);
        assert.equal(working?.attachedTo, `127.0.0.1:${client.socket.localPort}`);
        assert.equal(frozen?.attachedTo, undefined);
      });
      assert.ok(snapshot !== undefined);
      // 0xC3 over [0, 1 MiB) after the snapshot, on the same connection.
      await collectReplies(client, sendWrites(client, 0, 1 * MiB, block, 0xc3, 5000n));
      assert.equal(
        (await client.command(C.NBD_CMD_FLUSH, { handle: 9000n })).errno,
        0,
      );
      assert.deepEqual(
        [...sheep.locks.values()].map((l) => l.vid),
        [sheep.registry.lookup("live").vdiId],
      );
    } finally {
      await client.destroy();
    }

    // The working VDI has every write.
    await eventually(async () => {
      await ok("nbdcopy", [uri("live"), `${dir}/live.raw`]);
    });
    const live = await fsp.readFile(`${dir}/live.raw`);
    const want = new Uint8Array(size);
    want.fill(0xa1, 0, 8 * MiB).fill(0xb2, 4 * MiB, 12 * MiB).fill(0xc3, 0, 1 * MiB);
    assert.ok(same(live, want), "the working VDI lost writes");

    // The snapshot: 0xA1 below 4 MiB (the 0xC3 writes came later), each 0xB2 block either
    // old or new, and new for every write acknowledged before the snapshot was asked for.
    await ok("nbdcopy", [uri("live:mid"), `${dir}/snap.raw`]);
    const snap = await fsp.readFile(`${dir}/snap.raw`);
    assert.ok(same(snap.subarray(0, 4 * MiB), new Uint8Array(4 * MiB).fill(0xa1)));
    assert.ok(same(snap.subarray(12 * MiB), new Uint8Array(4 * MiB)));
    for (let offset = 4 * MiB; offset < 12 * MiB; offset += block) {
      const got = snap.subarray(offset, offset + block);
      const old = new Uint8Array(block).fill(offset < 8 * MiB ? 0xa1 : 0);
      const isNew = same(got, new Uint8Array(block).fill(0xb2));
      assert.ok(isNew || same(got, old), `snapshot block at ${offset} is torn`);
      if (ackedBeforeSnapshot.has(offset)) assert.ok(isNew, `snapshot lost the write at ${offset}`);
    }
    // More writes to the VDI leave the snapshot as it was.
    await ok("qemu-io", ["-f", "raw", "-c", "write -P 0xd4 0 16M", uri("live")]);
    await ok("nbdcopy", [uri("live:mid"), `${dir}/snap2.raw`]);
    assert.ok(same(await fsp.readFile(`${dir}/snap2.raw`), snap), "the snapshot changed");
  });
});

Deno.test("a snapshot under a client: its next flush and trim go to the working VDI, as a write does", async () => {
  // The handle still has the old vid, whose table its flush writes again (the allocations since
  // its last flush) and its trim clears: both are refused there (READONLY), and must follow the
  // VDI as a write does. `VdiIo` did not (simulation, snapshot seed 8); the export does too.
  await withNbd(async ({ admin, port, uri, dir }) => {
    await admin.createVdi({ name: "live", sizeBytes: 4 * OBJ });
    for (const next of ["flush", "trim"] as const) {
      const client = await RawClient.connect({ port });
      try {
        await client.start();
        await client.go("live");
        // Allocates object 1; object 2 is allocated and flushed, to be trimmed.
        await collectReplies(client, sendWrites(client, 2 * OBJ, 2 * OBJ + 65536, 65536, 0x5e, 1n));
        assert.equal((await client.command(C.NBD_CMD_FLUSH, { handle: 10n })).errno, 0);
        await collectReplies(client, sendWrites(client, OBJ, OBJ + 65536, 65536, 0xa7, 20n));
        await admin.snapshot("live", `before-${next}`);
        const reply = next === "flush"
          ? await client.command(C.NBD_CMD_FLUSH, { handle: 30n })
          : await client.command(C.NBD_CMD_TRIM, { handle: 30n, offset: 2 * OBJ, length: OBJ });
        assert.equal(reply.errno, 0, `the ${next} after the snapshot failed`);
      } finally {
        await client.destroy();
      }
    }
    // The snapshots keep what was written before them; the trim emptied the working VDI only.
    await ok("nbdcopy", [uri("live:before-trim"), `${dir}/snap.raw`]);
    const snap = await fsp.readFile(`${dir}/snap.raw`);
    assert.ok(same(snap.subarray(OBJ, OBJ + 65536), new Uint8Array(65536).fill(0xa7)));
    assert.ok(same(snap.subarray(2 * OBJ, 2 * OBJ + 65536), new Uint8Array(65536).fill(0x5e)));
    await ok("nbdcopy", [uri("live"), `${dir}/live.raw`]);
    const live = await fsp.readFile(`${dir}/live.raw`);
    assert.ok(same(live.subarray(OBJ, OBJ + 65536), new Uint8Array(65536).fill(0xa7)));
    assert.ok(same(live.subarray(2 * OBJ, 3 * OBJ), new Uint8Array(OBJ)), "the trim");
  });
});

Deno.test("NBD requests show up in the sheep's metrics", async () => {
  await withNbd(async ({ sheep, admin, uri }) => {
    await admin.createVdi({ name: "counted", sizeBytes: 8 * MiB });
    await ok("qemu-io", [
      "-f",
      "raw",
      "-c",
      "write -P 0x5a 0 64k",
      "-c",
      "read -P 0x5a 0 64k",
      uri("counted"),
    ]);
    const text = await sheep.metrics.text();
    const count = (op: string) =>
      Number(
        new RegExp(`sheepdog_requests_total\\{protocol="nbd",op="${op}",result="ok"\\} (\\d+)`)
          .exec(text)?.[1] ?? 0,
      );
    assert.ok(count("WRITE") >= 1, "an NBD write is counted");
    assert.ok(count("READ") >= 1, "an NBD read is counted");
    const bytes = Number(
      /sheepdog_io_bytes_total\{protocol="nbd",direction="write"\} (\d+)/.exec(text)?.[1] ?? 0,
    );
    assert.ok(bytes >= 65536, `NBD bytes written: ${bytes}`);
    assert.match(text, /sheepdog_connected_clients\{protocol="nbd"\} 0/, "the client left");
  });
});

Deno.test("one writer per VDI: img convert -n and resize are refused while a client has it attached", async () => {
  await withNbd(async ({ admin, sheep, port, dir }) => {
    await admin.createVdi({ name: "vm", sizeBytes: 8 * MiB });
    const raw = path.join(dir, "new.raw");
    await fsp.writeFile(raw, new Uint8Array(MiB).fill(0x33));
    const holder = await RawClient.connect({ port });
    const cluster = { host: "127.0.0.1", port: sheep.port };
    try {
      await holder.start();
      await holder.go("vm");
      const attached = new RegExp(`attached by 127\\.0\\.0\\.1:${holder.socket.localPort}`);
      await assert.rejects(
        convertImage({
          source: { kind: "file", path: raw },
          target: { kind: "vdi", vdi: "vm" },
          createTarget: false,
          cluster,
        }),
        attached,
      );
      await assert.rejects(admin.resize("vm", 16 * MiB), attached);
      assert.equal((await admin.vdi("vm")).sizeBytes, 8 * MiB, "the size did not change");
      // The object port: our client's write and an old client's (no Flag.EXTENDED) are refused.
      const tcp = new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: sheep.port }));
      try {
        const vid = await tcp.lookupVdi("vm");
        await assert.rejects(tcp.writeObject(dataOid(vid, 0), new Uint8Array(4096), 0), attached);
        const old = requestHeader(Opcode.WRITE_OBJ);
        old.flags = Flag.WRITE;
        old.oid = dataOid(vid, 0);
        old.dataLength = 4096;
        const response = await tcp.transport.request(old, new Uint8Array(4096).fill(9));
        assert.equal(response.header.result, ResultCode.VDI_LOCKED);
      } finally {
        await tcp.close();
      }
    } finally {
      await holder.destroy();
    }
    await eventually(async () => {
      await admin.resize("vm", 16 * MiB);
    });
    await convertImage({
      source: { kind: "file", path: raw },
      target: { kind: "vdi", vdi: "vm" },
      createTarget: false,
      cluster,
    });
  });
});

Deno.test("vdi lock list shows each attach (holder, sheep, since); lock break releases it", async () => {
  await withNbd(async ({ admin, sheep, port }) => {
    await admin.createVdi({ name: "vm", sizeBytes: 8 * MiB });
    assert.deepEqual(await admin.locks(), []);
    const holder = await RawClient.connect({ port });
    try {
      await holder.start();
      await holder.go("vm");
      const locks = await admin.locks();
      assert.equal(locks.length, 1);
      assert.equal(locks[0]!.vdi, "vm");
      assert.equal(locks[0]!.client, `127.0.0.1:${holder.socket.localPort}`);
      assert.equal(locks[0]!.node, sheep.id);
      assert.ok(Math.abs(locks[0]!.sinceMs - Date.now()) < 60_000);
      assert.equal(await admin.unlockVdi("vm"), `127.0.0.1:${holder.socket.localPort}`);
      assert.deepEqual(await admin.locks(), []);
    } finally {
      await holder.destroy();
    }
  });
});

Deno.test("one writer per VDI: our client's attach lasts as long as its connection, and only that connection writes", async () => {
  await withNbd(async ({ admin, sheep, port }) => {
    await admin.createVdi({ name: "vm", sizeBytes: 8 * MiB });
    const connect = () =>
      new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: sheep.port }));
    const holder = connect();
    const other = connect();
    try {
      // What `img convert -n` does: attach, write through the same connection.
      const vid = await holder.lockVdi("vm");
      const lock = sheep.locks.get(vid);
      assert.ok(
        lock && /^127\.0\.0\.1:\d+$/.test(lock.client),
        `held by a connection: ${lock?.client}`,
      );
      await holder.createObject(dataOid(vid, 0), new Uint8Array(4096).fill(7), 0);
      const attached = new RegExp(`in use by ${lock.client}|attached by ${lock.client}`);
      await assert.rejects(other.lockVdi("vm"), attached);
      await assert.rejects(other.writeObject(dataOid(vid, 0), new Uint8Array(4096), 0), attached);
      // Nor does a VM get it over NBD for writing meanwhile.
      const vm = await RawClient.connect({ port });
      try {
        await vm.start();
        const info = await vm.go("vm");
        assert.ok((info.flags & C.NBD_FLAG_READ_ONLY) !== 0, "the VM gets it read-only");
      } finally {
        await vm.destroy();
      }
      // Killed half-way (no RELEASE_VDI): its connection's end releases it.
      await holder.close();
      assert.ok(
        await sheep.stateChanges.until(() => !sheep.locks.has(vid), 5000),
        "the lock outlived its connection",
      );
      await other.lockVdi("vm");
      await other.writeObject(dataOid(vid, 0), new Uint8Array(4096).fill(8), 0);
      await other.releaseVdi(vid);
      assert.equal(sheep.locks.has(vid), false, "released on request");
    } finally {
      await holder.close();
      await other.close();
    }
  });
});
