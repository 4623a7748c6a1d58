/**
 * The op table: every opcode a sheep answers, with whether it runs before `mkfs` ("force") and
 * its handler. A handler returns the response payload (and may set response header fields);
 * errors thrown become result codes with the message as payload.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import {
  decodeInodeHeader,
  decodeName,
  INODE_HEADER_SIZE,
  isSnapshot,
} from "../../core/vdi/inode.ts";
import { countObjects } from "../../core/vdi/cow.ts";
import { oidToVid, vdiOid } from "../../core/vdi/oid.ts";
import { MESSAGE_BYTES_MAX } from "../../core/limits.ts";
import { encodeCopyList, listLocalCopies } from "./recovery.ts";
import { scrubStatusRequest, startScrubRequest } from "./scrub_ops.ts";
import { decodeSalvaged, encodeSalvaged } from "./salvaged_copy.ts";
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
import { FLAG_STRICT } from "./cluster_config.ts";
import { encodeClusterState } from "./cluster_state.ts";
import { checkResponse, requestHeader } from "../object/client.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import type { StoreHealth, StoreSpace } from "../../core/store/object_store.ts";

/** What STAT_SHEEP says of a node's store: space, health (full disk, failed syncs), repairs. */
export interface NodeStoreState extends StoreSpace {
  health: StoreHealth;
  repairs: number;
}
import { ADMIN_LOCK_VID, type Sheep } from "./sheep.ts";

