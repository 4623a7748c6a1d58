/**
 * One place where refusals of strangers are reported: each is counted (metrics), and logged in
 * one line naming the peer, at most REFUSAL_LOGS_PER_MINUTE times per peer address so that a
 * flood of bad datagrams or connections cannot flood the log.
 *
 * @module
 */

import { REFUSAL_LOGS_PER_MINUTE } from "../../core/limits.ts";
import type { SealRefusal } from "./datagram_seal.ts";

/** What was refused. */
export type RefusalKind =
  | "datagram bad MAC"
  | "datagram replay"
  | "connection wrong key"
  | "connection not authenticated"
  | "client address not allowed"
  | "server wrong key";

/** Peer addresses remembered for rate limiting at most. */
const PEERS_MAX = 4096;

export class Refusals {
  readonly #log: (line: string) => void;
  readonly #count: (kind: RefusalKind) => void;
  readonly #now: () => number;
  readonly #logged = new Map<string, { since: number; lines: number }>();

  constructor(options: {
    log: (line: string) => void;
    count?: (kind: RefusalKind) => void;
    now?: () => number;
  }) {
    this.#log = options.log;
    this.#count = options.count ?? (() => {});
    this.#now = options.now ?? (() => performance.now());
  }

  /** Counts a refusal of `peer` ("ip:port") and logs `detail` unless that peer was just logged. */
  report(kind: RefusalKind, peer: string, detail: string): void {
    this.#count(kind);
    const address = peer.replace(/:\d+$/, "");
    const now = this.#now();
    let entry = this.#logged.get(address);
    if (entry === undefined || now - entry.since >= 60_000) {
      if (entry === undefined && this.#logged.size >= PEERS_MAX) {
        this.#logged.delete(this.#logged.keys().next().value!);
      }
      entry = { since: now, lines: 0 };
      this.#logged.set(address, entry);
    }
    if (entry.lines >= REFUSAL_LOGS_PER_MINUTE) return;
    entry.lines++;
    this.#log(`refused ${peer}: ${detail}`);
  }

  /** A group datagram the seal refused (net/auth/datagram_seal.ts), from `sender`. */
  reportDatagram(reason: SealRefusal, sender: string): void {
    if (reason === "replay") {
      this.report("datagram replay", sender, "a group datagram seen before (replayed)");
    } else {
      this.report(
        "datagram bad MAC",
        sender,
        "a group datagram without this cluster's MAC (another --key-file, or none?)",
      );
    }
  }
}
