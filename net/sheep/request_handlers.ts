/**
 * The op table: every opcode a sheep answers, with whether it runs before `mkfs` ("force") and
 * its handler. A handler returns the response payload (and may set response header fields);
 * errors thrown become result codes, with the message as payload where the client reads one
 * (`errorPayload`).
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import {
  dataVdiIdOffset,
  decodeInodeHeader,
  decodeName,
  INODE_HEADER_SIZE,
  type InodeHeader,
  isDeleted,
  isSnapshot,
} from "../../core/vdi/inode.ts";
import { dataOid, isDataOid, isVdiOid, oidToIndex, oidToVid, vdiOid } from "../../core/vdi/oid.ts";
import { MESSAGE_BYTES_MAX } from "../../core/limits.ts";
import { checkListFormat, encodeCopyList, listLocalCopies } from "./recovery.ts";
import { scrubStatusRequest, startScrubRequest } from "./scrub_ops.ts";
import type { Changes } from "./changes.ts";
import { decodeSalvaged, encodeSalvaged } from "./salvaged_copy.ts";
import { decodeHealBlocks, encodeHealed } from "./healed_blocks.ts";
import type { SnapshotRef } from "../../core/vdi/registry.ts";
import type { Header, Message } from "../object/header.ts";
import {
  Flag,
  isInternalOpcode,
  Opcode,
  opcodeName,
  SD_PROTO_VER,
  SD_SHEEP_PROTO_VER,
} from "../object/ops.ts";
import { observeObjectRequest } from "../metrics/object_protocol.ts";
import { RETRY_FOR_MS, RETRY_INTERVAL_MS } from "./retry_policy.ts";
import { FLAG_STRICT } from "../../core/cluster/cluster_config.ts";
import { weighByCapacity } from "../../core/hash/ring.ts";
import { storageNodesOf } from "./member_info.ts";
import { fanOut } from "./fan_out.ts";
import {
  ADMIN_LOCK_VID,
  type ReplicatedStateReader,
} from "../../core/cluster/cluster_state_machine.ts";
import type { ClusterView } from "../../core/cluster/view.ts";
import { type ClusterState, encodeClusterState } from "./cluster_state.ts";
import { requestHeader } from "../object/client.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import type { ObjectStore, StoreHealth, StoreSpace } from "../../core/store/object_store.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { ClusterDriver } from "./cluster_driver.ts";
import type { Gateway, LocalObjects } from "./gateway.ts";
import type { Logger } from "./logger.ts";
import type { Recovery } from "./recovery.ts";
import type { RecoveryThrottle } from "./recovery_throttle.ts";
import type { ScrubHost } from "./scrub_ops.ts";
import type { SheepStatus } from "./sheep_status.ts";
import type { VdiService } from "./vdi_service.ts";
import type { AllocationCounts } from "./allocation_counts.ts";
import type { OldClientEntries } from "./old_client_entries.ts";
import { ownCounts, vdiSummary } from "./vdi_summary.ts";
import type { ClockReading } from "./clock_probe.ts";

/** What STAT_SHEEP says of a node's store: space, health (full disk, failed syncs), repairs. */
export interface NodeStoreState extends StoreSpace {
  health: StoreHealth;
  repairs: number;
}

/** How to format the cluster (MAKE_FS's JSON payload). */
export interface FormatOptions {
  copies: number;
  blockSizeShift: number;
  force: boolean;
  strict: boolean;
}

/**
 * What the op table uses of its node: the replicated state (read only: changes go through
 * events), the gateway and the local replicas, the store's health and space, VDI
 * administration, the view and status, the group, recovery and scrub, and the metrics.
 */
export interface RequestHost extends ReplicatedStateReader, ScrubHost {
  readonly id: string;
  readonly view: ClusterView;
  /** Notified at every new view (a request from a node ahead of us waits for ours). */
  readonly viewChanges: Changes;
  readonly status: SheepStatus;
  /** Copies a crash left suspect stop waiting for `nodes` (gone for good); resolves with how many waited. */
  forgetNodes(nodes: readonly string[]): Promise<number>;
  /** True when fewer zones than copies are alive. */
  readonly redundancyReduced: boolean;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly gateway: Pick<
    Gateway,
    | "read"
    | "write"
    | "create"
    | "remove"
    | "flush"
    | "checkRange"
    | "targets"
    | "observeVersion"
    | "timelineMs"
    | "lastVersion"
  >;
  readonly local: LocalObjects;
  readonly store: ObjectStore;
  /** Copies found bad or missing and replaced since start. */
  readonly repairs: number;
  readonly vdis: Pick<VdiService, "change" | "readInode" | "clientHeader">;
  /** The node's group membership; undefined for a sheep alone. */
  readonly member: Pick<ClusterDriver, "epochHistory" | "master" | "forceRecover"> | undefined;
  readonly recovery: Pick<Recovery, "status" | "active">;
  /** Told of client I/O (replica writes and reads for other nodes' clients); paces recovery. */
  readonly recoveryThrottle: Pick<RecoveryThrottle, "client" | "take" | "yielding">;
  /** Objects each VDI owns and shares, for this node's inode copies (VDI_SUMMARY). */
  readonly allocations: Pick<AllocationCounts, "counts">;
  /** Old clients' table entries this sheep knows are recorded (`recordOwnObject`). */
  readonly oldClientEntries: OldClientEntries;
  /** The wall clock: VDI dates. */
  now(): number;
  /** A clock nobody sets, for waits (`SheepOptions.monotonic`). */
  monotonic(): number;
  /** This node as the ring sees it. */
  ringNode(): RingNode;
  /** Throws the reason the node cannot serve clients now (unformatted, waiting, stopping). */
  checkServing(): void;
  /** The state a joining peer fetches (GET_CLUSTER_STATE). */
  clusterState(): ClusterState;
  lockVdi(vid: number, client: string, options?: { force?: boolean }): Promise<void>;
  unlockVdi(vid: number, client?: string): Promise<void>;
  /** A lock held by one of our clients' connections, released when it closes. */
  lockForConnection(vid: number, peer: string): Promise<void>;
  releaseForConnection(vid: number, peer: string): Promise<void>;
  makeFs(options: FormatOptions): Promise<void>;
}

