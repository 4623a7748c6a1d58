/**
 * One NBD connection: the fixed newstyle handshake (option haggling) and then the transmission
 * phase, where requests are handled concurrently and replies written as they complete.
 *
 * Bounds per connection (NbdLimits): requests in flight, payload bytes in flight, unparsed input
 * (the socket is paused beyond it) and queued reply bytes. Requests on overlapping ranges keep
 * arrival order where it matters: a write-like request (WRITE, TRIM, WRITE_ZEROES) waits for
 * every earlier overlapping request, a READ/BLOCK_STATUS for earlier overlapping write-like ones.
 * The export is closed exactly once, after every request has settled.
 *
 * TLS (when the server has an NbdTls): required. Before NBD_OPT_STARTTLS only NBD_OPT_ABORT is
 * served; other options get NBD_REP_ERR_TLS_REQD, NBD_OPT_EXPORT_NAME (which cannot be refused
 * with a reply) and a client without fixed newstyle are disconnected. NBD_OPT_STARTTLS is
 * answered with NBD_REP_ACK in plain text, then the session reads and writes through the
 * TLSSocket wrapped around the connection, and haggling starts over inside TLS.
 */
import type { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import { setImmediate } from "node:timers";
import { ByteQueue } from "./byte_queue.ts";
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  CLIENT_FLAGS_LENGTH,
  MAX_OPTION_LENGTH,
  MAX_REQUEST_LENGTH,
  MIN_BLOCK_SIZE,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  type NbdLimits,
  OPTION_HEADER_LENGTH,
  optionName,
  PREFERRED_BLOCK_SIZE,
  REQUEST_LENGTH,
} from "./constants.ts";
import {
  type BlockExport,
  ExportError,
  type ExportInfo,
  type ExportProvider,
  nbdErrnoOf,
  NbdIoError,
} from "./export.ts";
import { LogThrottle } from "../log/log_throttle.ts";
import type { NbdLogger } from "./logger.ts";
import type { NbdTls } from "./tls.ts";
import {
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoDescription,
  encodeInfoExport,
  encodeInfoName,
  encodeMetaContextReply,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOptionReply,
  encodeRepServer,
  encodeSimpleReply,
  encodeString,
  extentsToDescriptors,
  type InfoRequest,
  type MetaContextRequest,
  NbdProtocolError,
  type NbdRequest,
  parseInfoRequest,
  parseMetaContextRequest,
  parseOptionHeader,
  parseRequest,
} from "./protocol.ts";

export interface SessionOptions {
  provider: ExportProvider;
  /** "ADDR:PORT" of the peer, or "unix". */
  client: string;
  logger: NbdLogger;
  limits: NbdLimits;
  /** TLS credentials: when given, the client must start TLS before anything else. */
  tls?: NbdTls | null;
  /** Told once per connection how TLS went, for metrics (the session logs it too). */
  onTls?: (event: NbdTlsEvent) => void;
}

/**
 * How a connection to a TLS-requiring server fared: it was secured, refused for not starting
 * TLS, or its TLS handshake failed (bad input, wrong key or certificate, the client gave up).
 */
export interface NbdTlsEvent {
  outcome: "secured" | "refused" | "failed";
  client: string;
  /** Why it was refused or failed; the protocol and cipher when secured. */
  detail: string;
}

/** How option haggling ended. */
type HandshakeEnd = "transmission" | "close";

/** A write-like request in flight, for ordering overlapping ranges. */
interface RangeOp {
  start: number;
  end: number;
  /** WRITE, TRIM or WRITE_ZEROES (else READ or BLOCK_STATUS). */
  write: boolean;
  done: Promise<void> | null;
  resolve: (() => void) | null;
  finished: boolean;
}

const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;
/** Failed requests the storage refused are logged at most once per this long per session. */
const STORAGE_FAILURE_LOG_MS = 10_000;
/** Grace given to a peer to take our last bytes after we end the connection. */
const END_GRACE_MS = 2000;

export class NbdSession {
  /** Resolves when the connection is closed and the export (if any) released. Never rejects. */
  readonly done: Promise<void>;

  /** Where bytes come from and go to: the connection, or the TLSSocket around it. */
  #socket: Socket;
  /** The connection itself. */
  readonly #raw: Socket;
  readonly #provider: ExportProvider;
  readonly #client: string;
  readonly #log: NbdLogger;
  readonly #limits: NbdLimits;
  readonly #queue: ByteQueue;
  readonly #tls: NbdTls | null;
  readonly #onTls: ((event: NbdTlsEvent) => void) | null;
  /** Where TLS stands; "failed" once a failure is logged. */
  #tlsState: "plain" | "handshaking" | "secure" | "failed" = "plain";
  /** The first reason a client without TLS was refused, logged if it never starts TLS. */
  #tlsRefusal: string | null = null;
  /** Protocol and cipher once secured ("TLSv1.3 TLS_AES_256_GCM_SHA384"). */
  #tlsDetail: string | null = null;
  /** The PSK identity the client used. */
  #tlsIdentity: string | null = null;