type Handler = (
  sheep: Sheep,
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

function replyVdi(sheep: Sheep, reply: Header, vid: number): void {
  const header = sheep.registry.get(vid);
  reply.rspVdiId = vid;
  reply.rspVdiCopies = header?.nrCopies ?? 0;
  reply.rspVdiBlockSizeShift = header?.blockSizeShift ?? 0;
}

const objectOps: Record<number, Op> = {
  [Opcode.READ_OBJ]: {
    force: false,
    handle: (sheep, { header }) => sheep.gateway.read(header.oid, header.offset, header.dataLength),
  },
  [Opcode.WRITE_OBJ]: {
    force: false,
    handle: async (sheep, { header, data }) => {
      await sheep.gateway.write(header.oid, data, header.offset);
    },
  },
  [Opcode.CREATE_AND_WRITE_OBJ]: {
    force: false,
    handle: async (sheep, { header, data }) => {
      const cowFrom = header.flags & Flag.COW ? header.cowOid : undefined;
      await sheep.gateway.create(header.oid, data, header.offset, cowFrom);
    },
  },
  [Opcode.REMOVE_OBJ]: {
    force: false,
    handle: async (sheep, { header }) => {
      await sheep.gateway.remove(header.oid);
    },
  },
  [Opcode.FLUSH_VDI]: {
    force: false,
    handle: async (sheep, { header }) => {
      await sheep.gateway.flush(flushedVid(header));
    },
  },
};

/**
 * A peer request was routed with the sender's view. A sender behind us must refresh its view
 * (OLD_NODE_VER); a sender ahead of us waits here briefly for our view to catch up.
 */
async function checkEpoch(sheep: Sheep, header: Header): Promise<void> {
  if (header.flags & Flag.RECOVERY || header.epoch === 0) return;
  if (header.epoch < sheep.view.epoch) {
    throw new SheepdogError(
      ResultCode.OLD_NODE_VER,
      `Request epoch ${header.epoch} is older than ${sheep.view.epoch}`,
    );
  }
  for (let waited = 0; header.epoch > sheep.view.epoch && waited < 3000; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (header.epoch > sheep.view.epoch) {
    throw new SheepdogError(
      ResultCode.NEW_NODE_VER,
      `Request epoch ${header.epoch} is newer than ${sheep.view.epoch}`,
    );
  }
}

/** A peer object request's range must lie inside the object before anything is allocated. */
function checkPeerRange(sheep: Sheep, header: Header, length: number): void {
  if (length > MESSAGE_BYTES_MAX) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Length ${length} is over the limit`);
  }
  sheep.gateway.checkRange(header.oid, header.offset, length);
}

const peerOps: Record<number, Op> = {
  [Opcode.READ_PEER]: {
    force: true,
    handle: async (sheep, { header }, reply) => {
      checkPeerRange(sheep, header, header.dataLength);
      await checkEpoch(sheep, header);
      // Recovery and repairs copy whole objects as they are, with their version; clients read
      // copies that recovery has brought up to date.
      if (header.flags & Flag.RECOVERY) {
        const meta = await sheep.local.meta(header.oid);
        reply.rspObjVersion = meta?.version ?? 0;
        return await sheep.local.readCopy(header.oid, header.offset, header.dataLength);
      }
      return await sheep.local.read(header.oid, header.offset, header.dataLength);
    },
  },
  [Opcode.WRITE_PEER]: {
    force: true,
    handle: async (sheep, { header, data }) => {
      checkPeerRange(sheep, header, data.length);
      await checkEpoch(sheep, header);
      await sheep.local.write(header.oid, data, header.offset, header.objVersion);
    },
  },
  [Opcode.CREATE_AND_WRITE_PEER]: {
    force: true,
    handle: async (sheep, { header, data }) => {
      const size = header.objSize;
      if (size <= 0 || size > MESSAGE_BYTES_MAX || header.offset + data.length > size) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          `Object size ${size} cannot hold ${header.offset}+${data.length}`,
        );
      }
      await checkEpoch(sheep, header);
      await sheep.local.create(header.oid, data, header.offset, {
        size,
        version: header.objVersion,
      });
    },
  },
  [Opcode.REMOVE_PEER]: {
    force: true,
    handle: async (sheep, { header }) => {
      await checkEpoch(sheep, header);
      await sheep.local.remove(header.oid);
    },
  },
  [Opcode.FLUSH_PEER]: {
    force: true,
    handle: (sheep, { header }) => sheep.store.flush(flushedVid(header)),
  },
  [Opcode.GET_OBJ_META]: {
    force: true,
    handle: async (sheep, { header }) => json((await sheep.local.meta(header.oid)) ?? null),
  },
  [Opcode.GET_OBJ_SALVAGE]: {
    force: true,
    handle: async (sheep, { header }, reply) => {
      const meta = await sheep.local.meta(header.oid);
      if (!meta) throw new SheepdogError(ResultCode.NO_OBJ, "No such object");
      reply.rspObjVersion = meta.version;
      return encodeSalvaged(await sheep.local.salvage(header.oid));
    },
  },
  [Opcode.PUT_SALVAGED_PEER]: {
    force: true,
    handle: async (sheep, { header, data }) => {
      const salvaged = decodeSalvaged(data);
      const size = header.objSize;
      if (size <= 0 || size > MESSAGE_BYTES_MAX || salvaged.data.length !== size) {
        throw new SheepdogError(ResultCode.INVALID_PARMS, `Salvaged copy is not ${size} bytes`);
      }
      await checkEpoch(sheep, header);
      await sheep.local.create(header.oid, salvaged.data, 0, {
        size,
        version: header.objVersion,
        badBlocks: salvaged.badBlocks,
        expected: salvaged.expected,
      });
    },
  },
  [Opcode.GET_OBJ_LIST]: {
    force: true,
    handle: async (sheep) => encodeCopyList(await listLocalCopies(sheep.store)),
  },
  [Opcode.GET_CLUSTER_STATE]: {
    force: true,
    handle: (sheep) => Promise.resolve(encodeClusterState(sheep.clusterState())),
  },
};

/** FLUSH_VDI and FLUSH_PEER name the VDI by its inode oid (QEMU's driver does); 0 = everything. */
function flushedVid(header: Header): number | undefined {
  return header.oid === 0n ? undefined : oidToVid(header.oid);
}

const vdiOps: Record<number, Op> = {
  [Opcode.NEW_VDI]: { force: false, handle: newVdi },
  [Opcode.DEL_VDI]: {
    force: false,
    handle: async (sheep, request) => {
      const { name, ref } = nameAndRef(request);
      const vid = sheep.registry.lookup(name, ref).vdiId;
      const lock = sheep.locks.get(vid);
      if (lock) {
        throw new SheepdogError(
          ResultCode.VDI_LOCKED,
          `Cannot delete '${name}': it is in use by ${lock.client}`,
        );
      }
      await sheep.vdis.change({ type: "delete", vid });
    },
  },
  [Opcode.GET_VDI_INFO]: {
    force: false,
    handle: (sheep, request, reply) => {
      const { name, ref } = nameAndRef(request);
      replyVdi(sheep, reply, sheep.registry.lookup(name, ref).vdiId);
      return Promise.resolve();
    },
  },
  [Opcode.LOCK_VDI]: {
    force: false,
    handle: async (sheep, request, reply, peer) => {
      const { name, ref } = nameAndRef(request);
      const vid = sheep.registry.lookup(name, ref).vdiId;
      // Sheepdog 1.0 without `format -l` treats LOCK_VDI as a lookup, so a reopen (or a
      // migration) never fails: record the latest holder for `info -t vm`, don't refuse.
      await sheep.lockVdi(vid, peer.replace(/:\d+$/, ""), { force: true });
      replyVdi(sheep, reply, vid);
    },
  },
  [Opcode.RELEASE_VDI]: {
    force: false,
    handle: (sheep, { header }) => sheep.unlockVdi(header.baseVdiId),
  },
  [Opcode.READ_VDIS]: {
    force: false,
    handle: (sheep) => Promise.resolve(sheep.registry.bitmap.bytes),
  },
  [Opcode.GET_CLUSTER_DEFAULT]: {
    force: false,
    handle: (sheep, _request, reply) => {
      reply.rspDefaultCopies = sheep.config!.copies;
      reply.rspDefaultBlockSizeShift = sheep.config!.blockSizeShift;
      return Promise.resolve();
    },
  },
  [Opcode.RESIZE_VDI]: {
    force: false,
    handle: async (sheep, request) => {
      const body = parseJson<{ name: string; sizeBytes: number }>(request);
      const vid = sheep.registry.lookup(body.name).vdiId;
      await sheep.vdis.change({ type: "resize", vid, sizeBytes: body.sizeBytes });
      return json({ ok: true });
    },
  },
};

async function newVdi(sheep: Sheep, request: Message, reply: Header): Promise<void> {
  const { header, data } = request;
  if (data.length !== 256 && data.length !== 512) {
    throw new SheepdogError(
      ResultCode.INVALID_PARMS,
      `NEW_VDI payload must be 256 bytes, got ${data.length}`,
    );
  }
  const name = decodeName(data.subarray(0, 256));
  const nowMs = sheep.now();
  const config = sheep.config!;
  let vid: number;
  const base = header.baseVdiId !== 0 ? sheep.registry.get(header.baseVdiId) : undefined;
  if (header.snapid !== 0 && base && isSnapshot(base) && base.name === name) {
    // A snapshot request based on one of the name's snapshots is a rollback (Sheepdog's
    // rebase): the working VDI goes, a new one branches from the snapshot.
    const working = sheep.registry.live().find((h) => h.name === name && !isSnapshot(h));
    const lock = working && sheep.locks.get(working.vdiId);
    if (lock) {
      throw new SheepdogError(
        ResultCode.VDI_LOCKED,
        `Cannot roll back '${name}': it is in use by ${lock.client}`,
      );
    }
    vid = await sheep.vdis.change({ type: "rollback", snapshotVid: base.vdiId, nowMs });
  } else if (header.snapid !== 0) {
    const working = sheep.registry.lookup(name);
    if (header.baseVdiId !== 0 && header.baseVdiId !== working.vdiId) {
      throw new SheepdogError(
        ResultCode.INVALID_PARMS,
        `Cannot snapshot '${name}': base is not its working VDI`,
      );
    }
    // QEMU writes the tag into the working inode before asking; our clients send it along.
    const tag = data.length === 512
      ? decodeName(data.subarray(256))
      : await storedTag(sheep, working.vdiId);
    vid = await sheep.vdis.change({ type: "snapshot", vid: working.vdiId, tag, nowMs });
  } else if (header.baseVdiId !== 0) {
    const sizeBytes = header.vdiSize === 0 ? undefined : header.vdiSize;
    const event = { type: "clone" as const, baseVid: header.baseVdiId, name, nowMs };
    vid = await sheep.vdis.change(sizeBytes === undefined ? event : { ...event, sizeBytes });
  } else {
    vid = await sheep.vdis.change({
      type: "create",
      name,
      sizeBytes: header.vdiSize,
      copies: header.vdiCopies || config.copies,
      blockSizeShift: header.vdiBlockSizeShift || config.blockSizeShift,
      nowMs,
    });
  }
  replyVdi(sheep, reply, vid);
}

/** Space of a node's store: asked over the wire for peers; absent when it does not answer. */
async function nodeSpace(sheep: Sheep, node: RingNode): Promise<Partial<NodeStoreState>> {
  if (node.id === sheep.id) {
    return { ...await sheep.store.space(), health: sheep.store.health(), repairs: sheep.repairs };
  }
  try {
    const response = checkResponse(
      await sheep.peers.get(node).transport.request(requestHeader(Opcode.STAT_SHEEP)),
    );
    return JSON.parse(new TextDecoder().decode(response.data)) as NodeStoreState;
  } catch {
    return {};
  }
}

/** STAT_CLUSTER: status, config, epoch and its history (newest first), redundancy. */
async function clusterInfo(sheep: Sheep): Promise<Uint8Array> {
  const config = sheep.config;
  const history = sheep.member ? await sheep.member.epochHistory() : [];
  return json({
    status: sheep.status,
    ctimeMs: config?.ctimeMs ?? 0,
    copies: config?.copies ?? 0,
    blockSizeShift: config?.blockSizeShift ?? 0,
    strict: ((config?.flags ?? 0) & FLAG_STRICT) !== 0,
    epoch: sheep.view.epoch,
    zones: sheep.view.ring.zones,
    redundancyReduced: config !== undefined && sheep.redundancyReduced,
    master: sheep.member?.master ?? null,
    nodes: sheep.view.nodes.map((n) => n.id),
    epochs: history.map((record) => ({
      epoch: record.epoch,
      timeMs: record.timeMs,
      members: record.members.map((m) => ({
        id: m.id,
        witness: m.witness,
        vnodes: m.info.vnodes ?? 0,
      })),
    })),
  });
}

async function storedTag(sheep: Sheep, vid: number): Promise<string> {
  const bytes = await sheep.gateway.read(vdiOid(vid), 0, INODE_HEADER_SIZE);
  return decodeInodeHeader(bytes).tag;
}

const adminOps: Record<number, Op> = {
  [Opcode.MAKE_FS]: {
    force: true,
    handle: async (sheep, request) => {
      await sheep.makeFs(parseJson(request));
      return json({ ok: true });
    },
  },
  [Opcode.STAT_SHEEP]: {
    force: true,
    handle: async (sheep, _request, reply) => {
      const space = await sheep.store.space();
      reply.rspStoreSize = space.totalBytes;
      reply.rspStoreFree = space.freeBytes;
      return json({ ...space, health: sheep.store.health(), repairs: sheep.repairs });
    },
  },
  [Opcode.STAT_CLUSTER]: {
    force: true,
    handle: (sheep) => clusterInfo(sheep),
  },
  [Opcode.FORCE_RECOVER]: {
    force: true,
    handle: (sheep) => {
      if (!sheep.member) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          "This sheep runs alone: nothing to recover",
        );
      }
      if (!sheep.member.forceRecover()) {
        throw new SheepdogError(
          ResultCode.INVALID_PARMS,
          `Cannot force recovery: the node is ${sheep.status}, not waiting for nodes`,
        );
      }
      return Promise.resolve(json({ ok: true }));
    },
  },
  [Opcode.STAT_RECOVERY]: {
    force: true,
    handle: async (sheep, request) => {
      const own = { node: sheep.id, ...sheep.recovery.status() };
      if (request.header.flags & Flag.FWD) return json([own]);
      return json(
        await Promise.all(sheep.view.nodes.map(async (node) => {
          if (node.id === sheep.id) return own;
          const header = requestHeader(Opcode.STAT_RECOVERY, { internal: true });
          header.flags |= Flag.FWD;
          try {
            const response = checkResponse(await sheep.peers.get(node).transport.request(header));
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
    handle: async (sheep) => {
      const nodes = sheep.view.nodes.length > 0 ? sheep.view.nodes : [sheep.ringNode()];
      return json(
        await Promise.all(
          nodes.map(async (node) => ({ ...node, ...await nodeSpace(sheep, node) })),
        ),
      );
    },
  },
  [Opcode.START_SCRUB]: {
    force: false,
    handle: (sheep, request) => startScrubRequest(sheep, request),
  },
  [Opcode.STAT_SCRUB]: {
    force: true,
    handle: (sheep, request) => scrubStatusRequest(sheep, request),
  },
  [Opcode.LIST_LOCKS]: {
    force: true,
    handle: (sheep) =>
      Promise.resolve(json([...sheep.locks.values()].filter((l) => l.vid !== ADMIN_LOCK_VID))),
  },
  [Opcode.VDI_SUMMARY]: {
    force: false,
    handle: async (sheep) => {
      const rows = [];
      for (const header of sheep.registry.live()) {
        const inode = await sheep.vdis.readInode(header.vdiId);
        const { dataVdiId: _table, ...fields } = inode;
        rows.push({
          ...fields,
          createTime: fields.createTime.toString(),
          snapCtime: fields.snapCtime.toString(),
          vmClockNsec: fields.vmClockNsec.toString(),
          vmStateSize: fields.vmStateSize.toString(),
          ...countObjects(inode),
        });
      }
      return json(rows);
    },
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
  sheep: Sheep,
  request: Message,
  peer: string,
): Promise<Message> {
  const started = performance.now();
  const response = await dispatch(sheep, request, peer);
  observeObjectRequest(sheep.metrics, { request, response }, (performance.now() - started) / 1000);
  return response;
}

async function dispatch(sheep: Sheep, request: Message, peer: string): Promise<Message> {
  const reply = request.header.reply(ResultCode.SUCCESS, sheep.view.epoch);
  try {
    checkVersion(request.header);
    const op = OPS[request.header.opcode];
    if (!op) {
      throw new SheepdogError(
        ResultCode.NO_SUPPORT,
        `Unknown opcode 0x${request.header.opcode.toString(16)}`,
      );
    }
    if (!op.force) sheep.checkServing();
    const data = (await op.handle(sheep, request, reply, peer)) ?? EMPTY;
    return { header: reply, data };
  } catch (error) {
    const code = error instanceof SheepdogError ? error.code : ResultCode.SYSTEM_ERROR;
    const message = error instanceof Error ? error.message : String(error);
    if (!(error instanceof SheepdogError)) {
      sheep.logger.error(`${opcodeName(request.header.opcode)} from ${peer} failed: ${message}`);
    }
    reply.result = code;
    return { header: reply, data: encoder.encode(message) };
  }
}
