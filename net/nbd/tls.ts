/**
 * TLS for the NBD server, as qemu-nbd and nbdkit offer it: x509 (a certificate and key, and
 * optionally a CA that client certificates must chain to) and/or a pre-shared key file in the
 * format of qemu's `keys.psk` and nbdkit's `--tls-psk` (lines `identity:hexkey`).
 *
 * A server given an NbdTls requires TLS: the session upgrades its socket after answering
 * NBD_OPT_STARTTLS with NBD_REP_ACK (see session.ts) and refuses clients that do not.
 *
 * Runtimes: x509 works under Node and Deno; PSK needs Node's OpenSSL (the built ./sheepdog).
 * Deno's node:tls has no PSK cipher suites: a PSK handshake fails there with "no suitable
 * signature algorithm".
 *
 * @module
 */

import { readSecretFile } from "../auth/secret_file.ts";
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import * as tls from "node:tls";

/** What the server presents. x509 needs `cert` and `key` together; `ca` needs x509. */
export interface NbdTlsCredentials {
  /** The server's certificate chain, PEM. */
  cert?: string;
  /** The server's private key, PEM. */
  key?: string;
  /** Clients must present a certificate issued by this CA (PEM); none are asked for without it. */
  ca?: string;
  /** Pre-shared keys by identity (PSK). */
  psk?: ReadonlyMap<string, Uint8Array>;
}

/** The files named by `--nbd-tls-cert`, `--nbd-tls-key`, `--nbd-tls-ca` and `--nbd-tls-psk`. */
export interface NbdTlsFiles {
  certFile?: string;
  keyFile?: string;
  caFile?: string;
  pskFile?: string;
}

/**
 * PSK cipher suites for TLS 1.2 that OpenSSL and GnuTLS (qemu, libnbd) share, forward-secret
 * ones first. TLS 1.3 negotiates PSK with its own suites (the TLS_AES_* defaults).
 */
export const PSK_CIPHERS = [
  "ECDHE-PSK-CHACHA20-POLY1305",
  "DHE-PSK-AES256-GCM-SHA384",
  "DHE-PSK-AES128-GCM-SHA256",
  "DHE-PSK-CHACHA20-POLY1305",
  "PSK-AES256-GCM-SHA384",
  "PSK-AES128-GCM-SHA256",
  "PSK-CHACHA20-POLY1305",
].join(":");

/** TLS 1.3 suites with PSK in mind: the SHA-256 ones (which can use a PSK) first. */
const TLS13_SHA256_FIRST = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_AES_256_GCM_SHA384",
];

/** Longest identity qemu and GnuTLS accept in a psk file line. */
const PSK_IDENTITY_MAX = 128;
/** Biggest key OpenSSL's PSK callback takes (PSK_MAX_PSK_LEN). */
const PSK_KEY_BYTES_MAX = 512;

/** What becomes of an upgrade: exactly one of the two is called. */
export interface NbdTlsHandlers {
  /**
   * The handshake completed (and the client's certificate verified, when one is required):
   * from now on the session reads and writes `socket`. `detail` is the protocol and cipher,
   * `identity` the PSK identity the client used.
   */
  secured(socket: tls.TLSSocket, info: { detail: string; identity?: string }): void;
  /** The handshake failed; the connection is being destroyed. `reason` is one short line. */
  failed(reason: string): void;
}

export class NbdTls {
  /** tls.createServer options: credentials, ciphers, client certificate policy. */
  readonly #options: tls.TlsOptions;
  readonly #psk: ReadonlyMap<string, Uint8Array> | null;
  /** "x509", "psk" or "x509+psk"; "x509" reads "x509 (client certificates)" with a CA. */
  readonly kind: string;