type Handler = (
  host: RequestHost,
  request: Message,
  reply: Header,
  peer: string,
) => Promise<Uint8Array | void>;

interface Op {
  /** Allowed before the cluster is formatted. */
  force: boolean;
  handle: Handler;
}

const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

function json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function parseJson<T>(request: Message): T {
  try {
    return JSON.parse(new TextDecoder().decode(request.data)) as T;
  } catch {
    throw new SheepdogError(ResultCode.INVALID_PARMS, "Request payload is not valid JSON");
  }
}

/** name[256] (+ tag[256]) and snapid → the snapshot reference they name. */
function nameAndRef(request: Message): { name: string; ref: SnapshotRef } {
  const data = request.data;
  if (data.length !== 256 && data.length !== 512) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `VDI name payload must be 256 or 512 bytes, got ${data.length}`,
    );
  }
  const name = decodeName(data.subarray(0, 256));
  const tag = data.length === 512 ? decodeName(data.subarray(256, 512)) : "";
  const snapId = request.header.snapid;
  const ref = snapId !== 0 ? { snapId } : tag !== "" ? { tag } : undefined;
  return { name, ref };
}

function replyVdi(host: RequestHost, reply: Header, vid: number): void {
  const header = host.registry.get(vid);
  reply.rspVdiId = vid;
  reply.rspVdiCopies = header?.nrCopies ?? 0;
  reply.rspVdiBlockSizeShift = header?.blockSizeShift ?? 0;
}

const objectOps: Record<number, Op> = {
  [Opcode.READ_OBJ]: {
    force: false,
    handle: (host, { header }) => host.gateway.read(header.oid, header.offset, header.dataLength),
  },
  [Opcode.WRITE_OBJ]: {
    force: false,
    handle: async (host, request, _reply, peer) => {
      const { header, data } = request;
      checkWriter(host, header.oid, request, peer);
      const oldClient = !(header.flags & Flag.EXTENDED);
      if (isVdiOid(header.oid) && oldClient) {
        await oldClientInodeWrite(host, header.oid, data, header.offset);
      } else {
        await host.gateway.write(header.oid, data, header.offset);
        if (oldClient && isDataOid(header.oid)) await recordOwnObject(host, header.oid);
        await writeThrough(host, header);
      }
    },
  },
  [Opcode.CREATE_AND_WRITE_OBJ]: {
    force: false,
    handle: async (host, request, _reply, peer) => {
      const { header, data } = request;
      checkWriter(host, header.oid, request, peer);
      if (isVdiOid(header.oid) && !(header.flags & Flag.EXTENDED)) {
        // Inodes are made by VDI administration (NEW_VDI); no old client creates one.
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          "Inode objects are not created by clients",
        );
      }
      const cowFrom = header.flags & Flag.COW ? header.cowOid : undefined;
      await host.gateway.create(header.oid, data, header.offset, cowFrom);
    },
  },
  [Opcode.REMOVE_OBJ]: {
    force: false,
    handle: async (host, request, _reply, peer) => {
      const { header } = request;
      checkWriter(host, header.oid, request, peer);
      await host.gateway.remove(header.oid);
    },
  },
  [Opcode.FLUSH_VDI]: {
    force: false,
    handle: async (host, { header }) => {
      await host.gateway.flush(flushedVid(header));
    },
  },
};

/**
 * A write with Flag.DIRECT is answered once durable. QEMU's driver sends it with `cache=none`
 * and then never sends FLUSH_VDI (its flush returns at once): the original's store wrote with
 * O_SYNC, so without this, a guest's fsync would reach no disk. Creates are durable anyway, and
 * so is an old client's write into an inode (`oldClientInodeWrite`).
 */
async function writeThrough(host: RequestHost, header: Header): Promise<void> {
  if (header.flags & Flag.DIRECT) await host.gateway.flush(oidToVid(header.oid));
}

/**
 * A write by an old client (QEMU's driver) into an inode, which it keeps a copy of:
 * - into the header: through VDI administration (`VdiService.clientHeader`: tag and VM state,
 *   growing the size);
 * - into `data_vdi_id`: entries it set after allocating objects are written as they come, and
 *   made durable before the reply: the driver keeps its table in its own memory and goes on
 *   writing into those objects in place, so an entry a crash of every holder of the inode took
 *   off before a flush would never be written again, and the next open would create the object
 *   afresh over flushed writes (`VdiIo` writes its entries again at its flush instead; the
 *   sheep cannot, knowing no driver's table: simulation seed 26629); one
 *   entry cleared (a 4-byte write) is the discard of a whole object, which is then removed if
 *   the VDI owned it (a working VDI's own objects are in no other table).
 * Zeros written over several entries at once, over the VDI's last entry, or into a snapshot's
 * table are a table cleared before DEL_VDI (QEMU's `remove_objects`; 1.0's `dog vdi delete` did
 * the same) and change nothing: the delete that follows reclaims what only the deleted VDI held,
 * which can be told only while its table is whole. QEMU 5.2 even clears the table of the VDI it
 * has open, the working VDI, when it deletes one of its snapshots: written, that would lose the
 * working VDI's data (Sheepdog 1.0 wrote it). Its last entry is the one case where a single
 * cleared entry can be that too: a discard of the last object is then not done, as a discard
 * allows.
 */
