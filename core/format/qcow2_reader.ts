/**
 * Reads the virtual disk of a qcow2 image (versions 2 and 3): standard, zero, compressed
 * (deflate) and unallocated clusters, and the subclusters of extended L2 entries. A range
 * that holds no data reads as `undefined`, so an import stays thin.
 *
 * Every offset and size taken from the file is checked against the file's length and the
 * format's limits before it is used: a damaged or hostile file gives one clear error, and
 * memory stays bounded (the L1 table is at most 32 MiB, L2 tables are cached up to
 * L2_CACHE_BYTES, a compressed cluster is read and inflated into at most two clusters).
 * Refused, each with its own message: backing files, encryption, external data files,
 * zstd compression, images marked corrupt, unknown incompatible features.
 *
 * @module
 */

import { inflateRawSync } from "node:zlib";
import { ResultCode, SheepdogError } from "../errors.ts";
import {
  BACKING_NAME_BYTES_MAX,
  CLUSTER_BITS_MAX,
  CLUSTER_BITS_MIN,
  COMPRESSION_DEFLATE,
  COMPRESSION_ZSTD,
  CRYPT_AES,
  CRYPT_LUKS,
  CRYPT_NONE,
  decodeExtensions,
  decodeHeader,
  decodeL2Entry,
  entryOffset,
  EXTENDED_L2_CLUSTER_BITS_MIN,
  EXTENSION,
  HEADER_V2_BYTES,
  HEADER_V3_BYTES_MIN,
  INCOMPATIBLE,
  INCOMPATIBLE_KNOWN,
  incompatibleFeatureNames,
  L1_BYTES_MAX,
  l1EntriesFor,
  l2Entries,
  QCOW2_MAGIC,
  type Qcow2Header,
  SUBCLUSTERS_PER_CLUSTER,
} from "./qcow2.ts";
import { shellQuote } from "./detect.ts";

/** Positional reads of a file. */
export interface RandomAccessSource {
  /** The file's length in bytes. */
  readonly size: number;
  /**
   * Fills `target` from byte `position` on; resolves with the bytes read, fewer only at the
   * end of the file (the rest of `target` is left as it was).
   */
  readInto(target: Uint8Array, position: number): Promise<number>;
}

/** L2 tables kept in memory (a 64 KiB table maps 512 MiB). */
export const L2_CACHE_BYTES = 32 * 1024 * 1024;
/** Bytes read to decode the header (it is at most a cluster, its fixed fields 112 bytes). */
const HEADER_READ_BYTES = 4096;

/** One range of the file to copy into the result: [hostOffset, +length) to `at`. */
interface HostRun {
  hostOffset: number;
  at: number;
  length: number;
}

function refused(label: string, detail: string): SheepdogError {
  return new SheepdogError(ResultCode.INVALID_PARMS, `Cannot import '${label}': ${detail}`);
}

function damaged(label: string, detail: string): SheepdogError {
  return new SheepdogError(
    ResultCode.INVALID_PARMS,
    `Cannot read '${label}': ${detail}: the qcow2 image is truncated or damaged`,
  );
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}

/** A qcow2 image opened for reading its virtual disk. */
export class Qcow2Reader {
  /** Virtual disk size in bytes. */
  readonly size: number;
  readonly header: Qcow2Header;
  readonly clusterBytes: number;
  readonly extendedL2: boolean;
  readonly #source: RandomAccessSource;
  readonly #label: string;
  /** Host offset of each L2 table (0: none), for the entries the virtual size needs. */
  readonly #l1: Float64Array;
  readonly #l2Entries: number;
  readonly #l2Cache = new Map<number, Promise<DataView>>();
  readonly #l2CacheTables: number;

  private constructor(
    source: RandomAccessSource,
    label: string,
    header: Qcow2Header,
    l1: Float64Array,
  ) {
    this.#source = source;
    this.#label = label;
    this.header = header;
    this.size = header.size;
    this.clusterBytes = 2 ** header.clusterBits;
    this.extendedL2 = (header.incompatibleFeatures & BigInt(INCOMPATIBLE.EXTENDED_L2)) !== 0n;
    this.#l1 = l1;
    this.#l2Entries = l2Entries(header.clusterBits, this.extendedL2);
    this.#l2CacheTables = Math.max(4, Math.floor(L2_CACHE_BYTES / this.clusterBytes));
  }

