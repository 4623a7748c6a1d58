/**
 * The scrub opcodes, as handler functions over a narrow host (the op table in
 * request_handlers.ts calls them with the sheep):
 *
 * - START_SCRUB, JSON payload `{"vid"?: number}`: starts a pass on every node of the view (or
 *   joins the one running there) and answers one row per node: `{node, started, ...status}`.
 * - STAT_SCRUB: every node's scrub status, one row per node.
 *
 * Both fan out (fan_out.ts): a node that does not answer gets a row with state "unreachable".
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import type { Vid } from "../../core/vdi/oid.ts";
import type { Message } from "../object/header.ts";
import { Flag, Opcode } from "../object/ops.ts";
import { fanOut, type FanOutHost } from "./fan_out.ts";
import type { Scrubber, ScrubState, ScrubStatus } from "./scrub.ts";

/** What the scrub handlers need from the sheep. */
export interface ScrubHost extends FanOutHost {
  readonly scrubber: Pick<Scrubber, "start" | "status">;
}

/**
 * One node's scrub as START_SCRUB and STAT_SCRUB report it. `state` is "unreachable" (and
 * `error` says why) when the node did not answer; the other fields are then absent.
 */
export type ScrubRow =
  & { node: string; state: ScrubState | "unreachable"; error?: string; started?: boolean }
  & Partial<Omit<ScrubStatus, "state" | "error">>;

/** START_SCRUB's payload. */
export interface ScrubRequest {
  /** Only the objects of this VDI (its inode and data objects). */
  vid?: Vid;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Parses and checks START_SCRUB's payload (empty = the whole store). */
export function parseScrubRequest(data: Uint8Array): ScrubRequest {
  if (data.length === 0) return {};
  let body: unknown;
  try {
    body = JSON.parse(decoder.decode(data));
  } catch {
    throw new SheepdogError(ResultCode.INVALID_PARMS, "Scrub request is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, "Scrub request must be a JSON object");
  }
  const vid = (body as { vid?: unknown }).vid;
  if (vid === undefined || vid === null) return {};
  if (typeof vid !== "number" || !Number.isInteger(vid) || vid <= 0 || vid > 0xffffff) {
    throw new SheepdogError(ResultCode.INVALID_PARMS, `Invalid VDI id '${String(vid)}' to scrub`);
  }
  return { vid };
}

function ownStart(host: ScrubHost, request: ScrubRequest): ScrubRow {
  const { started, status } = host.scrubber.start(
    request.vid === undefined ? {} : { vid: request.vid },
  );
  return { node: host.id, started, ...status };
}

/** The row of a node that did not answer. */
function unreachable(node: string, error: string): ScrubRow {
  return { node, state: "unreachable", error };
}

/** START_SCRUB: starts (or joins) a pass on every node; with Flag.FWD on this node only. */
export async function startScrubRequest(host: ScrubHost, request: Message): Promise<Uint8Array> {
  const body = parseScrubRequest(request.data);
  const own = () => ownStart(host, body);
  if (request.header.flags & Flag.FWD) return encoder.encode(JSON.stringify([own()]));
  const rows = await fanOut(host, Opcode.START_SCRUB, own, unreachable, request.data);
  return encoder.encode(JSON.stringify(rows));
}

/** STAT_SCRUB: every node's scrub status; with Flag.FWD this node's only. */
export async function scrubStatusRequest(host: ScrubHost, request: Message): Promise<Uint8Array> {
  const own = (): ScrubRow => ({ node: host.id, ...host.scrubber.status() });
  if (request.header.flags & Flag.FWD) return encoder.encode(JSON.stringify([own()]));
  return encoder.encode(JSON.stringify(await fanOut(host, Opcode.STAT_SCRUB, own, unreachable)));
}
