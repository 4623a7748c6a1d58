/**
 * A deliberately small NBD client over a raw socket, for driving the server byte by byte:
 * handshake, options, requests, and parsing of every reply shape. Uses the pure codecs of
 * net/nbd/protocol.ts to build frames, but reads replies itself.
 */
import { Buffer } from "node:buffer";
import { connect, type Socket } from "node:net";
import * as tls from "node:tls";
import * as C from "../../net/nbd/constants.ts";
import * as P from "../../net/nbd/protocol.ts";

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export type Reply =
  | { kind: "simple"; errno: number; handle: bigint }
  | { kind: "structured"; flags: number; type: number; handle: bigint; payload: Buffer };

export interface GoResult {
  sizeBytes: number;
  flags: number;
  infos: P.InfoReply[];
}

export class RawClient {
  /** The connection, or the TLSSocket around it after `startTls`. */
  socket: Socket;
  readonly closed: Promise<void>;
  #buf: Buffer = Buffer.alloc(0);
  #ended = false;
  #waiter: (() => void) | null = null;
  #onClosed: () => void = () => {};
  structured = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => {
      this.#onClosed = () => {
        this.#ended = true;
        this.#notify();
        resolve();
      };
    });
    socket.on("error", () => {});
    socket.once("close", this.#onClosed);
    this.#listen(socket);
  }

  #onData = (chunk: Buffer): void => {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    this.#notify();
  };

  #onEnd = (): void => {
    this.#ended = true;
    this.#notify();
  };

  #listen(socket: Socket): void {
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
  }

  /**
   * NBD_OPT_STARTTLS, then a TLS handshake with `options` (ca, servername, cert/key...).
   * Resolves once secured; rejects with the option reply's type, or the TLS error.
   */
  async startTls(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    const [reply] = await this.ask(C.NBD_OPT_STARTTLS);
    if (reply?.type !== C.NBD_REP_ACK) {
      throw new Error(`STARTTLS refused: 0x${reply?.type.toString(16)}`);
    }
    if (this.#buf.length !== 0) throw new Error("bytes after the STARTTLS reply");
    const raw = this.socket;
    raw.off("data", this.#onData);
    raw.off("end", this.#onEnd);
    const secure = tls.connect({ ...options, socket: raw });
    this.socket = secure;
    secure.once("close", this.#onClosed);
    secure.on("error", () => {});
    this.#listen(secure);
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", () => {
        secure.off("error", reject);
        resolve();
      });
      secure.once("error", reject);
    });
    return secure;
  }

  static connect(target: { port: number } | { path: string }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = "path" in target
        ? connect(target.path)
        : connect({ host: "127.0.0.1", port: target.port });
      socket.setNoDelay?.(true);
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(new RawClient(socket));
      });
    });
  }

  #notify(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  /** Exactly n bytes; throws "EOF" if the server closes first. */
  async read(n: number): Promise<Buffer> {
    while (this.#buf.length < n) {
      if (this.#ended) throw new Error(`EOF (wanted ${n}, have ${this.#buf.length})`);
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Resolves true when the server closes the connection (after draining pending bytes). */
  async waitClosed(): Promise<{ extra: number }> {
    while (!this.#ended) await new Promise<void>((resolve) => (this.#waiter = resolve));
    return { extra: this.#buf.length };
  }

  write(data: Uint8Array): void {
    this.socket.write(data);
  }

  async destroy(): Promise<void> {
    this.socket.destroy();
    await this.closed;
  }

  // ---- handshake ------------------------------------------------------------------------------

  /** Reads the greeting and sends client flags. Returns the server's handshake flags. */
  async start(
    clientFlags = C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES,
  ): Promise<number> {
    const { handshakeFlags } = P.parseGreeting(await this.read(C.GREETING_LENGTH));
    this.write(P.encodeClientFlags(clientFlags));
    return handshakeFlags;
  }

  option(option: number, data?: Uint8Array): void {
    this.write(P.encodeOptionRequest(option, data));
  }

  async optionReply(): Promise<OptionReply> {
    const h = P.parseOptionReplyHeader(await this.read(C.OPTION_REPLY_HEADER_LENGTH));
    return { option: h.option, type: h.type, data: await this.read(h.length) };
  }

  /** Replies up to and including the final one (ACK or an error). */
  async optionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === C.NBD_REP_ACK || (r.type & C.NBD_REP_FLAG_ERROR) !== 0) return out;
    }
  }

  /** Sends an option and returns all its replies. */
  async ask(option: number, data?: Uint8Array): Promise<OptionReply[]> {
    this.option(option, data);
    return await this.optionReplies();
  }

  /** Full modern handshake: structured replies, base:allocation, GO. Throws on refusal. */
  async go(
    name: string,
    options: { structured?: boolean; meta?: boolean; infos?: number[] } = {},
  ): Promise<GoResult> {
    const structured = options.structured ?? true;
    if (structured) {
      const [r] = await this.ask(C.NBD_OPT_STRUCTURED_REPLY);
      if (r?.type !== C.NBD_REP_ACK) throw new Error("structured replies refused");
      this.structured = true;
    }
    if (structured && (options.meta ?? true)) {
      const rs = await this.ask(
        C.NBD_OPT_SET_META_CONTEXT,
        P.encodeMetaContextRequest(name, [C.BASE_ALLOCATION]),
      );
      if (rs[rs.length - 1]?.type !== C.NBD_REP_ACK) throw new Error("meta context refused");
    }
    const rs = await this.ask(C.NBD_OPT_GO, P.encodeInfoRequest(name, options.infos ?? []));
    const last = rs[rs.length - 1];
    if (last === undefined || last.type !== C.NBD_REP_ACK) {
      throw new Error(
        `GO refused: 0x${last?.type.toString(16)} ${last?.data.toString("utf8") ?? ""}`,
      );
    }
    const infos = rs.filter((r) => r.type === C.NBD_REP_INFO).map((r) => P.parseInfoReply(r.data));
    const exp = infos.find((i) => i.type === C.NBD_INFO_EXPORT);
    if (exp === undefined || !("sizeBytes" in exp)) throw new Error("no NBD_INFO_EXPORT");
    return { sizeBytes: exp.sizeBytes, flags: exp.transmissionFlags, infos };
  }

  // ---- transmission ---------------------------------------------------------------------------

  request(
    type: number,
    fields: { handle: bigint; offset?: number; length?: number; flags?: number },
    payload?: Uint8Array,
  ): void {
    const header = P.encodeRequest({
      type,
      flags: fields.flags ?? 0,
      handle: fields.handle,
      offset: fields.offset ?? 0,
      length: fields.length ?? payload?.length ?? 0,
    });
    this.write(payload === undefined ? header : Buffer.concat([header, payload]));
  }

  async reply(): Promise<Reply> {
    const head = await this.read(4);
    const magic = head.readUInt32BE(0);
    if (magic === C.NBD_SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(12);
      const r = P.parseSimpleReply(Buffer.concat([head, rest]));
      return { kind: "simple", ...r };
    }
    if (magic === C.NBD_STRUCTURED_REPLY_MAGIC) {
      const rest = await this.read(16);
      const h = P.parseStructuredHeader(Buffer.concat([head, rest]));
      return { kind: "structured", ...h, payload: await this.read(h.length) };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** All chunks of one structured reply (or the single simple reply) for any handle order. */
  async replyChunks(): Promise<Reply[]> {
    const out: Reply[] = [];
    for (;;) {
      const r = await this.reply();
      out.push(r);
      if (r.kind === "simple" || (r.flags & C.NBD_REPLY_FLAG_DONE) !== 0) return out;
    }
  }

  /** READ: returns the data, or throws an error carrying the errno. */
  async readAt(handle: bigint, offset: number, length: number, flags = 0): Promise<Buffer> {
    this.request(C.NBD_CMD_READ, { handle, offset, length, flags });
    return await this.readReply(handle, offset, length);
  }

  /** Reads the reply of a READ already sent. */
  async readReply(handle: bigint, offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    for (;;) {
      const r = await this.reply();
      if (r.handle !== handle) throw new Error(`reply for ${r.handle}, expected ${handle}`);
      if (r.kind === "simple") {
        if (r.errno !== 0) throw new NbdClientError(r.errno, "");
        return await this.read(length);
      }
      if (r.type === C.NBD_REPLY_TYPE_OFFSET_DATA) {
        const at = P.readU64(r.payload, 0) - offset;
        r.payload.copy(out, at, 8);
      } else if (r.type === C.NBD_REPLY_TYPE_OFFSET_HOLE) {
        const at = P.readU64(r.payload, 0) - offset;
        out.fill(0, at, at + r.payload.readUInt32BE(8));
      } else if ((r.type & C.NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
        const e = P.parseErrorPayload(r.type, r.payload);
        throw new NbdClientError(e.errno, e.message);
      }
      if ((r.flags & C.NBD_REPLY_FLAG_DONE) !== 0) return out;
    }
  }

  /** A command without reply data: resolves to the errno (0 on success) and message. */
  async command(
    type: number,
    fields: { handle: bigint; offset?: number; length?: number; flags?: number },
    payload?: Uint8Array,
  ): Promise<{ errno: number; message: string }> {
    this.request(type, fields, payload);
    return await this.status(fields.handle);
  }

  async status(handle: bigint): Promise<{ errno: number; message: string }> {
    const chunks = await this.replyChunks();
    for (const r of chunks) {
      if (r.handle !== handle) throw new Error(`reply for ${r.handle}, expected ${handle}`);
      if (r.kind === "simple") return { errno: r.errno, message: "" };
      if ((r.type & C.NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
        const e = P.parseErrorPayload(r.type, r.payload);
        return { errno: e.errno, message: e.message };
      }
    }
    return { errno: 0, message: "" };
  }

  async blockStatus(
    handle: bigint,
    offset: number,
    length: number,
    flags = 0,
  ): Promise<P.BlockDescriptor[]> {
    this.request(C.NBD_CMD_BLOCK_STATUS, { handle, offset, length, flags });
    const chunks = await this.replyChunks();
    let out: P.BlockDescriptor[] | null = null;
    for (const r of chunks) {
      if (r.kind === "simple") throw new NbdClientError(r.errno, "simple reply to BLOCK_STATUS");
      if (r.type === C.NBD_REPLY_TYPE_BLOCK_STATUS) {
        const p = P.parseBlockStatusPayload(r.payload);
        if (p.contextId !== C.BASE_ALLOCATION_ID) throw new Error(`context ${p.contextId}`);
        out = p.descriptors;
      } else if ((r.type & C.NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
        const e = P.parseErrorPayload(r.type, r.payload);
        throw new NbdClientError(e.errno, e.message);
      }
    }
    if (out === null) throw new Error("no block status chunk");
    return out;
  }
}

export class NbdClientError extends Error {
  constructor(readonly errno: number, message: string) {
    super(`NBD error ${errno}: ${message}`);
  }
}
