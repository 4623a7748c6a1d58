import assert from "node:assert/strict";
import {
  DISK_FULL_RECENT_MS,
  formatClusterInfo,
  formatNodeTable,
  formatRecovery,
  formatScrub,
  formatScrubFindings,
  formatScrubProgress,
  formatSize,
  formatVdiLine,
  formatVdiTree,
  formatVmTable,
  parseSize,
} from "./format.ts";
import type { RecoveryRow, ScrubRow, VdiRow } from "./admin_service.ts";
import { recoveryStatus } from "../sheep/recovery.ts";

function row(fields: Partial<VdiRow>): VdiRow {
  return {
    name: "Alice's Disk",
    vid: 0x40000,
    sizeBytes: 256 * 2 ** 30,
    allocatedBytes: 0,
    sharedBytes: 0,
    createdMs: new Date(2009, 9, 15, 16, 17, 18).getTime(),
    snapshotMs: 0,
    snapId: 1,
    tag: "",
    snapshot: false,
    parentVid: 0,
    copies: 3,
    blockSizeShift: 22,
    ...fields,
  };
}

Deno.test("parseSize() takes binary suffixes and refuses junk", () => {
  assert.equal(parseSize("256G"), 256 * 2 ** 30);
  assert.equal(parseSize("10m"), 10 * 2 ** 20);
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("1.5K"), 1536);
  assert.equal(parseSize("2TiB"), 2 * 2 ** 40);
  assert.throws(() => parseSize("lots"), RangeError);
  assert.throws(() => parseSize("-1G"), RangeError);
  assert.equal(formatSize(256 * 2 ** 30), "256 GB");
});

Deno.test("formatVdiLine() prints the seed's format", () => {
  assert.equal(
    formatVdiLine(row({})),
    "40000 : Alice's Disk  256 GB (allocated: 0 MB, shared: 0 MB), 2009-10-15 16:17:18, tag:        0, current",
  );
});

Deno.test("formatVdiTree() draws snapshots, branches and you-are-here", () => {
  const t1 = new Date(2009, 9, 16, 10, 2, 31).getTime();
  const t2 = new Date(2009, 9, 16, 10, 5, 0).getTime();
  const rows = [
    row({ vid: 1, snapshot: true, snapshotMs: t1 }),
    row({ vid: 2, snapshot: true, snapshotMs: t2, parentVid: 1, snapId: 2 }),
    row({ vid: 3, parentVid: 2, snapId: 3 }),
    row({ vid: 9, name: "Charlie's Disk", parentVid: 1 }),
  ];
  assert.equal(
    formatVdiTree(rows),
    "Alice's Disk---[09-10-16 10:02:31]-+-[09-10-16 10:05:00]---(You Are Here)\n" +
      "                                   `-Charlie's Disk---(You Are Here)",
  );
});

Deno.test("formatVmTable() shows attachment", () => {
  const text = formatVmTable([
    row({ attachedTo: "127.0.0.1:40122" }),
    row({ vid: 2, snapshot: true }),
  ]);
  assert.equal(
    text,
    "Name         | Vdi size | Allocated | Shared | Status\n" +
      "Alice's Disk | 256 GB   | 0 MB      | 0 MB   | running on 127.0.0.1",
  );
});

function scrubRow(fields: Partial<ScrubRow> & Pick<ScrubRow, "node" | "state">): ScrubRow {
  return {
    pass: 3,
    trigger: "background",
    startedMs: new Date(2024, 4, 1, 3, 0, 0).getTime(),
    finishedMs: 0,
    objectsChecked: 0,
    objectsTotal: 0,
    bytesVerified: 0,
    badBlocks: 0,
    repaired: 0,
    repairFailed: 0,
    findings: [],
    findingsTotal: 0,
    unlisted: [],
    intervalMs: 86_400_000,
    bytesPerSecond: 64 * 2 ** 20,
    totals: { passes: 3, bytesVerified: 0, badBlocks: 0, repaired: 0, repairFailed: 0 },
    ...fields,
  };
}