async function oldClientInodeWrite(
  host: RequestHost,
  oid: bigint,
  data: Uint8Array,
  offset: number,
): Promise<void> {
  host.gateway.checkRange(oid, offset, data.length);
  const vid = oidToVid(oid);
  const inode = host.registry.get(vid);
  if (!inode || isDeleted(inode)) {
    throw new SheepdogError(ResultCode.NO_VDI, `Cannot find VDI with id ${vid.toString(16)}`);
  }
  const end = offset + data.length;
  if (offset < INODE_HEADER_SIZE) {
    const head = data.subarray(0, Math.min(end, INODE_HEADER_SIZE) - offset);
    await host.vdis.clientHeader(vid, head, offset);
  }
  if (end <= INODE_HEADER_SIZE) return;
  const start = Math.max(offset, INODE_HEADER_SIZE);
  const entries = data.subarray(start - offset);
  const cleared = entries.every((byte) => byte === 0);
  if (cleared && clearsTableBeforeDelete(inode, start, entries.length)) return;
  const discarded = cleared && entries.length === 4 && (start - INODE_HEADER_SIZE) % 4 === 0;
  let owner = 0;
  if (discarded) {
    const before = await host.gateway.read(oid, start, 4);
    owner = new DataView(before.buffer, before.byteOffset, 4).getUint32(0, true);
  }
  await host.gateway.write(oid, entries, start);
  const first = (start - INODE_HEADER_SIZE) / 4;
  if (!cleared) {
    await host.gateway.flush(vid);
    const view = new DataView(entries.buffer, entries.byteOffset, entries.length);
    const recorded = host.oldClientEntries.of(inode);
    for (let i = 0; Number.isInteger(first) && i + 4 <= entries.length; i += 4) {
      if (view.getUint32(i, true) === vid) recorded.add(first + i / 4);
      else recorded.delete(first + i / 4);
    }
    return;
  }
  host.oldClientEntries.of(inode).delete(first);
  if (owner !== vid) return;
  // The table first, durably: a crash in between leaves an orphan object, never a dangling
  // entry, also after an inode is rebuilt from crash-suspect copies (core/vdi/inode_merge.ts).
  await host.gateway.flush(vid);
  await host.gateway.remove(dataOid(vid, first));
}

/**
 * An old client writes in place into an object of its VDI only when the table it keeps in
 * memory names that object: it set the entry there once the object's create succeeded. Its
 * write of that entry into the inode may have failed all the same (a failed sync, a copy rolled
 * back): the driver answers the guest's write with EIO but keeps the entry, and never writes it
 * again, so every write after it would go into an object that the VDI's table does not name,
 * and that the next open reads as zeros (simulation with QEMU's driver, seed 26). So before the
 * first such write through this sheep is answered, the table is read, and the entry written,
 * durably, when it names another VDI or none. Entries this sheep wrote or checked are not read
 * again.
 */
async function recordOwnObject(host: RequestHost, oid: bigint): Promise<void> {
  const vid = oidToVid(oid);
  const inode = host.registry.get(vid);
  if (!inode || isDeleted(inode) || isSnapshot(inode)) return;
  const index = oidToIndex(oid);
  const recorded = host.oldClientEntries.of(inode);
  if (recorded.has(index)) return;
  const offset = dataVdiIdOffset(index);
  const bytes = await host.gateway.read(vdiOid(vid), offset, 4);
  const owner = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  if (owner !== vid) {
    host.logger.warn(
      `object ${index} of VDI ${vid.toString(16)} is written in place by an old client but ` +
        `its table names ${owner === 0 ? "no object" : `VDI ${owner.toString(16)}`}: recorded`,
    );
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, vid, true);
    await host.gateway.write(vdiOid(vid), entry, offset);
    await host.gateway.flush(vid);
  }
  recorded.add(index);
}

/** True when zeros over `length` bytes at `offset` clear a table before a delete. */
function clearsTableBeforeDelete(inode: InodeHeader, offset: number, length: number): boolean {
  if (isSnapshot(inode) || length > 4) return true;
  const objects = Math.ceil(inode.vdiSize / 2 ** inode.blockSizeShift);
  return offset === dataVdiIdOffset(objects - 1);
}

/**
 * A peer request was routed with the sender's view. A sender behind us must refresh its view
 * (OLD_NODE_VER); a sender ahead of us waits here briefly for our view to catch up.
 */
/** How long a request from a node at a newer epoch waits for this node's view to catch up. */
const EPOCH_CATCH_UP_MS = 3000;

async function checkEpoch(host: RequestHost, header: Header): Promise<void> {
  if (header.flags & Flag.RECOVERY || header.epoch === 0) return;
  if (header.epoch < host.view.epoch) {
    throw new SheepdogError(
      ResultCode.OLD_NODE_VER,
      `Request epoch ${header.epoch} is older than ${host.view.epoch}`,
    );
  }
  await host.viewChanges.until(() => header.epoch <= host.view.epoch, EPOCH_CATCH_UP_MS);
  if (header.epoch > host.view.epoch) {
    throw new SheepdogError(
      ResultCode.NEW_NODE_VER,
      `Request epoch ${header.epoch} is newer than ${host.view.epoch}`,
    );
  }
}

/**
 * A read for another node's recovery (`Flag.BACKGROUND`) waits its turn while this node's
 * clients are busy, and its reply says so (`Flag.BUSY`): the puller turns to other holders.
 */
async function paceBackground(host: RequestHost, reply: Header, bytes: number): Promise<void> {
  if (host.recoveryThrottle.yielding) reply.flags |= Flag.BUSY;
  await host.recoveryThrottle.take(bytes);
}

