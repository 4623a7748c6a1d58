import assert from "node:assert/strict";
import { withSheep } from "../../tests/harness.ts";
import { isResult, ResultCode, SheepdogError } from "../../core/errors.ts";
import { VdiIo } from "../../core/vdi/io.ts";
import {
  decodeInodeHeader,
  INODE_HEADER_SIZE,
  isSnapshot,
  sheepTimeToMs,
} from "../../core/vdi/inode.ts";
import { isVdiOid, oidToVid, vdiOid } from "../../core/vdi/oid.ts";
import { vidHash } from "../../core/vdi/vid.ts";
import { type VdiEvent, VdiRegistry } from "../../core/vdi/registry.ts";
import type { Sheep } from "./sheep.ts";
import { type SubmitEvent, type VdiGateway, VdiService } from "./vdi_service.ts";
import type { ObjectClient } from "../object/client.ts";

const OBJ = 4 << 20;
/** Lets every change through: these tests refuse (or crash) the event itself. */
const admit = () => {};

/** Rebuilds the VDI table from the inodes the sheep stores, as `Sheep` does at start. */
async function rebuild(sheep: Sheep): Promise<VdiRegistry> {
  const registry = new VdiRegistry();
  for (const oid of await sheep.store.list()) {
    if (!isVdiOid(oid)) continue;
    const header = decodeInodeHeader(await sheep.store.read(oid, 0, INODE_HEADER_SIZE));
    if (header.vdiId !== 0) registry.load(header);
  }
  registry.settle();
  return registry;
}

/**
 * The rebuilt state in one string: every live VDI (name, snap id, kind, size, parent) and who
 * owns its first three objects, checking each name has at most one working VDI.
 */
async function describe(sheep: Sheep): Promise<string> {
  const registry = await rebuild(sheep);
  const lines: string[] = [];
  const working = new Set<string>();
  for (const header of registry.live()) {
    if (!isSnapshot(header)) {
      assert.ok(!working.has(header.name), `two working VDIs named '${header.name}'`);
      working.add(header.name);
    }
    const inode = await sheep.vdis.readInode(header.vdiId);
    assert.equal(inode.vdiId, header.vdiId);
    const parent = registry.get(header.parentVdiId);
    if (header.parentVdiId !== 0) assert.ok(parent, `the parent of ${header.name} is missing`);
    const owners = [...inode.dataVdiId.subarray(0, 3)].map((v) => v.toString(16)).join(",");
    lines.push(
      `${header.name}:${header.snapId} ${isSnapshot(header) ? "snapshot" : "working"} ` +
        `${header.vdiSize} parent=${parent?.name ?? "-"}:${parent?.snapId ?? 0} [${owners}]`,
    );
  }
  return lines.sort().join("\n");
}

/** A gateway and submit that stop working ("crash") at mutating step `steps` (0-based). */
function crashing(sheep: Sheep, steps: number) {
  let left = steps;
  const state = { crashed: false, applied: false };
  const step = () => {
    if (state.crashed || left-- <= 0) {
      state.crashed = true;
      throw new Error("crash");
    }
  };
  const gateway: VdiGateway = {
    read: (oid, offset, length) => {
      if (state.crashed) throw new Error("crash");
      return sheep.gateway.read(oid, offset, length);
    },
    copiesOf: (oid) => sheep.gateway.copiesOf(oid),
    writeAt: async (oid, data, offset) => {
      step();
      await sheep.gateway.writeAt(oid, data, offset);
    },
    createAt: async (oid, data, offset) => {
      step();
      await sheep.gateway.createAt(oid, data, offset);
    },
    remove: async (oid) => {
      step();
      await sheep.gateway.remove(oid);
    },
    flush: () => sheep.gateway.flush(),
  };
  const submit: SubmitEvent = async (event) => {
    step();
    const change = await sheep.submitVdiEvent(event);
    state.applied = true;
    return change;
  };
  return { gateway, submit, state };
}

interface Case {
  name: string;
  /** Builds the state before the change. */
  setup: (sheep: Sheep, client: ObjectClient) => Promise<void>;
  /** The change, asked of `vdis`. */
  event: (sheep: Sheep) => VdiEvent;
}

async function write(client: ObjectClient, name: string, index: number, byte: number) {
  const io = await VdiIo.open(client, name);
  await io.write(index * OBJ, new Uint8Array(4096).fill(byte));
}

