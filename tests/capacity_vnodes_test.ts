/**
 * Goal: vnodes follow capacity, as Sheepdog's "auto" strategy did: a sheep on a store twice
 * the size gets twice the vnodes on every member's ring, and `--vnodes` (a fixed count) opts
 * a node out. The node list and the epoch history show the counts the ring uses.
 */
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { Sheep } from "../net/sheep/sheep.ts";
import { MemDisk } from "../core/store/mem_disk.ts";
import { generateKey } from "../net/auth/cluster_key.ts";
import { AdminService } from "../net/admin/admin_service.ts";
import { ObjectClient } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";
import { freePort, waitFor } from "./cluster_harness.ts";
import { tempDir } from "./harness.ts";

const GiB = 2 ** 30;

Deno.test("vnodes: a store twice the size gets twice the vnodes; --vnodes fixes them", async () => {
  const root = await tempDir("sd-vnodes-");
  const key = generateKey();
  const ports = [await freePort(), await freePort(), await freePort()];
  // Node 0 on 2 GiB, node 1 on 1 GiB (both weighed), node 2 on 1 GiB with 64 fixed vnodes.
  const capacities = [2 * GiB, GiB, GiB];
  const sheep = ports.map((port, i) => {
    const disk = new MemDisk();
    disk.setCapacity(capacities[i]!);
    return new Sheep({
      dir: path.join(root, `sheep${i}`),
      host: "127.0.0.1",
      port,
      zone: i + 1,
      disk,
      security: { key },
      ...(i === 2 ? { vnodes: 64 } : {}),
      cluster: {
        seeds: ports.filter((p) => p !== port).map((p) => `127.0.0.1:${p}`),
        multicast: false,
        failureTimeoutMs: 1500,
        settleMs: 500,
      },
    });
  });
  const admin = new AdminService(
    new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: ports[0]!, key })),
  );
  try {
    await Promise.all(sheep.map((s) => s.start()));
    await waitFor("a view of three", () => sheep.every((s) => s.view.nodes.length === 3));
    // The average of the weighed nodes is 1.5 GiB: 128 × 2/1.5 and 128 × 1/1.5.
    const expected = { [sheep[0]!.id]: 171, [sheep[1]!.id]: 85, [sheep[2]!.id]: 64 };
    for (const s of sheep) {
      const counts = Object.fromEntries(s.view.nodes.map((n) => [n.id, n.vnodes]));
      assert.deepEqual(counts, expected, `the ring of ${s.id}`);
      assert.equal(s.view.ring.vnodes.length, 171 + 85 + 64);
    }
    const listed = Object.fromEntries((await admin.nodes()).map((n) => [n.id, n.vnodes]));
    assert.deepEqual(listed, expected);
    const history = (await admin.clusterInfo()).epochs[0]!;
    assert.deepEqual(Object.fromEntries(history.members.map((m) => [m.id, m.vnodes])), expected);
  } finally {
    await admin.client.close();
    await Promise.all(sheep.map((s) => s.stop({ graceful: false })));
    await fsp.rm(root, { recursive: true, force: true });
  }
});