/** A peer object request's range must lie inside the object before anything is allocated. */
function checkPeerRange(host: RequestHost, header: Header, length: number): void {
  if (length > MESSAGE_BYTES_MAX) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Length ${length} is over the limit`);
  }
  host.gateway.checkRange(header.oid, header.offset, length);
}

const peerOps: Record<number, Op> = {
  [Opcode.READ_PEER]: {
    force: true,
    handle: async (host, { header }, reply) => {
      checkPeerRange(host, header, header.dataLength);
      await checkEpoch(host, header);
      // Recovery and repairs copy whole objects as they are, with their version; clients read
      // copies that recovery has brought up to date.
      if (header.flags & Flag.RECOVERY) {
        if (header.flags & Flag.BACKGROUND) await paceBackground(host, reply, header.dataLength);
        const meta = await host.local.meta(header.oid);
        reply.rspObjVersion = meta?.version ?? 0;
        return await host.local.readCopy(header.oid, header.offset, header.dataLength);
      }
      host.recoveryThrottle.client();
      return await host.local.read(header.oid, header.offset, header.dataLength);
    },
  },
  [Opcode.WRITE_PEER]: {
    force: true,
    handle: async (host, { header, data }, reply) => {
      if (!(header.flags & Flag.RECOVERY)) host.recoveryThrottle.client();
      checkPeerRange(host, header, data.length);
      await checkEpoch(host, header);
      // This node's own writes go above it too (and a version far ahead of its clock is said).
      host.gateway.observeVersion(header.objVersion, header.oid);
      reply.rspObjVersion = await host.local.write(
        header.oid,
        data,
        header.offset,
        header.objVersion,
      );
    },
  },
  [Opcode.CREATE_AND_WRITE_PEER]: {
    force: true,
    handle: async (host, { header, data }, reply) => {
      if (!(header.flags & Flag.RECOVERY)) host.recoveryThrottle.client();
      const size = header.objSize;
      if (size <= 0 || size > MESSAGE_BYTES_MAX || header.offset + data.length > size) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          `Object size ${size} cannot hold ${header.offset}+${data.length}`,
        );
      }
      await checkEpoch(host, header);
      host.gateway.observeVersion(header.objVersion, header.oid);
      // The replaced copy's version, as WRITE_PEER answers (the gateway raises a create under it).
      reply.rspObjVersion = await host.local.create(header.oid, data, header.offset, {
        size,
        version: header.objVersion,
        unverified: (header.flags & Flag.UNVERIFIED) !== 0,
      });
    },
  },
  [Opcode.REMOVE_PEER]: {
    force: true,
    handle: async (host, { header }, reply) => {
      await checkEpoch(host, header);
      reply.rspObjVersion = await host.local.remove(header.oid);
    },
  },
  [Opcode.FLUSH_PEER]: {
    force: true,
    handle: (host, { header }) => host.store.flush(flushedVid(header)),
  },
  [Opcode.GET_OBJ_META]: {
    force: true,
    handle: async (host, { header }) => json((await host.local.meta(header.oid)) ?? null),
  },
  [Opcode.GET_OBJ_SALVAGE]: {
    force: true,
    handle: async (sheep, { header }, reply) => {
      if (header.flags & Flag.BACKGROUND) {
        await paceBackground(sheep, reply, (await sheep.local.meta(header.oid))?.size ?? 0);
      }
      const meta = await sheep.local.meta(header.oid);
      if (!meta) throw new SheepdogError(ResultCode.NO_OBJ, "No such object");
      reply.rspObjVersion = meta.version;
      const suspect = (header.flags & Flag.UNVERIFIED) !== 0;
      return encodeSalvaged(await sheep.local.salvage(header.oid, { suspect }));
    },
  },
  [Opcode.PUT_SALVAGED_PEER]: {
    force: true,
    handle: async (sheep, { header, data }, reply) => {
      const salvaged = decodeSalvaged(data);
      const size = header.objSize;
      if (size <= 0 || size > MESSAGE_BYTES_MAX || salvaged.data.length !== size) {
        throw new SheepdogError(ResultCode.INVALID_PARMS, `Salvaged copy is not ${size} bytes`);
      }
      await checkEpoch(sheep, header);
      const unverified = (header.flags & Flag.UNVERIFIED) !== 0;
      reply.rspObjVersion = await sheep.local.create(header.oid, salvaged.data, 0, {
        size,
        version: header.objVersion,
        badBlocks: salvaged.badBlocks,
        expected: salvaged.expected,
        unverified,
        ...(unverified && salvaged.changed ? { changed: salvaged.changed } : {}),
        ...(salvaged.replacing !== undefined ? { replacing: salvaged.replacing } : {}),
      });
    },
  },
  [Opcode.HEAL_BLOCKS_PEER]: {
    force: true,
    handle: async (host, { header, data }) => {
      const blocks = decodeHealBlocks(data);
      await checkEpoch(host, header);
      return encodeHealed(await host.local.healBlocks(header.oid, blocks));
    },
  },
  [Opcode.GET_OBJ_LIST]: {
    force: true,
    handle: async (host, { data }) => {
      checkListFormat(data, host.config?.ctimeMs);
      return encodeCopyList(await listLocalCopies(host.store));
    },
  },
  [Opcode.GET_CLUSTER_STATE]: {
    force: true,
    handle: (host) => Promise.resolve(encodeClusterState(host.clusterState())),
  },
  [Opcode.GET_CLOCK]: {
    force: true,
    handle: (host) => {
      const reading: ClockReading = {
        timelineMs: host.gateway.timelineMs(),
        version: host.gateway.lastVersion(),
      };
      return Promise.resolve(json(reading));
    },
  },
};

/** FLUSH_VDI and FLUSH_PEER name the VDI by its inode oid (QEMU's driver does); 0 = everything. */
function flushedVid(header: Header): number | undefined {
  return header.oid === 0n ? undefined : oidToVid(header.oid);
}

/** Who a request comes from, as attach locks name it: an old client is known by its address. */
function clientOf(peer: string): string {
  return peer.replace(/:\d+$/, "");
}

/**
 * One writer per VDI, on the object port too: a write to an object of an attached VDI comes from
 * the client that attached it (an old client, matched by address as its lock is; one of ours by
 * the connection that holds it), or it is refused. A VDI attached over NBD is written by the sheep itself, never through this port, so
 * every object-port write to it is another writer's.
 */
function checkWriter(host: RequestHost, oid: bigint, request: Message, peer: string): void {
  const lock = host.locks.get(oidToVid(oid));
  if (!lock) return;
  const oldClient = (request.header.flags & Flag.EXTENDED) === 0;
  if (oldClient ? lock.client === clientOf(peer) : lock.client === peer) return;
  throw new SheepdogError(
    ResultCode.VDI_LOCKED,
    `Cannot write to VDI ${oidToVid(oid).toString(16)}: it is attached by ${lock.client}`,
  );
}

/**
 * Refuses to change `vid` under the client that has it attached: deleting, rolling back,
 * resizing, renaming or flattening it is for that client alone, naming the holder otherwise.
 * The connection holding it may (`img import-diff`, see LOCK_VDI). QEMU's driver attaches a VDI
 * (LOCK_VDI) and then reverts it on other connections of its own (DEL_VDI of the working VDI,
 * NEW_VDI from the snapshot), so an old client's holder is matched by address, as Sheepdog 1.0
 * matched the lock's owner by node. Our own clients (`Flag.EXTENDED`) act as administrators and
 * are refused whoever else holds it.
 */
function refuseAttached(
  host: RequestHost,
  target: { vid: number; action: string; why?: string },
  request: Message,
  peer: string,
): void {
  const lock = host.locks.get(target.vid);
  if (!lock || lock.client === peer) return;
  const administrator = (request.header.flags & Flag.EXTENDED) !== 0;
  if (!administrator && lock.client === clientOf(peer)) return;
  const why = target.why ? `, ${target.why}` : "";
  throw new SheepdogError(
    ResultCode.VDI_LOCKED,
    `Cannot ${target.action}: it is attached by ${lock.client}${why}; detach it first`,
  );
}

const vdiOps: Record<number, Op> = {
  [Opcode.NEW_VDI]: { force: false, handle: newVdi },
  [Opcode.DEL_VDI]: {
    force: false,
    handle: async (host, request, _reply, peer) => {
      const { name, ref } = nameAndRef(request);
      const vid = host.registry.lookup(name, ref).vdiId;
      refuseAttached(host, { vid, action: `delete '${name}'` }, request, peer);
      await host.vdis.change({ type: "delete", vid });
    },
  },
  [Opcode.GET_VDI_INFO]: {
    force: false,
    handle: (host, request, reply) => {
      const { name, ref } = nameAndRef(request);
      replyVdi(host, reply, host.registry.lookup(name, ref).vdiId);
      return Promise.resolve();
    },
  },
  [Opcode.LOCK_VDI]: {
    force: false,
    handle: async (host, request, reply, peer) => {
      const { name, ref } = nameAndRef(request);
      const header = host.registry.lookup(name, ref);
      // One writer per VDI, as Sheepdog 1.0 with locking on (`cluster format -l`): a working
      // VDI attached by anyone is refused (QEMU: "cannot get vdi info, VDI is already locked"),
      // until its holder releases it, or an operator does (`shepherd vdi unlock`). A snapshot
      // is read-only: attaching it is a lookup, any number of readers share it.
      if (!isSnapshot(header)) {
        const lock = host.locks.get(header.vdiId);
        if (lock) {
          throw new SheepdogError(
            ResultCode.VDI_LOCKED,
            `Cannot attach '${name}': it is in use by ${lock.client}`,
          );
        }
        // Our clients (`img convert -n`, ...) hold it for their connection, named by it; an old
        // client by its address, for as long as it says (it reconnects and goes on writing).
        if (request.header.flags & Flag.EXTENDED) await host.lockForConnection(header.vdiId, peer);
        else await host.lockVdi(header.vdiId, clientOf(peer));
      }
      replyVdi(host, reply, header.vdiId);
    },
  },
  [Opcode.RELEASE_VDI]: {
    force: false,
    handle: async (host, { header }, _reply, peer) => {
      // The holder releases its own lock. A release by anyone else changes nothing and
      // succeeds, as releasing a VDI that is not locked did in 1.0 (an operator who must free
      // a dead client's VDI has UNLOCK_VDI: `shepherd vdi unlock`).
      const lock = host.locks.get(header.baseVdiId);
      if (!lock || lock.vid === ADMIN_LOCK_VID) return;
      if (header.flags & Flag.EXTENDED) await host.releaseForConnection(lock.vid, peer);
      else if (lock.client === clientOf(peer)) await host.unlockVdi(lock.vid, lock.client);
    },
  },
  [Opcode.UNLOCK_VDI]: {
    force: false,
    handle: async (host, request, _reply, peer) => {
      const { vid } = parseJson<{ vid: number }>(request);
      const lock = vid === ADMIN_LOCK_VID ? undefined : host.locks.get(vid);
      if (lock) {
        // An operator override: the log says who broke whose lock.
        host.logger.warn(
          `lock of VDI ${vid.toString(16)} broken by ${peer}: it was held by ${lock.client}` +
            (lock.node ? ` through ${lock.node}` : ""),
        );
        await host.unlockVdi(vid, lock.client);
      }
      return json({ client: lock?.client ?? null });
    },
  },
  [Opcode.READ_VDIS]: {
    force: false,
    handle: (host) => Promise.resolve(host.registry.bitmap.bytes),
  },
  [Opcode.GET_CLUSTER_DEFAULT]: {
    force: false,
    handle: (host, _request, reply) => {
      reply.rspDefaultCopies = host.config!.copies;
      reply.rspDefaultBlockSizeShift = host.config!.blockSizeShift;
      return Promise.resolve();
    },
  },
  [Opcode.RESIZE_VDI]: {
    force: false,
    handle: async (host, request, _reply, peer) => {
      const body = parseJson<{ name: string; sizeBytes: number; shrink?: boolean }>(request);
      const vid = host.registry.lookup(body.name).vdiId;
      // An attached client keeps the size it was given (NBD has no way to announce a new
      // one): resizing under it would leave it writing within a size that is not the VDI's.
      // The connection holding it resizes it knowingly (`img import-diff`).
      const why = "which would keep the old size";
      refuseAttached(host, { vid, action: `resize '${body.name}'`, why }, request, peer);
      const event = { type: "resize" as const, vid, sizeBytes: body.sizeBytes };
      await host.vdis.change(body.shrink === true ? { ...event, shrink: true } : event);
      return json({ ok: true });
    },
  },
  [Opcode.RENAME_VDI]: {
    force: false,
    handle: async (host, request, _reply, peer) => {
      const body = parseJson<{ name: string; newName: string }>(request);
      const vid = host.registry.lookup(body.name).vdiId;
      // Its client found it by the old name (QEMU's driver looks it up again on reconnect).
      const why = "which knows it by its old name";
      refuseAttached(host, { vid, action: `rename '${body.name}'`, why }, request, peer);
      await host.vdis.change({ type: "rename", vid, name: String(body.newName) });
      return json({ ok: true });
    },
  },
  [Opcode.FLATTEN_VDI]: {
    force: false,
    handle: async (host, request, _reply, peer) => {
      const body = parseJson<{ name: string }>(request);
      const vid = host.registry.lookup(body.name).vdiId;
      const why = "whose cached table would be stale";
      refuseAttached(host, { vid, action: `flatten '${body.name}'`, why }, request, peer);
      await host.vdis.change({ type: "flatten", vid });
      return json({ ok: true });
    },
  },
};

async function newVdi(
  host: RequestHost,
  request: Message,
  reply: Header,
  peer: string,
): Promise<void> {
  const { header, data } = request;
  if (data.length !== 256 && data.length !== 512) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `NEW_VDI payload must be 256 bytes, got ${data.length}`,
    );
  }
  const name = decodeName(data.subarray(0, 256));
  const nowMs = host.now();
  const config = host.config!;
  let vid: number;
  const base = header.baseVdiId !== 0 ? host.registry.get(header.baseVdiId) : undefined;
  if (header.snapid !== 0 && base && isSnapshot(base) && base.name === name) {
    // A snapshot request based on one of the name's snapshots is a rollback (Sheepdog's
    // rebase): the working VDI goes, a new one branches from the snapshot, and whoever had the
    // working VDI attached (its own revert) has the new one.
    const working = host.registry.live().find((h) => h.name === name && !isSnapshot(h));
    if (working) {
      refuseAttached(host, { vid: working.vdiId, action: `roll back '${name}'` }, request, peer);
    }
    vid = await host.vdis.change({ type: "rollback", snapshotVid: base.vdiId, nowMs });
  } else if (header.snapid !== 0) {
    const working = host.registry.lookup(name);
    if (header.baseVdiId !== 0 && header.baseVdiId !== working.vdiId) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot snapshot '${name}': base is not its working VDI`,
      );
    }
    // QEMU writes the tag into the working inode before asking; our clients send it along.
    const tag = data.length === 512
      ? decodeName(data.subarray(256))
      : await storedTag(host, working.vdiId);
    vid = await host.vdis.change({ type: "snapshot", vid: working.vdiId, tag, nowMs });
  } else if (header.baseVdiId !== 0) {
    const sizeBytes = header.vdiSize === 0 ? undefined : header.vdiSize;
    const event = { type: "clone" as const, baseVid: header.baseVdiId, name, nowMs };
    vid = await host.vdis.change(sizeBytes === undefined ? event : { ...event, sizeBytes });
    if (base?.name === name && !(header.flags & Flag.EXTENDED)) {
      // A new working VDI of a name from one of its own snapshots: QEMU's driver branching
      // (a revert after deleting the working VDI, or the first write to an opened snapshot).
      // It switches to the new VDI at once, so it has it attached, as it had the old one.
      await host.lockVdi(vid, clientOf(peer));
    }
  } else {
    vid = await host.vdis.change({
      type: "create",
      name,
      sizeBytes: header.vdiSize,
      copies: header.vdiCopies || config.copies,
      blockSizeShift: header.vdiBlockSizeShift || config.blockSizeShift,
      nowMs,
    });
  }
  replyVdi(host, reply, vid);
}

