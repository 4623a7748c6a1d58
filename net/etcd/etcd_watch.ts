/**
 * A watch on every key under a prefix through the JSON gateway: `POST /v3/watch` with one
 * create request, answered by a stream of newline-separated JSON messages, each one batch of
 * changes in revision order.
 *
 * @module
 */

import {
  type EtcdClient,
  EtcdError,
  keyRange,
  type KeyValue,
  type KvJson,
  kvsOf,
  parseAnswer,
} from "./etcd_client.ts";

/** One change: a key written (created or changed) or deleted. */
export interface WatchEvent {
  readonly type: "put" | "delete";
  /** For a delete only `key` and `modRevision` (the revision of the delete) mean anything. */
  readonly kv: KeyValue;
}

/** Why a watch ended without a network failure. */
export type WatchEnd =
  /** The revision it was to start from was compacted away: the history is gone. */
  | { readonly compacted: number }
  /** etcd cancelled it, or the stream ended: open another from where it got to. */
  | { readonly ended: string };

interface WatchMessage {
  result?: {
    created?: boolean;
    canceled?: boolean;
    compact_revision?: string;
    cancel_reason?: string;
    events?: { type?: string; kv: KvJson }[];
  };
}

/**
 * Streams every change under `prefix` from `fromRevision` on, calling `onEvents` with each batch
 * in revision order, until etcd ends the watch (resolves) or the stream breaks (throws), or
 * `signal` aborts it (resolves with "aborted").
 */
export async function watchPrefix(
  client: EtcdClient,
  prefix: string,
  fromRevision: number,
  onEvents: (events: WatchEvent[]) => void,
  signal: AbortSignal,
): Promise<WatchEnd> {
  const response = await client.open("/v3/watch", {
    create_request: { ...keyRange(prefix, true), start_revision: String(fromRevision) },
  }, signal);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  // Aborting the request must end a read that waits for the next change, whatever the runtime
  // does with the body of an aborted fetch.
  const cancel = () => void reader.cancel().catch(() => undefined);
  signal.addEventListener("abort", cancel);
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return { ended: "the stream ended" };
      buffered += value;
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line === "") continue;
        const end = handleMessage(parseAnswer<WatchMessage>(line, 200), onEvents);
        if (end) return end;
      }
    }
  } catch (error) {
    if (signal.aborted) return { ended: "aborted" };
    if (error instanceof EtcdError) return { ended: error.message };
    throw error;
  } finally {
    signal.removeEventListener("abort", cancel);
    await reader.cancel().catch(() => undefined);
  }
}

function handleMessage(
  message: WatchMessage,
  onEvents: (events: WatchEvent[]) => void,
): WatchEnd | undefined {
  const result = message.result;
  if (!result) return undefined;
  if (result.canceled) {
    const compacted = Number(result.compact_revision ?? 0);
    if (compacted > 0) return { compacted };
    return { ended: `cancelled by etcd: ${result.cancel_reason ?? "no reason given"}` };
  }
  const events = result.events ?? [];
  if (events.length === 0) return undefined;
  const kvs = kvsOf(events.map((e) => e.kv));
  onEvents(events.map((e, i) => ({ type: e.type === "DELETE" ? "delete" : "put", kv: kvs[i]! })));
  return undefined;
}
