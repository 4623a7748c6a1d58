/**
 * Writes a qcow2 image (version 3, or 2 for `compat=0.10`) of 64 KiB clusters as data
 * streams in: each write of whole clusters appends them to the file and records them in their
 * L2 table on disk; what is never written stays unallocated, so the file holds only data.
 * Memory: the L1 table (8 bytes per 512 MiB of virtual disk) and one bit per cluster of the
 * L2 tables in use (1 KiB per 512 MiB); the refcounts are all one and need no memory.
 *
 * File layout: cluster 0 the header, then the L1 table, then L2 tables and data clusters in
 * the order they arrive; `finish` appends the refcount table and blocks, writes the L1 table,
 * and writes the header last, so a file cut short by a crash does not look like a qcow2 image.
 *
 * @module
 */

import { assert } from "../assert.ts";
import { ResultCode, SheepdogError } from "../errors.ts";
import {
  encodeHeader,
  ENTRY_COPIED_HIGH,
  HEADER_V3_BYTES,
  L1_BYTES_MAX,
  l1EntriesFor,
  l2Entries,
} from "./qcow2.ts";

/** Positional writes of a file. */
export interface RandomAccessSink {
  /** Writes all of `data` at byte `position`. */
  write(data: Uint8Array, position: number): Promise<void>;
  /** Sets the file's length (extending with zeros). */
  truncate(size: number): Promise<void>;
}

export const WRITER_CLUSTER_BITS = 16;
const CLUSTER_BYTES = 2 ** WRITER_CLUSTER_BITS;
const L2_ENTRIES = l2Entries(WRITER_CLUSTER_BITS, false);
/** 16-bit refcounts (the only width version 2 knows). */
const REFCOUNT_ORDER = 4;
const REFCOUNTS_PER_BLOCK = CLUSTER_BYTES / 2;
const REFCOUNT_TABLE_ENTRIES_PER_CLUSTER = CLUSTER_BYTES / 8;
/** The largest virtual disk: QEMU's 32 MiB L1 table limit with 64 KiB clusters (2 PiB). */
export const WRITER_SIZE_MAX = (L1_BYTES_MAX / 8) * L2_ENTRIES * CLUSTER_BYTES;

export interface Qcow2WriterOptions {
  /** Virtual disk size in bytes. */
  size: number;
  /** 3 (the default, QEMU's compat=1.1) or 2 (compat=0.10). */
  version?: 2 | 3;
}

/** A qcow2 image being written; `write` whole clusters once each, then `finish`. */
export class Qcow2Writer {
  readonly size: number;
  readonly version: 2 | 3;
  readonly clusterBytes = CLUSTER_BYTES;
  readonly #sink: RandomAccessSink;
  /** Host offset of each L2 table (0: not allocated yet). */
  readonly #l1: Float64Array;
  readonly #l1Clusters: number;
  /** Per allocated L2 table, one bit per entry written (a cluster is written once). */
  readonly #written = new Map<number, Uint8Array>();
  /** Host clusters in use: the next one allocated is this one. */
  #clusters: number;
  #finished = false;