/** Space of a node's store: asked over the wire for peers; absent when it does not answer. */
async function nodeSpace(host: RequestHost, node: RingNode): Promise<Partial<NodeStoreState>> {
  if (node.id === host.id) {
    return { ...await host.store.space(), health: host.store.health(), repairs: host.repairs };
  }
  try {
    const response = await host.peers.get(node).send(requestHeader(Opcode.STAT_SHEEP));
    return JSON.parse(new TextDecoder().decode(response.data)) as NodeStoreState;
  } catch {
    return {};
  }
}

/**
 * FORGET_NODES' payload: `{"nodes": [...]}`, each "host:port" and none a member of `view` (a
 * node that is here is not gone).
 */
function parseForgetNodes(data: Uint8Array, view: { nodes: readonly { id: string }[] }): string[] {
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(data));
  } catch {
    throw new SheepdogError(ResultCode.INVALID_PARMS, "Forget request is not valid JSON");
  }
  const nodes = (body as { nodes?: unknown } | null)?.nodes;
  if (
    !Array.isArray(nodes) || nodes.length === 0 ||
    !nodes.every((n) => typeof n === "string" && /^[^\s:]+:\d{1,5}$/.test(n))
  ) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      "Forget request must name nodes as HOST:PORT",
    );
  }
  const present = nodes.filter((n) => view.nodes.some((m) => m.id === n));
  if (present.length > 0) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `${present.join(", ")} ${present.length === 1 ? "is" : "are"} in the cluster now: ` +
        "only a node that is gone can be forgotten",
    );
  }
  return nodes as string[];
}

