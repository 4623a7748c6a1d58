/**
 * Metrics hooks for the object protocol: the sheep calls `observeObjectRequest` for every
 * request it answers (from TCP or in-process clients, and from peers).
 *
 * @module
 */

import { ResultCode } from "../../core/errors.ts";
import type { Message } from "../object/header.ts";
import { Opcode, opcodeName } from "../object/ops.ts";
import type { Metrics } from "./metrics.ts";

/**
 * Counts and times one answered request by opcode name; for the client data ops (READ_OBJ,
 * WRITE_OBJ, CREATE_AND_WRITE_OBJ) also the bytes moved. Peer copies are not counted as client
 * bytes, so replication does not multiply them.
 */
export function observeObjectRequest(
  metrics: Metrics,
  exchange: { request: Message; response: Message },
  seconds: number,
): void {
  const { request, response } = exchange;
  const opcode = request.header.opcode;
  const ok = response.header.result === ResultCode.SUCCESS;
  metrics.observeRequest("object", opcodeName(opcode), seconds, ok);
  if (!ok) return;
  if (opcode === Opcode.READ_OBJ) metrics.addBytes("read", response.data.length);
  else if (opcode === Opcode.WRITE_OBJ || opcode === Opcode.CREATE_AND_WRITE_OBJ) {
    metrics.addBytes("write", request.data.length);
  }
}
