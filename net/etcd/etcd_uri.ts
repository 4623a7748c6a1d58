/**
 * `--cluster-driver`: `builtin` (the group: multicast and seeds), or
 * `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (etcd members' client ports; the cluster's keys go
 * under /PREFIX/, by default /sheepdog/, so several clusters can share one etcd).
 *
 * @module
 */

export type DriverChoice =
  | { readonly kind: "builtin" }
  | { readonly kind: "etcd"; readonly endpoints: readonly string[]; readonly prefix: string };

export const DRIVER_DEFAULT = "builtin";
const PREFIX_DEFAULT = "/sheepdog/";

/** The driver a `--cluster-driver` value names; an Error says what is wrong with it. */
export function parseDriverUri(text: string): DriverChoice {
  if (text === "builtin") return { kind: "builtin" };
  const match = /^etcd:\/\/([^/]+)(\/.*)?$/.exec(text);
  if (!match) {
    throw new Error(
      `Invalid --cluster-driver '${text}': use builtin or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`,
    );
  }
  const endpoints = match[1]!.split(",").map((part) => endpointOf(part, text));
  const path = match[2] ?? "";
  if (path !== "" && path !== "/" && !/^(\/[A-Za-z0-9._-]+)+\/?$/.test(path)) {
    throw new Error(
      `Invalid --cluster-driver '${text}': the prefix may hold letters, digits, '.', '_', '-' ` +
        "and '/'",
    );
  }
  const prefix = path === "" || path === "/" ? PREFIX_DEFAULT : `${path.replace(/\/$/, "")}/`;
  return { kind: "etcd", endpoints, prefix };
}

/** "host:port" (a name, an IPv4 address, or [IPv6]), port 1..65535. */
function endpointOf(part: string, text: string): string {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(part);
  const port = Number(match?.[2]);
  if (!match || port < 1 || port > 65535) {
    throw new Error(
      `Invalid --cluster-driver '${text}': '${part}' is not HOST:PORT (etcd's client port, ` +
        "e.g. 127.0.0.1:2379)",
    );
  }
  return part;
}
