/**
 * Goal: with a cluster key, a sheep's object port refuses what strangers send (the attack of
 * issue 9: one MAKE_FS with force erased every node), and still serves old clients' public
 * requests from loopback. Method: one in-process sheep with a key on 127.0.0.1, clients with
 * the key, without it, with another key, and a raw socket; every refusal must leave the stored
 * objects as they were and say why in one log line.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { ResultCode } from "../core/errors.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { generateKey } from "../net/auth/cluster_key.ts";
import { ObjectClient, requestHeader } from "../net/object/client.ts";
import { Header, HEADER_SIZE } from "../net/object/header.ts";
import { Opcode } from "../net/object/ops.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";
import { Sheep } from "../net/sheep/sheep.ts";
import { tempDir } from "./harness.ts";
import { waitFor } from "./cluster_harness.ts";

const MiB = 1024 * 1024;

async function withKeyedSheep(
  fn: (
    context: { sheep: Sheep; key: Uint8Array; warnings: string[]; objects: () => string[] },
  ) => Promise<void>,
): Promise<void> {
  const dir = await tempDir("sd-key-");
  const key = generateKey();
  const warnings: string[] = [];
  const logger = {
    debug() {},
    info() {},
    warn: (line: string) => warnings.push(line),
    error: (line: string) => warnings.push(line),
  };
  const sheep = new Sheep({ dir, host: "127.0.0.1", port: 0, security: { key }, logger });
  await sheep.start();
  const admin = new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: sheep.port, key }));
  try {
    await admin.makeFs({ copies: 1, blockSizeShift: 22, force: false, strict: false });
    await admin.newVdi({ name: "disk", sizeBytes: 64 * MiB });
    const io = await VdiIo.open(admin, "disk");
    await io.write(0, new Uint8Array(8 * MiB).fill(0xab));
    const objects = () =>
      fs.readdirSync(path.join(dir, "obj")).filter((n) => /^[0-9a-f]{16}$/.test(n)).sort();
    await fn({ sheep, key, warnings, objects });
    // Whatever the test sent, the data is still there.
    const back = await (await VdiIo.open(admin, "disk")).read(0, 8 * MiB);
    assert.ok(back.every((b) => b === 0xab), "the VDI's data survived");
  } finally {
    await admin.close();
    await sheep.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Sends raw bytes, returns the first response header (or null if the sheep closed first). */
function rawExchange(port: number, bytes: Uint8Array): Promise<Header | null> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(bytes));
    let received = new Uint8Array(0);
    socket.on("data", (chunk: Uint8Array) => {
      received = new Uint8Array([...received, ...chunk]);
      if (received.length >= HEADER_SIZE) {
        socket.destroy();
        resolve(new Header(received.slice(0, HEADER_SIZE)));
      }
    });
    socket.on("close", () => resolve(null));
    socket.on("error", reject);
  });
}

Deno.test("cluster key: MAKE_FS with force from an unauthenticated loopback client is refused; nothing is erased", async () => {
  await withKeyedSheep(async ({ sheep, warnings, objects }) => {
    const before = objects();
    assert.ok(before.length >= 3);
    // The 48-byte packet of the attack: a bare header.
    const header = requestHeader(Opcode.MAKE_FS);
    header.flags = 0;
    const reply = await rawExchange(sheep.port, header.bytes);
    assert.equal(reply?.result, ResultCode.NOT_AUTHORIZED);
    // The same through a client without the key, with force in its payload.
    const keyless = new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: sheep.port }));
    try {
      await assert.rejects(
        () => keyless.makeFs({ copies: 1, blockSizeShift: 22, force: true, strict: false }),
        /needs the cluster key: pass --key-file/,
      );
      // Every internal opcode is refused the same way, reads of peers' copies included.
      for (
        const opcode of [
          Opcode.SHUTDOWN,
          Opcode.FORCE_RECOVER,
          Opcode.REMOVE_PEER,
          Opcode.STAT_SHEEP,
        ]
      ) {
        const response = await keyless.transport.request(requestHeader(opcode));
        assert.equal(
          response.header.result,
          ResultCode.NOT_AUTHORIZED,
          `opcode 0x${opcode.toString(16)}`,
        );
      }
      // Old clients' public requests work from loopback without a key.
      const io = await VdiIo.open(keyless, "disk");
      assert.equal((await io.read(4096, 4096))[0], 0xab);
    } finally {
      await keyless.close();
    }
    assert.deepEqual(objects(), before, "no object was removed");
    assert.equal(sheep.status, "running");
    assert.ok(
      warnings.some((w) => /^refused 127\.0\.0\.1:\d+: opcode 0x84 needs the cluster key$/.test(w)),
      warnings.join("\n"),
    );
  });
});

Deno.test("cluster key: a client with another key is refused on both sides, and the connection closes", async () => {
  await withKeyedSheep(async ({ sheep, warnings, objects }) => {
    const before = objects();
    const other = new ObjectClient(
      new TcpTransport({ host: "127.0.0.1", port: sheep.port, key: generateKey() }),
    );
    try {
      await assert.rejects(
        () => other.lookupVdi("disk"),
        /The sheep at 127\.0\.0\.1:\d+ holds another cluster key/,
      );
    } finally {
      await other.close();
    }
    await waitFor(
      "the sheep's line",
      () => warnings.some((w) => /left after the challenge/.test(w)),
    );
    // A client that proves without being challenged, or sends garbage as its proof.
    const prove = requestHeader(Opcode.AUTH_PROVE);
    prove.flags = 1;
    prove.dataLength = 16;
    const reply = await rawExchange(
      sheep.port,
      new Uint8Array([...prove.bytes, ...new Uint8Array(16)]),
    );
    assert.equal(reply?.result, ResultCode.NOT_AUTHORIZED);
    assert.deepEqual(objects(), before);
    // One line per peer address per minute: the second refusal is counted, not logged.
    const counted = await sheep.metrics.registry.getSingleMetricAsString("sheepdog_refusals_total");
    assert.match(counted, /sheepdog_refusals_total\{kind="connection wrong key"\} 2/);
  });
});

Deno.test("cluster key: with the key, administration works over TCP", async () => {
  await withKeyedSheep(async ({ sheep, key }) => {
    const admin = new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: sheep.port, key }));
    try {
      const response = await admin.transport.request(requestHeader(Opcode.STAT_SHEEP));
      assert.equal(response.header.result, ResultCode.SUCCESS);
    } finally {
      await admin.close();
    }
  });
});
