/**
 * QEMU 5.2's sheepdog driver (block/sheepdog.c), as a client of the data-path simulation: the
 * "old client" that speaks the object protocol to one sheep, without `Flag.EXTENDED`, and keeps
 * the VDI's inode, with its `data_vdi_id` table, in its own memory.
 *
 * What it does as the driver does, request for request:
 * - open (`sd_open`): LOCK_VDI by name, then READ_OBJ of the whole inode into memory;
 * - read (`sd_co_readv`): one READ_OBJ per object piece whose entry is set, all in flight at
 *   once; a piece whose entry is 0 reads as zeros without asking;
 * - write (`sd_co_writev`): one request per object piece, all in flight at once: WRITE_OBJ when
 *   the entry names the VDI itself, else CREATE_AND_WRITE_OBJ of the VDI's own object (with
 *   Flag.COW and the parent's object as `cow_oid` when the entry names another VDI); a create
 *   that succeeds sets the entry in memory; once every piece has answered (`sd_write_done`), one
 *   WRITE_OBJ into the inode of the table entries from the lowest to the highest index created,
 *   as memory has them then (sent even when another piece failed);
 * - discard (`sd_co_pdiscard`): for each whole object in the range whose entry is set, the entry
 *   is zeroed in memory and 4 zero bytes are written over it in the inode (WRITE_OBJ);
 *   INVALID_PARMS turns discards off and counts as success;
 * - flush (`sd_co_flush_to_disk`): FLUSH_VDI of the inode's oid with cache=writeback; nothing
 *   with cache=none, where every request carries Flag.DIRECT instead of Flag.CACHE.
 *   INVALID_PARMS to a flush switches to Flag.DIRECT and counts as success;
 * - errors (`aio_read_response`): a broken connection (a lost request or reply, the sheep gone)
 *   reconnects and resends every request in flight (`reconnect_to_sdog`, `resend_aioreq`: a data
 *   write is sent again as a create unless memory says the VDI owns the object); READONLY
 *   reloads the inode's header when the vid changed and resends; any other result fails the
 *   request with EIO, which the guest sees once every request of the operation has answered;
 * - snapshot (`sd_snapshot_create`, see `snapshot`): the tag and VM state fields set in the
 *   header in memory, the header written back over the working VDI's, NEW_VDI with the snapshot
 *   flag, the new working VDI's header read into memory; the table in memory stays as it was.
 *
 * Simplified: the driver's single socket is a connection object that breaks as a whole (every
 * reply still due on it is lost and resent), with no byte stream; the driver reconnects to the
 * address it was given, which here is the sheep it uses while that one is a member, else a
 * member picked with the seed (as a load-balanced address would); reconnecting takes no time
 * while a member is up and a second per try otherwise. No snapshot reverts or deletes, no
 * vmstate (a snapshot has none: `vm_state_size` 0), no opening of snapshots (so never the
 * driver's `is_snapshot` refusal), no resize, no overlapping-request queue (the simulation
 * sends one operation at a time, and `savevm` drains the guest's requests first). A
 * discard is rounded to whole sectors, as the block layer hands it over. READONLY's reload
 * failing fails the request (the driver would lose it and hang).
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import {
  dataVdiIdOffset,
  decodeInode,
  decodeInodeHeader,
  type Inode,
  INODE_HEADER_SIZE,
  INODE_SIZE,
} from "../../core/vdi/inode.ts";
import { dataOid, isDataOid, type Oid, oidToIndex, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import { Header, type Message } from "../../net/object/header.ts";
import { nameTagPayload } from "../../net/object/client.ts";
import { Flag, Opcode, SD_PROTO_VER } from "../../net/object/ops.ts";

/** How the driver was opened: `cache=writeback` (the default) or `cache=none`. */
export type QemuCache = "writeback" | "none";

/** One connection to one sheep. */
export interface DriverConnection {
  /** The sheep it reaches (for the log). */
  readonly name: string;
  /** False once it broke: nothing more is sent or answered on it. */
  readonly open: boolean;
  /** Sends a request; rejects when the connection breaks before the reply is read. */
  send(request: Message): Promise<Message>;
}

/** How the driver reaches the cluster. */
export interface DriverNetwork {
  /**
   * Connects to the address the driver was given; undefined while nothing answers there (the
   * driver tries again a second later).
   */
  connect(): DriverConnection | undefined;
  /** Waits `ms` of (virtual) time. */
  sleep(ms: number): Promise<void>;
  note(line: string): void;
}