/** One epoch of the history as STAT_CLUSTER reports it. */
interface EpochRow {
  epoch: number;
  timeMs: number;
  members: { id: string; witness: boolean; vnodes: number }[];
}

/**
 * The cluster's epoch history, the same whichever node is asked: each node logs only the views
 * it was in, so the answer is the union of every live node's log (STAT_CLUSTER with FWD asks a
 * node for its own), newest first.
 */
async function clusterHistory(host: RequestHost, own: EpochRow[]): Promise<EpochRow[]> {
  const byEpoch = new Map(own.map((row) => [row.epoch, row]));
  await Promise.all(
    host.view.nodes.filter((n) => n.id !== host.id).map(async (node) => {
      const header = requestHeader(Opcode.STAT_CLUSTER, { internal: true });
      header.flags |= Flag.FWD;
      try {
        const response = await host.peers.get(node).send(header);
        const theirs = JSON.parse(new TextDecoder().decode(response.data)) as {
          epochs: EpochRow[];
        };
        for (const row of theirs.epochs) if (!byEpoch.has(row.epoch)) byEpoch.set(row.epoch, row);
      } catch {
        // An unreachable node adds nothing; the others' logs still answer.
      }
    }),
  );
  return [...byEpoch.values()].sort((a, b) => b.epoch - a.epoch);
}

