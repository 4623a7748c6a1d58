/**
 * The qcow2 layout (QEMU's docs/interop/qcow2.txt): the header of versions 2 and 3, L1 and L2
 * entries (standard, compressed, and the extended entries of subcluster images), and the
 * limits a reader holds a file to. Pure: bytes in, values out. Big-endian everywhere.
 *
 * A qcow2 file is made of clusters (512 B .. 2 MiB). The header sits in cluster 0; the L1
 * table lists L2 tables, one cluster each; an L2 entry says where a virtual cluster's data is:
 * nowhere (reads as zeros, or from a backing file), zeros, a host cluster, or a compressed
 * stream at a byte offset. Refcount tables count references for writers; a reader ignores them.
 *
 * @module
 */

/** "QFI\xfb". */
export const QCOW2_MAGIC = 0x514649fb;
/** Smallest and largest cluster (512 B .. 2 MiB), as QEMU accepts them. */
export const CLUSTER_BITS_MIN = 9;
export const CLUSTER_BITS_MAX = 21;
/** Extended L2 entries need clusters of 16 KiB or more (subclusters of 512 B or more). */
export const EXTENDED_L2_CLUSTER_BITS_MIN = 14;
export const SUBCLUSTERS_PER_CLUSTER = 32;
/** The largest active L1 table QEMU opens (32 MiB, 4 Mi entries). */
export const L1_BYTES_MAX = 32 * 1024 * 1024;
/** Longest backing file name (the spec's limit). */
export const BACKING_NAME_BYTES_MAX = 1023;
/** Header bytes: version 2, and the least a version 3 header has. */
export const HEADER_V2_BYTES = 72;
export const HEADER_V3_BYTES_MIN = 104;
/** The header version 3 writers use today: up to compression_type, padded to 8. */
export const HEADER_V3_BYTES = 112;
/** Compressed data is counted in 512-byte sectors. */
export const COMPRESSED_SECTOR_BYTES = 512;

/** Incompatible feature bits (an unknown one means: do not open). */
export const INCOMPATIBLE = {
  DIRTY: 1 << 0,
  CORRUPT: 1 << 1,
  EXTERNAL_DATA_FILE: 1 << 2,
  COMPRESSION_TYPE: 1 << 3,
  EXTENDED_L2: 1 << 4,
} as const;
export const INCOMPATIBLE_KNOWN = 0x1f;
/** Compatible feature bit 0: refcounts may lag behind (the image is then marked dirty). */
export const COMPATIBLE_LAZY_REFCOUNTS = 1;
/** crypt_method values. */
export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;
/** compression_type values. */
export const COMPRESSION_DEFLATE = 0;
export const COMPRESSION_ZSTD = 1;

/** Header extension types. */
export const EXTENSION = {
  END: 0,
  BACKING_FORMAT: 0xe2792aca,
  FEATURE_NAMES: 0x6803f857,
  BITMAPS: 0x23852875,
  ENCRYPTION: 0x0537be77,
  EXTERNAL_DATA_FILE: 0x44415441,
} as const;

/** The fields of a qcow2 header. 64-bit offsets are numbers (exact below 2^53, larger ones are
 * beyond any file and get refused by the checks that compare them with the file's length). */
export interface Qcow2Header {
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  /** Feature bitmaps (64 bits each). */
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
}

/** A 64-bit big-endian field as a number (rounded above 2^53, which no file reaches). */
function u64(view: DataView, offset: number): number {
  return view.getUint32(offset) * 2 ** 32 + view.getUint32(offset + 4);
}

/**
 * Decodes the header in `bytes` (at least the first 104 bytes of the file, or all of a
 * shorter file). Returns undefined when the magic is not qcow's; checks nothing else, so the
 * caller can explain each problem in its own words.
 */
