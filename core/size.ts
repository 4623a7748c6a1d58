/**
 * Sizes as people write and read them: binary units (K, M, G, T, P), as Sheepdog prints them.
 *
 * @module
 */

const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];

/** "256 GB", "1.5 MB": binary units, as Sheepdog prints them. */
export function formatSize(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const text = Number.isInteger(value) ? String(value) : value.toFixed(1);
  return `${text} ${UNITS[unit]}`;
}

/** Parses "256G", "10M", "4096", "1.5T" (binary units). Throws a RangeError on anything else. */
export function parseSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$/i.exec(text.trim());
  if (!match) throw new RangeError(`Invalid size '${text}': use a number with K, M, G or T`);
  const power = " kmgtp".indexOf((match[2] || " ").toLowerCase());
  const bytes = Math.round(Number(match[1]) * 1024 ** power);
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`Invalid size '${text}': too large`);
  return bytes;
}