/** STAT_CLUSTER: status, config, epoch and its history (newest first), redundancy. */
async function clusterInfo(host: RequestHost, wholeCluster: boolean): Promise<Uint8Array> {
  const config = host.config;
  const log = host.member ? await host.member.epochHistory() : [];
  const own: EpochRow[] = log.map((record) => {
    // The vnodes each member had on that epoch's ring: weighed by capacity as its view was.
    const ring = weighByCapacity(
      storageNodesOf(record.members),
    );
    const vnodes = new Map(ring.map((node) => [node.id, node.vnodes]));
    return {
      epoch: record.epoch,
      timeMs: record.timeMs,
      members: record.members.map((m) => ({
        id: m.id,
        witness: m.witness,
        vnodes: vnodes.get(m.id) ?? 0,
      })),
    };
  });
  return json({
    status: host.status,
    ctimeMs: config?.ctimeMs ?? 0,
    copies: config?.copies ?? 0,
    blockSizeShift: config?.blockSizeShift ?? 0,
    strict: ((config?.flags ?? 0) & FLAG_STRICT) !== 0,
    epoch: host.view.epoch,
    zones: host.view.ring.zones,
    redundancyReduced: config !== undefined && host.redundancyReduced,
    master: host.member?.master ?? null,
    nodes: host.view.nodes.map((n) => n.id),
    epochs: wholeCluster ? await clusterHistory(host, own) : own,
  });
}

async function storedTag(host: RequestHost, vid: number): Promise<string> {
  const bytes = await host.gateway.read(vdiOid(vid), 0, INODE_HEADER_SIZE);
  return decodeInodeHeader(bytes).tag;
}