  constructor(sink: RandomAccessSink, options: Qcow2WriterOptions) {
    const { size } = options;
    if (!(Number.isSafeInteger(size) && size > 0 && size <= WRITER_SIZE_MAX)) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot write a qcow2 image of ${size} bytes: the size must be 1..${WRITER_SIZE_MAX}`,
      );
    }
    this.#sink = sink;
    this.size = size;
    this.version = options.version ?? 3;
    this.#l1 = new Float64Array(l1EntriesFor(size, WRITER_CLUSTER_BITS, false));
    this.#l1Clusters = Math.ceil((this.#l1.length * 8) / CLUSTER_BYTES);
    this.#clusters = 1 + this.#l1Clusters;
  }

  /**
   * Stores `data` at virtual `offset`. The range must start at a cluster boundary and cover
   * whole clusters (the last may end at the end of the disk), none of them written before.
   * Writes may run concurrently.
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    assert(!this.#finished, "qcow2 writer: write after finish");
    assert(offset % CLUSTER_BYTES === 0, `qcow2 writer: offset ${offset} is not cluster aligned`);
    assert(data.length > 0 && offset + data.length <= this.size, "qcow2 writer: range");
    assert(
      data.length % CLUSTER_BYTES === 0 || offset + data.length === this.size,
      "qcow2 writer: a write covers whole clusters",
    );
    const firstCluster = offset / CLUSTER_BYTES;
    const clusters = Math.ceil(data.length / CLUSTER_BYTES);
    // Allocate everything before the first await: allocation is then atomic among writers.
    const pending: Promise<void>[] = [];
    let done = 0;
    while (done < clusters) {
      const cluster = firstCluster + done;
      const l1Index = Math.floor(cluster / L2_ENTRIES);
      const first = cluster % L2_ENTRIES;
      const count = Math.min(clusters - done, L2_ENTRIES - first);
      const l2Offset = this.#l2TableFor(l1Index);
      this.#markWritten(l1Index, first, count);
      const hostCluster = this.#clusters;
      this.#clusters += count;
      const entries = new Uint8Array(count * 8);
      const view = new DataView(entries.buffer);
      for (let i = 0; i < count; i++) {
        const host = (hostCluster + i) * CLUSTER_BYTES;
        view.setUint32(i * 8, (ENTRY_COPIED_HIGH | Math.floor(host / 2 ** 32)) >>> 0);
        view.setUint32(i * 8 + 4, host % 2 ** 32);
      }
      const bytes = data.subarray(done * CLUSTER_BYTES, (done + count) * CLUSTER_BYTES);
      pending.push(this.#sink.write(bytes, hostCluster * CLUSTER_BYTES));
      pending.push(this.#sink.write(entries, l2Offset + first * 8));
      done += count;
    }
    await Promise.all(pending);
  }

  /** Host offset of L2 table `l1Index`, allocated (as a zeroed cluster) on first use. */
  #l2TableFor(l1Index: number): number {
    const existing = this.#l1[l1Index]!;
    if (existing !== 0) return existing;
    const l2Offset = this.#clusters * CLUSTER_BYTES;
    this.#clusters++;
    this.#l1[l1Index] = l2Offset;
    this.#written.set(l1Index, new Uint8Array(L2_ENTRIES / 8));
    return l2Offset;
  }

  #markWritten(l1Index: number, first: number, count: number): void {
    const bits = this.#written.get(l1Index)!;
    for (let entry = first; entry < first + count; entry++) {
      const mask = 1 << (entry % 8);
      assert((bits[entry >> 3]! & mask) === 0, "qcow2 writer: a cluster is written twice");
      bits[entry >> 3]! |= mask;
    }
  }

  /**
   * Writes the refcount table and blocks, the L1 table, and the header; resolves with the
   * file's length. The caller syncs and closes the file.
   */
  async finish(): Promise<number> {
    assert(!this.#finished, "qcow2 writer: finished twice");
    this.#finished = true;
    const layout = refcountLayout(this.#clusters);
    const tableCluster = this.#clusters;
    const firstBlock = tableCluster + layout.tableClusters;
    const table = new Uint8Array(layout.tableClusters * CLUSTER_BYTES);
    const tableView = new DataView(table.buffer);
    const full = new Uint8Array(CLUSTER_BYTES);
    const fullView = new DataView(full.buffer);
    for (let i = 0; i < REFCOUNTS_PER_BLOCK; i++) fullView.setUint16(i * 2, 1);
    for (let block = 0; block < layout.blocks; block++) {
      tableView.setBigUint64(block * 8, BigInt((firstBlock + block) * CLUSTER_BYTES));
      const counted = Math.min(
        REFCOUNTS_PER_BLOCK,
        layout.totalClusters - block * REFCOUNTS_PER_BLOCK,
      );
      const bytes = counted === REFCOUNTS_PER_BLOCK ? full : new Uint8Array(CLUSTER_BYTES);
      if (bytes !== full) bytes.set(full.subarray(0, counted * 2));
      await this.#sink.write(bytes, (firstBlock + block) * CLUSTER_BYTES);
    }
    await this.#sink.write(table, tableCluster * CLUSTER_BYTES);
    const l1 = new Uint8Array(this.#l1.length * 8);
    const l1View = new DataView(l1.buffer);
    for (let i = 0; i < this.#l1.length; i++) {
      const l2Offset = this.#l1[i]!;
      if (l2Offset === 0) continue;
      l1View.setUint32(i * 8, (ENTRY_COPIED_HIGH | Math.floor(l2Offset / 2 ** 32)) >>> 0);
      l1View.setUint32(i * 8 + 4, l2Offset % 2 ** 32);
    }
    await this.#sink.write(l1, CLUSTER_BYTES);
    const fileBytes = layout.totalClusters * CLUSTER_BYTES;
    await this.#sink.truncate(fileBytes);
    const header = encodeHeader({
      version: this.version,
      backingFileOffset: 0,
      backingFileSize: 0,
      clusterBits: WRITER_CLUSTER_BITS,
      size: this.size,
      cryptMethod: 0,
      l1Size: this.#l1.length,
      l1TableOffset: CLUSTER_BYTES,
      refcountTableOffset: tableCluster * CLUSTER_BYTES,
      refcountTableClusters: layout.tableClusters,
      nbSnapshots: 0,
      snapshotsOffset: 0,
      incompatibleFeatures: 0n,
      compatibleFeatures: 0n,
      autoclearFeatures: 0n,
      refcountOrder: REFCOUNT_ORDER,
      headerLength: HEADER_V3_BYTES,
      compressionType: 0,
    });
    // The header, then an empty header extension area (its end marker: 8 zero bytes).
    const headerCluster = new Uint8Array(header.length + 8);
    headerCluster.set(header);
    await this.#sink.write(headerCluster, 0);
    return fileBytes;
  }
}

/**
 * Where the refcounts go when `dataClusters` clusters (header, L1, L2 tables, data) come
 * first: the refcount table and blocks must count themselves too, so grow both until they
 * cover everything.
 */
export function refcountLayout(
  dataClusters: number,
): { tableClusters: number; blocks: number; totalClusters: number } {
  let blocks = 0;
  let tableClusters = 0;
  // Each turn only grows the two counts, and they converge in a few turns.
  for (let turn = 0; turn < 64; turn++) {
    const total = dataClusters + tableClusters + blocks;
    const needBlocks = Math.ceil(total / REFCOUNTS_PER_BLOCK);
    const needTable = Math.ceil(needBlocks / REFCOUNT_TABLE_ENTRIES_PER_CLUSTER);
    if (needBlocks === blocks && needTable === tableClusters) {
      return { tableClusters, blocks, totalClusters: total };
    }
    blocks = needBlocks;
    tableClusters = needTable;
  }
  throw new Error("qcow2 writer: refcount layout does not converge");
}
