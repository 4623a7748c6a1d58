/**
 * The 48-byte little-endian header of every object-protocol message (SHEEPDOG_REFERENCE.md
 * §6.1). Variants overlap in bytes 16..47, so the header is one buffer with a named accessor
 * per field; the opcode says which fields mean something.
 *
 * @module
 */

export const HEADER_SIZE = 48;

/** A request or response header. */
export class Header {
  readonly bytes: Uint8Array;
  readonly #view: DataView;

  constructor(bytes: Uint8Array = new Uint8Array(HEADER_SIZE)) {
    if (bytes.length !== HEADER_SIZE) {
      throw new RangeError(`Header must be ${HEADER_SIZE} bytes: got ${bytes.length}`);
    }
    this.bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  }

  #u8(offset: number, value?: number): number {
    if (value !== undefined) this.#view.setUint8(offset, value);
    return this.#view.getUint8(offset);
  }
  #u16(offset: number, value?: number): number {
    if (value !== undefined) this.#view.setUint16(offset, value, true);
    return this.#view.getUint16(offset, true);
  }
  #u32(offset: number, value?: number): number {
    if (value !== undefined) this.#view.setUint32(offset, value, true);
    return this.#view.getUint32(offset, true);
  }
  #u64(offset: number, value?: bigint): bigint {
    if (value !== undefined) this.#view.setBigUint64(offset, value, true);
    return this.#view.getBigUint64(offset, true);
  }

  // Common fields.
  get protoVer(): number {
    return this.#u8(0);
  }
  set protoVer(v: number) {
    this.#u8(0, v);
  }
  get opcode(): number {
    return this.#u8(1);
  }
  set opcode(v: number) {
    this.#u8(1, v);
  }
  get flags(): number {
    return this.#u16(2);
  }
  set flags(v: number) {
    this.#u16(2, v);
  }
  get epoch(): number {
    return this.#u32(4);
  }
  set epoch(v: number) {
    this.#u32(4, v);
  }
  get id(): number {
    return this.#u32(8);
  }
  set id(v: number) {
    this.#u32(8, v);
  }
  get dataLength(): number {
    return this.#u32(12);
  }
  set dataLength(v: number) {
    this.#u32(12, v);
  }

  // Object requests.
  get oid(): bigint {
    return this.#u64(16);
  }
  set oid(v: bigint) {
    this.#u64(16, v);
  }
  get cowOid(): bigint {
    return this.#u64(24);
  }
  set cowOid(v: bigint) {
    this.#u64(24, v);
  }
  get objCopies(): number {
    return this.#u8(32);
  }
  set objCopies(v: number) {
    this.#u8(32, v);
  }
  get tgtEpoch(): number {
    return this.#u32(36);
  }
  set tgtEpoch(v: number) {
    this.#u32(36, v);
  }
  /** Sheepdog 1.0 reads a u32 at 40; QEMU writes a u64 there. Objects are < 4 GiB: compatible. */
  get offset(): number {
    return this.#u32(40);
  }
  set offset(v: number) {
    this.#u64(40, BigInt(v));
  }

  /**
   * Internal peer object requests (ours): the writer-assigned object version, where public
   * requests carry the COW source oid (bytes 24..31), and the object's canonical size where
   * they carry copies and the target epoch (bytes 32..35).
   */
  get objVersion(): number {
    return Number(this.#u64(24));
  }
  set objVersion(v: number) {
    this.#u64(24, BigInt(v));
  }
  get objSize(): number {
    return this.#u32(32);
  }
  set objSize(v: number) {
    this.#u32(32, v);
  }

  // VDI requests.
  get vdiSize(): number {
    return Number(this.#u64(16));
  }
  set vdiSize(v: number) {
    this.#u64(16, BigInt(v));
  }
  get baseVdiId(): number {
    return this.#u32(24);
  }
  set baseVdiId(v: number) {
    this.#u32(24, v);
  }
  get vdiCopies(): number {
    return this.#u8(28);
  }
  set vdiCopies(v: number) {
    this.#u8(28, v);
  }
  get vdiBlockSizeShift(): number {
    return this.#u8(31);
  }
  set vdiBlockSizeShift(v: number) {
    this.#u8(31, v);
  }
  get snapid(): number {
    return this.#u32(32);
  }
  set snapid(v: number) {
    this.#u32(32, v);
  }
  get lockType(): number {
    return this.#u32(36);
  }
  set lockType(v: number) {
    this.#u32(36, v);
  }

  // Cluster requests (MAKE_FS).
  get clusterCtime(): bigint {
    return this.#u64(24);
  }
  set clusterCtime(v: bigint) {
    this.#u64(24, v);
  }
  get clusterCopies(): number {
    return this.#u8(32);
  }
  set clusterCopies(v: number) {
    this.#u8(32, v);
  }
  get clusterFlags(): number {
    return this.#u16(34);
  }
  set clusterFlags(v: number) {
    this.#u16(34, v);
  }
  get clusterBlockSizeShift(): number {
    return this.#u8(44);
  }
  set clusterBlockSizeShift(v: number) {
    this.#u8(44, v);
  }

  // Responses: all have the result at 16.
  get result(): number {
    return this.#u32(16);
  }
  set result(v: number) {
    this.#u32(16, v);
  }
  /** VDI responses. */
  get rspVdiId(): number {
    return this.#u32(24);
  }
  set rspVdiId(v: number) {
    this.#u32(24, v);
  }
  get rspVdiCopies(): number {
    return this.#u8(32);
  }
  set rspVdiCopies(v: number) {
    this.#u8(32, v);
  }
  get rspVdiBlockSizeShift(): number {
    return this.#u8(33);
  }
  set rspVdiBlockSizeShift(v: number) {
    this.#u8(33, v);
  }
  /** Internal peer object responses: the version of the copy read or written. */
  get rspObjVersion(): number {
    return Number(this.#u64(24));
  }
  set rspObjVersion(v: number) {
    this.#u64(24, BigInt(v));
  }
  /** GET_CLUSTER_DEFAULT responses. */
  get rspDefaultCopies(): number {
    return this.#u8(20);
  }
  set rspDefaultCopies(v: number) {
    this.#u8(20, v);
  }
  get rspDefaultBlockSizeShift(): number {
    return this.#u8(22);
  }
  set rspDefaultBlockSizeShift(v: number) {
    this.#u8(22, v);
  }
  /** STAT_SHEEP responses. */
  get rspStoreSize(): number {
    return Number(this.#u64(32));
  }
  set rspStoreSize(v: number) {
    this.#u64(32, BigInt(v));
  }
  get rspStoreFree(): number {
    return Number(this.#u64(40));
  }
  set rspStoreFree(v: number) {
    this.#u64(40, BigInt(v));
  }

  /** A response header for this request: same opcode and id, the given result. */
  reply(result: number, epoch: number): Header {
    const header = new Header();
    header.protoVer = this.protoVer;
    header.opcode = this.opcode;
    header.id = this.id;
    header.epoch = epoch;
    header.result = result;
    return header;
  }
}

/** A request or response: header plus payload. */
export interface Message {
  header: Header;
  data: Uint8Array;
}
