/**
 * Who may send what on one object-protocol connection:
 * - the handshake (AUTH_HELLO, AUTH_PROVE) is answered here;
 * - internal requests (sheep-to-sheep and administration: mkfs, shutdown, recover, every
 *   opcode >= 0x80) need the connection authenticated with the cluster key, from any address,
 *   loopback included; without it they get NOT_AUTHORIZED;
 * - public requests (what old clients such as QEMU's driver send) are served on an
 *   authenticated connection, or from loopback and the `--allow-clients` networks; from any
 *   other address the connection is closed, since an old client would not understand a reply
 *   it did not expect.
 * Every refusal is reported once per connection (counted; logged rate-limited).
 *
 * @module
 */

import { ResultCode } from "../../core/errors.ts";
import type { Message } from "../object/header.ts";
import { isInternalOpcode, Opcode } from "../object/ops.ts";
import type { ClientAddresses } from "./client_addresses.ts";
import { answerHello, checkProof } from "./handshake.ts";
import type { Refusals } from "./refusals.ts";

/** The cluster's rules for its object port. */
export interface AccessPolicy {
  readonly key: Uint8Array;
  readonly clients: ClientAddresses;
  readonly refusals: Refusals;
}

/** What to do with one request. */
export type Decision =
  | { readonly kind: "serve" }
  | { readonly kind: "reply"; readonly response: Message; readonly close: boolean }
  | { readonly kind: "close" };

const SERVE: Decision = { kind: "serve" };
const encoder = new TextEncoder();

function reply(request: Message, code: number, data: Uint8Array, close = false): Decision {
  const header = request.header.reply(code, 0);
  return { kind: "reply", response: { header, data }, close };
}

/** The access state of one connection from `peer` ("ip:port", ip as the socket reports it). */
export class ConnectionAccess {
  readonly #policy: AccessPolicy;
  readonly #peer: string;
  readonly #clientAddress: boolean;
  #authenticated = false;
  #expectedProof: Uint8Array | undefined;
  #reported = false;

  constructor(policy: AccessPolicy, peer: string, remoteAddress: string) {
    this.#policy = policy;
    this.#peer = peer;
    this.#clientAddress = policy.clients.allows(remoteAddress);
  }

  get authenticated(): boolean {
    return this.#authenticated;
  }

  /** True when this peer may do nothing at all until it authenticates. */
  get mustAuthenticate(): boolean {
    return !this.#clientAddress;
  }

  /**
   * The connection closed. A peer that leaves between our challenge and its proof found that
   * our proof did not match its key: it holds another key, and this side says so too.
   */
  closed(): void {
    if (this.#expectedProof === undefined) return;
    this.#expectedProof = undefined;
    this.#refuse(
      "connection wrong key",
      "it left after the challenge: it holds another cluster key (another --key-file?)",
    );
  }

  /** The peer took too long to authenticate: reported, and the caller closes. */
  timedOut(): void {
    this.#refuse("connection not authenticated", "no authentication within the time allowed");
  }

  decide(request: Message): Decision {
    const opcode = request.header.opcode;
    if (opcode === Opcode.AUTH_HELLO) return this.#hello(request);
    if (opcode === Opcode.AUTH_PROVE) return this.#prove(request);
    if (this.#authenticated) return SERVE;
    if (isInternalOpcode(opcode)) {
      this.#refuse(
        "connection not authenticated",
        `opcode 0x${opcode.toString(16)} needs the cluster key`,
      );
      return reply(
        request,
        ResultCode.NOT_AUTHORIZED,
        encoder.encode(
          "This request needs the cluster key: pass --key-file FILE or set SHEEPDOG_KEY_FILE " +
            "(the key is DIR/cluster.key of a sheep, or the file its --key-file names)",
        ),
      );
    }
    if (this.#clientAddress) return SERVE;
    this.#refuse(
      "client address not allowed",
      "not a client address (loopback or --allow-clients) and not authenticated",
    );
    return { kind: "close" };
  }

  #hello(request: Message): Decision {
    const answer = answerHello(this.#policy.key, request.data);
    if (answer === undefined) {
      this.#refuse("connection wrong key", "malformed AUTH_HELLO");
      return reply(request, ResultCode.INVALID_PARMS, new Uint8Array(0), true);
    }
    this.#expectedProof = answer.expectedProof;
    this.#authenticated = false;
    return reply(request, ResultCode.SUCCESS, answer.reply);
  }

  #prove(request: Message): Decision {
    const expected = this.#expectedProof;
    this.#expectedProof = undefined;
    if (expected !== undefined && checkProof(expected, request.data)) {
      this.#authenticated = true;
      return reply(request, ResultCode.SUCCESS, new Uint8Array(0));
    }
    this.#refuse(
      "connection wrong key",
      expected === undefined
        ? "AUTH_PROVE without AUTH_HELLO"
        : "it does not hold this cluster's key (another --key-file?)",
    );
    return reply(
      request,
      ResultCode.NOT_AUTHORIZED,
      encoder.encode("Authentication failed: this sheep holds another cluster key"),
      true,
    );
  }

  #refuse(kind: Parameters<Refusals["report"]>[0], detail: string): void {
    if (this.#reported) return;
    this.#reported = true;
    this.#policy.refusals.report(kind, this.#peer, detail);
  }
}
