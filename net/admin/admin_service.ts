/**
 * Every admin action, in one place: `shepherd`, `img` and the HTTP API all call this, over TCP
 * or in-process, so they share validation, behaviour and errors.
 *
 * @module
 */

import type { StoreHealth } from "../../core/store/object_store.ts";
import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { objectSize } from "../../core/limits.ts";
import { sheepTimeToMs } from "../../core/vdi/inode.ts";
import { validateTag } from "../../core/vdi/cow.ts";
import type { SnapshotRef } from "../../core/vdi/registry.ts";
import type { Vid } from "../../core/vdi/oid.ts";
import { ObjectClient } from "../object/client.ts";
import { Opcode } from "../object/ops.ts";
import type { RecoveryStatus } from "../sheep/recovery.ts";
import type { ScrubRow } from "../sheep/scrub_ops.ts";
import type { SummaryRow } from "../sheep/vdi_summary.ts";
import { type DuReport, duReport } from "./views.ts";

export type { ScrubRow };

/** One VDI or snapshot as listings show it. */
export interface VdiRow {
  name: string;
  vid: Vid;
  sizeBytes: number;
  allocatedBytes: number;
  sharedBytes: number;
  createdMs: number;
  snapshotMs: number;
  snapId: number;
  tag: string;
  snapshot: boolean;
  parentVid: Vid;
  copies: number;
  blockSizeShift: number;
  /** Who has it open, when someone does. */
  attachedTo?: string;
}

export interface NodeRow {
  id: string;
  host: string;
  port: number;
  zone: number;
  vnodes: number;
  usedBytes?: number;
  freeBytes?: number;
  totalBytes?: number;
  /** The node's store: a full disk, a failed sync, checksum errors (absent if it did not answer). */
  health?: StoreHealth;
  /** Copies found bad or missing and replaced since the node started. */
  repairs?: number;
}

export interface ClusterInfo {
  status: string;
  ctimeMs: number;
  copies: number;
  blockSizeShift: number;
  strict: boolean;
  epoch: number;
  zones: number;
  /** Fewer live zones than copies: objects have fewer replicas than asked for. */
  redundancyReduced: boolean;
  master: string | null;
  nodes: string[];
  /** Epoch history, newest first. */
  epochs: {
    epoch: number;
    timeMs: number;
    members: { id: string; witness: boolean; vnodes: number }[];
  }[];
}

/** One node's recovery, as that node reports it; `state` is "unreachable" when it did not answer. */
/** An attach lock as `shepherd vdi lock list` shows it. */
export interface LockRow {
  vdi: string;
  vid: number;
  client: string;
  node: string | null;
  sinceMs: number;
}

export type RecoveryRow = { node: string } & Omit<RecoveryStatus, "state"> & {
  state: RecoveryStatus["state"] | "unreachable";
};

/** Parses "NAME", "NAME:3" or "NAME:tag" into a name and a snapshot reference. */
export function parseVdiRef(text: string): { name: string; ref: SnapshotRef } {
  const colon = text.lastIndexOf(":");
  if (colon <= 0) return { name: text, ref: undefined };
  const name = text.slice(0, colon);
  const snap = text.slice(colon + 1);
  if (snap === "") return { name, ref: undefined };
  return { name, ref: /^\d+$/.test(snap) ? { snapId: Number(snap) } : { tag: snap } };
}

export class AdminService {
  readonly client: ObjectClient;

  constructor(client: ObjectClient) {
    this.client = client;
  }

  mkfs(
    options: { copies: number; blockSizeShift: number; force?: boolean; strict?: boolean },
  ): Promise<void> {
    return this.client.makeFs({ force: false, strict: false, ...options });
  }

  clusterInfo(): Promise<ClusterInfo> {
    return this.client.json<ClusterInfo>(Opcode.STAT_CLUSTER);
  }

  recovery(): Promise<RecoveryRow[]> {
    return this.client.json<RecoveryRow[]>(Opcode.STAT_RECOVERY);
  }

  /** After a full stop: start with the nodes that are back instead of waiting for the rest. */
  /**
   * `nodes` are gone for good: every node's copies a crash left suspect stop waiting for them
   * (net/sheep/crash_holds.ts). One row per node: the objects that were held there, or why it
   * did not answer.
   */
  forgetNodes(nodes: string[]): Promise<{ node: string; held?: number; error?: string }[]> {
    return this.client.json(Opcode.FORGET_NODES, { nodes });
  }

