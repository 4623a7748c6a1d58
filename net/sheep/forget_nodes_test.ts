/**
 * Goal: `shepherd cluster forget` (FORGET_NODES) refuses what it cannot mean with one clear line,
 * and records the nodes it is given on every node, durably. Method: a lone sheep; bad payloads,
 * a node that is in the view, then two good requests and the file they leave.
 */

import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { withSheep } from "../../tests/harness.ts";
import { isResult, ResultCode } from "../../core/errors.ts";
import { AdminService } from "../admin/admin_service.ts";
import { Opcode } from "../object/ops.ts";

Deno.test("FORGET_NODES: bad requests get one clear line; good ones are kept on disk", async () => {
  await withSheep(async ({ sheep, client, dir }) => {
    const refused = (text: RegExp) => (error: unknown) =>
      isResult(error, ResultCode.INVALID_PARMS) && text.test((error as Error).message);
    await assert.rejects(client.json(Opcode.FORGET_NODES, {}), refused(/HOST:PORT/));
    await assert.rejects(client.json(Opcode.FORGET_NODES, { nodes: [] }), refused(/HOST:PORT/));
    await assert.rejects(
      client.json(Opcode.FORGET_NODES, { nodes: ["no port"] }),
      refused(/HOST:PORT/),
    );
    await assert.rejects(
      client.json(Opcode.FORGET_NODES, { nodes: [sheep.id] }),
      refused(/is in the cluster now: only a node that is gone can be forgotten/),
    );
    const admin = new AdminService(client);
    assert.deepEqual(await admin.forgetNodes(["10.9.9.9:7000"]), [{ node: sheep.id, held: 0 }]);
    await admin.forgetNodes(["10.9.9.8:7000", "10.9.9.9:7000"]);
    const kept = JSON.parse(await fsp.readFile(path.join(dir, "forgotten-nodes"), "utf8"));
    assert.deepEqual(kept, ["10.9.9.8:7000", "10.9.9.9:7000"]);
  });
});
