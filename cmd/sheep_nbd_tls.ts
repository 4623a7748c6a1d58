/**
 * The NBD TLS flags of `sheepdog sheep`: `--nbd-tls-cert/--nbd-tls-key` (x509),
 * `--nbd-tls-ca` (client certificates) and `--nbd-tls-psk` (pre-shared keys). Checked in the
 * foreground, before the sheep daemonises, like every other flag.
 *
 * @module
 */

import { loadNbdTls, NbdTls } from "../net/nbd/mod.ts";
import { UsageError } from "./cli.ts";

export const NBD_TLS_FLAGS = {
  "nbd-tls-cert": { type: "string" },
  "nbd-tls-key": { type: "string" },
  "nbd-tls-ca": { type: "string" },
  "nbd-tls-psk": { type: "string" },
} as const;

export const NBD_TLS_USAGE =
  `  --nbd-tls-cert FILE  x509 certificate (PEM) for NBD over TLS; needs --nbd-tls-key
  --nbd-tls-key FILE   its private key (PEM, mode 600)
  --nbd-tls-ca FILE    also require client certificates issued by this CA (PEM)
  --nbd-tls-psk FILE   pre-shared keys for NBD over TLS: lines identity:hexkey, as in
                    qemu's keys.psk (mode 600; qemu's identity is 'qemu').
                    With any --nbd-tls-* flag, NBD clients must use TLS`;

/** The flags' values, as parseArgs gives them. */
export interface NbdTlsFlagValues {
  "nbd-tls-cert"?: string;
  "nbd-tls-key"?: string;
  "nbd-tls-ca"?: string;
  "nbd-tls-psk"?: string;
  nbd?: boolean;
}

/**
 * The NBD server's TLS from the flags, or undefined without any. Reads and checks the files.
 *
 * @throws {UsageError} when the flags do not go together
 * @throws {Error} one line naming the flag and file that cannot be used
 */
export function nbdTlsOf(values: NbdTlsFlagValues): NbdTls | undefined {
  const certFile = values["nbd-tls-cert"];
  const keyFile = values["nbd-tls-key"];
  const caFile = values["nbd-tls-ca"];
  const pskFile = values["nbd-tls-psk"];
  if ([certFile, keyFile, caFile, pskFile].every((f) => f === undefined)) return undefined;
  if (values.nbd === false) throw new UsageError("--nbd-tls-* flags need NBD: drop --no-nbd");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new UsageError("--nbd-tls-cert and --nbd-tls-key go together");
  }
  if (caFile !== undefined && certFile === undefined) {
    throw new UsageError("--nbd-tls-ca needs --nbd-tls-cert and --nbd-tls-key");
  }
  const credentials = loadNbdTls({
    ...(certFile !== undefined ? { certFile } : {}),
    ...(keyFile !== undefined ? { keyFile } : {}),
    ...(caFile !== undefined ? { caFile } : {}),
    ...(pskFile !== undefined ? { pskFile } : {}),
  })!;
  try {
    return new NbdTls(credentials);
  } catch (error) {
    const files = [certFile, keyFile, caFile].filter((f) => f !== undefined).join("', '");
    const what = certFile !== undefined ? `the x509 files '${files}'` : `'${pskFile}'`;
    const reason = (error as Error & { reason?: string }).reason ??
      (error as Error).message.split("\n")[0];
    throw new Error(`Cannot use ${what} for NBD over TLS: ${reason}`);
  }
}
