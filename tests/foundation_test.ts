// Goal: the foundation's promise end to end, in one process. A sheep on a temp dir imports a
// raw image of random data with holes, exports it byte-identical, counts allocation right,
// snapshots, clones, writes to the clone without touching the snapshot or the origin, deletes
// with space reclaimed, and after a restart reads everything back.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { randomBytes, tempDir } from "./harness.ts";
import { Sheep } from "../net/sheep/sheep.ts";
import { ObjectClient } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";
import { AdminService } from "../net/admin/admin_service.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { convertImage } from "../cmd/img_convert.ts";
import { ResultCode, SheepdogError } from "../core/errors.ts";

const MiB = 1 << 20;

async function startSheep(dir: string, port = 0): Promise<{ sheep: Sheep; admin: AdminService }> {
  const sheep = new Sheep({ dir, host: "127.0.0.1", port });
  await sheep.start();
  const admin = new AdminService(
    new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: sheep.port })),
  );
  return { sheep, admin };
}

/** 26 MiB: data, a 9 MiB hole (two whole objects), data, and a zero tail. */
function imageWithHoles(): Uint8Array {
  const image = new Uint8Array(26 * MiB);
  image.set(randomBytes(5 * MiB + 123), 0);
  image.set(randomBytes(2 * MiB), 14 * MiB + 7);
  return image;
}

Deno.test("foundation: import, export, snapshot, clone, delete, restart", async () => {
  const dir = await tempDir();
  const rawPath = path.join(dir, "raw.img");
  const image = imageWithHoles();
  await fsp.writeFile(rawPath, image);
  let { sheep, admin } = await startSheep(path.join(dir, "sheep"));
  const cluster = { host: "127.0.0.1", port: sheep.port };
  try {
    await admin.mkfs({ copies: 1, blockSizeShift: 22 });
    const imported = await convertImage({
      source: { kind: "file", path: rawPath },
      target: { kind: "vdi", vdi: "Bob's Disk" },
      createTarget: true,
      cluster,
    });
    // Zero detection works in 64 KiB blocks: each run rounds up to one more block.
    assert.equal(imported.writtenBytes, 7 * MiB + 2 * 65536, "only data runs are written");
    const bob = await admin.vdi("Bob's Disk");
    // Objects 0, 1 (first run), 3, 4 (second run, 14M+7 .. 16M+7): 4 objects of 4 MiB.
    assert.equal(bob.allocatedBytes, 16 * MiB);
    assert.equal(bob.sharedBytes, 0);

    const outPath = path.join(dir, "out.raw");
    await convertImage({
      source: { kind: "vdi", vdi: "Bob's Disk" },
      target: { kind: "file", path: outPath },
      createTarget: true,
      cluster,
    });
    assert.deepEqual(new Uint8Array(await fsp.readFile(outPath)), image);

    // Snapshot, then clone from it by tag and write to the clone.
    await admin.snapshot("Bob's Disk", "golden");
    await admin.clone("Bob's Disk:golden", "Charlie's Disk");
    const charlie = await VdiIo.open(admin.client, "Charlie's Disk");
    const patch = randomBytes(MiB);
    await charlie.write(4 * MiB - 100, patch);
    await charlie.flush();
    const charlieRow = await admin.vdi("Charlie's Disk");
    assert.equal(charlieRow.allocatedBytes, 8 * MiB, "COW copied two objects");
    assert.equal(charlieRow.sharedBytes, 8 * MiB);
    const snap = await VdiIo.open(admin.client, "Bob's Disk", { tag: "golden" });
    assert.deepEqual(await snap.read(0, image.length), image, "the snapshot is untouched");
    const origin = await VdiIo.open(admin.client, "Bob's Disk");
    assert.deepEqual(await origin.read(0, image.length), image, "the origin is untouched");
    const expected = image.slice();
    expected.set(patch, 4 * MiB - 100);
    assert.deepEqual(await charlie.read(0, image.length), expected);
    await assert.rejects(
      snap.write(0, new Uint8Array(1)),
      (e: unknown) => e instanceof SheepdogError && e.code === ResultCode.READONLY,
    );

    // Deleting the snapshot keeps what its children still read; deleting them frees it all.
    const objectsBefore = (await sheep.store.list()).length;
    await admin.deleteVdi("Bob's Disk:golden");
    assert.equal((await sheep.store.list()).length, objectsBefore, "children still read its data");
    assert.deepEqual(await charlie.read(0, image.length), expected);
    await admin.deleteVdi("Charlie's Disk");
    await admin.deleteVdi("Bob's Disk");
    const dataLeft = (await sheep.store.list()).filter((oid) => oid >> 63n === 0n);
    assert.deepEqual(dataLeft, [], "every data object was reclaimed");

    // Restart: everything written is still there.
    await admin.createVdi({ name: "Dora", sizeBytes: 64 * MiB });
    const dora = await VdiIo.open(admin.client, "Dora");
    const doraData = randomBytes(3 * MiB);
    await dora.write(10 * MiB, doraData);
    await dora.flush();
    await admin.client.close();
    await sheep.stop();
    ({ sheep, admin } = await startSheep(path.join(dir, "sheep")));
    const again = await VdiIo.open(admin.client, "Dora");
    assert.deepEqual(await again.read(10 * MiB, 3 * MiB), doraData);
    assert.equal((await admin.vdis()).length, 1);
    assert.equal((await admin.clusterInfo()).copies, 1);
  } finally {
    await admin.client.close();
    await sheep.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("a second sheep cannot use a directory that is in use", async () => {
  const dir = await tempDir();
  const { sheep, admin } = await startSheep(dir);
  try {
    const other = new Sheep({ dir, host: "127.0.0.1", port: 0 });
    await assert.rejects(other.start(), /locked by another sheep/);
  } finally {
    await admin.client.close();
    await sheep.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("a sheep directory that is not writable is refused with one line", async () => {
  const dir = await tempDir();
  const file = path.join(dir, "not-a-dir");
  await fsp.writeFile(file, "x");
  try {
    const sheep = new Sheep({ dir: path.join(file, "sub"), host: "127.0.0.1", port: 0 });
    await assert.rejects(sheep.start(), /Cannot use .*not writable/);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
