/**
 * A typed client of the object protocol over any transport (TCP or in-process). Every method
 * sends one request and turns a non-success result into a SheepdogError carrying the code and
 * the server's message, so an error crosses the wire and comes back as itself.
 *
 * @module
 */

import { describeResult, ResultCode, SheepdogError } from "../../core/errors.ts";
import { encodeName } from "../../core/vdi/inode.ts";
import { type Oid, vdiOid, type Vid } from "../../core/vdi/oid.ts";
import type { ObjectAccess } from "../../core/vdi/io.ts";
import type { SnapshotRef } from "../../core/vdi/registry.ts";
import { VdiBitmap } from "../../core/vdi/vid.ts";
import { VDI_SPACE } from "../../core/limits.ts";
import { Header, type Message } from "./header.ts";
import { Flag, isInternalOpcode, Opcode, SD_PROTO_VER, SD_SHEEP_PROTO_VER } from "./ops.ts";
import type { Transport } from "./transport.ts";

/**
 * A new request header. Public requests carry `Flag.EXTENDED`: we are not an old client, so a
 * failure comes back with its text.
 */
export function requestHeader(opcode: number, options: { internal?: boolean } = {}): Header {
  const header = new Header();
  const internal = options.internal || isInternalOpcode(opcode);
  header.protoVer = internal ? SD_SHEEP_PROTO_VER : SD_PROTO_VER;
  header.opcode = opcode;
  if (!internal) header.flags = Flag.EXTENDED;
  return header;
}

/** name[256] + tag[256], the payload of lookups and deletes. */
export function nameTagPayload(name: string, tag = ""): Uint8Array {
  const payload = new Uint8Array(512);
  payload.set(encodeName(name, 255, "VDI name"), 0);
  payload.set(encodeName(tag, 255, "tag"), 256);
  return payload;
}

/**
 * Throws the SheepdogError a failed response carries: its payload is the message text where
 * there is one (internal requests, and public ones sent with `Flag.EXTENDED`), else the code's
 * description, as an old Sheepdog client would print it.
 */
export function checkResponse(response: Message): Message {
  const result = response.header.result;
  if (result === ResultCode.SUCCESS) return response;
  const text = response.data.length > 0 && response.data.length < 4096
    ? new TextDecoder().decode(response.data)
    : describeResult(result);
  throw new SheepdogError(result, text);
}

/** Options of a new VDI, snapshot or clone. */
export interface NewVdiRequest {
  name: string;
  sizeBytes: number;
  baseVid?: Vid;
  snapshot?: boolean;
  copies?: number;
  blockSizeShift?: number;
  tag?: string;
}

export class ObjectClient implements ObjectAccess {
  readonly transport: Transport;

  constructor(transport: Transport) {
    this.transport = transport;
  }

  /**
   * Sends `header` with `data` as its payload (flagged and sized here) and returns the response,
   * or throws the error a failed one carries (`checkResponse`).
   */
  async send(header: Header, data?: Uint8Array): Promise<Message> {
    if (data && data.length > 0) {
      header.flags |= Flag.WRITE;
      header.dataLength = data.length;
    }
    return checkResponse(await this.transport.request(header, data));
  }

