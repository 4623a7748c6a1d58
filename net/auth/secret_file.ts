/**
 * The one way secrets are read from files (cluster key, HTTP token): the file must be a
 * regular file that only its owner can read or change, as ssh insists for private keys, and
 * must not be empty. Errors name the file and the fix.
 *
 * @module
 */

import * as fs from "node:fs";
import { systemErrorText } from "../../core/errors.ts";

/** A secret file that cannot be used. */
export class SecretFileError extends Error {
  override name = "SecretFileError";
}

/**
 * The trimmed text of a secret file.
 *
 * @param what what the file holds, for messages ("key file", "token file", "--nbd-tls-key").
 * @param options.ownerOnly false for files that are not secret (a certificate): only the
 *   other checks apply.
 * @throws {SecretFileError} when it is missing, not a file, open to others or empty.
 */
export function readSecretFile(
  file: string,
  what: string,
  options: { missingHint?: string; ownerOnly?: boolean } = {},
): string {
  const { missingHint = "", ownerOnly = true } = options;
  let text: string;
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) throw new SecretFileError(`Cannot use ${what} ${file}: not a file`);
    if (ownerOnly && (stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(4, "0");
      throw new SecretFileError(
        `Cannot use ${what} ${file}: others can read or change it (mode ${mode}); ` +
          `run chmod 600 ${file}`,
      );
    }
    text = fs.readFileSync(file, "utf8").trim();
  } catch (error) {
    if (error instanceof SecretFileError) throw error;
    const hint = (error as NodeJS.ErrnoException).code === "ENOENT" ? missingHint : "";
    throw new SecretFileError(`Cannot read ${what} ${file}: ${systemErrorText(error)}${hint}`);
  }
  if (text === "") throw new SecretFileError(`Cannot use ${what} ${file}: it is empty`);
  return text;
}
