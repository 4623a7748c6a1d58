import assert from "node:assert/strict";
import { concatBytes } from "../bytes.ts";
import { SheepdogError } from "../errors.ts";
import {
  DiffParser,
  type DiffRecord,
  encodeDataRecordHead,
  encodeDiffEnd,
  encodeDiffHeader,
  memorySource,
  validateDiff,
} from "./rbd_diff.ts";

function concat(...parts: Uint8Array[]): Uint8Array {
  return concatBytes(parts);
}

function w(offset: number, data: Uint8Array): Uint8Array {
  return concat(encodeDataRecordHead({ kind: "w", offset, length: data.length }), data);
}

function z(offset: number, length: number): Uint8Array {
  return encodeDataRecordHead({ kind: "z", offset, length });
}

const DATA = new Uint8Array(4096).fill(0xab);
const GOOD = concat(
  encodeDiffHeader({ from: "monday", to: "tuesday", size: 1 << 20 }),
  w(0, DATA),
  z(4096, 8192),
  w(65536, DATA.subarray(0, 100)),
  encodeDiffEnd(),
);

async function refusal(bytes: Uint8Array): Promise<string> {
  try {
    await validateDiff(memorySource(bytes), "'t.diff'");
  } catch (error) {
    assert.ok(error instanceof SheepdogError, String(error));
    assert.ok(!error.message.includes("\n"), `one line: ${error.message}`);
    return error.message;
  }
  assert.fail("the diff was accepted");
}

Deno.test("the encoder writes Ceph's v1 layout byte for byte", () => {
  const header = encodeDiffHeader({ from: "a", to: "bc", size: 0x0102030405 });
  assert.deepEqual(
    [...header],
    [
      ...new TextEncoder().encode("rbd diff v1\n"),
      ...[0x66, 1, 0, 0, 0, 0x61],
      ...[0x74, 2, 0, 0, 0, 0x62, 0x63],
      ...[0x73, 5, 4, 3, 2, 1, 0, 0, 0],
    ],
  );
  assert.deepEqual(
    [...encodeDataRecordHead({ kind: "z", offset: 0x1000, length: 0x200 })],
    [0x7a, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0],
  );
  assert.deepEqual([...encodeDiffEnd()], [0x65]);
  // A diff since creation of a live image: neither name.
  assert.equal(encodeDiffHeader({ size: 1 }).length, 12 + 9);
});

Deno.test("the parser reads back what the encoder wrote, data included", async () => {
  const parser = new DiffParser(memorySource(GOOD), "'t.diff'");
  assert.deepEqual(await parser.readHeader(), { from: "monday", to: "tuesday", size: 1 << 20 });
  const records: DiffRecord[] = [];
  const data: number[] = [];
  for (let record = await parser.next(); record; record = await parser.next()) {
    records.push(record);
    // Read the first record's data in two parts; skip the last one's.
    if (record.offset === 0) {
      data.push((await parser.readData(1000)).length, (await parser.readData(10_000)).length);
    }
  }
  assert.deepEqual(records, [
    { kind: "w", offset: 0, length: 4096 },
    { kind: "z", offset: 4096, length: 8192 },
    { kind: "w", offset: 65536, length: 100 },
  ]);
  assert.deepEqual(data, [1000, 3096]);
  assert.deepEqual(await validateDiff(memorySource(GOOD), "x"), {
    header: { from: "monday", to: "tuesday", size: 1 << 20 },
    records: 3,
    dataBytes: 4196,
    zeroBytes: 8192,
    end: 65636,
  });
});

Deno.test("a diff without metadata or records is valid", async () => {
  const bare = concat(new TextEncoder().encode("rbd diff v1\n"), encodeDiffEnd());
  const summary = await validateDiff(memorySource(bare), "x");
  assert.deepEqual(summary.header, {});
  assert.equal(summary.records, 0);
});