export function decodeHeader(bytes: Uint8Array): Qcow2Header | undefined {
  if (bytes.length < HEADER_V2_BYTES) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0) !== QCOW2_MAGIC) return undefined;
  const version = view.getUint32(4);
  const v3 = version >= 3 && bytes.length >= HEADER_V3_BYTES_MIN;
  const headerLength = v3 ? view.getUint32(100) : HEADER_V2_BYTES;
  return {
    version,
    backingFileOffset: u64(view, 8),
    backingFileSize: view.getUint32(16),
    clusterBits: view.getUint32(20),
    size: u64(view, 24),
    cryptMethod: view.getUint32(32),
    l1Size: view.getUint32(36),
    l1TableOffset: u64(view, 40),
    refcountTableOffset: u64(view, 48),
    refcountTableClusters: view.getUint32(56),
    nbSnapshots: view.getUint32(60),
    snapshotsOffset: u64(view, 64),
    incompatibleFeatures: v3 ? view.getBigUint64(72) : 0n,
    compatibleFeatures: v3 ? view.getBigUint64(80) : 0n,
    autoclearFeatures: v3 ? view.getBigUint64(88) : 0n,
    refcountOrder: v3 ? view.getUint32(96) : 4,
    headerLength,
    compressionType: v3 && headerLength > 104 && bytes.length > 104 ? view.getUint8(104) : 0,
  };
}

/** Encodes a version 2 (72 bytes) or version 3 (`headerLength` bytes) header. */
export function encodeHeader(header: Qcow2Header): Uint8Array {
  const length = header.version === 2 ? HEADER_V2_BYTES : header.headerLength;
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  const put64 = (offset: number, value: number) => view.setBigUint64(offset, BigInt(value));
  view.setUint32(0, QCOW2_MAGIC);
  view.setUint32(4, header.version);
  put64(8, header.backingFileOffset);
  view.setUint32(16, header.backingFileSize);
  view.setUint32(20, header.clusterBits);
  put64(24, header.size);
  view.setUint32(32, header.cryptMethod);
  view.setUint32(36, header.l1Size);
  put64(40, header.l1TableOffset);
  put64(48, header.refcountTableOffset);
  view.setUint32(56, header.refcountTableClusters);
  view.setUint32(60, header.nbSnapshots);
  put64(64, header.snapshotsOffset);
  if (header.version >= 3) {
    view.setBigUint64(72, header.incompatibleFeatures);
    view.setBigUint64(80, header.compatibleFeatures);
    view.setBigUint64(88, header.autoclearFeatures);
    view.setUint32(96, header.refcountOrder);
    view.setUint32(100, header.headerLength);
    if (header.headerLength > 104) view.setUint8(104, header.compressionType);
  }
  return bytes;
}

/** One header extension: its type and where its data lies in the bytes given. */
export interface HeaderExtension {
  type: number;
  offset: number;
  length: number;
}

/**
 * The header extensions in `cluster0` (the first cluster, or all of a shorter file) from
 * `start` (the header's length). Stops at the end marker or at the first extension that does
 * not fit; returns what it found and whether the area ended properly.
 */
export function decodeExtensions(
  cluster0: Uint8Array,
  start: number,
): { extensions: HeaderExtension[]; complete: boolean } {
  const view = new DataView(cluster0.buffer, cluster0.byteOffset, cluster0.byteLength);
  const extensions: HeaderExtension[] = [];
  let offset = start;
  // Each extension takes at least 8 bytes, so this loop ends within cluster0.length / 8 turns.
  while (offset + 8 <= cluster0.length) {
    const type = view.getUint32(offset);
    const length = view.getUint32(offset + 4);
    if (type === EXTENSION.END) return { extensions, complete: true };
    if (length > cluster0.length - offset - 8) return { extensions, complete: false };
    extensions.push({ type, offset: offset + 8, length });
    offset += 8 + Math.ceil(length / 8) * 8;
  }
  return { extensions, complete: false };
}

/** The names a feature name table gives incompatible feature bits. */
export function incompatibleFeatureNames(
  cluster0: Uint8Array,
  extension: HeaderExtension,
): Map<number, string> {
  const names = new Map<number, string>();
  const ENTRY_BYTES = 48;
  for (let at = 0; at + ENTRY_BYTES <= extension.length; at += ENTRY_BYTES) {
    const entry = cluster0.subarray(extension.offset + at, extension.offset + at + ENTRY_BYTES);
    if (entry[0] !== 0) continue;
    const raw = entry.subarray(2);
    const end = raw.indexOf(0);
    names.set(entry[1]!, new TextDecoder().decode(end === -1 ? raw : raw.subarray(0, end)));
  }
  return names;
}

