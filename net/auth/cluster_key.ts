/**
 * The cluster key: one secret shared by every sheep and dog of a cluster. It proves group
 * datagrams and sheep-to-sheep connections genuine (`datagram_seal.ts`, `handshake.ts`) and
 * admits administrative requests. A key file holds it as hex on one line; it must be readable
 * by its owner only, as ssh insists for private keys.
 *
 * How a command finds the key of the sheep it talks to (`findClientKey`): `--key-file`, else
 * $SHEEPDOG_KEY_FILE, else the note a sheep leaves at start for the commands of its own host
 * (`keyNotePath`: which key file the sheep on that port of this network namespace uses;
 * removed when that sheep stops).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { readSecretFile, SecretFileError } from "./secret_file.ts";
import { CLUSTER_KEY_BYTES, CLUSTER_KEY_BYTES_MIN } from "../../core/limits.ts";

/** A key file that cannot be used: the message names the file and what to do. */
export class KeyFileError extends SecretFileError {
  override name = "KeyFileError";
}

/** The file a sheep uses when no --key-file is given: made on first start. */
export const KEY_FILE_NAME = "cluster.key";

/** A new random key. */
export function generateKey(): Uint8Array {
  return new Uint8Array(randomBytes(CLUSTER_KEY_BYTES));
}

/**
 * Writes a new key to `file` (mode 0600). Never replaces an existing file: a key in use must
 * not change under a running cluster.
 *
 * @throws {KeyFileError} when the file exists or cannot be written.
 */
export function writeNewKeyFile(file: string, key = generateKey()): void {
  const temp = `${file}.${process.pid}.tmp`;
  try {
    const fd = fs.openSync(temp, "wx", 0o600);
    try {
      fs.writeFileSync(fd, `${Buffer.from(key).toString("hex")}\n`);
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    // link() refuses an existing name: two sheep starting at once agree on the first key.
    fs.linkSync(temp, file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw new KeyFileError(`Cannot write ${file}: it exists already`);
    throw new KeyFileError(`Cannot write key file ${file}: ${code ?? (error as Error).message}`);
  } finally {
    fs.rmSync(temp, { force: true });
  }
}

/**
 * Reads and checks a key file: owner-only permissions, hex, at least 16 bytes.
 *
 * @throws {KeyFileError} naming the file and the fix.
 */
export function readKeyFile(file: string): Uint8Array {
  const hex = readSecretFile(file, "key file", {
    missingHint: " (make one with: sheepdog shepherd keygen FILE)",
  });
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) {
    throw new KeyFileError(`Cannot use key file ${file}: expected one line of hex digits`);
  }
  const key = new Uint8Array(Buffer.from(hex, "hex"));
  if (key.length < CLUSTER_KEY_BYTES_MIN) {
    throw new KeyFileError(
      `Cannot use key file ${file}: ${key.length} bytes is too short ` +
        `(at least ${CLUSTER_KEY_BYTES_MIN}; sheepdog shepherd keygen makes ${CLUSTER_KEY_BYTES})`,
    );
  }
  return key;
}

/**
 * The key a sheep in `dir` uses: `keyFile` if given, else DIR/cluster.key, made on first start
 * so a single machine needs no key handling. Returns the key and the file it came from.
 */
export function sheepKey(
  dir: string,
  keyFile: string | undefined,
): { key: Uint8Array; file: string; created: boolean } {
  if (keyFile !== undefined) {
    const file = path.resolve(keyFile);
    return { key: readKeyFile(file), file, created: false };
  }
  const file = path.join(dir, KEY_FILE_NAME);
  let created = false;
  if (!fs.existsSync(file)) {
    fs.mkdirSync(dir, { recursive: true });
    try {
      writeNewKeyFile(file);
      created = true;
    } catch (error) {
      if (!/exists already/.test((error as Error).message)) throw error;
    }
  }
  return { key: readKeyFile(file), file, created };
}

/**
 * The network namespace this process runs in (Linux: the inode of /proc/self/ns/net), if
 * known. A port names one sheep only within a network namespace, while the temporary
 * directory is usually shared by all of them (`ip netns exec`, containers sharing /tmp).
 */
function networkNamespace(): string | undefined {
  try {
    return /^net:\[(\d+)\]$/.exec(fs.readlinkSync("/proc/self/ns/net"))?.[1];
  } catch {
    return undefined; // not Linux
  }
}

/**
 * Where a sheep listening on `port` notes its key file for the commands of its host: a
 * directory of this user's own under the temporary directory, one note per network namespace
 * and port (sheep in two namespaces may both listen on 7000).
 */
export function keyNotePath(port: number): string {
  const uid = process.getuid?.() ?? 0;
  const namespace = networkNamespace();
  const name = namespace === undefined ? `key-file.${port}` : `key-file.${namespace}.${port}`;
  return path.join(os.tmpdir(), `sheepdog-${uid}`, name);
}

/** Leaves the note (best effort: without it, commands need --key-file). */
export function writeKeyNote(port: number, keyFile: string): void {
  const note = keyNotePath(port);
  const dir = path.dirname(note);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!ownedPrivateDirectory(fs.lstatSync(dir))) return; // another's directory: no note there
  const temp = `${note}.${process.pid}.tmp`;
  fs.writeFileSync(temp, `${keyFile}\n`, { mode: 0o600 });
  fs.renameSync(temp, note);
}

/** Removes the note at stop, if it still names `keyFile` (best effort). */
export function removeKeyNote(port: number, keyFile: string): void {
  const note = keyNotePath(port);
  try {
    if (fs.readFileSync(note, "utf8").trim() === keyFile) fs.rmSync(note);
  } catch {
    // No note, or not ours to read: nothing to remove.
  }
}

function ownedPrivateDirectory(stat: { uid: number; mode: number; isDirectory(): boolean }) {
  const uid = process.getuid?.();
  return stat.isDirectory() && (uid === undefined || stat.uid === uid) &&
    (stat.mode & 0o077) === 0;
}

/** The key file a local sheep on `port` noted, if any (and the note is this user's own). */
function notedKeyFile(port: number): string | undefined {
  const note = keyNotePath(port);
  try {
    if (!ownedPrivateDirectory(fs.lstatSync(path.dirname(note)))) return undefined;
    const file = fs.readFileSync(note, "utf8").trim();
    return file === "" ? undefined : file;
  } catch {
    return undefined;
  }
}

/** True when `host` names this machine (loopback or one of its interface addresses). */
export function isLocalHost(host: string): boolean {
  if (host === "localhost" || host.startsWith("127.") || host === "::1") return true;
  return Object.values(os.networkInterfaces()).some((addresses) =>
    addresses?.some((a) => a.address === host)
  );
}

/**
 * The key a command uses to talk to the sheep at `target`: `--key-file`, else
 * $SHEEPDOG_KEY_FILE, else the note of a sheep of this host on that port; undefined when none
 * is found (the command can still send the public requests old clients send).
 *
 * @throws {KeyFileError} when a named key file cannot be used.
 */
export function findClientKey(
  keyFile: string | undefined,
  target: { host: string; port: number },
): Uint8Array | undefined {
  const named = keyFile ?? process.env.SHEEPDOG_KEY_FILE;
  if (named !== undefined && named !== "") return readKeyFile(path.resolve(named));
  if (!isLocalHost(target.host)) return undefined;
  const noted = notedKeyFile(target.port);
  if (noted === undefined) return undefined;
  try {
    return readKeyFile(noted);
  } catch {
    return undefined; // a stale note (the directory is gone): proceed as without one
  }
}