  /** Storage failures: a line per STORAGE_FAILURE_LOG_MS, saying how many failed unlogged. */
  readonly #storageFailureLog = new LogThrottle(STORAGE_FAILURE_LOG_MS);
  #paused = false;
  /** The socket whose writes are held until the end of this event-loop turn, if any. */
  #corked: Socket | null = null;
  #closed = false;
  #closedPromise: Promise<void>;
  #phase: "handshake" | "transmission" | "ending" = "handshake";
  #handshakeTimer: ReturnType<typeof setTimeout> | null = null;

  // negotiated state
  #noZeroes = false;
  #structured = false;
  /** Export name for which base:allocation was selected, or null. */
  #metaExport: string | null = null;
  #export: BlockExport | null = null;
  #blockStatus = false;

  // transmission state
  #stopping = false;
  #inflight = 0;
  #inflightBytes = 0;
  #wake: (() => void) | null = null;
  #idleWaiters: (() => void)[] = [];
  readonly #ranges = new Set<RangeOp>();

  constructor(socket: Socket, options: SessionOptions) {
    this.#socket = socket;
    this.#raw = socket;
    this.#tls = options.tls ?? null;
    this.#onTls = options.onTls ?? null;
    this.#provider = options.provider;
    this.#client = options.client;
    this.#log = options.logger;
    this.#limits = options.limits;
    this.#queue = new ByteQueue({
      onWant: () => this.#resume(),
      onConsume: () => {
        if (this.#paused && this.#queue.length < this.#limits.maxBufferedInput) this.#resume();
      },
    });
    this.#closedPromise = new Promise((resolve) => {
      this.#onClose = () => {
        if (this.#closed) return;
        this.#closed = true;
        this.#queue.end();
        this.#wakeLoop();
        resolve();
      };
    });
    this.#listen(socket);
    this.done = this.#run();
  }

  #onClose: () => void = () => {};

  #onData = (chunk: Buffer): void => {
    this.#queue.push(chunk);
    if (
      !this.#paused && this.#queue.length >= this.#limits.maxBufferedInput &&
      this.#queue.wanted === 0
    ) {
      this.#paused = true;
      this.#socket.pause();
    }
  };

  #onEnd = (): void => this.#queue.end();
  #onDrain = (): void => this.#wakeLoop();

  #onError = (err: Error): void => {
    this.#log.debug("nbd: socket error", { client: this.#client, error: err.message });
  };

  /** Reads from `socket` (the connection, or the TLSSocket after STARTTLS). */
  #listen(socket: Socket): void {
    socket.once("close", this.#onClose);
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
    socket.on("drain", this.#onDrain);
    socket.on("error", this.#onError);
  }

  /** The peer, "ADDR:PORT" or "unix". */
  get client(): string {
    return this.#client;
  }

  /**
   * Server shutdown: a session still haggling is dropped; one in transmission stops taking
   * requests, lets those in flight finish and reply, then closes. Await `done`.
   */
  shutdown(): void {
    if (this.#phase === "handshake") {
      this.#destroy();
      return;
    }
    this.#stopping = true;
    this.#queue.end();
    this.#wakeLoop();
  }

  // ================================ lifecycle =================================================

  async #run(): Promise<void> {
    let hard = false;
    try {
      const timeout = this.#limits.handshakeTimeoutMs;
      if (timeout > 0) {
        this.#handshakeTimer = setTimeout(() => {
          if (this.#tlsState === "handshaking") this.#tlsFailed("timed out");
          else this.#log.warn("nbd: handshake timed out", { client: this.#client });
          this.#destroy();
        }, timeout);
      }
      this.#send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
      const end = await this.#handshake();
      this.#clearHandshakeTimer();
      if (end === "transmission") {
        this.#phase = "transmission";
        await this.#transmission();
      }
    } catch (err) {
      hard = true;
      if (err instanceof NbdProtocolError) {
        this.#log.warn("nbd: protocol violation, closing", {
          client: this.#client,
          error: err.message,
        });
      } else {
        this.#log.error("nbd: session failed", { client: this.#client, error: String(err) });
      }
    }
    this.#phase = "ending";
    this.#clearHandshakeTimer();
    this.#stopping = true;
    if (hard) this.#destroy();
    this.#tlsOutcome();
    await this.#idle();
    const exp = this.#export;
    this.#export = null;
    if (exp !== null) {
      try {
        await exp.close();
      } catch (err) {
        this.#log.error("nbd: closing export failed", { export: exp.name, error: String(err) });
      }
      this.#log.info("nbd: export released", { export: exp.name, client: this.#client });
    }
    this.#endSocket();
    await this.#closedPromise;
  }

  #clearHandshakeTimer(): void {
    if (this.#handshakeTimer !== null) {
      clearTimeout(this.#handshakeTimer);
      this.#handshakeTimer = null;
    }
  }

  /** Drops the connection (and the TLSSocket around it). */
  #destroy(): void {
    this.#socket.destroy();
    this.#raw.destroy();
  }

  /** Flushes what was written, sends FIN, then releases the socket. */
  #endSocket(): void {
    const socket = this.#socket;
    if (socket.destroyed) return;
    const guard = setTimeout(() => socket.destroy(), END_GRACE_MS);
    socket.once("close", () => clearTimeout(guard));
    socket.end(() => socket.destroy());
  }

  #resume(): void {
    if (this.#paused && !this.#closed) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  #wakeLoop(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  #idle(): Promise<void> {
    if (this.#inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Writes unless the peer is gone (replies to a vanished client are dropped). */
  #send(data: Uint8Array, more?: Uint8Array): void {
    const socket = this.#socket;
    if (this.#closed || socket.destroyed || !socket.writable) return;
    if (
      this.#corked !== socket && this.#inflight <= 1 && this.#queue.length < REQUEST_LENGTH
    ) {
      // The only request in flight, none waiting to be parsed (queue depth 1): nothing to
      // gather, the reply leaves now.
      if (more === undefined) return void socket.write(data);
      socket.cork();
      socket.write(data);
      socket.write(more);
      socket.uncork();
      return;
    }
    this.#corkReplies(socket);
    socket.write(data);
    if (more !== undefined) socket.write(more);
  }

  /**
   * Holds what is written to `socket` until this turn of the event loop has run its I/O
   * callbacks: replies that complete together (a queue-depth-32 client's batch) leave in one
   * writev instead of a system call each.
   */
  #corkReplies(socket: Socket): void {
    if (this.#corked === socket) return;
    this.#corked = socket;
    socket.cork();
    setImmediate(() => {
      if (this.#corked === socket) this.#corked = null;
      socket.uncork();
    });
  }

  // ================================ handshake =================================================

  async #handshake(): Promise<HandshakeEnd> {
    const q = this.#queue;
    const flagsBuf = await q.take(CLIENT_FLAGS_LENGTH);
    if (flagsBuf === null) return "close";
    const clientFlags = flagsBuf.readUInt32BE(0);
    if ((clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0) {
      throw new NbdProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
    }
    this.#noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
    if (this.#tls !== null && (clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) === 0) {
      // Plain newstyle has no option replies, so no NBD_OPT_STARTTLS: the client cannot comply.
      this.#tlsRefusal = "the client does not use the fixed newstyle handshake, which TLS needs";
      return "close";
    }
    for (;;) {
      const header = await q.take(OPTION_HEADER_LENGTH);
      if (header === null) return "close";
      const { option, length } = parseOptionHeader(header);
      if (length > MAX_OPTION_LENGTH) {
        throw new NbdProtocolError(
          `option ${option} carries ${length} bytes (max ${MAX_OPTION_LENGTH})`,
        );
      }
      const data = await q.take(length);
      if (data === null) return "close";
      const end = await this.#option(option, data);
      if (end !== null) return end;
    }
  }

  #reply(option: number, type: number, data?: Uint8Array): void {
    this.#send(encodeOptionReply(option, type, data));
  }

  #replyError(option: number, type: number, message: string): void {
    this.#log.debug("nbd: option refused", {
      client: this.#client,
      option,
      reply: type.toString(16),
      message,
    });
    this.#reply(option, type, encodeString(message));
  }

  #replyExportError(option: number, err: unknown, fallback: number): void {
    if (err instanceof ExportError) this.#replyError(option, err.replyType, err.message);
    else {
      this.#log.error("nbd: export provider failed", { client: this.#client, error: String(err) });
      this.#replyError(option, fallback, err instanceof Error ? err.message : String(err));
    }
  }

  /** Handles one option; returns how haggling ends, or null to continue. */
  async #option(option: number, data: Buffer): Promise<HandshakeEnd | null> {
    if (this.#tls !== null && this.#tlsState === "plain") {
      return this.#optionBeforeTls(option, data);
    }
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return await this.#optExportName(data.toString("utf8"));
      case NBD_OPT_ABORT:
        this.#reply(option, NBD_REP_ACK);
        return "close";
      case NBD_OPT_LIST:
        await this.#optList(data);
        return null;
      case NBD_OPT_STARTTLS:
        if (this.#tls === null) {
          this.#replyError(option, NBD_REP_ERR_POLICY, "TLS is not supported by this server");
        } else {
          this.#replyError(option, NBD_REP_ERR_INVALID, "TLS is already in use");
        }
        return null;
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return await this.#optInfoGo(option, data);
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) {
          this.#replyError(option, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
        } else {
          this.#structured = true;
          this.#reply(option, NBD_REP_ACK);
        }
        return null;
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        this.#optMetaContext(option, data);
        return null;
      default:
        this.#replyError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return null;
    }
  }

  /** Options while TLS is required but not started: only STARTTLS and ABORT are served. */
  #optionBeforeTls(option: number, data: Buffer): HandshakeEnd | null {
    switch (option) {
      case NBD_OPT_STARTTLS:
        if (data.length !== 0) {
          this.#replyError(option, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
          return null;
        }
        this.#startTls();
        return null;
      case NBD_OPT_ABORT:
        this.#reply(option, NBD_REP_ACK);
        return "close";
      case NBD_OPT_EXPORT_NAME:
        // No reply can refuse it: the spec says to close.
        this.#tlsRefusal ??= "NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS";
        return "close";
      default:
        this.#tlsRefusal ??= `${optionName(option)} before NBD_OPT_STARTTLS`;
        this.#replyError(option, NBD_REP_ERR_TLS_REQD, "TLS is required: use NBD_OPT_STARTTLS");
        return null;
    }
  }

  /**
   * NBD_OPT_STARTTLS: ACK in plain text, then everything goes through TLS. The client sends its
   * ClientHello only after reading the ACK, so bytes already here broke the protocol.
   */
  #startTls(): void {
    const tls = this.#tls;
    if (tls === null) throw new Error("NbdSession: STARTTLS without TLS credentials");
    const raw = this.#raw;
    if (this.#queue.length > 0 || raw.readableLength > 0) {
      throw new NbdProtocolError("data after NBD_OPT_STARTTLS before its reply");
    }
    this.#reply(NBD_OPT_STARTTLS, NBD_REP_ACK);
    // The TLS layer reads the connection from now on; its close still ends the session.
    raw.off("data", this.#onData);
    raw.off("end", this.#onEnd);
    raw.off("drain", this.#onDrain);
    this.#resume();
    this.#tlsState = "handshaking";
    tls.upgrade(raw, {
      secured: (secure, info) => {
        if (this.#tlsState !== "handshaking" || this.#closed) {
          secure.destroy();
          return;
        }
        this.#tlsState = "secure";
        this.#tlsDetail = info.detail;
        this.#tlsIdentity = info.identity ?? null;
        this.#socket = secure;
        this.#listen(secure);
        this.#log.debug("nbd: TLS established", {
          client: this.#client,
          tls: info.detail,
          ...(info.identity !== undefined ? { identity: info.identity } : {}),
        });
        this.#onTls?.({ outcome: "secured", client: this.#client, detail: info.detail });
      },
      failed: (reason) => this.#tlsFailed(reason),
    });
  }

  /** Logs (once) and reports a TLS handshake that did not complete. */
  #tlsFailed(reason: string): void {
    if (this.#tlsState !== "handshaking") return;
    this.#tlsState = "failed";
    this.#log.warn("nbd: TLS handshake failed, closing", { client: this.#client, error: reason });
    this.#onTls?.({ outcome: "failed", client: this.#client, detail: reason });
  }

  /** At the end of a session: a refusal or an unfinished handshake not reported yet. */
  #tlsOutcome(): void {
    if (this.#tlsState === "handshaking") {
      this.#tlsFailed("the connection closed during the TLS handshake");
    } else if (this.#tlsState === "plain" && this.#tlsRefusal !== null) {
      const reason = this.#tlsRefusal;
      this.#tlsRefusal = null;
      this.#log.warn("nbd: refused a client without TLS (TLS is required)", {
        client: this.#client,
        reason,
      });
      this.#onTls?.({ outcome: "refused", client: this.#client, detail: reason });
    }
  }

  async #optExportName(name: string): Promise<HandshakeEnd> {
    // No way to report an error here: refusing means closing (spec).
    let exp: BlockExport;
    try {
      exp = await this.#provider.open(name, { client: this.#client });
    } catch (err) {
      this.#log.info("nbd: NBD_OPT_EXPORT_NAME refused", {
        client: this.#client,
        export: name,
        error: err instanceof Error ? err.message : String(err),
      });
      return "close";
    }
    this.#attach(exp, name);
    this.#send(
      encodeExportNameReply(exp.sizeBytes, this.#transmissionFlags(exp.readOnly), this.#noZeroes),
    );
    return "transmission";
  }

  async #optList(data: Buffer): Promise<void> {
    if (data.length !== 0) {
      this.#replyError(NBD_OPT_LIST, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
      return;
    }
    let exports: ExportInfo[];
    try {
      exports = await this.#provider.list();
    } catch (err) {
      this.#replyExportError(NBD_OPT_LIST, err, NBD_REP_ERR_POLICY);
      return;
    }
    for (const e of exports) {
      this.#reply(NBD_OPT_LIST, NBD_REP_SERVER, encodeRepServer(e.name, e.description));
    }
    this.#reply(NBD_OPT_LIST, NBD_REP_ACK);
  }

  /** Size/flags of an export without keeping it open (NBD_OPT_INFO). */
  async #describe(name: string): Promise<ExportInfo> {
    const listed = (await this.#provider.list()).find((e) => e.name === name);
    if (listed !== undefined) return listed;
    // Not listed (e.g. a snapshot "vdi:snap"): open it briefly.
    const exp = await this.#provider.open(name, { client: this.#client });
    try {
      return { name, description: "", sizeBytes: exp.sizeBytes, readOnly: exp.readOnly };
    } finally {
      await exp.close();
    }
  }

  async #descriptionOf(name: string): Promise<string> {
    try {
      return (await this.#provider.list()).find((e) => e.name === name)?.description ?? "";
    } catch {
      return "";
    }
  }

  async #optInfoGo(option: number, data: Buffer): Promise<HandshakeEnd | null> {
    let req: InfoRequest;
    try {
      req = parseInfoRequest(data);
    } catch (err) {
      this.#replyError(option, NBD_REP_ERR_INVALID, (err as Error).message);
      return null;
    }
    const { name, infos } = req;
    let info: ExportInfo;
    let exp: BlockExport | null = null;
    try {
      if (option === NBD_OPT_GO) {
        exp = await this.#provider.open(name, { client: this.#client });
        info = { name, description: "", sizeBytes: exp.sizeBytes, readOnly: exp.readOnly };
      } else {
        info = await this.#describe(name);
      }
    } catch (err) {
      this.#replyExportError(option, err, NBD_REP_ERR_UNKNOWN);
      return null;
    }
    if (this.#closed) {
      // The client left while the export was opening.
      if (exp !== null) this.#attach(exp, name);
      return "close";
    }
    const flags = this.#transmissionFlags(info.readOnly);
    this.#reply(option, NBD_REP_INFO, encodeInfoExport(info.sizeBytes, flags));
    this.#reply(
      option,
      NBD_REP_INFO,
      encodeInfoBlockSize(MIN_BLOCK_SIZE, PREFERRED_BLOCK_SIZE, MAX_REQUEST_LENGTH),
    );
    if (infos.includes(NBD_INFO_NAME)) this.#reply(option, NBD_REP_INFO, encodeInfoName(name));
    if (infos.includes(NBD_INFO_DESCRIPTION)) {
      const description = info.description || await this.#descriptionOf(name);
      if (description !== "") {
        this.#reply(option, NBD_REP_INFO, encodeInfoDescription(description));
      }
    }
    this.#reply(option, NBD_REP_ACK);
    if (exp === null) return null;
    this.#attach(exp, name);
    return "transmission";
  }

  #optMetaContext(option: number, data: Buffer): void {
    const set = option === NBD_OPT_SET_META_CONTEXT;
    if (set) this.#metaExport = null; // replaced even when this request fails
    if (set && !this.#structured) {
      this.#replyError(
        option,
        NBD_REP_ERR_INVALID,
        "NBD_OPT_SET_META_CONTEXT needs NBD_OPT_STRUCTURED_REPLY first",
      );
      return;
    }
    let req: MetaContextRequest;
    try {
      req = parseMetaContextRequest(data);
    } catch (err) {
      this.#replyError(option, NBD_REP_ERR_INVALID, (err as Error).message);
      return;
    }
    let match: boolean;
    if (set) {
      match = req.queries.includes(BASE_ALLOCATION);
      if (match) this.#metaExport = req.exportName;
    } else {
      match = req.queries.length === 0 ||
        req.queries.some((q) => q === "base:" || q === BASE_ALLOCATION);
    }
    if (match) {
      this.#reply(
        option,
        NBD_REP_META_CONTEXT,
        encodeMetaContextReply(set ? BASE_ALLOCATION_ID : 0, BASE_ALLOCATION),
      );
    }
    this.#reply(option, NBD_REP_ACK);
  }

  #transmissionFlags(readOnly: boolean): number {
    let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;
    // Without writes there is no cache to keep coherent: several connections are safe.
    if (readOnly) flags |= NBD_FLAG_READ_ONLY | NBD_FLAG_CAN_MULTI_CONN;
    else flags |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    // Every READ is answered with a single data chunk, so "don't fragment" is free.
    if (this.#structured) flags |= NBD_FLAG_SEND_DF;
    return flags;
  }

  #attach(exp: BlockExport, name: string): void {
    this.#export = exp;
    this.#blockStatus = this.#structured && this.#metaExport === name;
    this.#log.info("nbd: export attached", {
      client: this.#client,
      export: exp.name,
      sizeBytes: exp.sizeBytes,
      readOnly: exp.readOnly,
      structuredReplies: this.#structured,
      blockStatus: this.#blockStatus,
      ...(this.#tlsDetail !== null ? { tls: this.#tlsDetail } : {}),
      ...(this.#tlsIdentity !== null ? { identity: this.#tlsIdentity } : {}),
    });
  }

  // ================================ transmission ==============================================

  async #transmission(): Promise<void> {
    const q = this.#queue;
    while (!this.#stopping) {
      const header = q.tryTake(REQUEST_LENGTH) ?? await q.take(REQUEST_LENGTH);
      if (header === null) {
        if (q.length > 0) this.#log.warn("nbd: truncated request", { client: this.#client });
        return;
      }
      const req = parseRequest(header);
      if (req.type === NBD_CMD_DISC) {
        this.#log.debug("nbd: NBD_CMD_DISC", { client: this.#client });
        return;
      }
      if (req.type === NBD_CMD_WRITE) {
        if (req.length > MAX_REQUEST_LENGTH) {
          // The payload still has to be consumed to stay in sync; discard it unbuffered.
          if (!await q.skip(req.length)) return;
          this.#replyFailure(
            req,
            NBD_EINVAL,
            `write of ${req.length} bytes exceeds the maximum of ${MAX_REQUEST_LENGTH}`,
          );
          continue;
        }
        if (!this.#admitsNow(req.length) && !await this.#admit(req.length)) return;
        const payload = q.tryTake(req.length) ?? await q.take(req.length);
        if (payload === null) {
          this.#log.warn("nbd: truncated write payload", { client: this.#client });
          return;
        }
        this.#dispatch(req, payload, req.length);
      } else {
        const cost = req.type === NBD_CMD_READ ? Math.min(req.length, MAX_REQUEST_LENGTH) : 0;
        if (!this.#admitsNow(cost) && !await this.#admit(cost)) return;
        if (req.type === NBD_CMD_READ && this.#readNow(req)) continue;
        this.#dispatch(req, null, cost);
      }
    }
  }

  /**
   * A read the export answers on this thread, now (`BlockExport.readNow`: a short read of a
   * copy at hand): the reply leaves before the next request is parsed, with no promise on the
   * way. False when it cannot, and then nothing was done: anything unusual (flags to check, a
   * write in flight over the range, an error) goes the usual way, through `#execute`, which
   * also reports the error.
   */
  #readNow(req: NbdRequest): boolean {
    const exp = this.#export;
    const { offset, length } = req;
    if (exp?.readNow === undefined || length === 0) return false;
    let data: Uint8Array | undefined;
    try {
      this.#checkRead(exp, req);
      if (this.#conflicts(offset, offset + length, false) !== null) return false;
      data = exp.readNow(offset, length);
    } catch {
      return false;
    }
    if (data?.length !== length) return false;
    this.#replyData(req, data);
    return true;
  }

  /** Throws the error a client's read gets for its flags or range (`#execute`, `#readNow`). */
  #checkRead(exp: BlockExport, req: NbdRequest): void {
    checkFlags(req.flags, NBD_CMD_FLAG_FUA | (this.#structured ? NBD_CMD_FLAG_DF : 0), "READ");
    checkMax(req.length, "read");
    checkRange(exp, req.offset, req.length, NBD_EINVAL, "read");
  }

  #hasCapacity(cost: number): boolean {
    const l = this.#limits;
    return this.#inflight < l.maxInFlightRequests &&
      (this.#inflight === 0 || this.#inflightBytes + cost <= l.maxInFlightBytes) &&
      this.#socket.writableLength <= l.maxBufferedOutput;
  }

  /** `#admit` without waiting: the usual case costs no turn of the microtask queue. */
  #admitsNow(cost: number): boolean {
    return !this.#closed && this.#hasCapacity(cost);
  }

  /** Waits until one more request of `cost` bytes fits; false if the session is ending. */
  async #admit(cost: number): Promise<boolean> {
    while (!this.#hasCapacity(cost)) {
      if (this.#closed || this.#stopping) return false;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    return !this.#closed;
  }

  #dispatch(req: NbdRequest, payload: Buffer | null, cost: number): void {
    this.#inflight++;
    this.#inflightBytes += cost;
    this.#handle(req, payload).finally(() => {
      this.#inflight--;
      this.#inflightBytes -= cost;
      this.#wakeLoop();
      if (this.#inflight === 0 && this.#idleWaiters.length > 0) {
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        for (const w of waiters) w();
      }
    });
  }

  async #handle(req: NbdRequest, payload: Buffer | null): Promise<void> {
    try {
      await this.#execute(req, payload);
    } catch (err) {
      const errno = nbdErrnoOf(err);
      const message = err instanceof Error ? err.message : String(err);
      if (!(err instanceof NbdIoError)) this.#logFailure(req, message);
      else if (err.cause !== undefined) this.#logStorageFailure(req, message);
      this.#replyFailure(req, errno, message);
    }
  }

  #logFailure(req: NbdRequest, error: string, extra: Record<string, unknown> = {}): void {
    this.#log.warn("nbd: request failed", {
      client: this.#client,
      type: req.type,
      offset: req.offset,
      length: req.length,
      error,
      ...extra,
    });
  }

  /**
   * An error the export mapped from the storage (it has a cause: the cluster could not do it)
   * is the operator's business too, but a client may retry it thousands of times: one line per
   * STORAGE_FAILURE_LOG_MS, saying how many failed since the last.
   */
  #logStorageFailure(req: NbdRequest, error: string): void {
    const unlogged = this.#storageFailureLog.say(Date.now());
    if (unlogged === undefined) return;
    this.#logFailure(req, error, unlogged > 0 ? { notLoggedBefore: unlogged } : {});
  }

  #replyOk(req: NbdRequest): void {
    this.#send(
      this.#structured && req.type === NBD_CMD_READ
        ? encodeNoneChunk(req.handle)
        : encodeSimpleReply(0, req.handle),
    );
  }

  #replyFailure(req: NbdRequest, errno: number, message: string): void {
    this.#send(
      this.#structured
        ? encodeErrorChunk(req.handle, errno, message)
        : encodeSimpleReply(errno, req.handle),
    );
  }

  /** Header and data leave in one writev: no copy of the payload. */
  #replyData(req: NbdRequest, data: Uint8Array): void {
    this.#send(
      this.#structured
        ? encodeOffsetDataHeader(req.handle, req.offset, data.length)
        : encodeSimpleReply(0, req.handle),
      data,
    );
  }

  async #execute(req: NbdRequest, payload: Buffer | null): Promise<void> {
    const exp = this.#export;
    if (exp === null) throw new NbdIoError(NBD_EIO, "no export attached");
    const { type, flags, offset, length } = req;
    const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (type) {
      case NBD_CMD_READ: {
        this.#checkRead(exp, req);
        if (length === 0) return this.#replyOk(req);
        const data = await this.#ordered(offset, length, false, () => exp.read(offset, length));
        if (data.length !== length) {
          throw new NbdIoError(NBD_EIO, `export returned ${data.length} bytes, not ${length}`);
        }
        return this.#replyData(req, data);
      }
      case NBD_CMD_WRITE: {
        checkFlags(flags, NBD_CMD_FLAG_FUA, "WRITE");
        checkWritable(exp);
        checkRange(exp, offset, length, NBD_ENOSPC, "write");
        if (length === 0 || payload === null) return this.#replyOk(req);
        await this.#ordered(offset, length, true, () => exp.write(offset, payload, { fua }));
        return this.#replyOk(req);
      }
      case NBD_CMD_FLUSH:
        checkFlags(flags, NBD_CMD_FLAG_FUA, "FLUSH");
        await exp.flush();
        return this.#replyOk(req);
      case NBD_CMD_TRIM: {
        checkFlags(flags, NBD_CMD_FLAG_FUA, "TRIM");
        checkWritable(exp);
        checkRange(exp, offset, length, NBD_EINVAL, "trim");
        if (length === 0) return this.#replyOk(req);
        await this.#ordered(offset, length, true, async () => {
          await sliced(offset, length, (o, l) => exp.trim(o, l));
          if (fua) await exp.flush();
        });
        return this.#replyOk(req);
      }
      case NBD_CMD_WRITE_ZEROES: {
        // NBD_FLAG_SEND_FAST_ZERO is not advertised: NBD_CMD_FLAG_FAST_ZERO gets EINVAL.
        checkFlags(flags, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE, "WRITE_ZEROES");
        checkWritable(exp);
        checkRange(exp, offset, length, NBD_ENOSPC, "write zeroes");
        if (length === 0) return this.#replyOk(req);
        const noHole = (flags & NBD_CMD_FLAG_NO_HOLE) !== 0;
        await this.#ordered(
          offset,
          length,
          true,
          () => sliced(offset, length, (o, l) => exp.writeZeroes(o, l, { fua, noHole })),
        );
        return this.#replyOk(req);
      }
      case NBD_CMD_BLOCK_STATUS: {
        checkFlags(flags, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE, "BLOCK_STATUS");
        if (!this.#blockStatus) {
          throw new NbdIoError(NBD_EINVAL, "no metadata context was negotiated for this export");
        }
        if (length === 0) throw new NbdIoError(NBD_EINVAL, "block status of 0 bytes");
        checkRange(exp, offset, length, NBD_EINVAL, "block status");
        const extents = await this.#ordered(
          offset,
          length,
          false,
          () => exp.blockStatus(offset, length),
        );
        const descriptors = extentsToDescriptors(
          extents,
          length,
          (flags & NBD_CMD_FLAG_REQ_ONE) !== 0,
        );
        this.#send(encodeBlockStatusChunk(req.handle, BASE_ALLOCATION_ID, descriptors));
        return;
      }
      default:
        throw new NbdIoError(NBD_EINVAL, `unsupported command ${type}`);
    }
  }

  // ---- ordering of overlapping requests ---------------------------------------------------

  /**
   * Completion of the requests in flight that overlap [start, end) and must go first: earlier
   * write-like requests for anyone, and also earlier reads for a write-like request.
   */
  #conflicts(start: number, end: number, write: boolean): Promise<void> | null {
    let waits: Promise<void>[] | null = null;
    for (const op of this.#ranges) {
      if (op.start < end && start < op.end && (write || op.write)) {
        (waits ??= []).push(doneOf(op));
      }
    }
    if (waits === null) return null;
    if (waits.length === 1) return waits[0] ?? null;
    return Promise.all(waits).then(() => {});
  }

  /**
   * Runs `action` once every earlier conflicting request on an overlapping range is done, and
   * makes later ones wait for it (arrival order per range).
   */
  async #ordered<T>(
    offset: number,
    length: number,
    write: boolean,
    action: () => Promise<T>,
  ): Promise<T> {
    const end = offset + length;
    const wait = this.#conflicts(offset, end, write);
    const op: RangeOp = { start: offset, end, write, done: null, resolve: null, finished: false };
    this.#ranges.add(op);
    try {
      if (wait !== null) await wait;
      return await action();
    } finally {
      this.#ranges.delete(op);
      op.finished = true;
      op.resolve?.();
    }
  }
}

