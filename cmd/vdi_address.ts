/**
 * VDI arguments of `img`: `NAME`, `NAME:SNAP`, `sheepdog:NAME[:SNAP]` and
 * `sheepdog://HOST:PORT/NAME[#SNAP]` (QEMU's old spellings), SNAP being a snap id or a tag.
 *
 * @module
 */

import { parseHostPort } from "./cli.ts";

export interface VdiAddress {
  /** "NAME" or "NAME:SNAP", as AdminService.vdi/parseVdiRef take it. */
  vdi: string;
  /** Set when the argument names its own cluster. */
  cluster?: { host: string; port: number };
}

/** True when `text` is explicitly a VDI (a sheepdog: prefix). */
export function isExplicitVdi(text: string): boolean {
  return text.startsWith("sheepdog:");
}

export function parseVdiAddress(text: string): VdiAddress {
  if (text.startsWith("sheepdog://") || text.startsWith("sheepdog+tcp://")) {
    const url = new URL(text.replace(/^sheepdog(\+tcp)?:/, "http:"));
    const name = decodeURIComponent(url.pathname.slice(1));
    const snap = decodeURIComponent(url.hash.slice(1));
    const cluster = parseHostPort(url.port ? `${url.hostname}:${url.port}` : url.hostname);
    return { vdi: snap ? `${name}:${snap}` : name, cluster };
  }
  if (text.startsWith("sheepdog:")) return { vdi: text.slice("sheepdog:".length) };
  return { vdi: text };
}