const EMPTY: Uint8Array = new Uint8Array(0);
/** `reconnect_to_sdog` tries again every second. */
const RECONNECT_INTERVAL_MS = 1000;
const SECTOR_BYTES = 512;

/**
 * Where QEMU's `SheepdogInode` keeps the header fields a snapshot sets in memory (the driver's
 * own copy of the struct, as sheepdog.c declares it).
 */
const TAG_OFFSET = 256;
const TAG_BYTES = 256;
const VM_CLOCK_NSEC_OFFSET = 528;
const VM_STATE_SIZE_OFFSET = 544;

/** The kinds of AIOCB the driver has (`enum AIOCBState`). */
type AiocbType = "read" | "write" | "discard" | "flush";

/** One operation the guest asked for (`SheepdogAIOCB`). */
interface Aiocb {
  type: AiocbType;
  /** The guest's buffer: read into, or written from. */
  buffer: Uint8Array;
  /** The first error (EIO) any of its requests met. */
  error: SheepdogError | undefined;
  minDirty: number;
  maxDirty: number;
}

/** One request of an operation (`AIOReq`). */
interface AioReq {
  oid: Oid;
  baseOid: bigint;
  offset: number;
  length: number;
  flags: number;
  create: boolean;
  /** Where in the operation's buffer its bytes are. */
  bufferOffset: number;
  /** A write of table entries into the inode (`sd_write_done`), from the table in memory. */
  inodeWrite: boolean;
}

/** The driver, opened on one VDI. */
export class QemuDriverClient {
  readonly #network: DriverNetwork;
  readonly #name: string;
  /**
   * The inode in memory (`s->inode`): its header as the bytes last read (`#header`), which a
   * snapshot writes back whole, and decoded, with the table the driver keeps up to date itself.
   */
  #header: Uint8Array;
  #inode: Inode;
  #cacheFlags: number;
  #discardSupported = true;
  #connection: DriverConnection | undefined;
  #nextId = 1;

  private constructor(network: DriverNetwork, inode: Uint8Array, cache: QemuCache) {
    this.#network = network;
    this.#header = inode.slice(0, INODE_HEADER_SIZE);
    this.#inode = decodeInode(inode);
    this.#name = this.#inode.name;
    this.#cacheFlags = cache === "none" ? Flag.DIRECT : Flag.CACHE;
  }

  /** `sd_open`: LOCK_VDI, then the whole inode read into memory. */
  static async open(
    network: DriverNetwork,
    name: string,
    options: { cache: QemuCache },
  ): Promise<QemuDriverClient> {
    const vid = await findVdi(network, name, { lock: true });
    const cacheFlags = options.cache === "none" ? Flag.DIRECT : Flag.CACHE;
    // `sd_open` reads it with 0 copies: nothing is in memory yet.
    const bytes = await readObjectOnce(network, vdiOid(vid), INODE_SIZE, 0, cacheFlags);
    return new QemuDriverClient(network, bytes, options.cache);
  }

  get vid(): Vid {
    return this.#inode.vdiId;
  }

  /** With cache=none every write is durable once acknowledged (Flag.DIRECT). */
  get directWrites(): boolean {
    return this.#cacheFlags === Flag.DIRECT;
  }

  /** The table entry the driver holds in memory for object `index`. */
  entry(index: number): number {
    return this.#inode.dataVdiId[index] ?? 0;
  }

  get objectBytes(): number {
    return 2 ** this.#inode.blockSizeShift;
  }

  /** `sd_co_readv`. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    const acb = this.#aiocb("read", new Uint8Array(length));
    await this.#rwVector(acb, offset, length);
    if (acb.error) throw acb.error;
    return acb.buffer;
  }

  /** `sd_co_writev`: the pieces, then the table entries the creates set. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    const acb = this.#aiocb("write", data);
    await this.#rwVector(acb, offset, data.length);
    await this.#writeDone(acb);
    if (acb.error) throw acb.error;
  }

  /** `sd_co_pdiscard`: whole objects only, by clearing their table entries. */
  async discard(offset: number, length: number): Promise<void> {
    if (!this.#discardSupported) return;
    const start = Math.ceil(offset / SECTOR_BYTES) * SECTOR_BYTES;
    const end = Math.floor((offset + length) / SECTOR_BYTES) * SECTOR_BYTES;
    if (end <= start) return;
    const acb = this.#aiocb("discard", new Uint8Array(4));
    await this.#rwVector(acb, start, end - start);
    if (acb.error) throw acb.error;
  }

  /** `sd_co_flush_to_disk`: FLUSH_VDI with cache=writeback, nothing with cache=none. */
  async flush(): Promise<void> {
    if (this.#cacheFlags !== Flag.CACHE) return;
    const acb = this.#aiocb("flush", EMPTY);
    await this.#submit(acb, {
      oid: vdiOid(this.vid),
      baseOid: 0n,
      offset: 0,
      length: 0,
      flags: 0,
      create: false,
      bufferOffset: 0,
      inodeWrite: false,
    });
    if (acb.error) throw acb.error;
  }