Deno.test("a truncated diff is refused wherever it is cut", async () => {
  // Every proper prefix of a good diff is refused: in the banner, a name, a record, data, or
  // before the end record.
  for (const cut of [0, 5, 12, 15, 20, 40, 50, 100, 2000, GOOD.length - 30, GOOD.length - 1]) {
    const message = await refusal(GOOD.subarray(0, cut));
    assert.match(message, /^Invalid rbd diff 't\.diff': (truncated at byte \d+|it does not start)/);
  }
  assert.match(
    await refusal(GOOD.subarray(0, 100)),
    /truncated at byte 100 \(in the data of the 'w' record 0\+4096\)/,
  );
  assert.match(
    await refusal(GOOD.subarray(0, GOOD.length - 1)),
    /truncated at byte \d+ \(in the data records \(no end record\)/,
  );
});

Deno.test("a bad banner, an unknown tag, bytes after the end are refused", async () => {
  assert.match(
    await refusal(concat(new TextEncoder().encode("qcow2 image!"), GOOD.subarray(12))),
    /does not start with "rbd diff v1" \(it starts with "qcow2 image!"\)/,
  );
  assert.match(
    await refusal(concat(new TextEncoder().encode("rbd diff v2\n"), GOOD.subarray(12))),
    /rbd diff v2 stream.*only v1 is read/,
  );
  const header = encodeDiffHeader({ size: 1 << 20 });
  assert.match(
    await refusal(concat(header, w(0, DATA), Uint8Array.of(0x71), encodeDiffEnd())),
    new RegExp(`unknown record tag 0x71 \\('q'\\) at byte ${header.length + 17 + 4096}$`),
  );
  assert.match(
    await refusal(concat(new TextEncoder().encode("rbd diff v1\n"), Uint8Array.of(0x00))),
    /unknown record tag 0x00 at byte 12$/,
  );
  assert.match(
    await refusal(concat(GOOD, Uint8Array.of(0x65))),
    /bytes follow the end record at byte \d+/,
  );
  assert.match(
    await refusal(concat(header, w(0, DATA), encodeDiffHeader({ to: "x" }).subarray(12))),
    /metadata record 0x74 \('t'\) at byte \d+ comes after data records/,
  );
  assert.match(
    await refusal(
      concat(encodeDiffHeader({ to: "x" }), encodeDiffHeader({ to: "y" }).subarray(12)),
    ),
    /a second 'to' record at byte 18/,
  );
});

Deno.test("records out of order, overlapping or past the size are refused", async () => {
  const header = encodeDiffHeader({ size: 1 << 20 });
  assert.match(
    await refusal(concat(header, z(8192, 4096), w(0, DATA), encodeDiffEnd())),
    /the 'w' record at byte \d+ \(0\+4096\) is out of order: it comes after a record at offset 8192/,
  );
  assert.match(
    await refusal(concat(header, w(0, DATA), z(4000, 4096), encodeDiffEnd())),
    /the 'z' record at byte \d+ \(4000\+4096\) overlaps the record before it \(0\+4096\)/,
  );
  assert.match(
    await refusal(concat(header, z((1 << 20) - 4096, 4097), encodeDiffEnd())),
    /ends past the image size 1048576 of the 's' record/,
  );
  const huge = encodeDataRecordHead({ kind: "z", offset: 0, length: 1 });
  new DataView(huge.buffer).setBigUint64(1, 2n ** 63n, true);
  assert.match(
    await refusal(concat(header, huge, encodeDiffEnd())),
    /the 'z' record's offset at byte \d+ is 9223372036854775808, more than any image holds/,
  );
  // Adjacent records and zero-length ones are fine.
  const fine = concat(header, w(0, DATA), z(4096, 0), z(4096, 4096), encodeDiffEnd());
  assert.equal((await validateDiff(memorySource(fine), "x")).records, 3);
});

Deno.test("snapshot names: empty, too long or not UTF-8 are refused", async () => {
  const name = (bytes: number[]) =>
    concat(
      new TextEncoder().encode("rbd diff v1\n"),
      Uint8Array.of(0x66, bytes.length, 0, 0, 0, ...bytes),
      encodeDiffEnd(),
    );
  assert.match(await refusal(name([])), /the 'f' snapshot name at byte 12 is empty/);
  assert.match(await refusal(name([0xff, 0xfe])), /is not UTF-8 text/);
  const long = concat(
    new TextEncoder().encode("rbd diff v1\n"),
    Uint8Array.of(0x74, 0, 0, 1, 0),
  );
  assert.match(await refusal(long), /is 65536 bytes long \(at most 4096\)/);
});
