import assert from "node:assert/strict";
import { withSheep } from "../../tests/harness.ts";
import { ResultCode } from "../../core/errors.ts";
import { dataOid } from "../../core/vdi/oid.ts";
import { requestHeader } from "../object/client.ts";
import { Flag, Opcode } from "../object/ops.ts";
import { decodeHealBlocks, decodeHealed, encodeHealBlocks, encodeHealed } from "./healed_blocks.ts";

Deno.test("a block heal round-trips: blocks with their bytes, and the blocks rewritten", () => {
  const blocks = [
    { index: 3, data: new Uint8Array(4096).fill(3) },
    { index: 1023, data: new Uint8Array(512).fill(9) },
  ];
  const decoded = decodeHealBlocks(encodeHealBlocks(blocks));
  assert.deepEqual(decoded.map((b) => b.index), [3, 1023]);
  assert.deepEqual(decoded.map((b) => [...b.data]), blocks.map((b) => [...b.data]));
  assert.deepEqual(decodeHealed(encodeHealed([3, 1023])), [3, 1023]);
  assert.deepEqual(decodeHealBlocks(encodeHealBlocks([])), []);
});

Deno.test("a malformed block heal is refused with one line, never read past its end", () => {
  const bytes = encodeHealBlocks([{ index: 2, data: new Uint8Array(4096).fill(1) }]);
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(0), /no count/],
    [bytes.subarray(0, 4), /1 blocks announced in 4 bytes/],
    [bytes.subarray(0, bytes.length - 1), /truncated/],
    [new Uint8Array([...bytes, 0]), /1 bytes past the blocks/],
  ];
  const huge = new Uint8Array(12);
  new DataView(huge.buffer).setUint32(0, 1, true);
  new DataView(huge.buffer).setUint32(8, 1 << 20, true);
  cases.push([huge, /a block of 1048576 bytes/]);
  const many = new Uint8Array(4);
  new DataView(many.buffer).setUint32(0, 0xffffffff, true);
  cases.push([many, /4294967295 blocks announced/]);
  for (const [input, message] of cases) {
    assert.throws(() => decodeHealBlocks(input), (error: Error) => {
      assert.match(error.message, /^Malformed block heal: /);
      assert.match(error.message, message);
      assert.ok(!error.message.includes("\n"));
      return true;
    });
  }
  assert.throws(() => decodeHealed(new Uint8Array(5)), /Malformed block heal reply/);
});

Deno.test("HEAL_BLOCKS_PEER: garbage is refused with one line and the copy is untouched; a good heal rewrites only the block its checksum names", async () => {
  await withSheep(async ({ sheep }) => {
    const oid = dataOid(0x4242, 1);
    const good = new Uint8Array(16384).map((_, i) => i % 251);
    await sheep.local.create(oid, good, 0, { size: 16384, version: 3 });
    const send = (data: Uint8Array) => {
      const header = requestHeader(Opcode.HEAL_BLOCKS_PEER, { internal: true });
      header.oid = oid;
      header.flags |= Flag.WRITE | Flag.RECOVERY;
      header.dataLength = data.length;
      return sheep.handle({ header, data }, "local");
    };
    const garbage = await send(new Uint8Array([1, 0, 0, 0, 9]));
    assert.equal(garbage.header.result, ResultCode.INVALID_PARMS);
    const text = new TextDecoder().decode(garbage.data);
    assert.match(text, /^Malformed block heal: 1 blocks announced in 5 bytes$/);
    assert.deepEqual(await sheep.local.read(oid, 0, 16384), good);
    // Other bytes than block 1's last write: refused (nothing rewritten).
    const other = await send(encodeHealBlocks([{ index: 1, data: new Uint8Array(4096) }]));
    assert.equal(other.header.result, ResultCode.SUCCESS);
    assert.deepEqual(decodeHealed(other.data), []);
    assert.deepEqual(await sheep.local.read(oid, 0, 16384), good);
    // Its own bytes: rewritten (what heals a rotted block).
    const same = await send(encodeHealBlocks([{ index: 1, data: good.slice(4096, 8192) }]));
    assert.deepEqual(decodeHealed(same.data), [1]);
    assert.deepEqual(await sheep.local.read(oid, 0, 16384), good);
  });
});