  /**
   * `sd_snapshot_create`, for a snapshot without VM state (`qemu-img snapshot -c`, or
   * `blockdev-snapshot-internal-sync` on a running guest): `vm_state_size` 0, `vm_clock_nsec`
   * the guest's clock (0 from qemu-img), and the tag, set in the header in memory, where they
   * stay whatever happens next. Then, on a connection of its own: the whole header in memory
   * written over the working VDI's inode (WRITE_OBJ, not the table: "we don't need to update
   * entire object"); NEW_VDI with the snapshot flag on another connection (`do_sd_create`: the
   * name alone, no tag, `base_vdi_id` the vid in memory), which makes that VDI the snapshot and
   * answers the new working VDI's vid; the new VDI's header read on the first connection and
   * copied into memory. The table in memory is kept: its entries name the VDI that is now the
   * snapshot, so the next write to each object copies it (CREATE_AND_WRITE_OBJ with Flag.COW).
   * Any step failing ends the snapshot with its error (EIO) and nothing undone: a NEW_VDI that
   * was done but not answered, or a header read that failed, leaves the driver on the snapshot's
   * vid until a request of the guest's meets READONLY and reloads the header (`reload_inode`).
   */
  async snapshot(tag: string, options: { vmClockNsec?: bigint } = {}): Promise<void> {
    const header = new DataView(this.#header.buffer, this.#header.byteOffset, INODE_HEADER_SIZE);
    header.setBigUint64(VM_STATE_SIZE_OFFSET, 0n, true);
    header.setBigUint64(VM_CLOCK_NSEC_OFFSET, options.vmClockNsec ?? 0n, true);
    // strncpy: the name's bytes, zeros after them, and no NUL when it fills the field.
    const name = new TextEncoder().encode(tag).subarray(0, TAG_BYTES);
    this.#header.fill(0, TAG_OFFSET, TAG_OFFSET + TAG_BYTES);
    this.#header.set(name, TAG_OFFSET);
    const copies = this.#inode.nrCopies;
    const connection = this.#network.connect();
    if (!connection) throw new SheepdogError(ResultCode.EIO, "qemu: snapshot: cannot connect");
    try {
      await writeObject(connection, vdiOid(this.vid), this.#header, copies, this.#cacheFlags);
    } catch (error) {
      this.#network.note(`qemu: failed to write snapshot's inode: ${String(error)}`);
      throw error;
    }
    const vid = await this.#newSnapshotVdi();
    const bytes = await readObject(
      connection,
      vdiOid(vid),
      INODE_HEADER_SIZE,
      0,
      copies,
      this.#cacheFlags,
    );
    this.#setHeader(bytes);
    this.#network.note(`qemu: snapshot ${tag} taken: the VDI is ${vid.toString(16)} now`);
  }

  /**
   * `do_sd_create(s, &new_vid, 1)`: NEW_VDI of the driver's name with `snapid` 1 (the snapshot
   * flag), its base the vid in memory, the size, copies and block size from the header in
   * memory (`copy_policy` too, which is 0 in every VDI the simulation makes, as the header does
   * not set it), no protocol version, on a connection of its own.
   */
  async #newSnapshotVdi(): Promise<Vid> {
    const header = new Header();
    header.protoVer = 0;
    header.opcode = Opcode.NEW_VDI;
    header.flags = Flag.WRITE;
    header.baseVdiId = this.vid;
    header.snapid = 1;
    header.dataLength = 256;
    header.vdiSize = this.#inode.vdiSize;
    header.vdiCopies = this.#inode.nrCopies;
    header.vdiBlockSizeShift = this.#inode.blockSizeShift;
    const name = nameTagPayload(this.#name).subarray(0, 256);
    const response = await requestOnce(this.#network, { header, data: name });
    if (response.header.result !== ResultCode.SUCCESS) {
      const failed = `qemu: failed to create inode for snapshot: ` +
        `${new SheepdogError(response.header.result).message}, ${this.#name}`;
      this.#network.note(failed);
      throw new SheepdogError(ResultCode.EIO, failed);
    }
    return response.header.rspVdiId;
  }

  /** A header read from the cluster copied into memory (`memcpy(&s->inode, ...)`). */
  #setHeader(bytes: Uint8Array): void {
    this.#header = bytes.slice(0, INODE_HEADER_SIZE);
    this.#inode = { ...decodeInodeHeader(bytes), dataVdiId: this.#inode.dataVdiId };
  }

  #aiocb(type: AiocbType, buffer: Uint8Array): Aiocb {
    return { type, buffer, error: undefined, minDirty: Infinity, maxDirty: -1 };
  }

  /** `sd_co_rw_vector`: one request per object piece, all in flight together. */
  async #rwVector(acb: Aiocb, offset: number, length: number): Promise<void> {
    const objectBytes = this.objectBytes;
    const inode = this.#inode;
    const requests: Promise<void>[] = [];
    let index = Math.floor(offset / objectBytes);
    let inner = offset % objectBytes;
    for (let done = 0; done < length; index++, inner = 0) {
      const piece = Math.min(length - done, objectBytes - inner);
      const owner = inode.dataVdiId[index] ?? 0;
      let oid = dataOid(owner, index);
      let create = false;
      let flags = 0;
      let baseOid = 0n;
      let skip = false;
      if (acb.type === "read") {
        skip = owner === 0; // the buffer is zeros already
      } else if (acb.type === "write") {
        if (owner === 0) create = true;
        else if (owner !== inode.vdiId) {
          create = true;
          baseOid = oid;
          flags = Flag.COW;
        }
      } else if (acb.type === "discard") {
        skip = piece !== objectBytes || owner === 0;
      }
      if (create) oid = dataOid(inode.vdiId, index);
      if (!skip) {
        requests.push(this.#submit(acb, {
          oid,
          baseOid,
          offset: inner,
          length: piece,
          flags,
          create,
          bufferOffset: acb.type === "discard" ? 0 : done,
          inodeWrite: false,
        }));
      }
      done += piece;
    }
    await Promise.all(requests);
  }

  /** `sd_write_done`: the entries from the lowest to the highest index created, from memory. */
  async #writeDone(acb: Aiocb): Promise<void> {
    if (acb.minDirty > acb.maxDirty) return;
    const offset = dataVdiIdOffset(acb.minDirty);
    const length = (acb.maxDirty - acb.minDirty + 1) * 4;
    acb.minDirty = Infinity;
    acb.maxDirty = -1;
    await this.#submit(acb, {
      oid: vdiOid(this.vid),
      baseOid: 0n,
      offset,
      length,
      flags: 0,
      create: false,
      bufferOffset: 0,
      inodeWrite: true,
    });
  }

  /**
   * Sends one request until it is answered on a connection that stayed open (`add_aio_request`,
   * then `aio_read_response`; a broken connection or READONLY: `resend_aioreq`).
   */
  async #submit(acb: Aiocb, req: AioReq): Promise<void> {
    for (;;) {
      const connection = await this.#connected();
      const request = this.#message(acb, req);
      let response: Message;
      try {
        response = await connection.send(request);
      } catch (error) {
        this.#network.note(`qemu: ${(error as Error).message}: reconnects, resends`);
        this.#broken(connection);
        this.#resend(acb, req);
        continue;
      }
      if (!connection.open) {
        // Answered after the driver dropped the connection: it never reads that reply.
        this.#resend(acb, req);
        continue;
      }
      let result = response.header.result;
      if (acb.type === "write" && isDataOid(req.oid) && !req.inodeWrite && req.create) {
        if (result === ResultCode.SUCCESS) {
          const index = oidToIndex(req.oid);
          this.#inode.dataVdiId[index] = this.vid;
          acb.maxDirty = Math.max(index, acb.maxDirty);
          acb.minDirty = Math.min(index, acb.minDirty);
        }
      } else if (acb.type === "read") {
        acb.buffer.set(response.data.subarray(0, req.length), req.bufferOffset);
      } else if (acb.type === "flush" && result === ResultCode.INVALID_PARMS) {
        this.#cacheFlags = Flag.DIRECT;
        result = ResultCode.SUCCESS;
      } else if (acb.type === "discard" && result === ResultCode.INVALID_PARMS) {
        this.#network.note("qemu: server doesn't support discard command");
        this.#discardSupported = false;
        result = ResultCode.SUCCESS;
      }
      if (result === ResultCode.SUCCESS) return;
      if (result === ResultCode.READONLY) {
        await this.#readonly(acb, req);
        if (acb.error) return;
        continue;
      }
      const failed =
        `qemu: ${opName(request.header.opcode)} of ${request.header.oid.toString(16)}` +
        ` at ${request.header.offset}+${request.header.dataLength} failed: ` +
        new SheepdogError(result).message;
      this.#network.note(failed);
      acb.error ??= new SheepdogError(ResultCode.EIO, failed);
      return;
    }
  }

  /** READONLY: the inode's header is read again (a snapshot moved the VDI) and the oid follows. */
  async #readonly(acb: Aiocb, req: AioReq): Promise<void> {
    try {
      const vid = await findVdi(this.#network, this.#name, { lock: false });
      const bytes = await readObjectOnce(
        this.#network,
        vdiOid(vid),
        INODE_HEADER_SIZE,
        this.#inode.nrCopies,
        this.#cacheFlags,
      );
      if (decodeInodeHeader(bytes).vdiId !== this.vid) this.#setHeader(bytes);
    } catch (error) {
      acb.error ??= new SheepdogError(ResultCode.EIO, `qemu: reload_inode: ${String(error)}`);
      return;
    }
    req.oid = isDataOid(req.oid) ? dataOid(this.vid, oidToIndex(req.oid)) : vdiOid(this.vid);
    this.#resend(acb, req);
  }

  /** `resend_aioreq`: a data write is a create again unless memory says the VDI owns it. */
  #resend(acb: Aiocb, req: AioReq): void {
    req.create = false;
    if (acb.type !== "write" || !isDataOid(req.oid) || req.inodeWrite) return;
    const index = oidToIndex(req.oid);
    const owner = this.#inode.dataVdiId[index] ?? 0;
    if (owner === this.vid) return;
    if (owner !== 0) {
      req.baseOid = dataOid(owner, index);
      req.flags |= Flag.COW;
    }
    req.create = true;
  }

  /** The request as `add_aio_request` builds it (its header has no protocol version). */
  #message(acb: Aiocb, req: AioReq): Message {
    const header = new Header();
    header.protoVer = 0;
    header.id = this.#nextId++;
    let oid = req.oid;
    let offset = req.offset;
    let length = req.length;
    let data = EMPTY;
    switch (acb.type) {
      case "flush":
        header.opcode = Opcode.FLUSH_VDI;
        break;
      case "read":
        header.opcode = Opcode.READ_OBJ;
        header.flags = req.flags;
        break;
      case "write":
        header.opcode = req.create ? Opcode.CREATE_AND_WRITE_OBJ : Opcode.WRITE_OBJ;
        header.flags = Flag.WRITE | req.flags;
        data = req.inodeWrite
          ? this.#tableBytes(req.offset, req.length)
          : acb.buffer.slice(req.bufferOffset, req.bufferOffset + req.length);
        break;
      case "discard": {
        header.opcode = Opcode.WRITE_OBJ;
        header.flags = Flag.WRITE | req.flags;
        const index = oidToIndex(req.oid);
        this.#inode.dataVdiId[index] = 0;
        offset = dataVdiIdOffset(index);
        oid = vdiOid(this.vid);
        length = 4;
        data = new Uint8Array(4);
        break;
      }
    }
    header.flags |= this.#cacheFlags;
    header.oid = oid;
    header.cowOid = req.baseOid;
    header.objCopies = this.#inode.nrCopies;
    header.dataLength = length;
    header.offset = offset;
    return { header, data };
  }

  /** Table entries as memory holds them, `length` bytes at inode offset `offset`. */
  #tableBytes(offset: number, length: number): Uint8Array {
    const first = (offset - INODE_HEADER_SIZE) / 4;
    const bytes = new Uint8Array(length);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < length / 4; i++) {
      view.setUint32(i * 4, this.#inode.dataVdiId[first + i] ?? 0, true);
    }
    return bytes;
  }

  /** The connection in use, or a new one (`reconnect_to_sdog`: tried again every second). */
  async #connected(): Promise<DriverConnection> {
    for (;;) {
      if (this.#connection?.open) return this.#connection;
      const connection = this.#network.connect();
      if (connection) {
        this.#network.note(`qemu: connected to ${connection.name}`);
        this.#connection = connection;
        return connection;
      }
      await this.#network.sleep(RECONNECT_INTERVAL_MS);
    }
  }

  #broken(connection: DriverConnection): void {
    if (this.#connection === connection) this.#connection = undefined;
  }
}

