import assert from "node:assert/strict";
import { detectFormat, foreignFormatMessage, PROBE_BYTES, shellQuote } from "./detect.ts";

const ascii = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));

function head(magic: Uint8Array | string, at = 0): Uint8Array {
  const bytes = new Uint8Array(PROBE_BYTES);
  bytes.set(typeof magic === "string" ? ascii(magic) : magic, at);
  return bytes;
}

const none = new Uint8Array(0);

Deno.test("detectFormat() tells qcow2 v2 and v3 from their magic and version", () => {
  for (const version of [2, 3]) {
    const bytes = head("QFI\xfb");
    new DataView(bytes.buffer).setUint32(4, version);
    assert.deepEqual(detectFormat(bytes, none), { format: "qcow2" });
  }
  const v1 = head("QFI\xfb");
  new DataView(v1.buffer).setUint32(4, 1);
  assert.deepEqual(detectFormat(v1, none), { format: "foreign", name: "QCOW version 1" });
  const v9 = head("QFI\xfb");
  new DataView(v9.buffer).setUint32(4, 9);
  assert.deepEqual(detectFormat(v9, none), { format: "foreign", name: "qcow2 version 9" });
});

Deno.test("detectFormat() names every other known format by its magic", () => {
  const cases: [Uint8Array, string][] = [
    [head("KDMV"), "VMDK"],
    [head("COWD"), "VMDK (ESX COWD)"],
    [head("# Disk DescriptorFile\nversion=1\n"), "VMDK (descriptor file)"],
    [head("conectix"), "VHD"],
    [head("vhdxfile"), "VHDX"],
    [head("QED\0"), "QED"],
    [head("LUKS\xba\xbe"), "LUKS"],
    [head("Bochs Virtual HD Image"), "Bochs"],
    [head("WithoutFreeSpace"), "Parallels"],
    [head(new Uint8Array([0x7f, 0x10, 0xda, 0xbe]), 0x40), "VirtualBox VDI"],
  ];
  for (const [bytes, name] of cases) {
    assert.deepEqual(detectFormat(bytes, head("")), { format: "foreign", name });
  }
  // Trailers: a DMG's koly block and a fixed VHD's footer sit in the last 512 bytes.
  assert.deepEqual(detectFormat(head(""), head("koly")), { format: "foreign", name: "DMG" });
  assert.deepEqual(detectFormat(head(""), head("conectix")), {
    format: "foreign",
    name: "VHD (fixed)",
  });
});

Deno.test("detectFormat() calls anything else raw, short files too", () => {
  assert.deepEqual(detectFormat(head(""), head("")), { format: "raw" });
  assert.deepEqual(detectFormat(ascii("QFI"), none), { format: "raw" });
  assert.deepEqual(detectFormat(none, none), { format: "raw" });
  // An MBR or an ISO is raw to QEMU as well.
  const mbr = head("");
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  assert.deepEqual(detectFormat(mbr, head("")), { format: "raw" });
});

Deno.test("foreignFormatMessage() is one line naming the format and the way out", () => {
  assert.equal(
    foreignFormatMessage("disk.vmdk", "VMDK"),
    "Cannot import 'disk.vmdk': it is a VMDK image; convert it to raw or qcow2 first, " +
      "e.g. qemu-img convert -O raw disk.vmdk disk.vmdk.raw",
  );
  assert.equal(shellQuote("Bob's disk.vdi"), `'Bob'\\''s disk.vdi'`);
  assert.equal(shellQuote("/tmp/a-b_c.raw"), "/tmp/a-b_c.raw");
});