/** Bit 63 of an L1 or L2 entry: the cluster's refcount is exactly one. */
export const ENTRY_COPIED_HIGH = 0x80000000;
/** Bit 62 of an L2 entry: the cluster is compressed. */
export const ENTRY_COMPRESSED_HIGH = 0x40000000;
/** Bit 0 of a standard L2 entry (version 3): the cluster reads as zeros. */
export const ENTRY_ZERO_LOW = 1;

/** Bits 9..55 of an L1 or standard L2 entry given as its two 32-bit halves. */
export function entryOffset(high: number, low: number): number {
  return (high & 0x00ffffff) * 2 ** 32 + ((low & 0xfffffe00) >>> 0);
}

/** What a virtual cluster of an image without subclusters holds. */
export type ClusterDescriptor =
  | { kind: "unallocated" }
  | { kind: "zero" }
  | { kind: "data"; hostOffset: number }
  | { kind: "compressed"; hostOffset: number; bytes: number };

/**
 * Decodes a standard or compressed L2 entry (its two 32-bit halves). A compressed entry gives
 * its stream's byte offset and the most bytes the stream may take (whole sectors, the first
 * counted from the offset).
 */
export function decodeL2Entry(high: number, low: number, clusterBits: number): ClusterDescriptor {
  if (high & ENTRY_COMPRESSED_HIGH) {
    // x = 62 - (cluster_bits - 8) offset bits, then cluster_bits - 8 bits of extra sectors.
    const offsetBits = 62 - (clusterBits - 8);
    const highOffsetBits = offsetBits - 32;
    const hostOffset = (high & ((1 << highOffsetBits) - 1)) * 2 ** 32 + low;
    const extraSectors = ((high & 0x3fffffff) >>> highOffsetBits) & ((1 << (clusterBits - 8)) - 1);
    const bytes = (extraSectors + 1) * COMPRESSED_SECTOR_BYTES -
      (hostOffset % COMPRESSED_SECTOR_BYTES);
    return { kind: "compressed", hostOffset, bytes };
  }
  if (low & ENTRY_ZERO_LOW) return { kind: "zero" };
  const hostOffset = entryOffset(high, low);
  if (hostOffset === 0) return { kind: "unallocated" };
  return { kind: "data", hostOffset };
}

/** Virtual bytes one L2 table maps. */
export function l2Coverage(clusterBits: number, extendedL2: boolean): number {
  return 2 ** clusterBits * l2Entries(clusterBits, extendedL2);
}

/** Entries in one L2 table (8 bytes each, 16 with extended L2 entries). */
export function l2Entries(clusterBits: number, extendedL2: boolean): number {
  return 2 ** clusterBits / (extendedL2 ? 16 : 8);
}

/** L1 entries an image of `size` bytes needs. */
export function l1EntriesFor(size: number, clusterBits: number, extendedL2: boolean): number {
  return Math.ceil(size / l2Coverage(clusterBits, extendedL2));
}

function checkLayout(): void {
  // The compressed descriptor's high offset bits (x - 32) fit a 32-bit shift for every size.
  if (62 - (CLUSTER_BITS_MAX - 8) - 32 < 1) throw new Error("qcow2: compressed offset bits");
  if (62 - (CLUSTER_BITS_MIN - 8) - 32 > 30) throw new Error("qcow2: compressed offset bits");
  if (2 ** EXTENDED_L2_CLUSTER_BITS_MIN / SUBCLUSTERS_PER_CLUSTER < 512) {
    throw new Error("qcow2: subcluster size");
  }
  if (HEADER_V3_BYTES % 8 !== 0 || HEADER_V3_BYTES < HEADER_V3_BYTES_MIN) {
    throw new Error("qcow2: header length");
  }
}
checkLayout();