  async forceRecover(): Promise<void> {
    await this.client.json(Opcode.FORCE_RECOVER);
  }

  /** Every node's scrub: state, progress, counts and newest findings. */
  scrubStatus(): Promise<ScrubRow[]> {
    return this.client.json<ScrubRow[]>(Opcode.STAT_SCRUB);
  }

  /**
   * Starts a scrub pass on every node (a node already scrubbing reports its running pass);
   * `vdi` ("NAME" or "NAME:SNAP") limits it to that VDI's objects.
   */
  async startScrub(options: { vdi?: string } = {}): Promise<ScrubRow[]> {
    if (options.vdi === undefined) {
      return await this.client.json<ScrubRow[]>(Opcode.START_SCRUB, {});
    }
    const { name, ref } = parseVdiRef(options.vdi);
    const vid = await this.client.lookupVdi(name, ref);
    return await this.client.json<ScrubRow[]>(Opcode.START_SCRUB, { vid });
  }

  nodes(): Promise<NodeRow[]> {
    return this.client.json<NodeRow[]>(Opcode.GET_NODE_LIST);
  }

  /** Every live VDI and snapshot, with space accounting and attachment. */
  async vdis(): Promise<VdiRow[]> {
    const [rows, locks] = await Promise.all([
      this.client.json<SummaryRow[]>(Opcode.VDI_SUMMARY),
      this.client.json<{ vid: number; client: string }[]>(Opcode.LIST_LOCKS),
    ]);
    const attached = new Map(locks.map((l) => [l.vid, l.client]));
    return rows.map((row) => {
      const objectBytes = objectSize(row.blockSizeShift);
      const result: VdiRow = {
        name: row.name,
        vid: row.vdiId,
        sizeBytes: row.vdiSize,
        allocatedBytes: row.allocated * objectBytes,
        sharedBytes: row.shared * objectBytes,
        createdMs: sheepTimeToMs(BigInt(row.createTime)),
        snapshotMs: sheepTimeToMs(BigInt(row.snapCtime)),
        snapId: row.snapId,
        tag: row.tag,
        snapshot: BigInt(row.snapCtime) !== 0n,
        parentVid: row.parentVdiId,
        copies: row.nrCopies,
        blockSizeShift: row.blockSizeShift,
      };
      const client = attached.get(row.vdiId);
      if (client !== undefined) result.attachedTo = client;
      return result;
    });
  }

  /**
   * The VDI (or snapshot) `text` names, e.g. "Alice's Disk:1". Pass `rows` from `vdis()` when
   * the caller has them: listing reads every inode.
   */
  async vdi(text: string, rows?: VdiRow[]): Promise<VdiRow> {
    const { name, ref } = parseVdiRef(text);
    const vid = await this.client.lookupVdi(name, ref);
    const row = (rows ?? await this.vdis()).find((r) => r.vid === vid);
    if (!row) throw new SheepdogError(ResultCode.NO_VDI, `Cannot find VDI '${text}'`);
    return row;
  }

  createVdi(options: { name: string; sizeBytes: number; copies?: number }): Promise<Vid> {
    return this.client.newVdi(options);
  }

