/**
 * A client of etcd's JSON gateway: the grpc-gateway every etcd v3 server serves on its client
 * port (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/lease/grant`, `/v3/watch`, ...), with JSON
 * bodies, keys and values in base64 and 64-bit numbers as strings.
 *
 * Why the gateway rather than the npm `etcd3` package: etcd3 talks gRPC through @grpc/grpc-js
 * and loads etcd's .proto files from its package directory at run time (@grpc/proto-loader),
 * which `deno bundle` cannot fold into the single executable, and it adds a dozen packages. The
 * gateway needs nothing but `fetch`, which Node (in the executable) and Deno (in tests) both
 * have. etcd 3.4 serves the gateway under `/v3/` and, deprecated, `/v3beta/`; 3.3 only had
 * `/v3beta/`, so `/v3/` means etcd 3.4 or newer (Debian's etcd-server is 3.4).
 *
 * Requests go to one endpoint at a time; a refused connection, a timeout or an "unavailable"
 * answer (no leader, leader changed, a member without quorum) moves on to the next.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { ETCD_REQUEST_TIMEOUT_MS } from "../../core/limits.ts";

/** One key as etcd holds it. */
export interface KeyValue {
  readonly key: string;
  readonly value: Uint8Array;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
  /** The lease the key is bound to ("0": none). */
  readonly lease: string;
}

/** A comparison of a transaction (etcd's `Compare`). */
export type Compare =
  | { key: string; target: "VERSION"; result: CompareResult; version: number }
  | { key: string; target: "CREATE"; result: CompareResult; createRevision: number }
  | { key: string; target: "MOD"; result: CompareResult; modRevision: number };
export type CompareResult = "EQUAL" | "GREATER" | "LESS" | "NOT_EQUAL";

/** An operation of a transaction (etcd's `RequestOp`). */
export type TxnOp =
  | { put: { key: string; value: Uint8Array; lease?: string } }
  | { range: { key: string; prefix?: boolean } }
  | { delete: { key: string; prefix?: boolean } };

export interface TxnResult {
  readonly succeeded: boolean;
  readonly revision: number;
  /** The key-values of each range operation that ran, in order. */
  readonly ranges: KeyValue[][];
}

/** etcd answered, with an error (a gRPC status code and its message). */
export class EtcdError extends Error {
  override name = "EtcdError";
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/** No endpoint answered. The message names every endpoint and the last failure. */
export class EtcdUnavailable extends Error {
  override name = "EtcdUnavailable";
}

/** gRPC codes that mean "try another member": Unavailable, DeadlineExceeded, Unknown. */
const RETRY_CODES = new Set([14, 4, 2]);

export interface EtcdClientOptions {
  /** "host:port" of each member's client port. */
  endpoints: readonly string[];
  /** How requests are sent (tests cut a sheep off etcd through a proxy, not here). */
  fetch?: typeof fetch;
  /** Per request, per endpoint. */
  timeoutMs?: number;
}

export class EtcdClient {
  readonly endpoints: readonly string[];
  readonly #fetch: typeof fetch;
  readonly #timeoutMs: number;
  /** The endpoint tried first: the last one that answered. */
  #current = 0;

  constructor(options: EtcdClientOptions) {
    this.endpoints = options.endpoints;
    this.#fetch = options.fetch ?? fetch;
    this.#timeoutMs = options.timeoutMs ?? ETCD_REQUEST_TIMEOUT_MS;
  }