  /**
   * @throws {TypeError} when the credentials are incomplete (cert without key, CA without cert,
   *   neither x509 nor PSK)
   * @throws {Error} when OpenSSL refuses them under Node (not PEM, a key that does not match the
   *   cert); Deno's node:tls only finds out at the first handshake
   */
  constructor(credentials: NbdTlsCredentials) {
    const { cert, key, ca, psk } = credentials;
    if ((cert === undefined) !== (key === undefined)) {
      throw new TypeError("Cannot use x509 TLS: give both a certificate and its private key");
    }
    if (ca !== undefined && cert === undefined) {
      throw new TypeError("Cannot check client certificates: the server needs a certificate too");
    }
    if (cert === undefined && (psk === undefined || psk.size === 0)) {
      throw new TypeError("Cannot use TLS: give a certificate and key, or pre-shared keys");
    }
    const pskKeys = psk !== undefined && psk.size > 0 ? psk : null;
    this.#psk = pskKeys;
    // Node's default list ends in "!PSK", which would delete the PSK suites for good.
    const defaults = tls.DEFAULT_CIPHERS.split(":").filter((c) => c !== "!PSK");
    // TLS 1.3 uses a pre-shared key only with a SHA-256 suite. With a certificate as well, the
    // server would otherwise pick TLS_AES_256_GCM_SHA384, drop the key and ask a PSK client
    // for a certificate check it cannot do ("Insufficient credentials" in qemu).
    const tls13 = pskKeys !== null ? [...TLS13_SHA256_FIRST] : [];
    const ciphers = [
      ...tls13,
      ...(pskKeys !== null ? [PSK_CIPHERS] : []),
      ...(cert !== undefined ? defaults.filter((c) => !tls13.includes(c)) : []),
    ].join(":");
    this.#options = {
      ...(cert !== undefined ? { cert, key } : {}),
      ...(ca !== undefined ? { ca, requestCert: true, rejectUnauthorized: true } : {}),
      ciphers,
      ...(pskKeys !== null ? { honorCipherOrder: true } : {}),
      minVersion: "TLSv1.2",
      // DHE-PSK suites need Diffie-Hellman parameters; "auto" picks them by key size.
      ...(pskKeys !== null ? { dhparam: "auto" } : {}),
    };
    // Parses and checks the credentials now, not at the first client.
    tls.createSecureContext(this.#options);
    this.kind = [
      ...(cert !== undefined ? [ca !== undefined ? "x509 (client certificates)" : "x509"] : []),
      ...(pskKeys !== null ? ["psk"] : []),
    ].join("+");
  }

  /**
   * Runs the server side of a TLS handshake on `socket`, which carries nothing else from now
   * on, and reports the outcome to `handlers`.
   *
   * Each upgrade gets a tls.Server of its own (never listening) that takes `socket` as if it had
   * accepted it: only a tls.Server checks a client certificate against the CA (a bare
   * TLSSocket completes the handshake with one that does not verify), and one per connection
   * ties its events to this connection without reaching into TLSSocket internals. The price is
   * parsing the credentials again: about 3 ms of CPU per connection under Node 20 with an EC
   * key, which long-lived NBD connections do not notice.
   */
  upgrade(socket: Socket, handlers: NbdTlsHandlers): void {
    const psk = this.#psk;
    let identity: string | undefined;
    let settled = false;
    const server = tls.createServer({
      ...this.#options,
      ...(psk !== null
        ? {
          pskCallback: (_socket: tls.TLSSocket, name: string) => {
            const key = psk.get(name);
            if (key === undefined) return null; // alert unknown_psk_identity
            identity = name;
            return key;
          },
        }
        : {}),
    });
    // A client that closes mid-handshake must end the handshake (a half-open TLSSocket would
    // wait for more); once secured, the socket is as half-open as the connection was.
    const halfOpen = socket.allowHalfOpen;
    socket.allowHalfOpen = false;
    server.once("secureConnection", (secure: tls.TLSSocket) => {
      settled = true;
      secure.allowHalfOpen = halfOpen;
      const detail = `${secure.getProtocol() ?? "TLS"} ${secure.getCipher()?.name ?? ""}`.trim();
      handlers.secured(secure, { detail, ...(identity !== undefined ? { identity } : {}) });
    });
    server.on("tlsClientError", (error: Error, secure: tls.TLSSocket) => {
      if (settled) return;
      settled = true;
      secure.destroy();
      socket.destroy();
      handlers.failed(handshakeFailure(error, secure));
    });
    server.emit("connection", socket);
  }
}

