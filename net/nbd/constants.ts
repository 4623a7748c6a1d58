/**
 * NBD protocol numbers (NetworkBlockDevice/nbd doc/proto.md) and this server's limits.
 * Pure data: no I/O.
 */

// ---- Magics ---------------------------------------------------------------------------------

/** "NBDMAGIC", first 8 bytes sent by the server. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle handshake magic, also the prefix of every option request. */
export const NBD_IHAVEOPT = 0x49484156454f5054n;
/** Prefix of every fixed-newstyle option reply. */
export const NBD_OPT_REPLY_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---- Handshake flags (server, 16 bits) and client flags (32 bits) ----------------------------

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// ---- Transmission flags (16 bits) ------------------------------------------------------------

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- Options ---------------------------------------------------------------------------------

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

const OPTION_NAMES: Readonly<Record<number, string>> = {
  [NBD_OPT_EXPORT_NAME]: "NBD_OPT_EXPORT_NAME",
  [NBD_OPT_ABORT]: "NBD_OPT_ABORT",
  [NBD_OPT_LIST]: "NBD_OPT_LIST",
  [NBD_OPT_PEEK_EXPORT]: "NBD_OPT_PEEK_EXPORT",
  [NBD_OPT_STARTTLS]: "NBD_OPT_STARTTLS",
  [NBD_OPT_INFO]: "NBD_OPT_INFO",
  [NBD_OPT_GO]: "NBD_OPT_GO",
  [NBD_OPT_STRUCTURED_REPLY]: "NBD_OPT_STRUCTURED_REPLY",
  [NBD_OPT_LIST_META_CONTEXT]: "NBD_OPT_LIST_META_CONTEXT",
  [NBD_OPT_SET_META_CONTEXT]: "NBD_OPT_SET_META_CONTEXT",
  [NBD_OPT_EXTENDED_HEADERS]: "NBD_OPT_EXTENDED_HEADERS",
};

/** "NBD_OPT_GO" for 7; "option N" for an option this table does not know. */
export function optionName(option: number): string {
  return OPTION_NAMES[option] ?? `option ${option}`;
}

// ---- Option reply types ------------------------------------------------------------------------

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Bit 31 marks an error reply. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;

// ---- NBD_REP_INFO information types -------------------------------------------------------------

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---- Commands and command flags ----------------------------------------------------------------

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

// ---- Structured replies ------------------------------------------------------------------------

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
/** Bit 15 marks an error chunk. */
export const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// ---- base:allocation ---------------------------------------------------------------------------

export const BASE_ALLOCATION = "base:allocation";
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// ---- Error values (transmission phase) ---------------------------------------------------------

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** The error values the protocol allows on the wire. */
export const NBD_ERRNOS: ReadonlySet<number> = new Set([
  NBD_EPERM,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_ENOTSUP,
  NBD_ESHUTDOWN,
]);

// ---- Sizes of fixed frames ---------------------------------------------------------------------

/** NBDMAGIC + IHAVEOPT + 16-bit handshake flags. */
export const GREETING_LENGTH = 18;
export const CLIENT_FLAGS_LENGTH = 4;
/** IHAVEOPT + option + length. */
export const OPTION_HEADER_LENGTH = 16;
/** magic + option + type + length. */
export const OPTION_REPLY_HEADER_LENGTH = 20;
export const REQUEST_LENGTH = 28;
export const SIMPLE_REPLY_LENGTH = 16;
export const STRUCTURED_REPLY_HEADER_LENGTH = 20;
/** Export size + transmission flags + 124 reserved zero bytes (NBD_OPT_EXPORT_NAME reply). */
export const EXPORT_NAME_REPLY_LENGTH = 134;
/** Protocol limit on strings (export names, error messages, context names). */
export const MAX_STRING_LENGTH = 4096;

// ---- This server's limits ----------------------------------------------------------------------

/** Smallest addressable unit advertised in NBD_INFO_BLOCK_SIZE. */
export const MIN_BLOCK_SIZE = 1;
/** Preferred I/O size advertised in NBD_INFO_BLOCK_SIZE. */
export const PREFERRED_BLOCK_SIZE = 4096;
/** Largest READ/WRITE (and WRITE_ZEROES/TRIM slice) handled in one request: 32 MiB. */
export const MAX_REQUEST_LENGTH = 32 * 1024 * 1024;
/** Largest option request accepted during the handshake; longer ones end the connection. */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Context id given to base:allocation by NBD_OPT_SET_META_CONTEXT. */
export const BASE_ALLOCATION_ID = 1;

/** Bounds per connection (all overridable through NbdServer options). */
export interface NbdLimits {
  /** Requests handled concurrently; the socket is not read while this many are in flight. */
  maxInFlightRequests: number;
  /** Payload bytes held by requests in flight (write payloads plus read buffers). */
  maxInFlightBytes: number;
  /** Unparsed input buffered before the socket is paused. */
  maxBufferedInput: number;
  /** Reply bytes queued on the socket before new requests stop being taken. */
  maxBufferedOutput: number;
  /** A client must finish option haggling within this time (0 = no limit). */
  handshakeTimeoutMs: number;
}

export const DEFAULT_LIMITS: Readonly<NbdLimits> = Object.freeze({
  maxInFlightRequests: 128,
  maxInFlightBytes: 64 * 1024 * 1024,
  maxBufferedInput: 4 * 1024 * 1024,
  maxBufferedOutput: 64 * 1024 * 1024,
  handshakeTimeoutMs: 30_000,
});