/** `find_vdi_name` on a connection of its own: LOCK_VDI (opening) or GET_VDI_INFO. */
async function findVdi(
  network: DriverNetwork,
  name: string,
  options: { lock: boolean },
): Promise<Vid> {
  const header = new Header();
  header.protoVer = SD_PROTO_VER;
  header.opcode = options.lock ? Opcode.LOCK_VDI : Opcode.GET_VDI_INFO;
  header.flags = Flag.WRITE;
  header.dataLength = 512;
  const response = await requestOnce(network, { header, data: nameTagPayload(name) });
  if (response.header.result !== ResultCode.SUCCESS) {
    throw new SheepdogError(response.header.result, `qemu: cannot get vdi info of '${name}'`);
  }
  return response.header.rspVdiId;
}

/** `read_object` on a connection of its own. */
async function readObjectOnce(
  network: DriverNetwork,
  oid: Oid,
  length: number,
  copies: number,
  cacheFlags: number,
): Promise<Uint8Array> {
  const connection = network.connect();
  if (!connection) throw new SheepdogError(ResultCode.NETWORK_ERROR, "qemu: cannot connect");
  return await readObject(connection, oid, length, 0, copies, cacheFlags);
}

/** `read_object` (`read_write_object` reading) on `connection`. */
async function readObject(
  connection: DriverConnection,
  oid: Oid,
  length: number,
  offset: number,
  copies: number,
  cacheFlags: number,
): Promise<Uint8Array> {
  const response = await readWriteObject(connection, oid, copies, offset, cacheFlags, length);
  if (response.header.result !== ResultCode.SUCCESS) {
    throw new SheepdogError(response.header.result, `qemu: cannot read ${oid.toString(16)}`);
  }
  return response.data;
}

