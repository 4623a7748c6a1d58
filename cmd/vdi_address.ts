/**
 * VDI arguments of every command (`img`, `shepherd vdi`, `shepherd cluster scrub`): `NAME`, `NAME:SNAP`, `sheepdog:NAME[:SNAP]` and
 * `sheepdog://HOST:PORT/NAME[#SNAP]` (QEMU's old spellings), SNAP being a snap id or a tag.
 *
 * @module
 */

import type { AdminService } from "../net/admin/admin_service.ts";
import { clusterAddress, connect, parseHostPort } from "./cli.ts";

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

/** The cluster flags of a command's parsed values. */
export type ClusterFlags = { cluster?: string; "key-file"?: string };

/**
 * Runs `fn` with a client of the cluster a VDI argument points at (its own `sheepdog://HOST:PORT`
 * if it names one, else the flags' cluster) and the VDI as `NAME[:SNAP]`; closes the client.
 */
export async function withAdmin<T>(
  text: string,
  flags: ClusterFlags,
  fn: (admin: AdminService, vdi: string) => Promise<T>,
): Promise<T> {
  const address = parseVdiAddress(text);
  const cluster = clusterAddress(flags);
  const admin = connect(address.cluster ? { ...cluster, ...address.cluster } : cluster);
  try {
    return await fn(admin, address.vdi);
  } finally {
    await admin.client.close();
  }
}
