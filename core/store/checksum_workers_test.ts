// Goal: checksums computed in worker threads are the checksums of the bytes that come back, and
// no failure of a worker passes for an answer: a worker that dies or goes silent loses its jobs
// (the caller reads again), a wrong answer is not taken, a dead worker is replaced, workers that
// keep dying are given up on, small reads and reads finding every worker busy are left to the
// caller, and `close` ends every worker. A store that verifies its large reads in workers finds rot as it
// does inline, also when the worker dies, and never mistakes a concurrent write for rot.
// Method: the real pool on real threads, with workers of the tests' own that misbehave where a
// failure is the point; every answer compared with checksums computed here; stores on both disks.
import assert from "node:assert/strict";
import {
  CHECKSUM_BLOCK_BYTES as B,
  CHECKSUM_OFFLOAD_BYTES_MIN,
  CHECKSUM_WORKER_DEATHS_MAX,
} from "../limits.ts";
import { blockChecksums } from "./block_checksum.ts";
import type { Hashed } from "./block_hasher.ts";
import { CHECKSUM_WORKER_SOURCE, ChecksumWorkers } from "./checksum_workers.ts";
import { isCorrupt, KINDS, patternBytes, withEnv } from "./store_test_env.ts";

/** `length` bytes of a pattern seeded by `seed`, in a buffer of their own. */
function bytesOf(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 131 + seed * 7 + (i >> 12)) & 0xff;
  return bytes;
}

/** Hands `bytes` to `pool` (which must take them); checks the answer against checksums made here. */
async function hashChecked(pool: ChecksumWorkers, bytes: Uint8Array): Promise<Hashed | undefined> {
  const copy = bytes.slice();
  const taken = pool.offload(bytes);
  assert.ok(taken, "the pool takes the job");
  const hashed = await taken;
  if (hashed !== undefined) {
    assert.deepEqual(hashed.bytes, copy, "the bytes come back as they went");
    assert.deepEqual(hashed.checksums, blockChecksums(copy));
  }
  return hashed;
}

/** The real worker, but one that exits with code 3 on a job whose first byte is 0xdd. */
const HANDLER = "({ id, bytes }) => {";
assert.ok(CHECKSUM_WORKER_SOURCE.includes(HANDLER));
const DIES_ON_0xDD = CHECKSUM_WORKER_SOURCE.replace(
  HANDLER,
  `${HANDLER} if (bytes[0] === 0xdd) process.exit(3);`,
);

/** Resolves with the first line `warn` gets that matches `pattern`. */
function warned(pattern: RegExp): { warn: (line: string) => void; line: Promise<string> } {
  let resolve!: (line: string) => void;
  const line = new Promise<string>((r) => resolve = r);
  return { warn: (text) => pattern.test(text) && resolve(text), line };
}

