// Goal: every start of a sheep on a directory gets a higher incarnation than the last, whatever
// its clock says (peers ignore a lower one as a stale process's), and a damaged file costs one
// warning, never a start. Method: real temporary directories; the clock is an argument.
import assert from "node:assert/strict";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { tempDir } from "../../tests/harness.ts";
import type { EpochRecord } from "../group/mod.ts";
import { EpochLog } from "./epoch_log.ts";
import { INCARNATION_FILE, nextIncarnation } from "./incarnation.ts";

const SELF = "127.0.0.1:7000";
const HOUR = 3_600_000;

function record(epoch: number, incarnation: number, id = SELF): EpochRecord {
  const member = { id, incarnation, witness: false, info: {} };
  return { cluster: "c", era: 1, epoch, slot: epoch, seq: 0, members: [member], pids: [] };
}

async function withDir(fn: (dir: string, log: EpochLog) => Promise<void>): Promise<void> {
  const dir = await tempDir("sd-incarnation-");
  try {
    await fn(dir, new EpochLog(dir));
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

Deno.test("incarnation: the clock when it is ahead of the last start, one above the last when it is behind", async () => {
  await withDir(async (dir, epochLog) => {
    const warnings: string[] = [];
    const start = async (nowMs: number) =>
      nextIncarnation({
        dir,
        selfId: SELF,
        nowMs,
        records: await epochLog.list(),
        warn: (l) => warnings.push(l),
      });
    const t = 1_800_000_000_000;
    assert.equal(await start(t), t, "a first start: the clock");
    assert.equal(await start(t + 5_000), t + 5_000, "a later start: the clock");
    assert.deepEqual(warnings, []);
    assert.equal(await start(t - HOUR), t + 5_001, "the clock set back an hour: one above");
    assert.equal(await start(t - HOUR + 10), t + 5_002, "and again");
    assert.equal(warnings.length, 2);
    assert.match(warnings[0]!, /clock .* is behind its last start's .*set back while it was down/);
    assert.equal(await start(0), t + 5_003, "a clock at 1970");
    assert.equal(await start(t + HOUR), t + HOUR, "the clock ahead again: the clock");
  });
});

Deno.test("incarnation: without the file (a directory from an older build), the epoch log's records name the last", async () => {
  await withDir(async (dir, epochLog) => {
    const t = 1_800_000_000_000;
    await epochLog.append([record(1, t), record(2, t + 7), record(3, t + 99, "127.0.0.1:7001")], t);
    const warnings: string[] = [];
    const next = await nextIncarnation({
      dir,
      selfId: SELF,
      nowMs: t - HOUR,
      records: await epochLog.list(),
      warn: (l) => warnings.push(l),
    });
    assert.equal(next, t + 8, "one above this node's highest, not another node's");
    assert.equal(warnings.length, 1);
    assert.equal((await fsp.readFile(path.join(dir, INCARNATION_FILE), "utf8")).trim(), `${t + 8}`);
  });
});

Deno.test("incarnation: a damaged file is said once and replaced; the start goes on", async () => {
  for (const content of ["", "12ab\n", "\u0000\u0000\u0000", "99999999999999999999999\n"]) {
    await withDir(async (dir, epochLog) => {
      await fsp.writeFile(path.join(dir, INCARNATION_FILE), content);
      const warnings: string[] = [];
      const t = 1_800_000_000_000;
      const next = await nextIncarnation({
        dir,
        selfId: SELF,
        nowMs: t,
        records: await epochLog.list(),
        warn: (l) => warnings.push(l),
      });
      assert.equal(next, t, JSON.stringify(content));
      assert.equal(warnings.length, 1, JSON.stringify(content));
      assert.match(warnings[0]!, /does not hold an incarnation .*written again/);
      assert.equal((await fsp.readFile(path.join(dir, INCARNATION_FILE), "utf8")).trim(), `${t}`);
    });
  }
});
