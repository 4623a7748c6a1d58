import assert from "node:assert/strict";
import { ResultCode } from "../errors.ts";
import { sheepTime } from "../vdi/inode.ts";
import {
  type ClusterConfig,
  compareFormats,
  decodeConfig,
  encodeConfig,
  predatesFormat,
  vdiTimeMs,
} from "./cluster_config.ts";

const CONFIG: ClusterConfig = {
  ctimeMs: 1796044388480,
  flags: 0,
  copies: 3,
  blockSizeShift: 22,
  shutdown: false,
};

Deno.test("cluster config: a file cut, flipped or foreign is one line saying what to do", () => {
  assert.deepEqual(decodeConfig(encodeConfig(CONFIG), "c"), CONFIG);
  const flipped = encodeConfig(CONFIG);
  flipped[30]! ^= 0xff; // the format version
  const badCopies = encodeConfig(CONFIG);
  badCopies[10] = 0;
  for (
    const [bytes, why] of [
      [encodeConfig(CONFIG).subarray(0, 10), "10 bytes, expected 40"],
      [flipped, "unknown format version"],
      [badCopies, "bad copies 0"],
    ] as const
  ) {
    assert.throws(() => decodeConfig(bytes, "/d/config"), (error: Error & { code?: number }) => {
      assert.equal(error.code, ResultCode.EIO);
      assert.equal(
        error.message,
        `Cannot read cluster config /d/config: ${why} (every node of a cluster holds the same ` +
          "one: copy another node's in its place)",
      );
      return true;
    });
  }
});

Deno.test("formats: the older one missed the newer; a VDI is always dated after its format", () => {
  const newer = { ...CONFIG, ctimeMs: CONFIG.ctimeMs + 1 };
  assert.equal(compareFormats(CONFIG, CONFIG), "same");
  assert.equal(compareFormats(CONFIG, newer), "mine older");
  assert.equal(compareFormats(newer, CONFIG), "theirs older");
  assert.equal(compareFormats(undefined, CONFIG), "same", "a fresh node takes the cluster's");
  assert.equal(compareFormats(CONFIG, null), "same");
  // A node whose clock lags the formatting node's still dates after the format.
  const at = vdiTimeMs(CONFIG.ctimeMs - 5_000, CONFIG.ctimeMs);
  assert.equal(at, CONFIG.ctimeMs + 1);
  assert.equal(predatesFormat(sheepTime(at), CONFIG.ctimeMs), false);
  assert.equal(predatesFormat(sheepTime(CONFIG.ctimeMs), CONFIG.ctimeMs), true);
  assert.equal(predatesFormat(sheepTime(0), undefined), false, "unformatted: nothing predates");
  assert.equal(vdiTimeMs(7, undefined), 7);
});