  /** Sends an internal request whose reply is JSON. */
  async json<T>(opcode: number, body?: unknown): Promise<T> {
    const data = body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(body));
    const response = await this.send(requestHeader(opcode, { internal: true }), data);
    return JSON.parse(new TextDecoder().decode(response.data)) as T;
  }

  async readObject(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    const header = requestHeader(Opcode.READ_OBJ);
    header.oid = oid;
    header.offset = offset;
    header.dataLength = length;
    const response = await this.send(header);
    if (response.data.length === length) return response.data;
    const padded = new Uint8Array(length);
    padded.set(response.data.subarray(0, length));
    return padded;
  }

  async writeObject(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    const header = requestHeader(Opcode.WRITE_OBJ);
    header.oid = oid;
    header.offset = offset;
    await this.send(header, data);
  }

  async createObject(oid: Oid, data: Uint8Array, offset: number, cowFrom?: Oid): Promise<void> {
    const header = requestHeader(Opcode.CREATE_AND_WRITE_OBJ);
    header.oid = oid;
    header.offset = offset;
    if (cowFrom !== undefined) {
      header.flags |= Flag.COW;
      header.cowOid = cowFrom;
    }
    await this.send(header, data);
  }

  async removeObject(oid: Oid): Promise<void> {
    const header = requestHeader(Opcode.REMOVE_OBJ);
    header.oid = oid;
    await this.send(header);
  }

  /** FLUSH_VDI: with `vid`, that VDI's writes (named by its inode oid, as QEMU's driver does). */
  async flush(vid?: Vid): Promise<void> {
    const header = requestHeader(Opcode.FLUSH_VDI);
    if (vid !== undefined) header.oid = vdiOid(vid);
    await this.send(header);
  }

  async lookupVdi(name: string, ref?: SnapshotRef): Promise<Vid> {
    const header = requestHeader(Opcode.GET_VDI_INFO);
    header.snapid = ref && "snapId" in ref ? ref.snapId : 0;
    header.dataLength = 512;
    const tag = ref && "tag" in ref ? ref.tag : "";
    const response = await this.send(header, nameTagPayload(name, tag));
    return response.header.rspVdiId;
  }

  /** Creates a VDI, or with `snapshot` snapshots `baseVid`, or with `baseVid` alone clones it. */
  async newVdi(request: NewVdiRequest): Promise<Vid> {
    const header = requestHeader(Opcode.NEW_VDI);
    header.vdiSize = request.sizeBytes;
    header.baseVdiId = request.baseVid ?? 0;
    header.snapid = request.snapshot ? 1 : 0;
    header.vdiCopies = request.copies ?? 0;
    header.vdiBlockSizeShift = request.blockSizeShift ?? 0;
    const payload = new Uint8Array(request.tag === undefined ? 256 : 512);
    payload.set(encodeName(request.name, 255, "VDI name"), 0);
    if (request.tag !== undefined) payload.set(encodeName(request.tag, 255, "tag"), 256);
    const response = await this.send(header, payload);
    return response.header.rspVdiId;
  }

  /** Deletes the working VDI `name`, or one of its snapshots. */
  async deleteVdi(name: string, ref?: SnapshotRef): Promise<void> {
    const header = requestHeader(Opcode.DEL_VDI);
    header.snapid = ref && "snapId" in ref ? ref.snapId : 0;
    await this.send(header, nameTagPayload(name, ref && "tag" in ref ? ref.tag : ""));
  }

  /** Takes the VDI's lock for `owner` ("running on ADDR"); returns the vid. */
  async lockVdi(name: string, ref?: SnapshotRef): Promise<Vid> {
    const header = requestHeader(Opcode.LOCK_VDI);
    header.snapid = ref && "snapId" in ref ? ref.snapId : 0;
    const response = await this.send(
      header,
      nameTagPayload(name, ref && "tag" in ref ? ref.tag : ""),
    );
    return response.header.rspVdiId;
  }

  async releaseVdi(vid: Vid): Promise<void> {
    const header = requestHeader(Opcode.RELEASE_VDI);
    header.baseVdiId = vid;
    await this.send(header);
  }

  async readVdis(): Promise<VdiBitmap> {
    const header = requestHeader(Opcode.READ_VDIS);
    header.dataLength = VDI_SPACE / 8;
    const response = await this.send(header);
    return new VdiBitmap(response.data.slice());
  }

  async clusterDefault(): Promise<{ copies: number; blockSizeShift: number }> {
    const response = await this.send(requestHeader(Opcode.GET_CLUSTER_DEFAULT));
    return {
      copies: response.header.rspDefaultCopies,
      blockSizeShift: response.header.rspDefaultBlockSizeShift,
    };
  }

  async makeFs(
    options: { copies: number; blockSizeShift: number; force: boolean; strict: boolean },
  ): Promise<void> {
    await this.json(Opcode.MAKE_FS, options);
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}
