/**
 * Goal: an inode copy whose VDI no table holds is announced once no VDI change is in progress,
 * and only then; a VDI being created is never announced; a copy unreadable since the start is
 * repaired at each view until it reads.
 */

import assert from "node:assert/strict";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { InodeHeader } from "../../core/vdi/inode.ts";
import { dataOid, type Oid, oidToVid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import { silentLogger } from "./logger.ts";
import { UnknownInodes, type UnknownInodesContext } from "./unknown_inodes.ts";

function headerOf(vid: Vid, name = "vm"): InodeHeader {
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
  };
}

/** A node's view of things: its table, its copies, the admin lock, and what it did. */
class FakeNode {
  readonly known = new Set<Vid>();
  /** Readable copies by oid; a missing one fails its read. */
  readonly copies = new Map<Oid, InodeHeader>();
  readonly announced: string[] = [];
  readonly repaired: Oid[] = [];
  readonly exclusiveRuns: string[] = [];
  /** While set, a VDI change is in progress: released by `finishChange`. */
  #change: PromiseWithResolvers<boolean> | undefined;
  failAnnounce = false;
  /** What a repair makes readable. */
  readonly repairs = new Map<Oid, InodeHeader>();

  startChange(): void {
    this.#change = Promise.withResolvers<boolean>();
  }

  finishChange(): void {
    this.#change?.resolve(true);
    this.#change = undefined;
  }

  context(): UnknownInodesContext {
    return {
      known: (vid) => this.known.has(vid),
      readHeader: (oid) => {
        const header = this.copies.get(oid);
        return header
          ? Promise.resolve(header)
          : Promise.reject(new SheepdogError(ResultCode.EIO, "checksum mismatch"));
      },
      announce: (header) => {
        if (this.failAnnounce) {
          return Promise.reject(new SheepdogError(ResultCode.HALT, "no majority"));
        }
        this.announced.push(header.name);
        this.known.add(header.vdiId);
        return Promise.resolve();
      },
      noChangeInProgress: () => this.#change?.promise ?? Promise.resolve(true),
      exclusive: async (work) => {
        this.exclusiveRuns.push("lock");
        return await work();
      },
      repair: (oid) => {
        this.repaired.push(oid);
        const header = this.repairs.get(oid);
        if (header) this.copies.set(oid, header);
        return Promise.resolve();
      },
      logger: silentLogger,
    };
  }
}

Deno.test("UnknownInodes: a copy of a VDI no table holds is announced, under the lock", async () => {
  const node = new FakeNode();
  const watcher = new UnknownInodes(node.context());
  watcher.retry(); // the first view
  node.known.add(5);
  node.copies.set(vdiOid(5), headerOf(5, "known"));
  node.copies.set(vdiOid(9), headerOf(9, "lost"));
  watcher.changed(vdiOid(5)); // known: not even read
  watcher.changed(dataOid(9, 3)); // a data object: not an inode
  await watcher.settled();
  assert.deepEqual(node.exclusiveRuns, []);
  watcher.changed(vdiOid(9));
  await watcher.settled();
  assert.deepEqual(node.announced, ["lost"]);
  assert.deepEqual(node.exclusiveRuns, ["lock"]);
  watcher.changed(vdiOid(9)); // known now
  await watcher.settled();
  assert.deepEqual(node.announced, ["lost"]);
});

Deno.test("UnknownInodes: a VDI being created is never announced", async () => {
  const node = new FakeNode();
  const watcher = new UnknownInodes(node.context());
  watcher.retry(); // the first view
  node.startChange();
  // The create writes its inode before its event: the copy is here, the table does not know it.
  node.copies.set(vdiOid(7), headerOf(7, "new"));
  watcher.changed(vdiOid(7));
  node.known.add(7); // the create's event is applied
  node.finishChange();
  await watcher.settled();
  assert.deepEqual(node.announced, []);
  assert.deepEqual(node.exclusiveRuns, []);
});

Deno.test("UnknownInodes: a copy not written yet, or unreadable, waits for its next change", async () => {
  const node = new FakeNode();
  const watcher = new UnknownInodes(node.context());
  watcher.retry(); // the first view
  node.copies.set(vdiOid(4), headerOf(0, "")); // created, header not written: vid 0
  watcher.changed(vdiOid(4));
  watcher.changed(vdiOid(6)); // unreadable
  await watcher.settled();
  assert.deepEqual(node.announced, []);
  node.copies.set(vdiOid(6), headerOf(6, "back"));
  watcher.changed(vdiOid(6));
  await watcher.settled();
  assert.deepEqual(node.announced, ["back"]);
});

Deno.test("UnknownInodes: an announcement that failed is tried again at the next view", async () => {
  const node = new FakeNode();
  const watcher = new UnknownInodes(node.context());
  watcher.retry(); // the first view
  node.copies.set(vdiOid(3), headerOf(3, "again"));
  node.failAnnounce = true;
  watcher.changed(vdiOid(3));
  await watcher.settled();
  assert.deepEqual(node.announced, []);
  node.failAnnounce = false;
  watcher.retry();
  await watcher.settled();
  assert.deepEqual(node.announced, ["again"]);
});

Deno.test("UnknownInodes: a copy unreadable since the start is repaired at each view until it reads", async () => {
  const node = new FakeNode();
  const watcher = new UnknownInodes(node.context());
  const lost = vdiOid(11);
  const learned = vdiOid(12);
  watcher.unloadable(lost);
  watcher.unloadable(learned);
  watcher.changed(lost); // before the first view: nothing happens yet
  await watcher.settled();
  assert.deepEqual(node.repaired, []);
  node.known.add(oidToVid(learned)); // a peer's state had it: nothing to repair
  watcher.retry();
  await watcher.settled();
  assert.deepEqual(node.repaired, [lost], "no good copy to repair it from yet");
  node.repairs.set(lost, headerOf(11, "rebuilt"));
  watcher.retry();
  await watcher.settled();
  assert.deepEqual(node.repaired, [lost, lost]);
  assert.deepEqual(node.announced, ["rebuilt"]);
  watcher.retry();
  await watcher.settled();
  assert.deepEqual(node.repaired, [lost, lost], "known now: done");
});
