import assert from "node:assert/strict";
import * as path from "node:path";
import { readFully } from "./disk.ts";
import { fsDisk } from "./fs_disk.ts";
import { seededRandom } from "./mem_disk.ts";

Deno.test("fsDisk writes a long buffer whole although it goes to the kernel in pieces", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = await fsDisk.open(path.join(dir, "f"), "wx+");
    const data = new Uint8Array(300 * 1024 + 123);
    const random = seededRandom(7);
    for (let i = 0; i < data.length; i++) data[i] = random() & 0xff;
    assert.equal(await file.write(data, 5000), data.length);
    assert.equal(await file.size(), 5000 + data.length);
    const back = new Uint8Array(data.length + 5000);
    assert.equal(await readFully(file, back, 0), back.length);
    assert.deepEqual(back.subarray(0, 5000), new Uint8Array(5000), "the gap before it reads zeros");
    assert.deepEqual(back.subarray(5000), data);
    await file.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fsDisk reports a long write that fails in any piece", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = await fsDisk.open(path.join(dir, "f"), "wx+");
    await file.close();
    await assert.rejects(file.write(new Uint8Array(1024 * 1024), 0), { code: "EBADF" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
