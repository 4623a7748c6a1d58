/**
 * Looking at images as qemu-img does: `img map` (extents, `--output=json` in qemu-img's
 * shape), `img compare` (exit 0 identical, 1 different, 2 error) and `img check` (every copy of
 * every object the VDI reads verified and repaired by the scrub, and a report).
 *
 * @module
 */

import { isZero } from "../core/bytes.ts";
import { VdiIo } from "../core/vdi/io.ts";
import type { Vid } from "../core/vdi/oid.ts";
import { type AdminService, parseVdiRef, type ScrubRow } from "../net/admin/admin_service.ts";
import { Opcode } from "../net/object/ops.ts";
import type { ClusterAddress } from "./cli.ts";
import { type ImageEnd, openReader, type Reader } from "./img_convert.ts";

/** One extent as `qemu-img map --output=json` prints it. */
export interface MapExtent {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Where the extent is: a VDI is addressed as a raw device, so `start`. */
  offset: number;
  /** The VDI the data is stored under (the image itself, a snapshot or a clone's base). */
  owner?: string;
}

/**
 * The extents of a VDI from its table: per object, unallocated (a hole that reads zeros) or
 * data at `depth` (0: the VDI's own object, n: an ancestor n parent links up), in the words
 * `qemu-img map -f raw` uses for the VDI's NBD export (which sees every extent at depth 0).
 * `ancestry` lists the VDI's vid and its ancestors', nearest first.
 */
export function mapExtents(
  table: Uint32Array,
  sizeBytes: number,
  objectBytes: number,
  ancestry: Vid[],
): Omit<MapExtent, "owner">[] {
  const extents: Omit<MapExtent, "owner">[] = [];
  for (let start = 0, index = 0; start < sizeBytes; start += objectBytes, index++) {
    const length = Math.min(objectBytes, sizeBytes - start);
    const owner = table[index]!;
    const found = ancestry.indexOf(owner);
    // An owner off the chain (a deleted snapshot's object a clone still reads) is one level up.
    const depth = owner === 0 ? 0 : found === -1 ? 1 : found;
    const last = extents[extents.length - 1];
    const data = owner !== 0;
    if (last && last.data === data && last.depth === depth) {
      last.length += length;
      continue;
    }
    // As qemu-img maps the VDI's NBD export (a raw device): a hole is present and zero.
    extents.push({ start, length, depth, present: true, zero: !data, data, offset: start });
  }
  return extents;
}

/** The extents of `NAME[:SNAP]`, with the name of the VDI each data extent is stored under. */
export async function mapVdi(admin: AdminService, text: string): Promise<MapExtent[]> {
  const { name, ref } = parseVdiRef(text);
  const io = await VdiIo.open(admin.client, name, ref);
  const rows = await admin.vdis();
  const byVid = new Map(rows.map((r) => [r.vid, r]));
  const ancestry: Vid[] = [io.inode.vdiId];
  for (let vid = io.inode.parentVdiId; vid !== 0 && ancestry.length <= rows.length;) {
    ancestry.push(vid);
    vid = byVid.get(vid)?.parentVid ?? 0;
  }
  return mapExtents(io.inode.dataVdiId, io.sizeBytes, io.objectBytes, ancestry).map((e) => {
    if (!e.data) return e;
    const owner = byVid.get(ancestry[e.depth] ?? 0);
    return {
      ...e,
      owner: owner ? `${owner.name}${owner.snapshot ? `:${owner.snapId}` : ""}` : "?",
    };
  });
}

/** `qemu-img map --output=json`, byte for byte: one extent a line, `owner` left out. */
export function formatMapJson(extents: MapExtent[]): string {
  const lines = extents.map((e) => {
    const fields = [
      `"start": ${e.start}`,
      `"length": ${e.length}`,
      `"depth": ${e.depth}`,
      `"present": ${e.present}`,
      `"zero": ${e.zero}`,
      `"data": ${e.data}`,
    ];
    fields.push(`"offset": ${e.offset}`);
    return `{ ${fields.join(", ")}}`;
  });
  return `[${lines.join(",\n")}]`;
}

/** `qemu-img map`'s human format: the data extents, and the VDI each is stored under. */
export function formatMapHuman(extents: MapExtent[]): string {
  const hex = (n: number) => `0x${n.toString(16)}`.padEnd(16);
  const rows = extents.filter((e) => e.data).map((e) =>
    `${hex(e.start)}${hex(e.length)}${hex(e.offset)}${e.owner ?? ""}`
  );
  return ["Offset          Length          Mapped to       File", ...rows].join("\n");
}

/** What `compare` found: identical, or the first differing offset, and a size warning. */
export interface CompareResult {
  identical: boolean;
  /** qemu-img's offset: the 512-byte sector of the first differing byte. */
  mismatchAt?: number;
  sizeMismatch: boolean;
  /** The size both have: a mismatch at or past it is in the longer one's extra part. */
  common: number;
}

const COMPARE_CHUNK = 4 * 1024 * 1024;
const SECTOR = 512;