/** One line for a failed handshake. */
function handshakeFailure(error: Error, secure: tls.TLSSocket): string {
  // A client certificate that does not verify: the server drops the socket, which then reads
  // as "socket hang up"; the verification error says why.
  const verify = secure.authorizationError;
  if (verify !== null && verify !== undefined) {
    return `client certificate rejected: ${String(verify)}`;
  }
  if ((error as NodeJS.ErrnoException).code === "ECONNRESET") {
    return "the connection closed during the TLS handshake";
  }
  return tlsErrorText(error);
}

/**
 * Parses a psk file: one `identity:hexkey` per line (qemu's `keys.psk`, nbdkit's `--tls-psk`,
 * what `psktool -u NAME -p FILE` writes). Blank lines are skipped.
 *
 * @throws {SyntaxError} naming the line when one is malformed, an identity repeats, or the file
 *   holds no key
 */
export function parsePskFile(text: string): Map<string, Uint8Array> {
  const keys = new Map<string, Uint8Array>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    const at = `line ${i + 1}`;
    const colon = line.lastIndexOf(":");
    if (colon <= 0) throw new SyntaxError(`Cannot parse ${at}: use identity:hexkey`);
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (identity.length > PSK_IDENTITY_MAX) {
      throw new SyntaxError(`Cannot parse ${at}: the identity is longer than ${PSK_IDENTITY_MAX}`);
    }
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) {
      throw new SyntaxError(`Cannot parse ${at}: the key must be an even number of hex digits`);
    }
    if (hex.length / 2 > PSK_KEY_BYTES_MAX) {
      throw new SyntaxError(
        `Cannot parse ${at}: the key is longer than ${PSK_KEY_BYTES_MAX} bytes`,
      );
    }
    if (keys.has(identity)) {
      throw new SyntaxError(`Cannot parse ${at}: identity '${identity}' appears twice`);
    }
    keys.set(identity, Buffer.from(hex, "hex"));
  }
  if (keys.size === 0) throw new SyntaxError("Cannot use it: it holds no identity:hexkey line");
  return keys;
}

/**
 * Reads the files behind the TLS flags and checks what can be checked before serving: each
 * exists, is a non-empty file, and a secret (the key, the psk file) is not readable by group or
 * others. Returns undefined when no file is named (no TLS).
 *
 * @throws {Error} one line naming the flag, the file and what is wrong with it
 */
export function loadNbdTls(files: NbdTlsFiles): NbdTlsCredentials | undefined {
  const { certFile, keyFile, caFile, pskFile } = files;
  if ([certFile, keyFile, caFile, pskFile].every((f) => f === undefined)) return undefined;
  const credentials: NbdTlsCredentials = {};
  if (certFile !== undefined) credentials.cert = readTlsFile("nbd-tls-cert", certFile, false);
  if (keyFile !== undefined) credentials.key = readTlsFile("nbd-tls-key", keyFile, true);
  if (caFile !== undefined) credentials.ca = readTlsFile("nbd-tls-ca", caFile, false);
  if (pskFile !== undefined) {
    const text = readTlsFile("nbd-tls-psk", pskFile, true);
    try {
      credentials.psk = parsePskFile(text);
    } catch (error) {
      const why = (error as Error).message.replace(/^Cannot/, "cannot");
      throw new Error(`Cannot use --nbd-tls-psk ${pskFile}: ${why}`);
    }
  }
  return credentials;
}

function readTlsFile(flag: string, file: string, secret: boolean): string {
  // The one way product code reads secrets and their companions (net/auth/secret_file.ts).
  return readSecretFile(file, `--${flag}`, { ownerOnly: secret });
}

/**
 * An OpenSSL error as one short line: Node's messages carry the library's file and line
 * ("80CC...:error:0A00009C:SSL routines:ssl3_get_record:http request:../deps/..."), its
 * `reason` field says the part that matters ("http request").
 */
export function tlsErrorText(error: Error): string {
  const reason = (error as Error & { reason?: unknown }).reason;
  if (typeof reason === "string" && reason !== "") return reason;
  return error.message.split("\n")[0]!.trim();
}
