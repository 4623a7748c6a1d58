import assert from "node:assert/strict";
import { dataOid, oidToHex, vdiOid, VMSTATE_BIT } from "../../core/vdi/oid.ts";
import { FakeWorld, OBJECT_BYTES, until } from "../../tests/scrub_fakes.ts";
import { mismatches, Scrubber, scrubFilter } from "./scrub.ts";

const MiB = 2 ** 20;

/** Runs one manual pass to its end and returns the status. */
async function pass(scrubber: Scrubber, options: { vid?: number } = {}) {
  const { started } = scrubber.start(options);
  assert.ok(started, "a new pass starts");
  await scrubber.settled();
  return scrubber.status();
}

Deno.test("Scrubber repairs a rotted local copy from a good replica and reports it", async () => {
  // Three nodes, three copies: node 0 holds every object; one of its copies has a bad block.
  const world = new FakeWorld({ nodes: 3, copies: 3 });
  const self = world.nodes[0]!.id;
  const oids = [dataOid(5, 0), dataOid(5, 1), dataOid(5, 2), vdiOid(5)];
  for (const oid of oids) world.put(oid);
  world.rot(self, oids[1]!, 7);
  const scrubber = new Scrubber(world.context(self), { bytesPerSecond: 1024 * MiB });
  const status = await pass(scrubber);

  assert.equal(status.state, "done");
  assert.equal(status.badBlocks, 1);
  assert.equal(status.repaired, 1);
  assert.equal(status.repairFailed, 0);
  assert.equal(status.bytesVerified, 4 * OBJECT_BYTES);
  assert.equal(status.objectsChecked, status.objectsTotal);
  // The local copy is a suspect for the gateway even though its digest looks right.
  assert.deepEqual(world.repairs, [{ oid: oids[1]!, suspects: [self] }]);
  assert.deepEqual(world.copy(self, oids[1]!)!.bad, []);
  assert.equal(status.findings.length, 1);
  const finding = status.findings[0]!;
  assert.equal(finding.oid, oidToHex(oids[1]!));
  assert.equal(finding.node, self);
  assert.equal(finding.repaired, true);
  assert.match(finding.problem, /^1 bad block \(block 7: checksum mismatch\)$/);
  assert.deepEqual(status.totals, {
    passes: 1,
    bytesVerified: 4 * OBJECT_BYTES,
    badBlocks: 1,
    repaired: 1,
    repairFailed: 0,
  });
});

Deno.test("Scrubber reports a rotted copy it cannot repair (no good replica)", async () => {
  // One copy only: nothing to repair it from. It must be reported, not counted as repaired.
  const world = new FakeWorld({ nodes: 1, copies: 1 });
  const self = world.nodes[0]!.id;
  world.put(dataOid(9, 0));
  world.rot(self, dataOid(9, 0), 0);
  world.rot(self, dataOid(9, 0), 1);
  const status = await pass(new Scrubber(world.context(self)));
  assert.equal(status.badBlocks, 2);
  assert.equal(status.repaired, 0);
  assert.equal(status.repairFailed, 1);
  assert.equal(status.findings[0]!.repaired, false);
  assert.match(status.findings[0]!.problem, /^2 bad blocks .*no good copy/);
  assert.ok(world.logs.some((l) => l.startsWith("error: scrub:") && l.includes("NOT repaired")));
});

Deno.test("Scrubber re-verifies before repairing: a block bad on one read only is no finding", async () => {
  const world = new FakeWorld({ nodes: 3, copies: 3 });
  const self = world.nodes[0]!.id;
  world.put(dataOid(3, 0));
  world.copy(self, dataOid(3, 0))!.transient = [{ index: 1, reason: "checksum mismatch" }];
  const status = await pass(new Scrubber(world.context(self)));
  assert.equal(status.findingsTotal, 0);
  assert.equal(status.badBlocks, 0);
  assert.deepEqual(world.repairs, []);
});

Deno.test("Scrubber finds a missing replica and a stale one by comparing the listings", async () => {
  const world = new FakeWorld({ nodes: 3, copies: 3 });
  const [a, b, c] = world.nodes.map((n) => n.id) as [string, string, string];
  const mine = world.oidFirstOn(a, 100n);
  const stale = world.oidFirstOn(a, mine + 1n);
  const theirs = world.oidFirstOn(a, 100n, false);
  for (let oid = 1000n; oid < 1020n; oid++) world.put(oid);
  world.put(mine, { on: [a, b] }); // missing on c
  world.put(stale, { version: 2 });
  world.put(stale, { version: 1, on: [b] }); // b missed a write
  world.put(theirs, { on: [a, b] }); // another node is its first target: not ours to compare
  const status = await pass(new Scrubber(world.context(a)));

  // One listing per node per pass, however many objects there are.
  assert.deepEqual([...world.listCalls.values()], [1, 1, 1]);
  assert.deepEqual(
    world.repairs.map((r) => r.oid).sort(),
    [mine, stale].sort(),
  );
  assert.ok(world.repairs.every((r) => r.suspects.length === 0));
  assert.ok(world.copy(c, mine));
  assert.equal(world.copy(b, stale)!.meta.version, 2);
  assert.equal(world.copy(c, theirs), undefined);
  const byOid = new Map(status.findings.map((f) => [f.oid, f]));
  assert.deepEqual(
    { ...byOid.get(oidToHex(mine))!, timeMs: 0 },
    { oid: oidToHex(mine), node: c, problem: "copy missing", repaired: true, timeMs: 0 },
  );
  assert.equal(byOid.get(oidToHex(stale))!.node, b);
  assert.equal(byOid.get(oidToHex(stale))!.problem, "copy at version 1, newest 2");
  assert.equal(status.findingsTotal, 2);
  assert.equal(status.repaired, 2);
});