/** The offset qemu-img reports for a difference at byte `at`: its sector. */
function sectorOf(at: number): number {
  return Math.floor(at / SECTOR) * SECTOR;
}

/** The first index where `a` and `b` differ, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** The first non-zero byte of `reader` in [from, to), or -1. */
async function firstNonZero(reader: Reader, from: number, to: number): Promise<number> {
  for (let offset = from; offset < to; offset += COMPARE_CHUNK) {
    const data = await reader.read(offset, Math.min(COMPARE_CHUNK, to - offset));
    if (data === undefined || isZero(data)) continue;
    return offset + data.findIndex((byte) => byte !== 0);
  }
  return -1;
}

/**
 * Compares two images (VDIs or files) as `qemu-img compare` does: the common part byte for
 * byte (holes read as zeros), then, when the sizes differ, the longer one's extra part must be
 * zeros, unless `strict`, where a size mismatch is a difference by itself.
 */
export async function compareImages(
  a: ImageEnd,
  b: ImageEnd,
  cluster: ClusterAddress,
  strict: boolean,
): Promise<CompareResult> {
  const first = await openReader(a, cluster);
  try {
    const second = await openReader(b, cluster);
    try {
      const sizeMismatch = first.size !== second.size;
      const common = Math.min(first.size, second.size);
      if (sizeMismatch && strict) return { identical: false, sizeMismatch, common };
      for (let offset = 0; offset < common; offset += COMPARE_CHUNK) {
        const length = Math.min(COMPARE_CHUNK, common - offset);
        const [x, y] = await Promise.all([first.read(offset, length), second.read(offset, length)]);
        if (x === undefined && y === undefined) continue;
        const at = firstDifference(x ?? new Uint8Array(length), y ?? new Uint8Array(length));
        if (at !== -1) {
          return { identical: false, mismatchAt: sectorOf(offset + at), sizeMismatch, common };
        }
      }
      const longer = first.size > second.size ? first : second;
      const extra = await firstNonZero(longer, common, longer.size);
      if (extra !== -1) {
        return { identical: false, mismatchAt: sectorOf(extra), sizeMismatch, common };
      }
      return { identical: true, sizeMismatch, common };
    } finally {
      await second.close();
    }
  } finally {
    await first.close();
  }
}

/** The report of `img check`: the scrub passes over every VDI the image reads from. */
export interface CheckReport {
  /** The VDIs whose objects were checked (the image and what it shares). */
  vdis: string[];
  objectsChecked: number;
  bytesVerified: number;
  badBlocks: number;
  repaired: number;
  repairFailed: number;
  /** Findings, as the scrub words them. */
  findings: string[];
  /** Nodes where a pass did not complete. */
  incomplete: string[];
}

/** The vids `io` reads objects of: its own and those it shares, its own first. */
export function vidsRead(io: VdiIo): Vid[] {
  const vids = new Set<Vid>([io.inode.vdiId]);
  for (const owner of io.inode.dataVdiId) if (owner !== 0) vids.add(owner);
  return [...vids];
}

/**
 * `img check NAME`: a scrub pass (the code of `shepherd cluster scrub NAME`: every block of
 * every copy verified against its checksums, replica digests compared, bad or missing copies
 * repaired) over each VDI whose objects `NAME` reads, one after another, summed up.
 */
export async function checkVdi(
  admin: AdminService,
  text: string,
  waitForScrub: (admin: AdminService, started: ScrubRow[]) => Promise<ScrubRow[]>,
): Promise<CheckReport> {
  const { name, ref } = parseVdiRef(text);
  const io = await VdiIo.open(admin.client, name, ref);
  const rows = await admin.vdis();
  const byVid = new Map(rows.map((r) => [r.vid, r]));
  const report: CheckReport = {
    vdis: [],
    objectsChecked: 0,
    bytesVerified: 0,
    badBlocks: 0,
    repaired: 0,
    repairFailed: 0,
    findings: [],
    incomplete: [],
  };
  for (const vid of vidsRead(io)) {
    const row = byVid.get(vid);
    report.vdis.push(row ? `${row.name}${row.snapshot ? `:${row.snapId}` : ""}` : vid.toString(16));
    const started = await admin.client.json<ScrubRow[]>(Opcode.START_SCRUB, { vid });
    for (const node of await waitForScrub(admin, started)) {
      if (node.state === "unreachable" || node.state === "failed") {
        report.incomplete.push(node.node);
        continue;
      }
      report.objectsChecked += node.objectsChecked ?? 0;
      report.bytesVerified += node.bytesVerified ?? 0;
      report.badBlocks += node.badBlocks ?? 0;
      report.repaired += node.repaired ?? 0;
      report.repairFailed += node.repairFailed ?? 0;
      for (const finding of node.findings ?? []) {
        report.findings.push(
          `${finding.oid} on ${finding.node}: ${finding.problem} (${
            finding.repaired ? "repaired" : "NOT repaired"
          })`,
        );
      }
    }
  }
  return report;
}