  /** The endpoint requests go to first (streams open there). */
  get current(): string {
    return this.endpoints[this.#current]!;
  }

  /** The current endpoint failed outside a request (a stream broke): prefer the next one. */
  skip(endpoint: string): void {
    if (this.current === endpoint) this.#current = (this.#current + 1) % this.endpoints.length;
  }

  /**
   * POSTs `body` to `path` on the current endpoint, moving on to the next while they fail or
   * say they cannot serve. Throws EtcdError for any other error answer, EtcdUnavailable when
   * every endpoint failed.
   */
  async call<T>(path: string, body: unknown, options: { timeoutMs?: number } = {}): Promise<T> {
    let last = "";
    for (let tried = 0; tried < this.endpoints.length; tried++) {
      const endpoint = this.current;
      try {
        return await this.#post<T>(endpoint, path, body, options.timeoutMs ?? this.#timeoutMs);
      } catch (error) {
        if (error instanceof EtcdError && !RETRY_CODES.has(error.code)) throw error;
        last = (error as Error).message;
        this.skip(endpoint);
      }
    }
    throw new EtcdUnavailable(`Cannot reach etcd at ${this.endpoints.join(",")} (${last})`);
  }

  async #post<T>(endpoint: string, path: string, body: unknown, timeoutMs: number): Promise<T> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const response = await this.#fetch(`http://${endpoint}${path}`, {
        method: "POST",
        headers: requestHeaders,
        body: JSON.stringify(body),
        signal: abort.signal,
      });
      const text = await response.text();
      return parseAnswer<T>(text, response.status);
    } catch (error) {
      if (abort.signal.aborted) throw new Error(`${endpoint}: no answer in ${timeoutMs} ms`);
      if (error instanceof EtcdError) throw error;
      throw new Error(`${endpoint}: ${causeOf(error)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Opens a streaming call (the watch) on the current endpoint: resolves with the response
   * once etcd accepted it; `signal` ends it.
   */
  async open(path: string, body: unknown, signal: AbortSignal): Promise<Response> {
    const endpoint = this.current;
    try {
      const response = await this.#fetch(`http://${endpoint}${path}`, {
        method: "POST",
        headers: requestHeaders,
        body: JSON.stringify(body),
        signal,
      });
      if (!response.ok || !response.body) {
        parseAnswer(await response.text(), response.status);
        throw new Error(`${endpoint}: HTTP ${response.status}`);
      }
      return response;
    } catch (error) {
      this.skip(endpoint);
      if (error instanceof EtcdError) throw error;
      throw new Error(`${endpoint}: ${causeOf(error)}`);
    }
  }

  /** The key, or every key under it as a prefix, sorted by last change (oldest first). */
  async range(
    key: string,
    options: { prefix?: boolean; limit?: number; keysOnly?: boolean } = {},
  ): Promise<{ revision: number; kvs: KeyValue[] }> {
    const answer = await this.call<RangeAnswer>("/v3/kv/range", {
      ...keyRange(key, options.prefix ?? false),
      sort_target: "MOD",
      sort_order: "ASCEND",
      ...(options.limit ? { limit: String(options.limit) } : {}),
      ...(options.keysOnly ? { keys_only: true } : {}),
    });
    return { revision: Number(answer.header?.revision ?? 0), kvs: kvsOf(answer.kvs) };
  }

  async put(key: string, value: Uint8Array, lease?: string): Promise<number> {
    const answer = await this.call<{ header?: Header }>("/v3/kv/put", {
      key: b64(key),
      value: Buffer.from(value).toString("base64"),
      ...(lease ? { lease } : {}),
    });
    return Number(answer.header?.revision ?? 0);
  }

  /** If every comparison holds, runs `success`, else `failure`: atomically, at one revision. */
  async txn(compare: Compare[], success: TxnOp[], failure: TxnOp[] = []): Promise<TxnResult> {
    const answer = await this.call<TxnAnswer>("/v3/kv/txn", {
      compare: compare.map(compareJson),
      success: success.map(opJson),
      failure: failure.map(opJson),
    });
    return {
      succeeded: answer.succeeded === true,
      revision: Number(answer.header?.revision ?? 0),
      ranges: (answer.responses ?? []).filter((r) => r.response_range).map((r) =>
        kvsOf(r.response_range!.kvs)
      ),
    };
  }

  /** A lease of `ttlSeconds` (etcd may raise it to its minimum); its id and granted TTL. */
  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const answer = await this.call<{ ID?: string; TTL?: string; error?: string }>(
      "/v3/lease/grant",
      { TTL: ttlSeconds },
    );
    if (!answer.ID) throw new EtcdError(2, `lease not granted: ${answer.error ?? "no id"}`);
    return { id: answer.ID, ttl: Number(answer.TTL ?? ttlSeconds) };
  }

  /**
   * Renews a lease once (the gateway's keepalive takes one request per call): its remaining
   * TTL in seconds, 0 when the lease is gone (expired or revoked).
   */
  async keepAlive(id: string, timeoutMs?: number): Promise<number> {
    const answer = await this.call<{ result?: { TTL?: string }; error?: { message?: string } }>(
      "/v3/lease/keepalive",
      { ID: id },
      timeoutMs === undefined ? {} : { timeoutMs },
    );
    if (!answer.result) {
      throw new EtcdError(14, `keepalive: ${answer.error?.message ?? "no result"}`);
    }
    return Number(answer.result.TTL ?? 0);
  }

  async revoke(id: string, timeoutMs?: number): Promise<void> {
    await this.call("/v3/lease/revoke", { ID: id }, timeoutMs === undefined ? {} : { timeoutMs });
  }
}

