/**
 * Mutual challenge and response on an object-protocol connection, before any administrative
 * or sheep-to-sheep request: each side proves it holds the cluster key without sending it.
 *
 * ```
 * client → AUTH_HELLO  data: client nonce (32 bytes)
 * server ← reply       data: server nonce (32) + server proof = MAC("server", cn, sn)
 * client → AUTH_PROVE  data: client proof = MAC("client", cn, sn)   (only if the server's
 *                            proof is right: a client never talks to a server with another key)
 * server ← reply       SUCCESS, or NOT_AUTHORIZED and the connection is closed
 * ```
 * Fresh nonces on both sides mean a recorded exchange cannot be replayed, and the two labels
 * mean a server's proof is never a client's. The connection is authenticated, not encrypted:
 * sheep traffic belongs on a network the operator trusts not to rewrite it.
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import { AUTH_MAC_BYTES } from "../../core/limits.ts";
import { mac, macEquals } from "./mac.ts";

/** Bytes of each side's nonce. */
export const NONCE_BYTES = 32;

const SERVER_LABEL = "sheepdog connection v1: server";
const CLIENT_LABEL = "sheepdog connection v1: client";

/** A random nonce. */
export function newNonce(): Uint8Array {
  return new Uint8Array(randomBytes(NONCE_BYTES));
}

/** The server's answer to a hello, and the client proof it then expects. */
export function answerHello(
  key: Uint8Array,
  clientNonce: Uint8Array,
  serverNonce = newNonce(),
): { reply: Uint8Array; expectedProof: Uint8Array } | undefined {
  if (clientNonce.length !== NONCE_BYTES) return undefined;
  const reply = new Uint8Array(NONCE_BYTES + AUTH_MAC_BYTES);
  reply.set(serverNonce, 0);
  reply.set(mac(key, SERVER_LABEL, clientNonce, serverNonce), NONCE_BYTES);
  return { reply, expectedProof: mac(key, CLIENT_LABEL, clientNonce, serverNonce) };
}

/**
 * The client's proof, once the server has shown it holds the same key; undefined when the
 * server's proof is wrong (another key) or the reply is malformed.
 */
export function proveToServer(
  key: Uint8Array,
  clientNonce: Uint8Array,
  serverReply: Uint8Array,
): Uint8Array | undefined {
  if (serverReply.length !== NONCE_BYTES + AUTH_MAC_BYTES) return undefined;
  const serverNonce = serverReply.subarray(0, NONCE_BYTES);
  const serverProof = serverReply.subarray(NONCE_BYTES);
  if (!macEquals(serverProof, mac(key, SERVER_LABEL, clientNonce, serverNonce))) return undefined;
  return mac(key, CLIENT_LABEL, clientNonce, serverNonce);
}

/** True when the client's proof is the expected one. */
export function checkProof(expected: Uint8Array, proof: Uint8Array): boolean {
  return macEquals(expected, proof);
}
