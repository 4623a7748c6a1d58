import assert from "node:assert/strict";
import { ResultCode } from "../../core/errors.ts";
import { dataOid, oidToVid, vdiOid } from "../../core/vdi/oid.ts";
import { AdminService } from "../admin/admin_service.ts";
import { ObjectClient, requestHeader } from "../object/client.ts";
import { Flag, Opcode } from "../object/ops.ts";
import { FakeScrubCluster, FakeWorld } from "../../tests/scrub_fakes.ts";
import { parseScrubRequest } from "./scrub_ops.ts";

function cluster(): FakeScrubCluster {
  const world = new FakeWorld({ nodes: 3, copies: 2 });
  for (let i = 0; i < 8; i++) world.put(dataOid(7, i));
  world.put(vdiOid(7));
  world.put(dataOid(8, 0));
  return new FakeScrubCluster(world);
}

Deno.test("START_SCRUB starts a pass on every node; STAT_SCRUB reports each node", async () => {
  const fake = cluster();
  const [a, b, c] = fake.world.nodes.map((n) => n.id);
  const admin = new AdminService(new ObjectClient(fake.transport(a!)));
  let open!: () => void;
  fake.world.verifyGate = new Promise((resolve) => (open = resolve));
  try {
    const started = await admin.startScrub();
    assert.deepEqual(started.map((r) => r.node), [a, b, c]);
    assert.ok(started.every((r) => r.started === true && r.state === "running" && r.pass === 1));
    // Asked again while running: every node reports the pass it runs, none starts another.
    const again = await admin.startScrub();
    assert.deepEqual(again.map((r) => [r.started, r.state, r.pass]), [
      [false, "running", 1],
      [false, "running", 1],
      [false, "running", 1],
    ]);
    open();
    await fake.settled();
    const rows = await admin.scrubStatus();
    assert.deepEqual(rows.map((r) => [r.node, r.state, r.pass]), [
      [a, "done", 1],
      [b, "done", 1],
      [c, "done", 1],
    ]);
    // Each object has two copies: every copy on some node was verified once.
    const copies = [...fake.world.stores.values()].reduce((n, store) => n + store.size, 0);
    assert.equal(rows.reduce((n, r) => n + (r.bytesVerified ?? 0), 0), copies * 2 ** 20);
  } finally {
    await fake.stop();
  }
});

Deno.test("START_SCRUB passes the VDI filter on; a node that does not answer is unreachable", async () => {
  const fake = cluster();
  const [a, b, c] = fake.world.nodes.map((n) => n.id);
  fake.world.unreachable.add(c!);
  const client = new ObjectClient(fake.transport(a!));
  try {
    const rows = await client.json<{ node: string; state: string; vid?: number; error?: string }[]>(
      Opcode.START_SCRUB,
      { vid: 7 },
    );
    assert.deepEqual(rows.map((r) => [r.node, r.state, r.vid]), [
      [a, "running", 7],
      [b, "running", 7],
      [c, "unreachable", undefined],
    ]);
    assert.equal(rows[2]!.error, "Peer is unreachable");
    await fake.settled();
    assert.equal(fake.scrubbers.get(c!)!.status().pass, 0);
    // Each node verified exactly its copies of VDI 7's objects, none of VDI 8's.
    for (const id of [a!, b!]) {
      const ofSeven = [...fake.world.stores.get(id)!.keys()].filter((o) => oidToVid(o) === 7);
      assert.equal(fake.scrubbers.get(id)!.status().bytesVerified, ofSeven.length * 2 ** 20);
    }
  } finally {
    await fake.stop();
  }
});

Deno.test("START_SCRUB and STAT_SCRUB with Flag.FWD answer for the node asked only", async () => {
  const fake = cluster();
  const [a, b] = fake.world.nodes.map((n) => n.id);
  try {
    const header = requestHeader(Opcode.STAT_SCRUB, { internal: true });
    header.flags |= Flag.FWD;
    const response = await fake.transport(b!).request(header);
    const rows = JSON.parse(new TextDecoder().decode(response.data));
    assert.deepEqual(rows.map((r: { node: string }) => r.node), [b]);

    const start = requestHeader(Opcode.START_SCRUB, { internal: true });
    start.flags |= Flag.FWD;
    await fake.transport(b!).request(start);
    assert.equal(fake.scrubbers.get(b!)!.status().pass, 1);
    assert.equal(fake.scrubbers.get(a!)!.status().pass, 0);
    await fake.settled();
  } finally {
    await fake.stop();
  }
});

Deno.test("START_SCRUB refuses a payload that is not {vid?} with INVALID_PARMS", async () => {
  const fake = cluster();
  const client = new ObjectClient(fake.transport(fake.world.nodes[0]!.id));
  try {
    await assert.rejects(
      () => client.json(Opcode.START_SCRUB, { vid: "Alice" }),
      (error: { code?: number; message: string }) =>
        error.code === ResultCode.INVALID_PARMS && /Invalid VDI id 'Alice'/.test(error.message),
    );
    assert.deepEqual(parseScrubRequest(new Uint8Array(0)), {});
    assert.deepEqual(parseScrubRequest(new TextEncoder().encode('{"vid":null}')), {});
    assert.throws(() => parseScrubRequest(new TextEncoder().encode("[1]")), /JSON object/);
    assert.throws(() => parseScrubRequest(new TextEncoder().encode('{"vid":16777216}')));
    assert.equal(fake.scrubbers.get(fake.world.nodes[0]!.id)!.status().pass, 0);
  } finally {
    await fake.stop();
  }
});