interface Header {
  revision?: string;
}
/** A key-value as the gateway sends it. */
export interface KvJson {
  key: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}
interface RangeAnswer {
  header?: Header;
  kvs?: KvJson[];
}
interface TxnAnswer {
  header?: Header;
  succeeded?: boolean;
  responses?: { response_range?: RangeAnswer }[];
}

/**
 * Asks a member to fail rather than wait when it has no leader (gRPC metadata `hasleader`,
 * passed by the gateway from `Grpc-Metadata-*` headers): a member cut off from the quorum then
 * says so at once, and the client moves on to another.
 */
const requestHeaders = { "content-type": "application/json", "grpc-metadata-hasleader": "true" };

/** The gateway's answer, or its error as an EtcdError. */
export function parseAnswer<T>(text: string, status: number): T {
  let answer: T & { error?: unknown; code?: number; message?: string };
  try {
    answer = JSON.parse(text);
  } catch {
    throw new EtcdError(status >= 500 ? 14 : 2, `HTTP ${status}: ${text.slice(0, 200)}`);
  }
  if (answer.code !== undefined && answer.code !== 0 && answer.error !== undefined) {
    throw new EtcdError(answer.code, answer.message ?? String(answer.error));
  }
  // A streaming call's error: {"error": {"grpc_code": N, "message": "..."}}.
  const streamed = answer.error as { grpc_code?: number; message?: string } | undefined;
  if (streamed && typeof streamed === "object") {
    throw new EtcdError(streamed.grpc_code ?? 2, streamed.message ?? "error");
  }
  if (status >= 400) throw new EtcdError(status >= 500 ? 14 : 2, `HTTP ${status}: ${text}`);
  return answer;
}

/** The key-values of a range or watch answer. */
export function kvsOf(kvs: KvJson[] | undefined): KeyValue[] {
  return (kvs ?? []).map((kv) => ({
    key: Buffer.from(kv.key, "base64").toString("utf8"),
    value: new Uint8Array(Buffer.from(kv.value ?? "", "base64")),
    createRevision: Number(kv.create_revision ?? 0),
    modRevision: Number(kv.mod_revision ?? 0),
    version: Number(kv.version ?? 0),
    lease: kv.lease ?? "0",
  }));
}

function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

/** `key` alone, or every key that starts with it (etcd's range_end: the prefix plus one). */
export function keyRange(key: string, prefix: boolean): { key: string; range_end?: string } {
  if (!prefix) return { key: b64(key) };
  const end = Buffer.from(key, "utf8");
  end[end.length - 1]! += 1; // keys here end in "/", never in 0xff
  return { key: b64(key), range_end: end.toString("base64") };
}

function compareJson(compare: Compare): Record<string, unknown> {
  const base = { key: b64(compare.key), target: compare.target, result: compare.result };
  switch (compare.target) {
    case "VERSION":
      return { ...base, version: String(compare.version) };
    case "CREATE":
      return { ...base, create_revision: String(compare.createRevision) };
    case "MOD":
      return { ...base, mod_revision: String(compare.modRevision) };
  }
}

function opJson(op: TxnOp): Record<string, unknown> {
  if ("put" in op) {
    return {
      request_put: {
        key: b64(op.put.key),
        value: Buffer.from(op.put.value).toString("base64"),
        ...(op.put.lease ? { lease: op.put.lease } : {}),
      },
    };
  }
  if ("range" in op) return { request_range: keyRange(op.range.key, op.range.prefix ?? false) };
  return { request_delete_range: keyRange(op.delete.key, op.delete.prefix ?? false) };
}

/** The useful part of a fetch failure (undici hides the socket error in `cause`). */
function causeOf(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message ?? String(error);
}
