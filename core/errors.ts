/**
 * Operating errors. Each carries a Sheepdog result code, one-to-one with the wire protocol
 * (SHEEPDOG_REFERENCE.md §6.4), so an error crosses the network and comes back as itself.
 *
 * @module
 */

/** Sheepdog 1.0 result codes. Wire numbers are never renumbered. */
export const ResultCode = {
  SUCCESS: 0x00,
  UNKNOWN: 0x01,
  NO_OBJ: 0x02,
  EIO: 0x03,
  VDI_EXIST: 0x04,
  INVALID_PARMS: 0x05,
  SYSTEM_ERROR: 0x06,
  VDI_LOCKED: 0x07,
  NO_VDI: 0x08,
  NO_BASE_VDI: 0x09,
  VDI_READ: 0x0a,
  VDI_WRITE: 0x0b,
  BASE_VDI_READ: 0x0c,
  BASE_VDI_WRITE: 0x0d,
  NO_TAG: 0x0e,
  STARTUP: 0x0f,
  VDI_NOT_LOCKED: 0x10,
  SHUTDOWN: 0x11,
  NO_MEM: 0x12,
  FULL_VDI: 0x13,
  VER_MISMATCH: 0x14,
  NO_SPACE: 0x15,
  WAIT_FOR_FORMAT: 0x16,
  WAIT_FOR_JOIN: 0x17,
  JOIN_FAILED: 0x18,
  HALT: 0x19,
  READONLY: 0x1a,
  INODE_INVALIDATED: 0x1d,
  // Internal (peer-to-peer) codes.
  OLD_NODE_VER: 0x81,
  NEW_NODE_VER: 0x82,
  NOT_FORMATTED: 0x83,
  INVALID_CTIME: 0x84,
  INVALID_EPOCH: 0x85,
  NETWORK_ERROR: 0x86,
  BUFFER_SMALL: 0x88,
  NO_SUPPORT: 0x8b,
  NODE_IN_RECOVERY: 0x8c,
  KILLED: 0x8d,
  OID_EXIST: 0x8e,
  AGAIN: 0x8f,
  VDI_NOT_EMPTY: 0x92,
  NOT_FOUND: 0x93,
  /** Ours: the request needs a connection authenticated with the cluster key. */
  NOT_AUTHORIZED: 0x94,
} as const;

/** A result code number. */
export type ResultCode = typeof ResultCode[keyof typeof ResultCode];

const DESCRIPTIONS: Record<number, string> = {
  0x00: "Success",
  0x01: "Unknown error",
  0x02: "No object found",
  0x03: "I/O error",
  0x04: "VDI exists already",
  0x05: "Invalid parameters",
  0x06: "System error",
  0x07: "VDI is already locked",
  0x08: "No VDI found",
  0x09: "No base VDI found",
  0x0a: "Failed to read from requested VDI",
  0x0b: "Failed to write to requested VDI",
  0x0c: "Failed to read from base VDI",
  0x0d: "Failed to write to base VDI",
  0x0e: "Failed to find requested tag",
  0x0f: "System is still booting",
  0x10: "VDI is not locked",
  0x11: "System is shutting down",
  0x12: "Out of memory on server",
  0x13: "Maximum number of VDIs reached",
  0x14: "Protocol version mismatch",
  0x15: "Server has no room for new objects",
  0x16: "Waiting for cluster to be formatted",
  0x17: "Waiting for other nodes to join cluster",
  0x18: "Node has failed to join cluster",
  0x19: "IO has halted as there are not enough living nodes",
  0x1a: "Object is read-only",
  0x1d: "Inode object is invalidated",
  0x81: "Request has an old epoch",
  0x82: "Request has a new epoch",
  0x83: "Cluster has not been formatted",
  0x84: "Creation times differ",
  0x85: "Invalid epoch",
  0x86: "Network error between sheep",
  0x88: "Buffer is too small",
  0x8b: "Operation is not supported",
  0x8c: "Node is in recovery",
  0x8d: "Node is killed",
  0x8e: "Object ID exists already",
  0x8f: "Ask to try again",
  0x92: "VDI is not empty",
  0x93: "Cannot find requested resource",
  0x94: "Not authorized: the request needs the cluster key",
};

const SYSTEM_ERRORS: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "it is a directory",
  ENOTDIR: "a part of the path is not a directory",
  EEXIST: "it exists already",
  ENOSPC: "no space left on the device",
  EROFS: "the filesystem is read-only",
  EIO: "input/output error",
  ENOTFOUND: "no such host",
  EAI_AGAIN: "the host name cannot be resolved now",
  ECONNREFUSED: "connection refused",
  ECONNRESET: "the connection was reset",
  ETIMEDOUT: "timed out",
  EHOSTUNREACH: "the host is unreachable",
  ENETUNREACH: "the network is unreachable",
  EADDRINUSE: "the address is in use",
  EADDRNOTAVAIL: "the address is not on this host",
  EPIPE: "the other end closed",
};

/**
 * A Node system error (`error.code`, e.g. ENOENT) in words, for one-line messages that say what
 * failed on what and why, instead of Node's own text.
 */
export function systemErrorText(error: unknown): string {
  const code = (error as { code?: unknown })?.code;
  if (typeof code === "string" && SYSTEM_ERRORS[code]) return SYSTEM_ERRORS[code];
  return typeof code === "string" ? code : error instanceof Error ? error.message : String(error);
}

/** The human description of a result code, as Sheepdog's `sd_strerror`. */
export function describeResult(code: number): string {
  return DESCRIPTIONS[code] ?? `Unknown result code 0x${code.toString(16)}`;
}

/** An operating error a caller is meant to handle; `code` travels on the wire. */
export class SheepdogError extends Error {
  override name = "SheepdogError";
  readonly code: number;

  constructor(code: number, message?: string, options?: ErrorOptions) {
    super(message ?? describeResult(code), options);
    this.code = code;
  }
}

/** True when `error` is a SheepdogError with one of `codes`. */
export function isResult(error: unknown, ...codes: number[]): error is SheepdogError {
  return error instanceof SheepdogError && codes.includes(error.code);
}

/**
 * Bytes on disk that are not what was written: a block failing its checksum, a data file shorter
 * than its object, a missing or damaged checksum file. Code EIO on the wire; the caller reads
 * another replica and repairs this one. `blocks` lists the bad block indexes when known.
 */
export class CorruptionError extends SheepdogError {
  override name = "CorruptionError";
  /** Set so code that only sees the options-like shape can tell (see ObjectStore's doc). */
  readonly corrupt = true;
  readonly oid: bigint;
  readonly blocks: readonly number[];

  constructor(oid: bigint, blocks: readonly number[], message: string, options?: ErrorOptions) {
    super(ResultCode.EIO, message, options);
    this.oid = oid;
    this.blocks = blocks;
  }
}

/** True when `error` says the stored bytes are corrupt (rather than unreadable or missing). */
export function isCorruption(error: unknown): error is CorruptionError {
  return error instanceof CorruptionError;
}

/**
 * The promise `work` returns, or a rejected one when `work` throws before returning one: callers
 * of a hot path handle one outcome, without an async function's extra promise and turn.
 */
export function promiseOf<T>(work: () => Promise<T>): Promise<T> {
  try {
    return work();
  } catch (error) {
    return Promise.reject(error);
  }
}