Deno.test("Scrubber removes an orphan from every holder instead of restoring its missing copy", async () => {
  const world = new FakeWorld({ nodes: 3, copies: 3 });
  const [a, b, c] = world.nodes.map((n) => n.id) as [string, string, string];
  const orphan = world.oidFirstOn(a, 100n);
  const kept = world.oidFirstOn(a, orphan + 1n);
  world.put(orphan, { on: [a, b] }); // missing on c: an orphan is not restored there
  world.put(kept, { on: [a, b] });
  world.orphaned.add(orphan);
  const status = await pass(new Scrubber(world.context(a)));
  for (const node of [a, b, c]) assert.equal(world.copy(node, orphan), undefined, node);
  assert.deepEqual(world.repairs.map((r) => r.oid), [kept], "only the live object is repaired");
  assert.ok(world.copy(c, kept));
  const finding = status.findings.find((f) => f.oid === oidToHex(orphan))!;
  assert.equal(finding.node, `${a},${b}`);
  assert.match(finding.problem, /^orphan: VDI [0-9a-f]+ is deleted and no VDI reads it$/);
  assert.equal(finding.repaired, true);
});

Deno.test("Scrubber confirms a listed mismatch with fresh metas before repairing", async () => {
  // The listing catches a write in flight (c behind); by the time it compares, c has it.
  const world = new FakeWorld({ nodes: 3, copies: 3 });
  const [a, , c] = world.nodes.map((n) => n.id) as [string, string, string];
  const oid = world.oidFirstOn(a, 500n);
  world.put(oid, { version: 2 });
  world.put(oid, { version: 1, on: [c] });
  world.afterList = (node) => {
    if (node.id === c) world.put(oid, { version: 2, on: [c] });
  };
  const status = await pass(new Scrubber(world.context(a)));
  assert.deepEqual(world.repairs, []);
  assert.equal(status.findingsTotal, 0);
});

Deno.test("Scrubber skips the objects of a node it cannot list and names the node", async () => {
  const world = new FakeWorld({ nodes: 3, copies: 3 });
  const [a, , c] = world.nodes.map((n) => n.id) as [string, string, string];
  const oid = world.oidFirstOn(a, 700n);
  world.put(oid);
  world.stores.get(c)!.delete(oid);
  world.unreachable.add(c);
  const status = await pass(new Scrubber(world.context(a)));
  assert.equal(status.state, "done");
  assert.deepEqual(status.unlisted, [c]);
  assert.deepEqual(world.repairs, []);
});

Deno.test("Scrubber with a VDI checks only that VDI's inode and data objects", async () => {
  const world = new FakeWorld({ nodes: 3, copies: 3 });
  const self = world.nodes[0]!.id;
  const ours = [vdiOid(7), dataOid(7, 0), dataOid(7, 1)];
  const others = [vdiOid(8), dataOid(8, 0), VMSTATE_BIT | dataOid(7, 0)];
  for (const oid of [...ours, ...others]) {
    world.put(oid);
    world.rot(self, oid);
  }
  const status = await pass(new Scrubber(world.context(self)), { vid: 7 });
  assert.equal(status.vid, 7);
  assert.equal(status.objectsTotal - status.objectsChecked, 0);
  assert.equal(status.bytesVerified, 3 * OBJECT_BYTES);
  assert.deepEqual(world.repairs.map((r) => r.oid).sort(), [...ours].sort());
  for (const oid of others) assert.equal(world.copy(self, oid)!.bad.length, 1);
  assert.equal(scrubFilter(undefined)(vdiOid(8)), true);
  assert.equal(scrubFilter(7)(dataOid(7, 99)), true);
  assert.equal(scrubFilter(7)(dataOid(70, 0)), false);
});

