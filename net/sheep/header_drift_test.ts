/**
 * Goal: an inode header the VDI table lacks, or holds an older version of, is announced once no
 * VDI change is in progress, and only then, with the others found with it in one event; a change
 * in progress (its headers written before its event) is never announced; a copy unreadable since
 * the start is repaired at each view until it reads.
 */

import assert from "node:assert/strict";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { INODE_HEADER_SIZE, type InodeHeader } from "../../core/vdi/inode.ts";
import { dataOid, type Oid, oidToVid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import { silentLogger } from "./logger.ts";
import { HeaderDrift, type HeaderDriftContext } from "./header_drift.ts";
import { encodeEvent } from "../../core/cluster/cluster_events.ts";
import { encodeFoundHeaders } from "../../core/cluster/cluster_state_machine.ts";
import { FOUND_HEADERS_PER_EVENT } from "../../core/limits.ts";
import { proposalBytesMax } from "../group/limits.ts";

function headerOf(vid: Vid, name = "vm", fields: Partial<InodeHeader> = {}): InodeHeader {
  return {
    name,
    tag: "",
    createTime: 0n,
    snapCtime: 0n,
    vmClockNsec: 0n,
    vdiSize: 1 << 30,
    vmStateSize: 0n,
    copyPolicy: 0,
    storePolicy: 0,
    nrCopies: 2,
    blockSizeShift: 22,
    snapId: 1,
    vdiId: vid,
    parentVdiId: 0,
    ...fields,
  };
}

/** A node's view of things: its table, the inodes, the admin lock, and what it did. */
class FakeNode {
  readonly table = new Map<Vid, InodeHeader>();
  /** Readable inodes by oid; a missing one fails its read. */
  readonly inodes = new Map<Oid, InodeHeader>();
  /** Each announcement's VDI names. */
  readonly announced: string[][] = [];
  readonly repaired: Oid[] = [];
  locks = 0;
  /** While set, a VDI change is in progress: released by `finishChange`. */
  #change: PromiseWithResolvers<boolean> | undefined;
  failAnnounce = false;
  /** What a repair makes readable. */
  readonly repairs = new Map<Oid, InodeHeader>();
  /** Warnings logged. */
  readonly warnings: string[] = [];
  /** Inodes created before this time are older than the format. */
  formatTime = 0n;

  startChange(): void {
    this.#change = Promise.withResolvers<boolean>();
  }

  finishChange(): void {
    this.#change?.resolve(true);
    this.#change = undefined;
  }

  context(): HeaderDriftContext {
    return {
      tableHeader: (vid) => this.table.get(vid),
      predatesFormat: (header) => header.createTime < this.formatTime,
      readHeader: (oid) => {
        const header = this.inodes.get(oid);
        return header
          ? Promise.resolve(header)
          : Promise.reject(new SheepdogError(ResultCode.EIO, "checksum mismatch"));
      },
      announce: (headers) => {
        if (this.failAnnounce) {
          return Promise.reject(new SheepdogError(ResultCode.HALT, "no majority"));
        }
        this.announced.push(headers.map((h) => h.tag || h.name));
        for (const header of headers) this.table.set(header.vdiId, header);
        return Promise.resolve();
      },
      noChangeInProgress: () => this.#change?.promise ?? Promise.resolve(true),
      exclusive: async (work) => {
        this.locks++;
        return await work();
      },
      repair: (oid) => {
        this.repaired.push(oid);
        const header = this.repairs.get(oid);
        if (header) this.inodes.set(oid, header);
        return Promise.resolve();
      },
      logger: { ...silentLogger, warn: (line: string) => this.warnings.push(line) },
    };
  }
}

function started(node: FakeNode): HeaderDrift {
  const drift = new HeaderDrift(node.context());
  drift.retry(); // the first view
  return drift;
}

Deno.test("HeaderDrift: a header the table lacks is announced, under the lock", async () => {
  const node = new FakeNode();
  const drift = started(node);
  node.table.set(5, headerOf(5, "known"));
  node.inodes.set(vdiOid(5), headerOf(5, "known"));
  node.inodes.set(vdiOid(9), headerOf(9, "lost"));
  drift.changed(vdiOid(5), { ok: true, written: { offset: INODE_HEADER_SIZE + 8, length: 4 } }); // a table entry
  drift.changed(dataOid(9, 3)); // a data object
  await drift.settled();
  drift.changed(vdiOid(5)); // as the table has it
  await drift.settled();
  assert.equal(node.locks, 0);
  drift.changed(vdiOid(9), { ok: false }); // a pull that failed
  await drift.settled();
  assert.equal(node.locks, 0);
  drift.changed(vdiOid(9));
  await drift.settled();
  assert.deepEqual(node.announced, [["lost"]]);
  assert.equal(node.locks, 1);
  drift.changed(vdiOid(9)); // known now
  await drift.settled();
  assert.deepEqual(node.announced, [["lost"]]);
});

Deno.test("HeaderDrift: a change left on disk by an undo that failed is announced whole", async () => {
  const node = new FakeNode();
  const drift = started(node);
  // The table: 'vm' is the working VDI 7. On disk: a snapshot froze 7 and made 8 the working VDI.
  node.table.set(7, headerOf(7));
  node.startChange();
  node.inodes.set(vdiOid(8), headerOf(8, "vm", { snapId: 2, parentVdiId: 7 }));
  drift.changed(vdiOid(8));
  node.inodes.set(vdiOid(7), headerOf(7, "vm", { snapCtime: 5n, tag: "s1" }));
  drift.changed(vdiOid(7), { ok: true, written: { offset: 0, length: INODE_HEADER_SIZE } });
  node.finishChange(); // its event was refused, and the undo failed
  await drift.settled();
  assert.deepEqual(node.announced, [["vm", "s1"]], "one event with both");
});

Deno.test("HeaderDrift: a change in progress is never announced", async () => {
  const node = new FakeNode();
  const drift = started(node);
  node.startChange();
  // A snapshot writes its inodes before its event: on disk, the table does not know them yet.
  node.table.set(7, headerOf(7));
  node.inodes.set(vdiOid(8), headerOf(8, "vm", { snapId: 2 }));
  node.inodes.set(vdiOid(7), headerOf(7, "vm", { snapCtime: 5n, tag: "s1" }));
  drift.changed(vdiOid(8));
  drift.changed(vdiOid(7), { ok: true, written: { offset: 0, length: INODE_HEADER_SIZE } });
  node.table.set(8, node.inodes.get(vdiOid(8))!); // its event is applied
  node.table.set(7, node.inodes.get(vdiOid(7))!);
  node.finishChange();
  await drift.settled();
  assert.deepEqual(node.announced, []);
  assert.equal(node.locks, 0);
  // An older header on disk than in the table (a copy recovery has yet to update) says nothing.
  node.inodes.set(vdiOid(7), headerOf(7));
  drift.changed(vdiOid(7));
  await drift.settled();
  assert.deepEqual(node.announced, []);
});

Deno.test("HeaderDrift: an inode not written yet, or unreadable, waits for its next change", async () => {
  const node = new FakeNode();
  const drift = started(node);
  node.inodes.set(vdiOid(4), headerOf(0, "")); // created, header not written: vid 0
  drift.changed(vdiOid(4));
  drift.changed(vdiOid(6)); // unreadable
  await drift.settled();
  assert.deepEqual(node.announced, []);
  node.inodes.set(vdiOid(6), headerOf(6, "back"));
  drift.changed(vdiOid(6));
  await drift.settled();
  assert.deepEqual(node.announced, [["back"]]);
});

Deno.test("HeaderDrift: what a peer lacks is announced though this table has it, once", async () => {
  const node = new FakeNode();
  const drift = new HeaderDrift(node.context());
  // This node loaded 'solo' from its own copy and merged a peer's state that lacks it, and
  // 'grown' that the peer holds at an older size. 'gone' is newer in this table than on any
  // copy now (recovery replaced the copy it was loaded from): not announced.
  for (const header of [headerOf(2, "solo"), headerOf(3, "grown", { vdiSize: 2 << 30 })]) {
    node.table.set(header.vdiId, header);
    node.inodes.set(vdiOid(header.vdiId), header);
  }
  node.table.set(4, headerOf(4, "gone", { snapCtime: 5n, tag: "s" }));
  node.inodes.set(vdiOid(4), headerOf(4, "gone"));
  drift.peersBehind([node.table.get(2)!, node.table.get(3)!, node.table.get(4)!]);
  await drift.settled();
  assert.deepEqual(node.announced, [], "not before the first view");
  drift.retry();
  await drift.settled();
  assert.deepEqual(node.announced, [["solo", "grown"]], "one event");
  assert.equal(node.warnings.length, 1);
  assert.match(node.warnings[0]!, /VDI 'gone' \(vid 4\): this node's table holds a newer header/);
  assert.equal(node.locks, 1);
  drift.changed(vdiOid(2)); // announced once: an ordinary change after says nothing
  await drift.settled();
  assert.deepEqual(node.announced, [["solo", "grown"]]);
});

Deno.test("HeaderDrift: an announcement that failed is tried again at the next view", async () => {
  const node = new FakeNode();
  const drift = started(node);
  node.inodes.set(vdiOid(3), headerOf(3, "again"));
  node.failAnnounce = true;
  drift.changed(vdiOid(3));
  await drift.settled();
  assert.deepEqual(node.announced, []);
  node.failAnnounce = false;
  drift.retry();
  await drift.settled();
  assert.deepEqual(node.announced, [["again"]]);
});

Deno.test("HeaderDrift: a copy unreadable since the start is repaired at each view until it reads", async () => {
  const node = new FakeNode();
  const drift = new HeaderDrift(node.context());
  const lost = vdiOid(11);
  const learned = vdiOid(12);
  drift.unloadable(lost);
  drift.unloadable(learned);
  drift.changed(lost); // before the first view: nothing happens yet
  await drift.settled();
  assert.deepEqual(node.repaired, []);
  // A peer's state (or the table this node kept) names it: its copies are rotten all the same.
  node.table.set(oidToVid(learned), headerOf(12));
  drift.retry();
  await drift.settled();
  assert.deepEqual(node.repaired, [lost, learned], "no good copy to repair them from yet");
  node.repairs.set(lost, headerOf(11, "rebuilt"));
  node.repairs.set(learned, headerOf(12));
  drift.retry();
  await drift.settled();
  assert.deepEqual(node.repaired, [lost, learned, lost, learned]);
  assert.deepEqual(node.announced, [["rebuilt"]], "the one the table lacked");
  drift.retry();
  await drift.settled();
  assert.deepEqual(node.repaired, [lost, learned, lost, learned], "both read now: done");
});

Deno.test("HeaderDrift: a found event of FOUND_HEADERS_PER_EVENT headers fits a group proposal", () => {
  // The longest names and tags (a header's bytes do not vary in length; the event the group
  // carries is what is measured).
  const headers = Array.from(
    { length: FOUND_HEADERS_PER_EVENT },
    (_, i) => headerOf(i + 1, "n".repeat(255), { tag: "t".repeat(255) }),
  );
  const event = encodeEvent({ type: "found", headers: encodeFoundHeaders(headers) });
  assert.ok(event.length <= proposalBytesMax, `${event.length} bytes`);
});

Deno.test("HeaderDrift: an inode older than the format is never announced, and said once", async () => {
  // A copy in flight when `mkfs --force` erased the store landed after the erase.
  const node = new FakeNode();
  node.formatTime = 100n;
  const drift = started(node);
  node.inodes.set(vdiOid(9), headerOf(9, "erased", { createTime: 50n }));
  node.inodes.set(vdiOid(7), headerOf(7, "new", { createTime: 150n }));
  drift.changed(vdiOid(9));
  drift.changed(vdiOid(7));
  await drift.settled();
  assert.deepEqual(node.announced, [["new"]]);
  drift.changed(vdiOid(9));
  drift.retry();
  await drift.settled();
  assert.deepEqual(node.announced, [["new"]]);
  assert.deepEqual(node.warnings.filter((line) => line.includes("format")), [
    "inode 8000000900000000 (VDI 'erased') is older than the cluster's format: a copy of a VDI " +
    "the format erased, not taken in",
  ]);
});
