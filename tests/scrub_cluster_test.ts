// Goal: on a real in-process cluster, a scrub pass finds a copy with a flipped byte and a copy
// that went missing, repairs both from good replicas, and a second pass finds nothing.
// Method: three sheep, three copies; one byte flipped in one node's object file, another
// object removed from another node's store; a Scrubber built on every sheep with
// `scrubContextOf` (as sheep.ts will), one pass each; then every copy checked on every node.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { TestCluster, waitFor } from "./cluster_harness.ts";
import { randomBytes } from "./harness.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { targetsOf } from "../core/cluster/view.ts";
import { isDataOid, type Oid, oidToHex, oidToVid } from "../core/vdi/oid.ts";
import { ResultCode, SheepdogError } from "../core/errors.ts";
import type { Sheep } from "../net/sheep/sheep.ts";
import { Scrubber, scrubContextOf } from "../net/sheep/scrub.ts";

const MiB = 2 ** 20;

async function flipByte(sheep: Sheep, oid: Oid, position: number): Promise<void> {
  const handle = await fsp.open(path.join(sheep.dir, "obj", oidToHex(oid)), "r+");
  try {
    const byte = new Uint8Array(1);
    await handle.read(byte, 0, 1, position);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, position);
  } finally {
    await handle.close();
  }
}

async function scrubAll(scrubbers: Scrubber[]) {
  for (const scrubber of scrubbers) assert.ok(scrubber.start().started);
  await Promise.all(scrubbers.map((s) => s.settled()));
  return scrubbers.map((s) => s.status());
}

Deno.test("scrub on a cluster: a rotten copy and a missing copy are found and repaired", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  const scrubbers: Scrubber[] = [];
  try {
    const admin = cluster.admin(0);
    await admin.createVdi({ name: "disk", sizeBytes: 32 * MiB });
    const data = randomBytes(12 * MiB);
    const writer = await VdiIo.open(admin.client, "disk");
    await writer.write(0, data);
    await writer.flush();
    const nodes = cluster.live();
    const view = nodes[0]!.view;
    const dataOids = (await nodes[0]!.store.list()).filter(isDataOid).sort();
    assert.ok(dataOids.length >= 2);

    const [rotten, lost] = dataOids as [Oid, Oid];
    const victim = cluster.node(1);
    await flipByte(victim, rotten, 3 * 4096 + 5);
    const loser = cluster.node(2);
    await loser.store.remove(lost);
    const comparer = targetsOf(view, lost, 3)[0]!.id;

    for (const sheep of nodes) {
      scrubbers.push(new Scrubber(scrubContextOf(sheep), { bytesPerSecond: 1024 * MiB }));
    }
    const statuses = await scrubAll(scrubbers);
    for (const status of statuses) assert.equal(status.state, "done", status.error);

    const ofVictim = statuses[1]!;
    assert.equal(ofVictim.badBlocks, 1);
    assert.deepEqual(
      ofVictim.findings.filter((f) => f.oid === oidToHex(rotten)).map((f) => [f.node, f.repaired]),
      [[victim.id, true]],
    );
    assert.deepEqual(await victim.store.verify(rotten), []);
    assert.ok(victim.store.health().checksumErrors > 0);

    const byComparer = statuses[nodes.findIndex((s) => s.id === comparer)]!;
    const missing = byComparer.findings.find((f) => f.oid === oidToHex(lost));
    assert.deepEqual(
      missing && { node: missing.node, problem: missing.problem, repaired: missing.repaired },
      { node: loser.id, problem: "copy missing", repaired: true },
    );
    assert.ok(await loser.store.exists(lost));

    // Every copy of every object now agrees, and reads give the data written.
    for (const oid of dataOids) {
      const metas = await Promise.all(nodes.map((s) => s.store.meta(oid)));
      assert.ok(metas.every((m) => m && m.digest === metas[0]!.digest), `${oidToHex(oid)}`);
    }
    const reader = await VdiIo.open(cluster.admin(2).client, "disk");
    assert.deepEqual(await reader.read(0, 12 * MiB), data);

    // A second pass finds nothing.
    const again = await scrubAll(scrubbers);
    assert.deepEqual(again.map((s) => s.findingsTotal), [0, 0, 0]);
    assert.ok(again.every((s) => s.objectsChecked === s.objectsTotal && s.objectsTotal > 0));
  } finally {
    await Promise.all(scrubbers.map((s) => s.stop()));
    await cluster.stop();
  }
});

Deno.test("scrub on a cluster: objects a failed write left behind a deleted VDI are removed, the rest stays", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  const scrubbers: Scrubber[] = [];
  try {
    const admin = cluster.admin(0);
    await admin.createVdi({ name: "import", sizeBytes: 16 * MiB });
    await admin.createVdi({ name: "keep", sizeBytes: 16 * MiB });
    const importer = await VdiIo.open(admin.client, "import");
    await importer.write(0, randomBytes(4 * MiB));
    // The disk of node 2 is full: a new object is stored on two nodes, the write fails, so the
    // VDI's table never lists it (what a failed `img convert` leaves; it then deletes the VDI).
    const full = cluster.node(2).store;
    const realCreate = full.create.bind(full);
    full.create = () => Promise.reject(new SheepdogError(ResultCode.NO_SPACE, "disk full"));
    await assert.rejects(importer.write(4 * MiB, randomBytes(4096)));
    full.create = realCreate;
    // Node 2 has room again: the gateway restores its missing copy in the background. Let that
    // finish first, or it could put a copy back after the scrub removed the orphan.
    await waitFor(
      "the refused copy's restore",
      () => cluster.live().every((sheep) => sheep.gateway.restoresPending === 0),
    );
    const vid = cluster.node(0).registry.lookup("import").vdiId;
    const keeper = await VdiIo.open(admin.client, "keep");
    const kept = randomBytes(4 * MiB);
    await keeper.write(4 * MiB, kept);
    await keeper.flush();
    await admin.deleteVdi("import");
    const ofDeleted = async () => {
      const found = new Set<Oid>();
      for (const sheep of cluster.live()) {
        for (const oid of await sheep.store.list()) {
          if (isDataOid(oid) && oidToVid(oid) === vid) found.add(oid);
        }
      }
      return found;
    };
    assert.equal((await ofDeleted()).size, 1, "the unlisted object outlives the delete");

    for (const sheep of cluster.live()) {
      scrubbers.push(new Scrubber(scrubContextOf(sheep), { bytesPerSecond: 1024 * MiB }));
    }
    const statuses = await scrubAll(scrubbers);
    for (const status of statuses) assert.equal(status.state, "done", status.error);
    assert.equal((await ofDeleted()).size, 0, "the orphan is gone from every node");
    const notes = statuses.flatMap((s) => s.findings).filter((f) => f.problem.startsWith("orphan"));
    assert.equal(notes.length, 1);
    assert.ok(notes[0]!.repaired);
    const reader = await VdiIo.open(cluster.admin(1).client, "keep");
    assert.deepEqual(await reader.read(4 * MiB, 4 * MiB), kept, "a live VDI keeps its data");
    const again = await scrubAll(scrubbers);
    assert.deepEqual(again.map((s) => s.findingsTotal), [0, 0, 0]);
  } finally {
    await Promise.all(scrubbers.map((s) => s.stop()));
    await cluster.stop();
  }
});