const base = async (sheep: Sheep, client: ObjectClient) => {
  await sheep.vdis.change({
    type: "create",
    name: "a",
    sizeBytes: 3 * OBJ,
    copies: 1,
    blockSizeShift: 22,
    nowMs: 1000,
  });
  await write(client, "a", 0, 1);
  const working = sheep.registry.lookup("a").vdiId;
  await sheep.vdis.change({ type: "snapshot", vid: working, tag: "s1", nowMs: 2000 });
  await write(client, "a", 1, 2);
};

const CASES: Case[] = [
  {
    name: "create",
    setup: base,
    event: () => ({
      type: "create",
      name: "c",
      sizeBytes: OBJ,
      copies: 1,
      blockSizeShift: 22,
      nowMs: 3000,
    }),
  },
  {
    name: "snapshot",
    setup: base,
    event: (sheep) => ({
      type: "snapshot",
      vid: sheep.registry.lookup("a").vdiId,
      tag: "s2",
      nowMs: 3000,
    }),
  },
  {
    name: "clone",
    setup: base,
    event: (sheep) => ({
      type: "clone",
      baseVid: sheep.registry.lookup("a", { tag: "s1" }).vdiId,
      name: "b",
      nowMs: 3000,
    }),
  },
  {
    name: "rollback",
    setup: base,
    event: (sheep) => ({
      type: "rollback",
      snapshotVid: sheep.registry.lookup("a", { tag: "s1" }).vdiId,
      nowMs: 3000,
    }),
  },
  {
    name: "resize",
    setup: base,
    event: (sheep) => ({
      type: "resize",
      vid: sheep.registry.lookup("a").vdiId,
      sizeBytes: 5 * OBJ,
    }),
  },
  {
    name: "rename",
    setup: base,
    event: (sheep) => ({ type: "rename", vid: sheep.registry.lookup("a").vdiId, name: "z" }),
  },
  {
    name: "shrink",
    setup: base,
    event: (sheep) => ({
      type: "resize",
      vid: sheep.registry.lookup("a").vdiId,
      sizeBytes: OBJ,
      shrink: true,
    }),
  },
  {
    name: "flatten",
    setup: async (sheep, client) => {
      await base(sheep, client);
      const s1 = sheep.registry.lookup("a", { tag: "s1" }).vdiId;
      await sheep.vdis.change({ type: "clone", baseVid: s1, name: "b", nowMs: 3000 });
      await write(client, "b", 0, 5); // b now owns every object it reads
    },
    event: (sheep) => ({ type: "flatten", vid: sheep.registry.lookup("b").vdiId }),
  },
  {
    name: "delete",
    setup: base,
    event: (sheep) => ({ type: "delete", vid: sheep.registry.lookup("a").vdiId }),
  },
];

/** The rebuilt state before and after `c` runs to the end, and how many steps it takes. */
async function endStates(c: Case): Promise<{ before: string; after: string; steps: number }> {
  let result = { before: "", after: "", steps: 0 };
  await withSheep(async ({ sheep, client }) => {
    await c.setup(sheep, client);
    const before = await describe(sheep);
    const { gateway, submit } = crashing(sheep, Number.MAX_SAFE_INTEGER);
    let steps = 0;
    const counting: VdiGateway = {
      ...gateway,
      writeAt: (...args) => (steps++, gateway.writeAt(...args)),
      createAt: (...args) => (steps++, gateway.createAt(...args)),
      remove: (...args) => (steps++, gateway.remove(...args)),
    };
    const service = new VdiService({
      admit,
      registry: sheep.registry,
      gateway: counting,
      submit: (event) => (steps++, submit(event)),
    });
    await service.change(c.event(sheep));
    result = { before, after: await describe(sheep), steps };
  });
  assert.notEqual(result.before, result.after, `${c.name} changed nothing`);
  return result;
}