Deno.test("Scrubber paces verification at its rate and yields between objects", async () => {
  // 4 objects of 1 MiB at 1 MiB/s on a clock that moves only by sleeping: ~1 s after each.
  const world = new FakeWorld({ nodes: 1, copies: 1 });
  const self = world.nodes[0]!.id;
  for (let i = 0; i < 4; i++) world.put(dataOid(1, i));
  const startMs = world.nowMs;
  await pass(new Scrubber(world.context(self), { bytesPerSecond: MiB }));
  assert.deepEqual(world.sleeps, [1000, 1000, 1000, 1000]);
  assert.equal(world.nowMs - startMs, 4000);

  // Far under the rate, it still yields to the event loop after every object.
  const fast = new FakeWorld({ nodes: 1, copies: 1 });
  for (let i = 0; i < 4; i++) fast.put(dataOid(1, i));
  await pass(new Scrubber(fast.context(fast.nodes[0]!.id), { bytesPerSecond: 1024 * MiB }));
  assert.equal(fast.sleeps.length, 4);
  assert.ok(fast.sleeps.every((ms) => ms <= 1), `sleeps ${fast.sleeps}`);
});

Deno.test("Scrubber: a second start joins the running pass", async () => {
  const world = new FakeWorld({ nodes: 1, copies: 1 });
  const self = world.nodes[0]!.id;
  world.put(dataOid(1, 0));
  let open!: () => void;
  world.verifyGate = new Promise((resolve) => (open = resolve));
  const scrubber = new Scrubber(world.context(self), { intervalMs: 0 });
  const first = scrubber.start();
  const second = scrubber.start({ vid: 42, trigger: "background" });
  assert.equal(first.started, true);
  assert.equal(second.started, false);
  assert.equal(second.status.pass, first.status.pass);
  assert.equal(second.status.state, "running");
  assert.equal(second.status.vid, undefined, "the running pass is reported, not the asked one");
  assert.equal(scrubber.running, true);
  open();
  await scrubber.settled();
  const status = scrubber.status();
  assert.equal(status.state, "done");
  assert.equal(status.pass, 1);
  assert.equal(status.totals.passes, 1);
  assert.equal(scrubber.start().status.pass, 2);
  await scrubber.stop();
});

Deno.test("Scrubber waits for recovery before it starts checking", async () => {
  const world = new FakeWorld({ nodes: 1, copies: 1 });
  world.put(dataOid(1, 0));
  world.recovering = true;
  const scrubber = new Scrubber(world.context(world.nodes[0]!.id));
  scrubber.start();
  await until("waiting", () => world.sleeps.length >= 2);
  assert.equal(scrubber.status().phase, "waiting-for-recovery");
  assert.equal(scrubber.status().objectsChecked, 0);
  world.recovering = false;
  await scrubber.settled();
  assert.equal(scrubber.status().objectsChecked, 1);
});

Deno.test("Scrubber runs background passes every interval until stopped", async () => {
  const world = new FakeWorld({ nodes: 1, copies: 1 });
  world.put(dataOid(1, 0));
  const scrubber = new Scrubber(world.context(world.nodes[0]!.id), { intervalMs: 86_400_000 });
  const bootMs = world.nowMs;
  scrubber.startBackground();
  await until("two background passes", () => scrubber.status().totals.passes >= 2);
  const status = scrubber.status();
  assert.equal(status.trigger, "background");
  assert.ok(status.startedMs >= bootMs + 2 * 86_400_000, "the first pass waits one interval");
  await scrubber.stop();
  assert.equal(scrubber.running, false);
  assert.equal(scrubber.status().nextMs, undefined);
  assert.throws(() => scrubber.start(), /stopping/);
});

Deno.test("Scrubber's background pass is postponed while the node does not serve", async () => {
  const world = new FakeWorld({ nodes: 1, copies: 1 });
  world.serving = false;
  const scrubber = new Scrubber(world.context(world.nodes[0]!.id), { intervalMs: 3_600_000 });
  scrubber.startBackground();
  await until("a few postponements", () => world.sleeps.length >= 3);
  assert.equal(scrubber.status().pass, 0);
  assert.ok(world.logs.some((l) => l.includes("postponed")));
  await scrubber.stop();
});

Deno.test("mismatches() picks the best copy as recovery does: newest, verified, first target", () => {
  const world = new FakeWorld({ nodes: 3, copies: 3 });
  const [a, b, c] = world.nodes;
  const meta = (version: number, digest: string, verified = true) => ({
    version,
    size: 1,
    digest,
    verified,
  });
  assert.deepEqual(mismatches([a!, b!, c!], [meta(1, "x"), meta(1, "x"), meta(1, "x")]), []);
  assert.deepEqual(mismatches([a!, b!], [undefined, undefined]), []);
  assert.deepEqual(
    mismatches([a!, b!, c!], [meta(2, "n", false), meta(2, "o"), meta(1, "p")]),
    [
      { node: a!.id, problem: "copy differs from the others at version 2" },
      { node: c!.id, problem: "copy at version 1, newest 2" },
    ],
  );
});
