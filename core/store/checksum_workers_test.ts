// Goal: checksums computed in worker threads are the checksums, and no failure of a worker
// leaves a job without them: a worker that dies, answers nonsense or goes silent has its jobs
// computed on the calling thread, is replaced, and workers that keep dying are given up on;
// `close` ends every worker. A store that verifies its large reads in workers finds rot as it
// does inline, also when the worker dies, and never mistakes a concurrent write for rot.
// Method: the real pool on real threads, with workers of the tests' own that misbehave where a
// failure is the point; every answer compared with the inline CRCs; stores on both disks.
import assert from "node:assert/strict";
import {
  CHECKSUM_BLOCK_BYTES as B,
  CHECKSUM_OFFLOAD_BYTES_MIN,
  CHECKSUM_WORKER_DEATHS_MAX,
} from "../limits.ts";
import { blockCrcsInline } from "./block_hasher.ts";
import { CHECKSUM_WORKER_SOURCE, ChecksumWorkers } from "./checksum_workers.ts";
import { isCorrupt, KINDS, patternBytes, withEnv } from "./store_test_env.ts";

/** Shared bytes of `length` from the pool, filled with a pattern seeded by `seed`. */
function sharedBytes(pool: ChecksumWorkers, length: number, seed: number): Uint8Array {
  const bytes = pool.allocate(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 131 + seed * 7 + (i >> 12)) & 0xff;
  return bytes;
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

Deno.test("checksum workers: a large shared read is hashed in a worker, as inline hashing does", async () => {
  const pool = new ChecksumWorkers({ workers: 2 });
  try {
    // Several at once (two workers share them), one with a short last block.
    const lengths = [CHECKSUM_OFFLOAD_BYTES_MIN, 1 << 20, 4 << 20, (1 << 20) + 100];
    const buffers = lengths.map((length, i) => sharedBytes(pool, length, i));
    const answers = await Promise.all(buffers.map((bytes) => pool.blockCrcs(bytes)));
    answers.forEach((crcs, i) => assert.deepEqual(crcs, blockCrcsInline(buffers[i]!)));
    assert.equal(answers[3]!.length, 257);
    assert.equal(pool.stats.answered, 4);
    assert.equal(pool.stats.fallbacks, 0);
    assert.ok(pool.stats.running >= 1 && pool.stats.running <= 2);
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: small reads and unshared memory stay on the calling thread", async () => {
  const pool = new ChecksumWorkers({ workers: 1 });
  try {
    const small = pool.allocate(CHECKSUM_OFFLOAD_BYTES_MIN - B);
    assert.ok(!(small.buffer instanceof SharedArrayBuffer), "no shared memory for a small read");
    const plain = new Uint8Array(1 << 20).fill(7);
    assert.deepEqual(await pool.blockCrcs(plain), blockCrcsInline(plain));
    assert.deepEqual(await pool.blockCrcs(small), blockCrcsInline(small));
    assert.deepEqual(pool.stats, { running: 0, answered: 0, fallbacks: 0, deaths: 0 });
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: a worker that dies has its jobs hashed here and is replaced", async () => {
  const { warn, line } = warned(/exited with code 3/);
  const pool = new ChecksumWorkers({ workers: 1, warn, source: DIES_ON_0xDD });
  try {
    const good = sharedBytes(pool, 1 << 20, 1);
    assert.deepEqual(await pool.blockCrcs(good), blockCrcsInline(good));
    // Jobs queued behind the fatal one are pending in the dying worker too.
    const poison = sharedBytes(pool, 1 << 20, 2);
    poison[0] = 0xdd;
    const behind = sharedBytes(pool, 1 << 20, 3);
    const [first, second] = await Promise.all([pool.blockCrcs(poison), pool.blockCrcs(behind)]);
    assert.deepEqual(first, blockCrcsInline(poison));
    assert.deepEqual(second, blockCrcsInline(behind));
    assert.match(await line, /verified on the main thread; a new worker takes its place/);
    assert.equal(pool.stats.deaths, 1);
    assert.equal(pool.stats.fallbacks, 2);
    // The next large read starts a replacement, which answers.
    assert.equal(pool.stats.running, 0);
    const after = sharedBytes(pool, 1 << 20, 4);
    assert.deepEqual(await pool.blockCrcs(after), blockCrcsInline(after));
    assert.equal(pool.stats.answered, 2);
    assert.equal(pool.stats.running, 1);
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: a wrong answer is not taken; the job is hashed here", async () => {
  const source = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", ({ id }) => parentPort.postMessage({ id, crcs: new Uint32Array(1) }));`;
  const pool = new ChecksumWorkers({ workers: 1, source });
  try {
    const bytes = sharedBytes(pool, 1 << 20, 5);
    assert.deepEqual(await pool.blockCrcs(bytes), blockCrcsInline(bytes));
    assert.equal(pool.stats.answered, 0);
    assert.equal(pool.stats.fallbacks, 1);
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: a silent worker is stopped and its jobs hashed here", async () => {
  const { warn, line } = warned(/answered nothing/);
  const source = `require("node:worker_threads").parentPort.on("message", () => {});`;
  const pool = new ChecksumWorkers({ workers: 1, source, warn, stallMs: 100 });
  try {
    const bytes = sharedBytes(pool, 1 << 20, 6);
    assert.deepEqual(await pool.blockCrcs(bytes), blockCrcsInline(bytes));
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
    const bytes = sharedBytes(pool, 1 << 20, 7);
    // Each read starts a worker that dies before answering, until they are given up on.
    while (!lines.some((line) => /keep dying/.test(line))) {
      assert.ok(lines.length <= CHECKSUM_WORKER_DEATHS_MAX + 1, "given up on in time");
      assert.deepEqual(await pool.blockCrcs(bytes), blockCrcsInline(bytes));
    }
    assert.equal(pool.stats.deaths, CHECKSUM_WORKER_DEATHS_MAX + 1);
    assert.equal(pool.stats.running, 0);
    assert.ok(!(pool.allocate(1 << 20).buffer instanceof SharedArrayBuffer));
    assert.deepEqual(await pool.blockCrcs(bytes), blockCrcsInline(bytes));
    assert.equal(pool.stats.running, 0, "no worker started again");
  } finally {
    await pool.close();
  }
});

Deno.test("checksum workers: close ends every worker, pending jobs are hashed here", async () => {
  const source = `require("node:worker_threads").parentPort.on("message", () => {});`;
  const pool = new ChecksumWorkers({ workers: 2, source });
  const buffers = [1, 2, 3].map((seed) => sharedBytes(pool, 1 << 20, seed));
  const pending = buffers.map((bytes) => pool.blockCrcs(bytes));
  assert.equal(pool.stats.running, 2);
  await pool.close();
  assert.equal(pool.stats.running, 0);
  const answers = await Promise.all(pending);
  answers.forEach((crcs, i) => assert.deepEqual(crcs, blockCrcsInline(buffers[i]!)));
  assert.equal(pool.stats.deaths, 0, "a close is no death");
  // Closed: no worker starts again.
  const later = new Uint8Array(new SharedArrayBuffer(1 << 20));
  assert.deepEqual(await pool.blockCrcs(later), blockCrcsInline(later));
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