  /**
   * Opens the image in `source`; `label` names it in messages (its path).
   *
   * @throws {SheepdogError} INVALID_PARMS when it is not a qcow2 image, uses a feature this
   * reader refuses, or is damaged.
   */
  static async open(source: RandomAccessSource, label: string): Promise<Qcow2Reader> {
    const head = new Uint8Array(Math.min(source.size, HEADER_READ_BYTES));
    await source.readInto(head, 0);
    const header = decodeHeader(head);
    if (!header) {
      const magic = head.length >= 4 && new DataView(head.buffer).getUint32(0) === QCOW2_MAGIC;
      if (magic) throw damaged(label, `the file ends inside the header (${source.size} bytes)`);
      throw refused(label, "it is not a qcow2 image (no QFI\\xfb magic)");
    }
    checkHeader(header, source.size, label);
    const cluster0 = new Uint8Array(Math.min(source.size, 2 ** header.clusterBits));
    await source.readInto(cluster0, 0);
    await checkFeatures(header, cluster0, source, label);
    const l1 = await readL1(header, source, label);
    return new Qcow2Reader(source, label, header, l1);
  }

  /**
   * Reads [offset, offset+length) of the virtual disk; undefined when the whole range holds
   * no data (unallocated or zero clusters).
   */
  async read(offset: number, length: number): Promise<Uint8Array | undefined> {
    if (!(offset >= 0 && length > 0 && offset + length <= this.size)) {
      throw new RangeError(`Cannot read [${offset}, +${length}) of a ${this.size}-byte image`);
    }
    const runs: HostRun[] = [];
    let out: Uint8Array | undefined;
    const end = offset + length;
    const clusterBytes = this.clusterBytes;
    let tableIndex = -1;
    let table: DataView | undefined;
    for (let cluster = Math.floor(offset / clusterBytes); cluster * clusterBytes < end; cluster++) {
      const clusterStart = cluster * clusterBytes;
      const from = Math.max(offset, clusterStart);
      const to = Math.min(end, clusterStart + clusterBytes);
      const l1Index = Math.floor(cluster / this.#l2Entries);
      if (l1Index !== tableIndex) {
        tableIndex = l1Index;
        const l2Offset = this.#l1[l1Index]!;
        table = l2Offset === 0 ? undefined : await this.#l2Table(l2Offset);
      }
      if (!table) {
        // No L2 table: its whole range is unallocated; go on at the next table's first cluster.
        cluster = (l1Index + 1) * this.#l2Entries - 1;
        continue;
      }
      const entryAt = (cluster % this.#l2Entries) * (this.extendedL2 ? 16 : 8);
      const high = table.getUint32(entryAt);
      const low = table.getUint32(entryAt + 4);
      const descriptor = decodeL2Entry(high, low, this.header.clusterBits);
      if (descriptor.kind === "compressed") {
        out ??= new Uint8Array(length);
        const data = await this.#inflate(descriptor.hostOffset, descriptor.bytes, clusterStart);
        out.set(data.subarray(from - clusterStart, to - clusterStart), from - offset);
      } else if (this.extendedL2) {
        const hostOffset = entryOffset(high, low);
        const bitmap = {
          allocated: table.getUint32(entryAt + 12),
          zero: table.getUint32(entryAt + 8),
        };
        this.#subclusterRuns(runs, { hostOffset, bitmap, clusterStart, from, to, offset });
      } else if (descriptor.kind === "data") {
        this.#checkDataCluster(descriptor.hostOffset, clusterStart);
        addRun(runs, descriptor.hostOffset + (from - clusterStart), from - offset, to - from);
      }
    }
    if (runs.length === 0 && !out) return undefined;
    out ??= new Uint8Array(length);
    for (const run of runs) {
      // Past the end of the file reads as zeros (as QEMU does): `out` is zeroed already.
      await this.#source.readInto(out.subarray(run.at, run.at + run.length), run.hostOffset);
    }
    return out;
  }

  /** Adds the allocated subclusters of one extended L2 entry within [from, to) to `runs`. */
  #subclusterRuns(
    runs: HostRun[],
    entry: {
      hostOffset: number;
      bitmap: { allocated: number; zero: number };
      clusterStart: number;
      from: number;
      to: number;
      offset: number;
    },
  ): void {
    const { hostOffset, bitmap, clusterStart, from, to, offset } = entry;
    if (bitmap.allocated === 0) return;
    const virtual = hex(clusterStart);
    if ((bitmap.allocated & bitmap.zero) !== 0) {
      throw damaged(
        this.#label,
        `the cluster at virtual offset ${virtual} has subclusters both allocated and zero`,
      );
    }
    if (hostOffset === 0) {
      throw damaged(
        this.#label,
        `the cluster at virtual offset ${virtual} has allocated subclusters but no host cluster`,
      );
    }
    this.#checkDataCluster(hostOffset, clusterStart);
    const subclusterBytes = this.clusterBytes / SUBCLUSTERS_PER_CLUSTER;
    const first = Math.floor((from - clusterStart) / subclusterBytes);
    for (let sub = first; clusterStart + sub * subclusterBytes < to; sub++) {
      if (((bitmap.allocated >>> sub) & 1) === 0) continue;
      const start = Math.max(from, clusterStart + sub * subclusterBytes);
      const stop = Math.min(to, clusterStart + (sub + 1) * subclusterBytes);
      addRun(runs, hostOffset + (start - clusterStart), start - offset, stop - start);
    }
  }

  #checkDataCluster(hostOffset: number, virtualOffset: number): void {
    if (hostOffset % this.clusterBytes !== 0) {
      throw damaged(
        this.#label,
        `the data of virtual offset ${hex(virtualOffset)} is at ${
          hex(hostOffset)
        }, not at a cluster boundary`,
      );
    }
    if (hostOffset >= this.#source.size) {
      throw damaged(
        this.#label,
        `the data of virtual offset ${hex(virtualOffset)} is at ${
          hex(hostOffset)
        }, past the end of the file (${this.#source.size} bytes)`,
      );
    }
  }

