/**
 * The contract between the NBD server and whatever stores the bytes (a VDI, a snapshot, a test
 * double). The session validates every offset/length before calling an export.
 */
import {
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_ERRNOS,
  NBD_REP_ERR_BLOCK_SIZE_REQD,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_PLATFORM,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
} from "./constants.ts";

/** One extent for NBD_CMD_BLOCK_STATUS base:allocation. */
export interface Extent {
  length: number;
  hole: boolean;
  zero: boolean;
}

/** An opened export (a VDI or a read-only snapshot). All offsets/lengths are validated by the session before calling. */
export interface BlockExport {
  readonly name: string;
  /** Up to 4 TiB: fits in a JS number. */
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /**
   * `length` ≤ 32 MiB, within the export. Must resolve to exactly `length` bytes, which go to
   * the socket without a copy: do not reuse that memory afterwards.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * `read`, answered on the calling thread when the export can (a short read of bytes at hand):
   * undefined when it cannot, and then it did nothing the session's `read` would not do again.
   * It may throw; the session then takes the request through `read`, which reports the error.
   */
  readNow?(offset: number, length: number): Uint8Array | undefined;
  /**
   * `data.length` ≤ 32 MiB, within the export. `data` may be a view into a larger received
   * chunk (never reused by the session); keeping it keeps that chunk alive.
   */
  write(offset: number, data: Uint8Array, options: { fua: boolean }): Promise<void>;
  flush(): Promise<void>;
  /** `length` ≤ 32 MiB (larger client requests are split), within the export. */
  trim(offset: number, length: number): Promise<void>;
  /** `length` ≤ 32 MiB (larger client requests are split), within the export. */
  writeZeroes(
    offset: number,
    length: number,
    options: { fua: boolean; noHole: boolean },
  ): Promise<void>;
  /**
   * Consecutive extents starting at `offset`; `length` can be anything up to 4 GiB - 1 (a
   * client's hint, within the export). They may cover less than `length` (at least one byte):
   * clients ask again for the rest. The session clips anything beyond `length` and merges
   * equal neighbours.
   */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
  /** Called once when the client disconnects, after every request on it has settled (release locks). */
  close(): Promise<void>;
}

export interface ExportInfo {
  name: string;
  description: string;
  sizeBytes: number;
  readOnly: boolean;
}

export interface ExportProvider {
  list(): Promise<ExportInfo[]>;
  /** Throws ExportError (with an nbd error code / message) if missing or locked. `client` is "ADDR:PORT" or "unix". */
  open(name: string, options: { client: string }): Promise<BlockExport>;
}

/** Why an export cannot be opened; each kind is one NBD_REP_ERR_* option reply. */
export type ExportErrorKind =
  | "unknown" // NBD_REP_ERR_UNKNOWN: no such export
  | "policy" // NBD_REP_ERR_POLICY: exists but refused (e.g. locked by another writer)
  | "invalid" // NBD_REP_ERR_INVALID
  | "unsupported" // NBD_REP_ERR_UNSUP
  | "platform" // NBD_REP_ERR_PLATFORM
  | "tls-required" // NBD_REP_ERR_TLS_REQD
  | "shutdown" // NBD_REP_ERR_SHUTDOWN
  | "block-size-required" // NBD_REP_ERR_BLOCK_SIZE_REQD
  | "too-big"; // NBD_REP_ERR_TOO_BIG

const REPLY_OF_KIND: Record<ExportErrorKind, number> = {
  "unknown": NBD_REP_ERR_UNKNOWN,
  "policy": NBD_REP_ERR_POLICY,
  "invalid": NBD_REP_ERR_INVALID,
  "unsupported": NBD_REP_ERR_UNSUP,
  "platform": NBD_REP_ERR_PLATFORM,
  "tls-required": NBD_REP_ERR_TLS_REQD,
  "shutdown": NBD_REP_ERR_SHUTDOWN,
  "block-size-required": NBD_REP_ERR_BLOCK_SIZE_REQD,
  "too-big": NBD_REP_ERR_TOO_BIG,
};

/**
 * Thrown by ExportProvider.open (or list): refuses an export during the handshake. `message` is
 * sent to the client verbatim (e.g. `export "vm1" is locked by 10.0.0.5:40122`).
 */
export class ExportError extends Error {
  readonly kind: ExportErrorKind;
  /** The NBD_REP_ERR_* value sent to the client. */
  readonly replyType: number;

  constructor(kind: ExportErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ExportError";
    this.kind = kind;
    this.replyType = REPLY_OF_KIND[kind];
  }

  /** The export does not exist. */
  static unknown(name: string): ExportError {
    return new ExportError("unknown", `export "${name}" does not exist`);
  }

  /** A writable export is already attached by `holder` ("ADDR:PORT"). */
  static locked(name: string, holder: string): ExportError {
    return new ExportError("policy", `export "${name}" is locked by ${holder}`);
  }
}

/**
 * An I/O failure with a specific NBD error value (NBD_EIO, NBD_ENOSPC, NBD_EPERM, NBD_EINVAL,
 * NBD_EOVERFLOW, NBD_ENOTSUP, NBD_ESHUTDOWN, NBD_ENOMEM). Any other Error thrown by an export
 * is reported as NBD_EIO (or by its Node `code`, e.g. "ENOSPC").
 */
export class NbdIoError extends Error {
  readonly errno: number;

  constructor(errno: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NbdIoError";
    this.errno = NBD_ERRNOS.has(errno) ? errno : NBD_EIO;
  }
}

const ERRNO_OF_CODE: Record<string, number> = {
  EPERM: NBD_EPERM,
  EACCES: NBD_EPERM,
  EROFS: NBD_EPERM,
  EIO: NBD_EIO,
  EINVAL: NBD_EINVAL,
  ENOSPC: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC,
  EFBIG: NBD_ENOSPC,
};

/** The NBD error value for anything an export may throw (unknown → NBD_EIO). */
export function nbdErrnoOf(err: unknown): number {
  if (err instanceof NbdIoError) return err.errno;
  if (typeof err === "object" && err !== null) {
    const errno = (err as { errno?: unknown }).errno;
    if (typeof errno === "number" && NBD_ERRNOS.has(errno)) return errno;
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string") {
      const mapped = ERRNO_OF_CODE[code];
      if (mapped !== undefined) return mapped;
    }
  }
  return NBD_EIO;
}
