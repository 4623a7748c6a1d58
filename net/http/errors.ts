/**
 * How failures look over HTTP: a JSON body `{error, code, result}` where `code` is the Sheepdog
 * result-code name and `result` its number (the same error `shepherd` prints), and an HTTP
 * status chosen from the code. Refusals that are not Sheepdog errors (401, 403, 413) carry a
 * `code` of their own and no `result`.
 *
 * @module
 */

import type { ContentfulStatusCode } from "hono/utils/http-status";
import { HTTPException } from "hono/http-exception";
import { ResultCode, SheepdogError } from "../../core/errors.ts";

/** The JSON body of every error response. */
export interface ErrorBody {
  error: string;
  code: string;
  result?: number;
}

const CODE_NAMES = new Map<number, string>(
  Object.entries(ResultCode).map(([name, value]) => [value, name]),
);

/** "NO_VDI" for 0x08; "UNKNOWN_0x.." for numbers Sheepdog never defined. */
export function resultName(code: number): string {
  return CODE_NAMES.get(code) ?? `UNKNOWN_0x${code.toString(16)}`;
}

const STATUS: Record<number, ContentfulStatusCode> = {
  [ResultCode.NO_VDI]: 404,
  [ResultCode.NO_TAG]: 404,
  [ResultCode.NO_BASE_VDI]: 404,
  [ResultCode.NOT_FOUND]: 404,
  [ResultCode.VDI_EXIST]: 409,
  [ResultCode.INVALID_PARMS]: 400,
  [ResultCode.READONLY]: 409,
  [ResultCode.VDI_LOCKED]: 409,
  [ResultCode.VDI_NOT_LOCKED]: 409,
  [ResultCode.VDI_NOT_EMPTY]: 409,
  [ResultCode.NO_SPACE]: 507,
  [ResultCode.FULL_VDI]: 507,
  [ResultCode.WAIT_FOR_FORMAT]: 503,
  [ResultCode.WAIT_FOR_JOIN]: 503,
  [ResultCode.STARTUP]: 503,
  [ResultCode.SHUTDOWN]: 503,
  [ResultCode.HALT]: 503,
  [ResultCode.NETWORK_ERROR]: 502,
};

/** The HTTP status a Sheepdog result code maps to (500 when nothing fits better). */
export function statusOf(code: number): ContentfulStatusCode {
  return STATUS[code] ?? 500;
}

/** A refusal of the HTTP layer itself: authentication, read-only mode, origin checks. */
export class HttpError extends Error {
  override name = "HttpError";
  readonly status: ContentfulStatusCode;
  readonly code: string;

  constructor(status: ContentfulStatusCode, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Bad input from the client: INVALID_PARMS, 400. */
export function invalid(message: string): SheepdogError {
  return new SheepdogError(ResultCode.INVALID_PARMS, message);
}

/** The status and body for any thrown value; `internal` is true for unexpected failures. */
export function errorResponse(
  error: unknown,
): { status: ContentfulStatusCode; body: ErrorBody; internal: boolean; logText?: string } {
  if (error instanceof SheepdogError) {
    return {
      status: statusOf(error.code),
      body: { error: error.message, code: resultName(error.code), result: error.code },
      internal: statusOf(error.code) === 500,
    };
  }
  if (error instanceof HttpError) {
    return {
      status: error.status,
      body: { error: error.message, code: error.code },
      internal: false,
    };
  }
  if (error instanceof HTTPException) {
    const status = error.status as ContentfulStatusCode;
    const code = status === 413 ? "PAYLOAD_TOO_LARGE" : `HTTP_${status}`;
    return { status, body: { error: error.message || `HTTP ${status}`, code }, internal: false };
  }
  // A JavaScript error is a bug: its text means nothing to a client and may say too much. It
  // is logged on the sheep (the caller logs `logText`); the client gets a plain sentence.
  const message = error instanceof Error ? error.message : String(error);
  return {
    status: 500,
    body: {
      error: "Internal error: the sheep's log has the details",
      code: "SYSTEM_ERROR",
      result: ResultCode.SYSTEM_ERROR,
    },
    logText: message,
    internal: true,
  };
}
