/**
 * Opcodes, flags and protocol versions of the Sheepdog 1.0 object protocol
 * (SHEEPDOG_REFERENCE.md §6). Public opcodes are Sheepdog's; internal ones (>= 0x80) are ours
 * where Sheepdog had none, and are never renumbered once released.
 *
 * @module
 */

/** Public protocol version (Sheepdog 1.0); requests with a higher one get VER_MISMATCH. */
export const SD_PROTO_VER = 0x02;
/** Internal (sheep-to-sheep and admin) protocol version. */
export const SD_SHEEP_PROTO_VER = 0x0b;

export const Opcode = {
  // Public: what QEMU's driver and other old clients send.
  CREATE_AND_WRITE_OBJ: 0x01,
  READ_OBJ: 0x02,
  WRITE_OBJ: 0x03,
  REMOVE_OBJ: 0x04,
  DISCARD_OBJ: 0x05,
  NEW_VDI: 0x11,
  LOCK_VDI: 0x12,
  RELEASE_VDI: 0x13,
  GET_VDI_INFO: 0x14,
  READ_VDIS: 0x15,
  FLUSH_VDI: 0x16,
  DEL_VDI: 0x17,
  GET_CLUSTER_DEFAULT: 0x18,
  // Internal: admin (payloads are JSON where Sheepdog used C structs).
  GET_NODE_LIST: 0x82,
  MAKE_FS: 0x84,
  SHUTDOWN: 0x85,
  STAT_SHEEP: 0x86,
  STAT_CLUSTER: 0x87,
  FORCE_RECOVER: 0x8a,
  STAT_RECOVERY: 0x97,
  /**
   * Ours: the node's version timeline and highest version (JSON `{"timelineMs", "version"}`,
   * net/sheep/clock_probe.ts), so versions follow one clock across the cluster.
   */
  GET_CLOCK: 0xa0,
  // Internal: peer object I/O, the gateway's *_PEER twins.
  GET_OBJ_LIST: 0xa1,
  GET_EPOCH: 0xa2,
  CREATE_AND_WRITE_PEER: 0xa3,
  READ_PEER: 0xa4,
  WRITE_PEER: 0xa5,
  REMOVE_PEER: 0xa6,
  /** Ours: an object's version, size, digest and verified flag (JSON), without its data. */
  GET_OBJ_META: 0xa7,
  /** Ours: a copy as it is, bad blocks zeroed and named (repairs of a partly rotten copy). */
  GET_OBJ_SALVAGE: 0xa8,
  /** Ours: create a copy from a salvaged one; its bad blocks stay bad. */
  PUT_SALVAGED_PEER: 0xa9,
  /**
   * Ours: rewrite blocks of a copy in place with the bytes their checksums name, a repair of rot
   * (`ObjectStore.healBlocks`; payloads in net/sheep/healed_blocks.ts).
   */
  HEAL_BLOCKS_PEER: 0xaa,
  COMPLETE_RECOVERY: 0xac,
  FLUSH_PEER: 0xae,
  EXIST: 0xbd,
  // Internal, ours: VDI administration beyond the public set.
  RESIZE_VDI: 0xe0,
  LIST_LOCKS: 0xe1,
  /**
   * Ours: every live VDI with its allocation counts (JSON rows); with Flag.FWD, only the counts
   * this node keeps for the inode copies it holds (net/sheep/vdi_summary.ts).
   */
  VDI_SUMMARY: 0xe2,
  GET_CLUSTER_STATE: 0xe3,
  /** Ours: start a scrub pass (JSON `{"vid"?: number}`), on every node unless Flag.FWD. */
  START_SCRUB: 0xe4,
  /** Ours: scrub status (JSON rows), of every node unless Flag.FWD. */
  STAT_SCRUB: 0xe5,
  /**
   * Ours: release a VDI's attach lock whoever holds it (JSON `{"vid": number}`; answers
   * `{"client": holder or null}`): an operator freeing the VDI of a client that died attached.
   */
  UNLOCK_VDI: 0xe6,
  /**
   * Ours: nodes gone for good (JSON `{"nodes": ["host:port", ...]}`): copies a crash left
   * suspect stop waiting for them (net/sheep/crash_holds.ts), on every node unless Flag.FWD;
   * answers one row per node `{"node", "held"}` (objects that were held there).
   */
  FORGET_NODES: 0xe7,
  /** Ours: rename a VDI and its snapshots (JSON `{"name", "newName"}`); refused while attached. */
  RENAME_VDI: 0xec,
  /** Ours: a clone that reads nothing from its base drops its parent link (JSON `{"name"}`). */
  FLATTEN_VDI: 0xed,
  // Internal, ours: the cluster-key handshake (net/auth/handshake.ts), before any other
  // internal request on a connection.
  AUTH_HELLO: 0xf0,
  AUTH_PROVE: 0xf1,
} as const;

export type Opcode = typeof Opcode[keyof typeof Opcode];

/** Request flags. */
export const Flag = {
  WRITE: 0x01,
  COW: 0x02,
  CACHE: 0x04,
  DIRECT: 0x08,
  PIGGYBACK: 0x10,
  FWD: 0x40,
  RECOVERY: 0x80,
  /**
   * Ours, on internal creates: the copy comes from a crash-suspect copy and stays suspect. On
   * GET_OBJ_SALVAGE: the copy is read as a crash-suspect copy for a merge (`SalvageOptions`'s
   * `suspect`); a node that does not know it answers as without it.
   */
  UNVERIFIED: 0x100,
  /**
   * Ours, on recovery's reads (with RECOVERY): background work the serving node paces while its
   * own clients are busy (net/sheep/recovery_throttle.ts).
   */
  BACKGROUND: 0x200,
  /**
   * Ours, on the reply to a BACKGROUND read: the serving node's clients are busy (it paced the
   * read); recovery takes the same copy from another holder for a while if it can.
   */
  BUSY: 0x400,
  /**
   * Ours, on public requests: the sender is one of this project's clients, not an old Sheepdog
   * client such as QEMU's driver. Its failed requests are answered with the error's text as
   * payload (Sheepdog 1.0 answered public requests that failed with none, and QEMU's driver
   * does not read one after a failed write, so old clients never get one), and it acts as an
   * administrator: it does not count as the holder of the VDIs its address has attached.
   */
  EXTENDED: 0x8000,
} as const;

const OPCODE_NAMES = new Map<number, string>(
  Object.entries(Opcode).map(([name, value]) => [value, name]),
);

/** The name of an opcode, for logs and metrics (looked up per request: a map, not a scan). */
export function opcodeName(opcode: number): string {
  return OPCODE_NAMES.get(opcode) ?? `OP_0x${opcode.toString(16)}`;
}

/** True for opcodes of the internal protocol. */
export function isInternalOpcode(opcode: number): boolean {
  return opcode >= 0x80;
}