const ROT = {
  oid: "0000000500000001",
  node: "127.0.0.1:7000",
  problem: "1 bad block (block 7: checksum mismatch)",
  repaired: true,
  timeMs: 0,
};

Deno.test("formatScrub() shows each node's pass, counts and newest finding", () => {
  const rows = [
    scrubRow({
      node: "127.0.0.1:7000",
      state: "running",
      phase: "verifying",
      objectsChecked: 12,
      objectsTotal: 40,
      bytesVerified: 12 * 2 ** 20,
      badBlocks: 1,
      repaired: 1,
      findings: [ROT],
      findingsTotal: 1,
    }),
    scrubRow({
      node: "127.0.0.1:7001",
      state: "done",
      objectsChecked: 40,
      objectsTotal: 40,
      bytesVerified: 40 * 2 ** 20,
      finishedMs: new Date(2024, 4, 1, 3, 10, 0).getTime(),
      nextMs: new Date(2024, 4, 2, 3, 0, 0).getTime(),
    }),
    { node: "127.0.0.1:7002", state: "unreachable", error: "Peer is unreachable" } as ScrubRow,
  ];
  assert.equal(
    formatScrub(rows),
    "Scrub running on: 127.0.0.1:7000\n\n" +
      "Node            State                Progress        Verified  Bad blocks  Repaired  Failed  Last finding\n" +
      "127.0.0.1:7000  running (verifying)  12/40 (30.0%)   12 MB     1           1         0       " +
      "0000000500000001 on 127.0.0.1:7000: 1 bad block (block 7: checksum mismatch) (repaired)\n" +
      "127.0.0.1:7001  done                 40/40 (100.0%)  40 MB     0           0         0       -\n" +
      "127.0.0.1:7002  unreachable          -               -         -           -         -       Peer is unreachable\n\n" +
      "127.0.0.1:7001: pass 3 background, finished 2024-05-01 03:10:00, next 2024-05-02 03:00:00",
  );
  assert.equal(
    formatScrubProgress(rows),
    "Scrubbing: 52/80 objects (65.0%), 52 MB verified, 1 bad block, 1 repaired, 0 not repaired",
  );
});

Deno.test("formatScrub() headlines a finished scrub and one never run", () => {
  const done = scrubRow({
    node: "a:1",
    state: "done",
    vid: 0x7c2b25,
    objectsChecked: 2,
    objectsTotal: 2,
    badBlocks: 3,
    repaired: 1,
    repairFailed: 1,
    error: "view changed",
    findings: [ROT, { ...ROT, node: "b:1", problem: "copy missing", repaired: false }],
    findingsTotal: 2,
  });
  const text = formatScrub([done]);
  assert.match(text, /^Scrub: done: 3 bad blocks, 1 copy repaired, 1 not repaired\n/);
  assert.ok(text.includes("a:1   done vdi 7c2b25  2/2 (100.0%)"), text);
  assert.match(text, /0000000500000001 on b:1: copy missing \(NOT repaired\)$/m);
  assert.equal(
    formatScrub([scrubRow({ node: "a:1", state: "idle", pass: 0 })]).split("\n")[0],
    "Scrub: never run",
  );
  assert.match(formatScrub([scrubRow({ node: "a:1", state: "idle", pass: 0 })]), /0\/0 \(-\)/);
});

Deno.test("formatScrubFindings() lists every node's findings, or says there are none", () => {
  assert.equal(
    formatScrubFindings([scrubRow({ node: "a:1", state: "done" })]),
    "No problems found",
  );
  const rows = [
    scrubRow({
      node: "a:1",
      state: "done",
      findings: [{ ...ROT, node: "a:1" }],
      findingsTotal: 51,
    }),
    scrubRow({
      node: "b:1",
      state: "done",
      findings: [{ ...ROT, node: "c:1", problem: "copy at version 1, newest 2", repaired: false }],
      findingsTotal: 1,
    }),
  ];
  assert.equal(
    formatScrubFindings(rows),
    "Findings (2):\n" +
      "OID               Node  Repaired  Problem\n" +
      "0000000500000001  a:1   yes       1 bad block (block 7: checksum mismatch)\n" +
      "0000000500000001  c:1   NO        copy at version 1, newest 2\n" +
      "a:1: 51 findings, the newest 1 shown",
  );
});