function doneOf(op: RangeOp): Promise<void> {
  if (op.finished) return Promise.resolve();
  op.done ??= new Promise<void>((resolve) => (op.resolve = resolve));
  return op.done;
}

function checkFlags(flags: number, allowed: number, command: string): void {
  if ((flags & ~allowed) !== 0) {
    throw new NbdIoError(NBD_EINVAL, `flags 0x${flags.toString(16)} are not valid for ${command}`);
  }
}

function checkMax(length: number, what: string): void {
  if (length > MAX_REQUEST_LENGTH) {
    throw new NbdIoError(
      NBD_EINVAL,
      `${what} of ${length} bytes exceeds the maximum of ${MAX_REQUEST_LENGTH}`,
    );
  }
}

function checkWritable(exp: BlockExport): void {
  if (exp.readOnly) throw new NbdIoError(NBD_EPERM, `export "${exp.name}" is read-only`);
}

function checkRange(
  exp: BlockExport,
  offset: number,
  length: number,
  errno: number,
  what: string,
): void {
  if (offset > exp.sizeBytes || length > exp.sizeBytes - offset) {
    throw new NbdIoError(
      errno,
      `${what} of ${length} bytes at ${offset} is beyond the end of the export (${exp.sizeBytes} bytes)`,
    );
  }
}

/** Calls `fn` over [offset, offset+length) in slices of at most MAX_REQUEST_LENGTH. */
async function sliced(
  offset: number,
  length: number,
  fn: (offset: number, length: number) => Promise<void>,
): Promise<void> {
  const end = offset + length;
  for (let pos = offset; pos < end; pos += MAX_REQUEST_LENGTH) {
    await fn(pos, Math.min(MAX_REQUEST_LENGTH, end - pos));
  }
}