  /** Snapshots the working VDI `name`; returns the snapshot's vid (it keeps the old one). */
  async snapshot(name: string, tag = ""): Promise<Vid> {
    const working = await this.client.lookupVdi(name);
    if (tag !== "") {
      validateTag(tag);
      if (/^\d+$/.test(tag)) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          `Invalid tag '${tag}': a tag cannot be all digits (those are snap ids)`,
        );
      }
      // Tags are unique per VDI, as qemu-img snapshot -c insists: NAME:TAG must name one.
      const taken = (await this.vdis()).some((r) => r.name === name && r.snapshot && r.tag === tag);
      if (taken) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          `Cannot snapshot '${name}': it has a snapshot tagged '${tag}' already`,
        );
      }
    }
    await this.client.newVdi({ name, sizeBytes: 0, baseVid: working, snapshot: true, tag });
    return working;
  }

  /** Clones the snapshot `source` ("NAME:SNAP") as a new VDI `name`. */
  async clone(source: string, name: string, sizeBytes?: number): Promise<Vid> {
    const { name: sourceName, ref } = parseVdiRef(source);
    if (ref === undefined) {
      // A working VDI is not a snapshot: say so precisely rather than "no such snapshot".
      await this.client.lookupVdi(sourceName);
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot clone '${source}': only a snapshot can be cloned (use NAME:SNAPID or NAME:TAG)`,
      );
    }
    const baseVid = await this.client.lookupVdi(sourceName, ref);
    return await this.client.newVdi({ name, sizeBytes: sizeBytes ?? 0, baseVid });
  }

  /** Rolls `NAME` back to its snapshot `NAME:SNAP`: the working VDI is replaced by a branch. */
  async rollback(text: string): Promise<Vid> {
    const { name, ref } = parseVdiRef(text);
    if (ref === undefined) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot roll back to '${text}': name a snapshot (NAME:SNAP)`,
      );
    }
    const snapshotVid = await this.client.lookupVdi(name, ref);
    return await this.client.newVdi({ name, sizeBytes: 0, baseVid: snapshotVid, snapshot: true });
  }

  /**
   * Releases the attach lock of the VDI `text` names, whoever holds it (a client that died with
   * the VDI attached). Resolves with the holder it had, or null.
   */
  async unlockVdi(text: string): Promise<string | null> {
    const { name, ref } = parseVdiRef(text);
    const vid = await this.client.lookupVdi(name, ref);
    const { client } = await this.client.json<{ client: string | null }>(Opcode.UNLOCK_VDI, {
      vid,
    });
    return client;
  }

  /**
   * `shepherd vdi lock break`: releases the lock of the VDI `text` names, whoever holds it
   * (logged on the sheep). VDI_NOT_LOCKED, and nothing changes, when it is not attached.
   * Resolves with the holder it had.
   */
  async breakLock(text: string): Promise<string> {
    const holder = await this.unlockVdi(text);
    if (holder === null) {
      throw new SheepdogError(
        ResultCode.VDI_NOT_LOCKED,
        `Cannot break the lock of '${text}': it is not attached`,
      );
    }
    return holder;
  }

  /**
   * `img du`: space per VDI and snapshot, then the totals. `text` limits it to one VDI ("NAME":
   * its snapshots and itself) or one snapshot ("NAME:SNAP"); an unknown one is NO_VDI/NO_TAG.
   */
  async du(text?: string): Promise<DuReport> {
    const rows = await this.vdis();
    if (text === undefined) return duReport(rows);
    const { name, ref } = parseVdiRef(text);
    if (ref !== undefined) return duReport([await this.vdi(text, rows)]);
    const family = rows.filter((row) => row.name === name);
    if (family.length === 0) {
      await this.client.lookupVdi(name); // says why: no such VDI
      throw new SheepdogError(ResultCode.NO_VDI, `Cannot find VDI '${name}': it was deleted`);
    }
    return duReport(family);
  }

  /** Every attach lock: VDI, holder, the sheep it is attached through, since when. */
  async locks(): Promise<LockRow[]> {
    const [locks, rows] = await Promise.all([
      this.client.json<{ vid: number; client: string; sinceMs: number; node?: string }[]>(
        Opcode.LIST_LOCKS,
      ),
      this.vdis(),
    ]);
    const byVid = new Map(rows.map((row) => [row.vid, row]));
    return locks.map((lock) => ({
      vdi: byVid.get(lock.vid)?.name ?? `(vid ${lock.vid.toString(16)})`,
      vid: lock.vid,
      client: lock.client,
      node: lock.node ?? null,
      sinceMs: lock.sinceMs,
    }));
  }

  deleteVdi(text: string): Promise<void> {
    const { name, ref } = parseVdiRef(text);
    return this.client.deleteVdi(name, ref);
  }

  /** Grows `name`; with `shrink`, also makes it smaller (what lies past the new end goes). */
  async resize(name: string, sizeBytes: number, options: { shrink?: boolean } = {}): Promise<void> {
    await this.client.json(Opcode.RESIZE_VDI, { name, sizeBytes, shrink: options.shrink === true });
  }

  /** Renames the working VDI `name` and its snapshots. */
  async rename(name: string, newName: string): Promise<void> {
    await this.client.json(Opcode.RENAME_VDI, { name, newName });
  }

  /** Drops the parent link of a clone that reads nothing from its base any more. */
  async dropParent(name: string): Promise<void> {
    await this.client.json(Opcode.FLATTEN_VDI, { name });
  }
}