Deno.test("info -t node and -t cluster say when a node's disk is full or failing", () => {
  const now = Date.UTC(2026, 10, 29, 12);
  const base = { host: "127.0.0.1", zone: 1, vnodes: 128, usedBytes: 0, freeBytes: 0 };
  const health = { noSpaceErrors: 0, checksumErrors: 0, syncErrors: 0 };
  const nodes = [
    { ...base, id: "127.0.0.1:7000", port: 7000, health },
    {
      ...base,
      id: "127.0.0.1:7001",
      port: 7001,
      health: { ...health, noSpaceErrors: 3, noSpaceAtMs: now - 1000 },
    },
    {
      ...base,
      id: "127.0.0.1:7002",
      port: 7002,
      health: { ...health, syncErrors: 1, syncError: "Cannot sync x: EIO" },
    },
    {
      ...base,
      id: "127.0.0.1:7003",
      port: 7003,
      health: { ...health, noSpaceErrors: 1, noSpaceAtMs: now - DISK_FULL_RECENT_MS - 1 },
    },
    {
      ...base,
      id: "127.0.0.1:7004",
      port: 7004,
      health: { ...health, noSpaceErrors: 2, noSpaceAtMs: now - 2000, roomAtMs: now - 1000 },
    },
  ];
  const table = formatNodeTable(nodes, now);
  const lines = table.split("\n");
  assert.match(lines[1]!, /7000 .* ok$/);
  assert.match(lines[2]!, /7001 .* DISK FULL$/);
  assert.match(lines[3]!, /7002 .* DISK FAILING$/);
  assert.match(lines[4]!, /7003 .* ok$/, "an old full disk is history");
  assert.match(lines[5]!, /7004 .* ok$/, "a write succeeded since: it has room again");
  assert.match(table, /127\.0\.0\.1:7001: disk full: 3 writes failed, the last at /);
  assert.match(
    table,
    /127\.0\.0\.1:7002: disk failing: a sync failed, writes refused until the sheep restarts/,
  );
  const cluster = formatClusterInfo(
    {
      status: "running",
      ctimeMs: 0,
      copies: 3,
      blockSizeShift: 22,
      strict: false,
      epoch: 1,
      zones: 4,
      redundancyReduced: false,
      master: null,
      nodes: nodes.map((n) => n.id),
      epochs: [],
    },
    nodes,
    now,
  );
  assert.match(cluster, /127\.0\.0\.1:7001: disk full: .*objects placed there may lack a copy/);
  assert.doesNotMatch(cluster, /7003: disk/);
});

Deno.test("formatRecovery() names the objects a crash left suspect and the nodes they wait for", () => {
  const base = recoveryStatus({ epoch: 6, purgedEpoch: 5 });
  const rows: RecoveryRow[] = [
    {
      ...base,
      node: "127.0.0.1:7000",
      state: "recovering",
      waiting: 2,
      waitingFor: ["127.0.0.1:7002"],
    },
    { ...base, node: "127.0.0.1:7001", state: "done" },
  ];
  const text = formatRecovery(rows);
  assert.match(text, /^Nodes In Recovery: 127\.0\.0\.1:7000\n/);
  assert.match(
    text,
    /\n127\.0\.0\.1:7000: 2 objects a crash left suspect wait for 127\.0\.0\.1:7002 to rejoin/,
  );
  assert.doesNotMatch(formatRecovery([rows[1]!]), /suspect/);
});