Deno.test("checksum workers: a large read is hashed in a worker and its bytes come back", async () => {
  const pool = new ChecksumWorkers({ workers: 2 });
  try {
    // Several at once (two workers share them), one with a short last block.
    const lengths = [CHECKSUM_OFFLOAD_BYTES_MIN, 1 << 20, 4 << 20, (1 << 20) + 100];
    const buffers = lengths.map((length, i) => bytesOf(length, i));
    const answers = await Promise.all(buffers.map((bytes) => hashChecked(pool, bytes)));
    assert.ok(answers.every((hashed) => hashed !== undefined));
    assert.equal(answers[3]!.checksums.length, 257);
    // Moved, not copied: the views handed over are empty now.
    assert.ok(buffers.every((bytes) => bytes.length === 0));
    assert.equal(pool.stats.answered, 4);
    assert.equal(pool.stats.fallbacks, 0);
    assert.ok(pool.stats.running >= 1 && pool.stats.running <= 2);
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: small reads and parts of buffers stay on the calling thread", async () => {
  const pool = new ChecksumWorkers({ workers: 1 });
  try {
    const small = bytesOf(CHECKSUM_OFFLOAD_BYTES_MIN - B, 1);
    const whole = bytesOf(2 << 20, 2);
    const part = whole.subarray(B, (1 << 20) + B); // moving it would take the rest along
    const shared = new Uint8Array(new SharedArrayBuffer(1 << 20)).fill(9);
    for (const bytes of [small, part, shared]) {
      const length = bytes.length;
      assert.equal(pool.offload(bytes), undefined, "not taken: hashed by the caller");
      assert.equal(bytes.length, length, "not moved");
    }
    assert.deepEqual(pool.stats, { running: 0, answered: 0, fallbacks: 0, deaths: 0 });
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: a worker that dies loses its jobs' bytes, and is replaced", async () => {
  const { warn, line } = warned(/exited with code 3/);
  const pool = new ChecksumWorkers({ workers: 1, warn, source: DIES_ON_0xDD });
  try {
    assert.ok(await hashChecked(pool, bytesOf(1 << 20, 1)));
    // Jobs queued behind the fatal one are pending in the dying worker too.
    const poison = bytesOf(1 << 20, 2);
    poison[0] = 0xdd;
    const lost = await Promise.all([pool.offload(poison), pool.offload(bytesOf(1 << 20, 3))]);
    assert.deepEqual(lost, [undefined, undefined], "lost: the caller reads them again");
    assert.match(await line, /read again and verified on the main thread; the next large read/);
    assert.equal(pool.stats.deaths, 1);
    assert.equal(pool.stats.fallbacks, 2);
    // The next large read starts a replacement, which answers.
    assert.equal(pool.stats.running, 0);
    assert.ok(await hashChecked(pool, bytesOf(1 << 20, 4)));
    assert.equal(pool.stats.answered, 2);
    assert.equal(pool.stats.running, 1);
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: a wrong answer is not taken", async () => {
  // Checksums of the wrong length, then bytes of the wrong length.
  const source = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", ({ id, bytes }) => {
  if (bytes[0] === 1) parentPort.postMessage({ id, checksums: new Uint32Array(1), bytes });
  else parentPort.postMessage({ id, checksums: new Uint32Array(256), bytes: bytes.subarray(1) });
});`;
  const pool = new ChecksumWorkers({ workers: 1, source });
  try {
    const first = bytesOf(1 << 20, 5);
    first[0] = 1;
    assert.ok(await hashChecked(pool, first), "hashed here from the bytes that came back");
    assert.equal(await hashChecked(pool, bytesOf(1 << 20, 6)), undefined);
    assert.equal(pool.stats.answered, 0);
    assert.equal(pool.stats.fallbacks, 2);
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: a silent worker is stopped and its jobs answer lost", async () => {
  const { warn, line } = warned(/answered nothing/);
  const source = `require("node:worker_threads").parentPort.on("message", () => {});`;
  const pool = new ChecksumWorkers({ workers: 1, source, warn, stallMs: 100 });
  try {
    const taken = pool.offload(bytesOf(1 << 20, 6));
    assert.ok(taken);
    assert.equal(await taken, undefined);
    await line;
    assert.equal(pool.stats.deaths, 1);
    assert.equal(pool.stats.fallbacks, 1);
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: workers that keep dying are given up on", async () => {
  const lines: string[] = [];
  const warn = (line: string) => lines.push(line);
  const pool = new ChecksumWorkers({ workers: 1, source: "process.exit(1);", warn });
  try {
    // Each read starts a worker that dies before answering, until they are given up on.
    while (!lines.some((line) => /keep dying/.test(line))) {
      assert.ok(lines.length <= CHECKSUM_WORKER_DEATHS_MAX + 1, "given up on in time");
      const taken = pool.offload(bytesOf(1 << 20, 7));
      assert.ok(taken, "taken while workers are tried");
      assert.equal(await taken, undefined);
    }
    assert.equal(pool.stats.deaths, CHECKSUM_WORKER_DEATHS_MAX + 1);
    assert.equal(pool.stats.running, 0);
    assert.equal(pool.offload(bytesOf(1 << 20, 7)), undefined, "not taken any more");
    assert.equal(pool.stats.running, 0, "no worker started again");
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: a read finding every worker busy is hashed on the calling thread", async () => {
  const source = `require("node:worker_threads").parentPort.on("message", () => {});`;
  const pool = new ChecksumWorkers({ workers: 1, source, jobsMax: 2 });
  try {
    const held = [1, 2].map((seed) => pool.offload(bytesOf(1 << 20, seed)));
    assert.ok(held.every((job) => job !== undefined));
    const third = bytesOf(1 << 20, 3);
    assert.equal(pool.offload(third), undefined, "not taken: hashed by the caller");
    assert.equal(third.length, 1 << 20, "not moved");
    await pool.close();
    assert.deepEqual(await Promise.all(held), [undefined, undefined]);
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: close ends every worker, its pending jobs answer lost", async () => {
  const source = `require("node:worker_threads").parentPort.on("message", () => {});`;
  const pool = new ChecksumWorkers({ workers: 2, source });
  const pending = [1, 2, 3].map((seed) => pool.offload(bytesOf(1 << 20, seed)));
  assert.equal(pool.stats.running, 2);
  await pool.close();
  assert.equal(pool.stats.running, 0);
  assert.deepEqual(await Promise.all(pending), [undefined, undefined, undefined]);
  assert.equal(pool.stats.deaths, 0, "a close is no death");
  // Closed: nothing is taken, no worker starts again.
  assert.equal(pool.offload(bytesOf(1 << 20, 4)), undefined);
  assert.equal(pool.stats.running, 0);
});

// ---- The store with its large reads verified in workers ----

const OID = 0x007c2b2500000001n;
const HEX = "007c2b2500000001";
const MiB = 1 << 20;

for (const kind of KINDS) {
  Deno.test(`FsObjectStore (${kind}) finds a rotten block of a large read in a worker`, async () => {
    const pools: ChecksumWorkers[] = [];
    const hasher = () => {
      pools.push(new ChecksumWorkers({ workers: 1 }));
      return pools.at(-1)!;
    };
    await withEnv(kind, async (env) => {
      const data = patternBytes(4 * MiB, 1);
      await env.store.create(OID, data, 0, { size: 4 * MiB, version: 1 });
      assert.deepEqual(await env.store.read(OID, MiB, MiB), data.subarray(MiB, 2 * MiB));
      assert.equal(pools[0]!.stats.answered, 1);
      await env.flip(HEX, 300 * B + 7);
      await assert.rejects(env.store.read(OID, MiB, MiB), isCorrupt(OID, /block 300 fails/, [300]));
      // Unaligned, starting and ending inside blocks.
      await assert.rejects(
        env.store.read(OID, 300 * B - 100, 200 * 1024),
        isCorrupt(OID, /block 300 fails/, [300]),
      );
      assert.deepEqual(await env.store.read(OID, 0, MiB), data.subarray(0, MiB));
      assert.equal(env.store.health().checksumErrors, 2);
      assert.deepEqual((await env.store.verify(OID)).map((block) => block.index), [300]);
      assert.deepEqual((await env.store.salvage(OID)).badBlocks, [300]);
      assert.equal(pools[0]!.stats.fallbacks, 0);
      assert.ok(pools[0]!.stats.answered >= 3 + 4 + 4, "reads, scan and salvage in the worker");
    }, { hasher });
    assert.equal(pools[0]!.stats.running, 0, "closing the store ends its workers");
  });

  Deno.test(`FsObjectStore (${kind}) a large read whose worker dies is still verified`, async () => {
    let pool: ChecksumWorkers | undefined;
    const hasher = () => pool = new ChecksumWorkers({ workers: 1, source: DIES_ON_0xDD });
    await withEnv(kind, async (env) => {
      const data = patternBytes(2 * MiB, 2);
      data[0] = 0xdd; // the worker exits on the read that starts here
      await env.store.create(OID, data, 0, { size: 2 * MiB, version: 1 });
      assert.deepEqual(await env.store.read(OID, 0, MiB), data.subarray(0, MiB));
      await env.flip(HEX, 5 * B);
      await assert.rejects(env.store.read(OID, 0, MiB), isCorrupt(OID, /block 5 fails/, [5]));
      assert.equal(pool!.stats.deaths, 2);
      assert.equal(pool!.stats.answered, 0);
      assert.equal(pool!.stats.fallbacks, 2);
      // The next read of other blocks starts a new worker, which answers.
      assert.deepEqual(await env.store.read(OID, MiB, MiB), data.subarray(MiB));
      assert.equal(pool!.stats.answered, 1);
    }, { hasher });
  });

  Deno.test(`FsObjectStore (${kind}) a write waits for a large read's checksums`, async () => {
    // The blocks stay locked while a worker hashes them: a write in between would change the
    // checksums the bytes read must match, and the read would report rot that is not there.
    await withEnv(kind, async (env) => {
      const old = patternBytes(MiB, 3);
      const fresh = patternBytes(MiB, 4);
      await env.store.create(OID, old, 0, { size: MiB, version: 1 });
      const [read] = await Promise.all([
        env.store.read(OID, 0, MiB),
        env.store.write(OID, fresh, 0, 2),
      ]);
      assert.deepEqual(read, old);
      assert.deepEqual(await env.store.read(OID, 0, MiB), fresh);
      assert.equal(env.store.health().checksumErrors, 0);
    }, { hasher: () => new ChecksumWorkers({ workers: 1 }) });
  });
}