/** `write_object` (`read_write_object` writing in place, at offset 0) on `connection`. */
async function writeObject(
  connection: DriverConnection,
  oid: Oid,
  data: Uint8Array,
  copies: number,
  cacheFlags: number,
): Promise<void> {
  const response = await readWriteObject(connection, oid, copies, 0, cacheFlags, data);
  if (response.header.result !== ResultCode.SUCCESS) {
    const failed = new SheepdogError(response.header.result).message;
    throw new SheepdogError(ResultCode.EIO, `qemu: cannot write ${oid.toString(16)}: ${failed}`);
  }
}

/**
 * `read_write_object`: a READ_OBJ of `io` bytes, or a WRITE_OBJ of `io`, at `offset` of `oid`;
 * its reply, whatever its result (the callers say what a failure is).
 */
async function readWriteObject(
  connection: DriverConnection,
  oid: Oid,
  copies: number,
  offset: number,
  cacheFlags: number,
  io: number | Uint8Array,
): Promise<Message> {
  const write = typeof io !== "number";
  const header = new Header();
  header.opcode = write ? Opcode.WRITE_OBJ : Opcode.READ_OBJ;
  header.flags = write ? Flag.WRITE | cacheFlags : cacheFlags;
  header.oid = oid;
  header.objCopies = copies;
  header.dataLength = write ? io.length : io;
  header.offset = offset;
  return await requestOn(connection, { header, data: write ? io.slice() : EMPTY });
}

/** One request on a connection of its own: a broken one fails it (-EIO in the driver). */
async function requestOnce(network: DriverNetwork, request: Message): Promise<Message> {
  const connection = network.connect();
  if (!connection) throw new SheepdogError(ResultCode.NETWORK_ERROR, "qemu: cannot connect");
  return await requestOn(connection, request);
}

/** One request on `connection` (`do_req`): a broken connection fails it (-EIO). */
async function requestOn(connection: DriverConnection, request: Message): Promise<Message> {
  try {
    return await connection.send(request);
  } catch (error) {
    throw new SheepdogError(ResultCode.EIO, `qemu: ${String(error)}`);
  }
}

function opName(opcode: number): string {
  return Object.entries(Opcode).find(([, value]) => value === opcode)?.[0] ?? String(opcode);
}