const adminOps: Record<number, Op> = {
  [Opcode.MAKE_FS]: {
    force: true,
    handle: async (host, request) => {
      await host.makeFs(parseJson(request));
      return json({ ok: true });
    },
  },
  [Opcode.STAT_SHEEP]: {
    force: true,
    handle: async (host, _request, reply) => {
      const space = await host.store.space();
      reply.rspStoreSize = space.totalBytes;
      reply.rspStoreFree = space.freeBytes;
      return json({ ...space, health: host.store.health(), repairs: host.repairs });
    },
  },
  [Opcode.STAT_CLUSTER]: {
    force: true,
    handle: (host, request) => clusterInfo(host, (request.header.flags & Flag.FWD) === 0),
  },
  [Opcode.FORCE_RECOVER]: {
    force: true,
    handle: (host) => {
      if (!host.member) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          "This sheep runs alone: nothing to recover",
        );
      }
      if (host.status === "left") host.checkServing(); // throws why, in one line
      if (!host.member.forceRecover()) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          `Cannot force recovery: the node is ${host.status}, not waiting for nodes`,
        );
      }
      return Promise.resolve(json({ ok: true }));
    },
  },
  [Opcode.STAT_RECOVERY]: {
    force: true,
    handle: async (host, request) => {
      const status = host.recovery.status();
      // A node that never had to recover is current: it reports the epoch it is at, not 0.
      const epoch = status.state === "idle"
        ? Math.max(status.epoch, host.view.epoch)
        : status.epoch;
      const own = { node: host.id, ...status, epoch };
      if (request.header.flags & Flag.FWD) return json([own]);
      return json(
        await Promise.all(host.view.nodes.map(async (node) => {
          if (node.id === host.id) return own;
          const header = requestHeader(Opcode.STAT_RECOVERY, { internal: true });
          header.flags |= Flag.FWD;
          try {
            const response = await host.peers.get(node).send(header);
            return (JSON.parse(new TextDecoder().decode(response.data)) as unknown[])[0];
          } catch (error) {
            return { node: node.id, state: "unreachable", error: (error as Error).message };
          }
        })),
      );
    },
  },
  [Opcode.GET_NODE_LIST]: {
    force: true,
    handle: async (host) => {
      const nodes = host.view.nodes.length > 0
        ? host.view.nodes
        : weighByCapacity([host.ringNode()]);
      return json(
        await Promise.all(
          nodes.map(async (node) => ({ ...node, ...await nodeSpace(host, node) })),
        ),
      );
    },
  },
  [Opcode.START_SCRUB]: {
    force: false,
    handle: (host, request) => startScrubRequest(host, request),
  },
  [Opcode.STAT_SCRUB]: {
    force: true,
    handle: (host, request) => scrubStatusRequest(host, request),
  },
  [Opcode.FORGET_NODES]: {
    force: true,
    handle: async (host, request) => {
      const nodes = parseForgetNodes(request.data, host.view);
      type Row = { node: string; held?: number; error?: string };
      const own = async (): Promise<Row> => ({
        node: host.id,
        held: await host.forgetNodes(nodes),
      });
      if (request.header.flags & Flag.FWD) return json([await own()]);
      const unreachable = (node: string, error: string): Row => ({ node, error });
      return json(await fanOut(host, Opcode.FORGET_NODES, own, unreachable, request.data));
    },
  },
  [Opcode.LIST_LOCKS]: {
    force: true,
    handle: (host) =>
      Promise.resolve(json([...host.locks.values()].filter((l) => l.vid !== ADMIN_LOCK_VID))),
  },
  [Opcode.VDI_SUMMARY]: {
    force: false,
    // With Flag.FWD: this node's own allocation counts, for the node gathering a summary.
    handle: async (host, request) =>
      json(request.header.flags & Flag.FWD ? await ownCounts(host) : await vdiSummary(host)),
  },
};

const OPS: Record<number, Op> = { ...objectOps, ...peerOps, ...vdiOps, ...adminOps };

function checkVersion(header: Header): void {
  if (isInternalOpcode(header.opcode)) {
    if (header.protoVer !== SD_SHEEP_PROTO_VER) {
      throw new SheepdogError(
        ResultCode.VER_MISMATCH,
        `Internal protocol version ${header.protoVer} is not supported`,
      );
    }
  } else if (header.protoVer > SD_PROTO_VER) {
    throw new SheepdogError(
      ResultCode.VER_MISMATCH,
      `Protocol version ${header.protoVer} is not supported`,
    );
  }
}

/** Dispatches one request, builds the response, counts and times it. Never rejects. */
export async function handleRequest(
  host: RequestHost,
  request: Message,
  peer: string,
): Promise<Message> {
  const started = performance.now();
  const response = await dispatch(host, request, peer);
  observeObjectRequest(host.metrics, { request, response }, (performance.now() - started) / 1000);
  return response;
}

async function dispatch(host: RequestHost, request: Message, peer: string): Promise<Message> {
  const reply = request.header.reply(ResultCode.SUCCESS, host.view.epoch);
  try {
    checkVersion(request.header);
    const op = OPS[request.header.opcode];
    if (!op) {
      throw new SheepdogError(
        ResultCode.NO_SUPPORT,
        `Unknown opcode 0x${request.header.opcode.toString(16)}`,
      );
    }
    if (!op.force) await untilServing(host, request.header);
    const data = (await op.handle(host, request, reply, peer)) ?? EMPTY;
    return { header: reply, data };
  } catch (error) {
    const code = error instanceof SheepdogError ? error.code : ResultCode.SYSTEM_ERROR;
    const message = error instanceof Error ? error.message : String(error);
    if (!(error instanceof SheepdogError)) {
      host.logger.error(`${opcodeName(request.header.opcode)} from ${peer} failed: ${message}`);
    }
    reply.result = code;
    return { header: reply, data: errorPayload(request.header, message) };
  }
}

/**
 * Throws unless the node serves clients. A node still forming or rejoining its cluster answers
 * WAIT_FOR_JOIN, which an old client takes for an I/O error (QEMU's driver does), where the VM
 * should see a stall: its public requests wait for the node first, as the gateway waits out a
 * changing cluster (RETRY_FOR_MS). A sheep restarted under a running VM is back within that.
 */
async function untilServing(host: RequestHost, request: Header): Promise<void> {
  const waiting = () => host.status === "waiting-for-nodes";
  const oldClient = !isInternalOpcode(request.opcode) && !(request.flags & Flag.EXTENDED);
  if (oldClient && waiting()) {
    const deadline = host.monotonic() + RETRY_FOR_MS;
    while (waiting() && host.monotonic() < deadline) {
      await host.viewChanges.until(() => !waiting(), RETRY_INTERVAL_MS);
    }
  }
  host.checkServing();
}

/**
 * What a failed request's reply carries. A public request is answered as Sheepdog 1.0 answered
 * it: the result code and no payload, since an old client may not read one (QEMU's driver
 * ignores `data_length` after a failed write, so stray bytes would be taken for the next
 * reply's header). Internal requests, and public ones from our clients (`Flag.EXTENDED`), get
 * the error's text.
 */
function errorPayload(request: Header, message: string): Uint8Array {
  const detailed = isInternalOpcode(request.opcode) || (request.flags & Flag.EXTENDED) !== 0;
  return detailed ? encoder.encode(message) : EMPTY;
}
