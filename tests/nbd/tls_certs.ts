/**
 * Test credentials for NBD over TLS, made with openssl in a temp dir: a CA, a server
 * certificate for 127.0.0.1 and localhost, a client certificate, a second CA that signed
 * neither (for "wrong CA" cases), and a psk file. The directory layouts are the ones qemu's
 * tls-creds-x509/tls-creds-psk and libnbd's tls-certificates/tls-psk-file expect.
 *
 * @module
 */

import { execFile } from "node:child_process";
import * as fsp from "node:fs/promises";
import * as path from "node:path";

export interface TlsFiles {
  root: string;
  /** Server side: ca-cert.pem, server-cert.pem, server-key.pem (mode 600). */
  serverDir: string;
  serverCert: string;
  serverKey: string;
  /** The CA that issued the server and client certificates. */
  caCert: string;
  /** Client side for qemu and libnbd: ca-cert.pem, client-cert.pem, client-key.pem. */
  clientDir: string;
  /** Client side with only ca-cert.pem (no client certificate). */
  clientDirNoCert: string;
  /** A client whose ca-cert.pem is another CA: it cannot verify the server. */
  clientDirWrongCa: string;
  /** A client certificate (and key) issued by the other CA. */
  strangerCert: string;
  strangerKey: string;
  /** The other CA's certificate. */
  otherCaCert: string;
  /** PSK: `keys.psk` (identity "qemu") in a dir of its own, mode 600, and its hex key. */
  pskDir: string;
  pskFile: string;
  pskHex: string;
  /** Same identity, another key. */
  wrongPskDir: string;
  wrongPskFile: string;
}

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile("openssl", args, { cwd, timeout: 30_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`openssl ${args.join(" ")}: ${error.message}\n${stderr}`));
      else resolve();
    });
  });
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl([
    "req",
    "-x509",
    ...EC,
    ...["-keyout", `${name}-key.pem`, "-out", `${name}-cert.pem`, "-days", "2"],
    ...["-subj", `/CN=sheepdog test ${name}`],
  ], dir);
}

async function issue(
  dir: string,
  options: { ca: string; name: string; cn: string; extensions: string },
): Promise<void> {
  const { ca, name, cn, extensions } = options;
  await fsp.writeFile(path.join(dir, `${name}.ext`), extensions);
  await openssl([
    "req",
    ...EC,
    "-keyout",
    `${name}-key.pem`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${cn}`,
  ], dir);
  await openssl([
    "x509",
    "-req",
    ...["-in", `${name}.csr`, "-CA", `${ca}-cert.pem`, "-CAkey", `${ca}-key.pem`],
    ...["-CAcreateserial", "-out", `${name}-cert.pem`, "-days", "2"],
    ...["-extfile", `${name}.ext`],
  ], dir);
}

/** Makes every file under `root` (which must exist). */
export async function makeTlsFiles(root: string): Promise<TlsFiles> {
  const work = path.join(root, "work");
  await fsp.mkdir(work);
  await makeCa(work, "ca");
  await makeCa(work, "other-ca");
  await issue(work, {
    ca: "ca",
    name: "server",
    cn: "localhost",
    extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
  });
  await issue(work, {
    ca: "ca",
    name: "client",
    cn: "sheepdog test client",
    extensions: "extendedKeyUsage=clientAuth\n",
  });
  await issue(work, {
    ca: "other-ca",
    name: "stranger",
    cn: "sheepdog test stranger",
    extensions: "extendedKeyUsage=clientAuth\n",
  });
  const w = (name: string) => path.join(work, name);
  const dir = async (name: string, files: Record<string, string>) => {
    const target = path.join(root, name);
    await fsp.mkdir(target, { mode: 0o700 });
    for (const [to, from] of Object.entries(files)) {
      await fsp.copyFile(from, path.join(target, to));
      await fsp.chmod(path.join(target, to), 0o600);
    }
    return target;
  };
  const serverDir = await dir("server", {
    "ca-cert.pem": w("ca-cert.pem"),
    "server-cert.pem": w("server-cert.pem"),
    "server-key.pem": w("server-key.pem"),
  });
  const clientDir = await dir("client", {
    "ca-cert.pem": w("ca-cert.pem"),
    "client-cert.pem": w("client-cert.pem"),
    "client-key.pem": w("client-key.pem"),
  });
  const clientDirNoCert = await dir("client-no-cert", { "ca-cert.pem": w("ca-cert.pem") });
  const clientDirWrongCa = await dir("client-wrong-ca", {
    "ca-cert.pem": w("other-ca-cert.pem"),
  });
  const pskHex = randomHex(32);
  const pskDir = path.join(root, "psk");
  await fsp.mkdir(pskDir, { mode: 0o700 });
  const pskFile = path.join(pskDir, "keys.psk");
  await fsp.writeFile(pskFile, `qemu:${pskHex}\n`, { mode: 0o600 });
  const wrongPskDir = path.join(root, "psk-wrong");
  await fsp.mkdir(wrongPskDir, { mode: 0o700 });
  const wrongPskFile = path.join(wrongPskDir, "keys.psk");
  await fsp.writeFile(wrongPskFile, `qemu:${randomHex(32)}\n`, { mode: 0o600 });
  return {
    root,
    serverDir,
    serverCert: path.join(serverDir, "server-cert.pem"),
    serverKey: path.join(serverDir, "server-key.pem"),
    caCert: path.join(serverDir, "ca-cert.pem"),
    clientDir,
    clientDirNoCert,
    clientDirWrongCa,
    strangerCert: w("stranger-cert.pem"),
    strangerKey: w("stranger-key.pem"),
    otherCaCert: w("other-ca-cert.pem"),
    pskDir,
    pskFile,
    pskHex,
    wrongPskDir,
    wrongPskFile,
  };
}

function randomHex(bytes: number): string {
  const data = new Uint8Array(bytes);
  crypto.getRandomValues(data);
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
}