for (const c of CASES) {
  Deno.test(`VdiService ${c.name}: a crash after any step rebuilds to the old or the new state`, async () => {
    const { before, after, steps } = await endStates(c);
    for (let crashAt = 0; crashAt < steps; crashAt++) {
      await withSheep(async ({ sheep, client }) => {
        await c.setup(sheep, client);
        const { gateway, submit, state } = crashing(sheep, crashAt);
        const service = new VdiService({ registry: sheep.registry, gateway, submit, admit });
        await assert.rejects(service.change(c.event(sheep)), /crash/);
        assert.ok(state.crashed);
        const rebuilt = await describe(sheep);
        assert.ok(
          rebuilt === before || rebuilt === after,
          `${c.name}, crash at step ${crashAt}:\n${rebuilt}\nis neither before:\n${before}\nnor after:\n${after}`,
        );
        // Once the cluster has applied the event, the change must survive a restart.
        if (state.applied) assert.equal(rebuilt, after, `${c.name}, crash at step ${crashAt}`);
      });
    }
  });
}

Deno.test("VdiService: a refused event leaves the inodes as they were", async () => {
  for (const c of CASES) {
    await withSheep(async ({ sheep, client }) => {
      await c.setup(sheep, client);
      const before = await describe(sheep);
      const service = new VdiService({
        admit,
        registry: sheep.registry,
        gateway: sheep.gateway,
        submit: () => Promise.reject(new SheepdogError(ResultCode.HALT, "minority")),
      });
      await assert.rejects(service.change(c.event(sheep)), /minority/);
      assert.equal(await describe(sheep), before, `${c.name} left something behind`);
      assert.equal(
        (await sheep.store.list()).filter(isVdiOid).length,
        sheep.registry.all().length,
        `${c.name} left an inode object`,
      );
    });
  }
});

/** Two names whose vids start at the same hash. */
function collidingNames(): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0;; i++) {
    const name = `n${i}`;
    const other = seen.get(vidHash(name));
    if (other !== undefined) return [other, name];
    seen.set(vidHash(name), name);
  }
}

Deno.test("VdiService: an event that lost its vid to another node is planned again", async () => {
  await withSheep(async ({ sheep }) => {
    const [mine, theirs] = collidingNames();
    const create = (name: string, nowMs: number): VdiEvent => ({
      type: "create",
      name,
      sizeBytes: OBJ,
      copies: 1,
      blockSizeShift: 22,
      nowMs,
    });
    let raced = false;
    // The other node planned and checked its vid before our inode was written (no lock between
    // them): it does not see our inode, and its own replaces it.
    const blind: VdiGateway = {
      ...sheep.gateway,
      read: (oid, offset, length) =>
        isVdiOid(oid) && sheep.registry.get(oidToVid(oid)) === undefined
          ? Promise.reject(new SheepdogError(ResultCode.NO_OBJ, "not written yet"))
          : sheep.gateway.read(oid, offset, length),
      writeAt: (...args) => sheep.gateway.writeAt(...args),
      createAt: (...args) => sheep.gateway.createAt(...args),
      remove: (oid) => sheep.gateway.remove(oid),
      flush: (vid) => sheep.gateway.flush(vid),
      copiesOf: (oid) => sheep.gateway.copiesOf(oid),
    };
    const racer = new VdiService({
      admit,
      registry: sheep.registry,
      gateway: blind,
      submit: (event) => sheep.submitVdiEvent(event),
    });
    const service = new VdiService({
      admit,
      registry: sheep.registry,
      gateway: sheep.gateway,
      submit: async (event) => {
        if (!raced) {
          // Another node creates a name with the same hash, and its event is applied first.
          raced = true;
          await racer.change(create(theirs, 2000));
        }
        return await sheep.submitVdiEvent(event);
      },
    });
    const vid = await service.change(create(mine, 3000));
    const other = sheep.registry.lookup(theirs).vdiId;
    assert.equal(vid, other + 1);
    for (const registry of [sheep.registry, await rebuild(sheep)]) {
      assert.equal(registry.lookup(mine).vdiId, vid);
      assert.equal(registry.lookup(theirs).vdiId, other);
    }
    assert.equal((await sheep.vdis.readInode(vid)).name, mine);
    assert.equal((await sheep.vdis.readInode(other)).name, theirs, "the winner's inode stays");
  });
});

