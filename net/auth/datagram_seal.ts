/**
 * Group datagrams under the cluster key: every datagram carries a sequence number and a MAC;
 * a receiver drops one whose MAC is wrong (a stranger, or a node with another key) and one it
 * has accepted before (a replay), keeping a sliding window of sequence numbers per sender.
 *
 * ```
 * datagram (codec.ts) | sequence (u64 LE) | MAC("group", datagram, sequence) (AUTH_MAC_BYTES)
 * ```
 * A sender's sequence starts at its start time in ms × 2^20 and counts up, so a restarted
 * sender continues above where it was and its old datagrams stay replays. A receiver that
 * restarts forgets its windows; what an attacker could replay to it then is an old datagram of
 * the group protocol, which treats it as a duplicate delivered late, as UDP may do anyway.
 *
 * @module
 */

import { AUTH_MAC_BYTES, REPLAY_WINDOW } from "../../core/limits.ts";
import { mac, macEquals } from "./mac.ts";

const LABEL = "sheepdog group v1";
const TRAILER_BYTES = 8 + AUTH_MAC_BYTES;
/** Senders remembered at most; only senders with valid MACs are, so this is a cluster's size. */
const SENDERS_MAX = 8192;

/** Why a datagram was refused. */
export type SealRefusal = "malformed" | "bad MAC" | "replay";

/** What `open` makes of a datagram. */
export type Opened =
  | { readonly ok: true; readonly datagram: Uint8Array }
  | { readonly ok: false; readonly reason: SealRefusal };

interface Window {
  highest: bigint;
  /** Bit i set: sequence `highest - i` was accepted. */
  seen: bigint;
}

const WINDOW = BigInt(REPLAY_WINDOW);
const ALL = (1n << WINDOW) - 1n;

export class DatagramSeal {
  readonly #key: Uint8Array;
  #next: bigint;
  readonly #windows = new Map<string, Window>();

  constructor(key: Uint8Array, startMs = Date.now()) {
    this.#key = key;
    this.#next = BigInt(startMs) << 20n;
  }

  /** Bytes a seal adds to a datagram. */
  static readonly overhead = TRAILER_BYTES;

  /** The datagram with a fresh sequence number and its MAC. */
  seal(datagram: Uint8Array): Uint8Array {
    const sequence = this.#next++;
    const out = new Uint8Array(datagram.length + TRAILER_BYTES);
    out.set(datagram, 0);
    const view = new DataView(out.buffer);
    view.setBigUint64(datagram.length, sequence, true);
    const seq = out.subarray(datagram.length, datagram.length + 8);
    out.set(mac(this.#key, LABEL, datagram, seq), datagram.length + 8);
    return out;
  }

  /** The datagram inside `bytes` from `sender` ("ip:port"), if genuine and not seen before. */
  open(bytes: Uint8Array, sender: string): Opened {
    if (bytes.length <= TRAILER_BYTES) return { ok: false, reason: "malformed" };
    const end = bytes.length - TRAILER_BYTES;
    const datagram = bytes.subarray(0, end);
    const seq = bytes.subarray(end, end + 8);
    if (!macEquals(bytes.subarray(end + 8), mac(this.#key, LABEL, datagram, seq))) {
      return { ok: false, reason: "bad MAC" };
    }
    const sequence = new DataView(seq.buffer, seq.byteOffset, 8).getBigUint64(0, true);
    if (!this.#accept(sender, sequence)) return { ok: false, reason: "replay" };
    return { ok: true, datagram };
  }

  /** Marks `sequence` seen for `sender`; false if it was seen or is older than the window. */
  #accept(sender: string, sequence: bigint): boolean {
    const window = this.#windows.get(sender);
    if (window === undefined) {
      if (this.#windows.size >= SENDERS_MAX) {
        this.#windows.delete(this.#windows.keys().next().value!);
      }
      this.#windows.set(sender, { highest: sequence, seen: 1n });
      return true;
    }
    if (sequence > window.highest) {
      const shift = sequence - window.highest;
      window.seen = shift >= WINDOW ? 1n : ((window.seen << shift) | 1n) & ALL;
      window.highest = sequence;
      return true;
    }
    const age = window.highest - sequence;
    if (age >= WINDOW) return false;
    const bit = 1n << age;
    if ((window.seen & bit) !== 0n) return false;
    window.seen |= bit;
    return true;
  }
}
