/**
 * What kind of image a file holds, told from its magic numbers as `qemu-img` probes them:
 * qcow2 (versions 2 and 3) is read, raw is anything without a known magic, and every other
 * known format is named so the caller can refuse it by name instead of importing its
 * container bytes as a disk.
 *
 * @module
 */

/** Bytes of the file's head and tail that detection looks at. */
export const PROBE_BYTES = 512;

export type DetectedFormat =
  | { format: "raw" }
  | { format: "qcow2" }
  /** A format we do not import; `name` is how users know it (e.g. "VMDK"). */
  | { format: "foreign"; name: string };

const ascii = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));

/** Magic strings at offset 0, as QEMU's block drivers probe for them. */
const HEAD_MAGICS: { name: string; magic: Uint8Array }[] = [
  { name: "QED", magic: ascii("QED\0") },
  { name: "VMDK", magic: ascii("KDMV") },
  { name: "VMDK (ESX COWD)", magic: ascii("COWD") },
  { name: "VMDK (descriptor file)", magic: ascii("# Disk DescriptorFile") },
  { name: "VHD", magic: ascii("conectix") },
  { name: "VHDX", magic: ascii("vhdxfile") },
  { name: "LUKS", magic: ascii("LUKS\xba\xbe") },
  { name: "Bochs", magic: ascii("Bochs Virtual HD Image") },
  { name: "Parallels", magic: ascii("WithoutFreeSpace") },
  { name: "Parallels", magic: ascii("WithouFreSpacExt") },
  { name: "cloop", magic: ascii("#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0") },
];
/** VirtualBox's signature, a little-endian u32 at 0x40. */
const VIRTUALBOX_SIGNATURE = 0xbeda107f;
const VIRTUALBOX_SIGNATURE_OFFSET = 0x40;
/** Trailers in the last 512 bytes: a DMG's "koly" block, a fixed VHD's footer. */
const TAIL_MAGICS: { name: string; magic: Uint8Array }[] = [
  { name: "DMG", magic: ascii("koly") },
  { name: "VHD (fixed)", magic: ascii("conectix") },
];
const QCOW_MAGIC = ascii("QFI\xfb");

function startsWith(bytes: Uint8Array, magic: Uint8Array): boolean {
  if (bytes.length < magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[i] !== magic[i]) return false;
  return true;
}

/**
 * The format of a file from its first bytes (`head`, up to PROBE_BYTES) and its last
 * PROBE_BYTES (`tail`; empty when the file is no longer than `head`).
 */
export function detectFormat(head: Uint8Array, tail: Uint8Array): DetectedFormat {
  if (startsWith(head, QCOW_MAGIC) && head.length >= 8) {
    const version = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(4);
    if (version === 2 || version === 3) return { format: "qcow2" };
    if (version === 1) return { format: "foreign", name: "QCOW version 1" };
    return { format: "foreign", name: `qcow2 version ${version}` };
  }
  for (const { name, magic } of HEAD_MAGICS) {
    if (startsWith(head, magic)) return { format: "foreign", name };
  }
  if (head.length >= VIRTUALBOX_SIGNATURE_OFFSET + 4) {
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    if (view.getUint32(VIRTUALBOX_SIGNATURE_OFFSET, true) === VIRTUALBOX_SIGNATURE) {
      return { format: "foreign", name: "VirtualBox VDI" };
    }
  }
  if (tail.length === PROBE_BYTES) {
    for (const { name, magic } of TAIL_MAGICS) {
      if (startsWith(tail, magic)) return { format: "foreign", name };
    }
  }
  return { format: "raw" };
}

/** `text` quoted for a POSIX shell when it needs to be. */
export function shellQuote(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/** The one line that refuses a file of a format we do not import, and says what to do. */
export function foreignFormatMessage(path: string, name: string): string {
  return `Cannot import '${path}': it is a ${name} image; convert it to raw or qcow2 first, ` +
    `e.g. qemu-img convert -O raw ${shellQuote(path)} ${shellQuote(path + ".raw")}`;
}
