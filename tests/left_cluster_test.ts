// Goal: a sheep whose epoch log cannot be written any more (EIO, a broken directory: anything the
// space reserve does not prevent) leaves its group, as it must, and from then on every client
// path answers with one clear line that says so and why: the NBD export (requests on an attached
// connection and a new attach), the object protocol (admin requests), and the in-process gateway
// access the export uses. Before, the group driver stopped itself while its ClusterMember still
// reported the old standing: writes went on as if the node were primary, and an attach reached
// the stopped driver and failed with "AssertionError: the driver is not running".
// Method: three in-process sheep; an NBD writer attached through node 2; node 2's epoch
// directory replaced by a file (its next persist fails); node 1 killed, so a new view is due.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { isResult, ResultCode } from "../core/errors.ts";
import { dataOid } from "../core/vdi/oid.ts";
import { constants as C } from "../net/nbd/mod.ts";
import { startNbdService } from "../net/sheep/vdi_exports.ts";
import { TestCluster, waitFor } from "./cluster_harness.ts";
import { RawClient } from "./nbd/raw_client.ts";

const MiB = 1024 * 1024;
const LEFT = /^This sheep has left the cluster \(cannot persist the epoch log: .+\): restart it/;

Deno.test("a sheep that cannot persist its epoch log leaves the cluster and tells every client why, in one line", async () => {
  const cluster = await TestCluster.start({ nodes: 3, copies: 3 });
  const sheep = cluster.node(2);
  const service = await startNbdService(sheep, { host: "127.0.0.1", port: 0 });
  assert.ok("port" in service.address);
  const port = service.address.port;
  const writer = await RawClient.connect({ port });
  try {
    const vid = await cluster.admin(0).createVdi({ name: "vm", sizeBytes: 8 * MiB });
    await writer.start();
    await writer.go("vm");
    const block = new Uint8Array(4096).fill(7);
    const written = await writer.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 0 }, block);
    assert.equal(written.errno, 0);

    const epochDir = path.join(sheep.dir, "epoch");
    await fsp.rm(epochDir, { recursive: true });
    await fsp.writeFile(epochDir, "not a directory");
    await cluster.kill(1);
    await waitFor("node 2 to leave", () => sheep.status === "left");
    assert.equal(sheep.member?.state, "left");
    assert.match(sheep.member?.leftReason ?? "", /^cannot persist the epoch log: /);

    // NBD: a request on the attached connection, and a new attach.
    const refused = await writer.command(C.NBD_CMD_WRITE, { handle: 2n, offset: 0 }, block);
    assert.notEqual(refused.errno, 0);
    assert.match(refused.message, LEFT);
    const reader = await RawClient.connect({ port });
    try {
      await reader.start();
      await assert.rejects(reader.go("vm"), (error: Error) => {
        assert.doesNotMatch(error.message, /AssertionError|not running/);
        assert.match(error.message, /This sheep has left the cluster \(cannot persist/);
        return true;
      });
    } finally {
      await reader.destroy();
    }
    // The object protocol: a change and a read, over TCP.
    const admin = cluster.admin(2);
    await assert.rejects(admin.createVdi({ name: "other", sizeBytes: MiB }), (error: Error) => {
      assert.match(error.message, LEFT);
      return true;
    });
    // The gateway access the export uses.
    await assert.rejects(sheep.localAccess.readObject(dataOid(vid, 0), 0, 4096), (error) => {
      assert.ok(isResult(error, ResultCode.HALT), `HALT: ${error}`);
      assert.match((error as Error).message, LEFT);
      return true;
    });
  } finally {
    await writer.destroy();
    await service.close();
    await cluster.stop();
  }
});
