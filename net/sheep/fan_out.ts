/**
 * Administrative requests that every node answers for itself (STAT_RECOVERY's pattern): the node
 * asked forwards the request with Flag.FWD ("answer for yourself only") to every other node of
 * its view and gathers one row per node, in view order; a node that does not answer gets the row
 * `unreachable` makes.
 *
 * @module
 */

import type { RingNode } from "../../core/hash/ring.ts";
import type { ClusterView } from "../../core/cluster/view.ts";
import { type ObjectClient, requestHeader } from "../object/client.ts";
import { Flag } from "../object/ops.ts";

/** What a fan-out needs from the sheep. */
export interface FanOutHost {
  readonly id: string;
  readonly view: ClusterView;
  readonly peers: { get(node: RingNode): Pick<ObjectClient, "send"> };
}

const decoder = new TextDecoder();

/**
 * This node's row (`own`) and every other view member's, asked with `opcode` and `data` under
 * Flag.FWD (their answer: a JSON array whose first row is theirs).
 */
export async function fanOut<Row extends { node: string }>(
  host: FanOutHost,
  opcode: number,
  own: () => Row | Promise<Row>,
  unreachable: (node: string, error: string) => Row,
  data?: Uint8Array,
): Promise<Row[]> {
  const nodes = host.view.nodes;
  if (!nodes.some((n) => n.id === host.id)) return [await own()];
  const mine = own();
  return await Promise.all(nodes.map(async (node): Promise<Row> => {
    if (node.id === host.id) return await mine;
    const header = requestHeader(opcode, { internal: true });
    header.flags |= Flag.FWD;
    try {
      const response = await host.peers.get(node).send(header, data);
      const rows = JSON.parse(decoder.decode(response.data)) as Row[];
      return rows[0] ?? unreachable(node.id, "empty answer");
    } catch (error) {
      return unreachable(node.id, (error as Error).message);
    }
  }));
}