  /** The L2 table at `l2Offset` (checked when the L1 table was read), cached. */
  #l2Table(l2Offset: number): Promise<DataView> {
    const cached = this.#l2Cache.get(l2Offset);
    if (cached) {
      this.#l2Cache.delete(l2Offset);
      this.#l2Cache.set(l2Offset, cached);
      return cached;
    }
    const loading = (async () => {
      const bytes = new Uint8Array(this.clusterBytes);
      await this.#source.readInto(bytes, l2Offset);
      return new DataView(bytes.buffer);
    })();
    loading.catch(() => this.#l2Cache.delete(l2Offset));
    this.#l2Cache.set(l2Offset, loading);
    while (this.#l2Cache.size > this.#l2CacheTables) {
      this.#l2Cache.delete(this.#l2Cache.keys().next().value!);
    }
    return loading;
  }

  /** Reads and inflates the compressed cluster at virtual offset `virtualOffset`. */
  async #inflate(hostOffset: number, bytes: number, virtualOffset: number): Promise<Uint8Array> {
    const where = `the compressed cluster of virtual offset ${hex(virtualOffset)} (at ${
      hex(hostOffset)
    }, ${bytes} bytes)`;
    if (hostOffset >= this.#source.size) {
      throw damaged(
        this.#label,
        `${where} lies past the end of the file (${this.#source.size} bytes)`,
      );
    }
    // The last compressed cluster of a file may end before its last sector does.
    const input = new Uint8Array(Math.min(bytes, this.#source.size - hostOffset));
    await this.#source.readInto(input, hostOffset);
    let data: Uint8Array;
    try {
      data = inflateRawSync(input, { maxOutputLength: this.clusterBytes });
    } catch (error) {
      throw damaged(this.#label, `${where} does not inflate: ${(error as Error).message}`);
    }
    if (data.length !== this.clusterBytes) {
      throw damaged(
        this.#label,
        `${where} inflates to ${data.length} bytes, not one cluster (${this.clusterBytes})`,
      );
    }
    return data;
  }
}

/** Appends a run, merged into the last one when both are contiguous in the file and the result. */
function addRun(runs: HostRun[], hostOffset: number, at: number, length: number): void {
  const last = runs[runs.length - 1];
  if (last && last.hostOffset + last.length === hostOffset && last.at + last.length === at) {
    last.length += length;
  } else {
    runs.push({ hostOffset, at, length });
  }
}

/** The header's own consistency: version, sizes, offsets against the file's length. */
function checkHeader(header: Qcow2Header, fileSize: number, label: string): void {
  if (header.version === 1) {
    throw refused(label, "it is a QCOW version 1 image; convert it to raw or qcow2 first");
  }
  if (header.version !== 2 && header.version !== 3) {
    throw refused(
      label,
      `it is a qcow2 image of version ${header.version} (only 2 and 3 are supported)`,
    );
  }
  if (header.version === 3) {
    if (fileSize < HEADER_V3_BYTES_MIN) {
      throw damaged(label, `the file ends inside the header (${fileSize} bytes)`);
    }
    if (header.headerLength < HEADER_V3_BYTES_MIN || header.headerLength % 8 !== 0) {
      throw damaged(label, `the header length ${header.headerLength} is invalid`);
    }
  } else if (fileSize < HEADER_V2_BYTES) {
    throw damaged(label, `the file ends inside the header (${fileSize} bytes)`);
  }
  if (header.clusterBits < CLUSTER_BITS_MIN || header.clusterBits > CLUSTER_BITS_MAX) {
    throw damaged(
      label,
      `the cluster size 2^${header.clusterBits} is outside 2^${CLUSTER_BITS_MIN}..2^${CLUSTER_BITS_MAX}`,
    );
  }
  const clusterBytes = 2 ** header.clusterBits;
  if (header.headerLength > clusterBytes) {
    throw damaged(label, `the header (${header.headerLength} bytes) is larger than a cluster`);
  }
  if (!Number.isSafeInteger(header.size)) {
    throw damaged(label, `the virtual size ${header.size} is too large`);
  }
  if (header.version === 3 && header.refcountOrder > 6) {
    throw damaged(label, `the refcount order ${header.refcountOrder} is above 6`);
  }
}

/** Refuses what this reader does not import: backing files, encryption, unknown features. */
async function checkFeatures(
  header: Qcow2Header,
  cluster0: Uint8Array,
  source: RandomAccessSource,
  label: string,
): Promise<void> {
  const incompatible = Number(header.incompatibleFeatures & BigInt(INCOMPATIBLE_KNOWN));
  const unknown = header.incompatibleFeatures & ~BigInt(INCOMPATIBLE_KNOWN);
  if (unknown !== 0n) {
    const { extensions } = decodeExtensions(cluster0, header.headerLength);
    const table = extensions.find((extension) => extension.type === EXTENSION.FEATURE_NAMES);
    const names = table ? incompatibleFeatureNames(cluster0, table) : new Map<number, string>();
    const bits = [...Array(64).keys()].filter((bit) => (unknown >> BigInt(bit)) & 1n);
    const described = bits.map((bit) =>
      names.has(bit) ? `'${names.get(bit)}' (bit ${bit})` : `bit ${bit}`
    );
    throw refused(
      label,
      `it uses incompatible qcow2 features this reader does not know: ${described.join(", ")}`,
    );
  }
  if (incompatible & INCOMPATIBLE.CORRUPT) {
    throw refused(
      label,
      `it is marked corrupt; repair it first with qemu-img check -r all ${shellQuote(label)}`,
    );
  }
  if (header.cryptMethod !== CRYPT_NONE) {
    const method = header.cryptMethod === CRYPT_AES
      ? "AES"
      : header.cryptMethod === CRYPT_LUKS
      ? "LUKS"
      : `method ${header.cryptMethod}`;
    throw refused(
      label,
      `it is encrypted (${method}); decrypt it first with qemu-img convert -O raw (the key given with --object secret and --image-opts)`,
    );
  }
  if (header.backingFileOffset !== 0) {
    const name = await backingName(header, source, label);
    throw refused(
      label,
      `it has a backing file '${name}': flatten it first with qemu-img convert -O qcow2 ${
        shellQuote(label)
      } ${shellQuote(label + ".flat.qcow2")}`,
    );
  }
  if (incompatible & INCOMPATIBLE.EXTERNAL_DATA_FILE) {
    throw refused(
      label,
      `its data is in an external data file; convert it first with qemu-img convert -O raw ${
        shellQuote(label)
      } ${shellQuote(label + ".raw")}`,
    );
  }
  if (
    incompatible & INCOMPATIBLE.COMPRESSION_TYPE && header.compressionType !== COMPRESSION_DEFLATE
  ) {
    const type = header.compressionType === COMPRESSION_ZSTD
      ? "zstd"
      : `type ${header.compressionType}`;
    throw refused(
      label,
      `its clusters are compressed with ${type}, only deflate is supported; convert it first with qemu-img convert -O qcow2 ${
        shellQuote(label)
      } ${shellQuote(label + ".deflate.qcow2")}`,
    );
  }
  if (
    incompatible & INCOMPATIBLE.EXTENDED_L2 && header.clusterBits < EXTENDED_L2_CLUSTER_BITS_MIN
  ) {
    throw damaged(
      label,
      `extended L2 entries need clusters of 16 KiB or more, not 2^${header.clusterBits}`,
    );
  }
  // A dirty image (lazy refcounts) has refcounts to repair, but its L1 and L2 tables are whole.
}

async function backingName(
  header: Qcow2Header,
  source: RandomAccessSource,
  label: string,
): Promise<string> {
  const { backingFileOffset: offset, backingFileSize: size } = header;
  if (size > BACKING_NAME_BYTES_MAX || offset + size > source.size) {
    throw damaged(label, `its backing file name (${size} bytes at ${hex(offset)}) is invalid`);
  }
  const bytes = new Uint8Array(size);
  await source.readInto(bytes, offset);
  return new TextDecoder().decode(bytes);
}

/** Reads the L1 entries the virtual size needs, checking each L2 table's place. */
async function readL1(
  header: Qcow2Header,
  source: RandomAccessSource,
  label: string,
): Promise<Float64Array> {
  const clusterBytes = 2 ** header.clusterBits;
  const extendedL2 = (header.incompatibleFeatures & BigInt(INCOMPATIBLE.EXTENDED_L2)) !== 0n;
  const needed = l1EntriesFor(header.size, header.clusterBits, extendedL2);
  if (header.l1Size < needed) {
    throw damaged(
      label,
      `its L1 table has ${header.l1Size} entries, the virtual size ${header.size} needs ${needed}`,
    );
  }
  if (header.l1Size * 8 > L1_BYTES_MAX) {
    // QEMU opens no larger L1 table either; a reader that did would allocate what a file says.
    throw damaged(
      label,
      `its L1 table has ${header.l1Size} entries, more than the ${L1_BYTES_MAX / 8} QEMU allows`,
    );
  }
  const l1 = new Float64Array(needed);
  if (needed === 0) return l1;
  const { l1TableOffset } = header;
  if (l1TableOffset % clusterBytes !== 0 || l1TableOffset === 0) {
    throw damaged(label, `its L1 table offset ${hex(l1TableOffset)} is not a cluster boundary`);
  }
  if (l1TableOffset + needed * 8 > source.size) {
    throw damaged(
      label,
      `its L1 table (${needed * 8} bytes at ${
        hex(l1TableOffset)
      }) lies past the end of the file (${source.size} bytes)`,
    );
  }
  const bytes = new Uint8Array(needed * 8);
  await source.readInto(bytes, l1TableOffset);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < needed; i++) {
    const l2Offset = entryOffset(view.getUint32(i * 8), view.getUint32(i * 8 + 4));
    if (l2Offset === 0) continue;
    if (l2Offset % clusterBytes !== 0) {
      throw damaged(label, `L1 entry ${i} points at ${hex(l2Offset)}, not at a cluster boundary`);
    }
    if (l2Offset + clusterBytes > source.size) {
      throw damaged(
        label,
        `L1 entry ${i} points at an L2 table at ${
          hex(l2Offset)
        }, past the end of the file (${source.size} bytes)`,
      );
    }
    l1[i] = l2Offset;
  }
  return l1;
}