Deno.test("VdiService: a new inode never replaces one the table lacks", async () => {
  await withSheep(async ({ sheep }) => {
    const create = (nowMs: number): VdiEvent => ({
      type: "create",
      name: "kept",
      sizeBytes: 2 * OBJ,
      copies: 1,
      blockSizeShift: 22,
      nowMs,
    });
    const vid = await sheep.vdis.change(create(1000));
    const io = await VdiIo.open(sheep.localAccess, "kept");
    await io.write(OBJ, new Uint8Array([7, 7, 7]));
    await io.flush();
    const before = await sheep.vdis.readInode(vid);
    // A table that parted from the inodes (DURABILITY.md): it lacks 'kept', so it plans the
    // same vid for a create of the name.
    const told: bigint[] = [];
    const service = new VdiService({
      admit,
      registry: new VdiRegistry(),
      gateway: sheep.gateway,
      submit: () => Promise.reject(new Error("not reached")),
      unknownInode: (oid) => told.push(oid),
    });
    await assert.rejects(
      service.change(create(2000)),
      (error) => isResult(error, ResultCode.AGAIN) && /lacks \(VDI 'kept'\)/.test(String(error)),
    );
    assert.deepEqual(told, [vdiOid(vid)]);
    const after = await sheep.vdis.readInode(vid);
    assert.equal(after.createTime, before.createTime, "the inode was not replaced");
    assert.deepEqual(after.dataVdiId.subarray(0, 2), before.dataVdiId.subarray(0, 2));
    assert.deepEqual(await io.read(OBJ, 3), new Uint8Array([7, 7, 7]));
    // An inode older than the cluster's format is a copy of a VDI the format erased (one a
    // copy in flight at the erase brought back): the create takes its vid.
    let submitted: VdiEvent | undefined;
    const formatted = new VdiService({
      admit,
      registry: new VdiRegistry(),
      gateway: sheep.gateway,
      submit: (event) => {
        submitted = event;
        return Promise.reject(new SheepdogError(ResultCode.HALT, "stop here"));
      },
      unknownInode: (oid) => told.push(oid),
      formatMs: () => sheepTimeToMs(before.createTime),
    });
    await assert.rejects(formatted.change(create(2000)), /stop here/);
    assert.equal(submitted?.type, "create");
    assert.deepEqual(told, [vdiOid(vid)], "not told of");
  });
});

Deno.test("VdiService snapshot: an object allocated after the table was copied reaches the new working VDI", async () => {
  await withSheep(async ({ sheep, client }) => {
    await base(sheep, client);
    const writer = await VdiIo.open(client, "a");
    const service = new VdiService({
      admit,
      registry: sheep.registry,
      gateway: sheep.gateway,
      submit: async (event) => {
        // The writer allocates object 2 after the new inode was written, before the event.
        await writer.write(2 * OBJ, new Uint8Array(4096).fill(3));
        return await sheep.submitVdiEvent(event);
      },
    });
    const old = sheep.registry.lookup("a").vdiId;
    await service.change({ type: "snapshot", vid: old, tag: "s2", nowMs: 3000 });
    for (
      const io of [await VdiIo.open(client, "a"), await VdiIo.open(client, "a", { tag: "s2" })]
    ) {
      assert.equal(io.inode.dataVdiId[2], old);
      assert.deepEqual(await io.read(2 * OBJ, 4096), new Uint8Array(4096).fill(3));
    }
    // The writer follows the VDI to its new vid and writes on there.
    await writer.write(2 * OBJ + 4096, new Uint8Array(4096).fill(4));
    const again = await VdiIo.open(client, "a");
    assert.deepEqual(
      await again.read(2 * OBJ, 8192),
      new Uint8Array(8192).fill(3, 0, 4096).fill(4, 4096),
    );
  });
});

Deno.test("VdiService: a sheep that cannot propose is refused before anything is written", async () => {
  await withSheep(async ({ sheep, client }) => {
    await base(sheep, client);
    const before = await sheep.store.list();
    let writes = 0;
    const gateway: VdiGateway = {
      ...crashing(sheep, Number.MAX_SAFE_INTEGER).gateway,
      writeAt: () => Promise.resolve(void writes++),
      createAt: () => Promise.resolve(void writes++),
      remove: () => Promise.resolve(void writes++),
    };
    const refuse = () => Promise.reject(new SheepdogError(ResultCode.HALT, "cut off"));
    const service = new VdiService({ registry: sheep.registry, gateway, submit: refuse });
    const onBase = CASES.filter((c) => c.setup === base);
    for (const c of onBase) await assert.rejects(service.change(c.event(sheep)), /cut off/);
    assert.equal(writes, 0);
    assert.deepEqual(await sheep.store.list(), before);
  });
});
