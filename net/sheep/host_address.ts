/**
 * The address a sheep advertises when not told one: the IPv4 address of the interface that
 * holds the default route (what other hosts most likely reach), else the first non-loopback
 * IPv4 address, else none (a host with only loopback works alone, on 127.0.0.1).
 *
 * @module
 */

import * as fs from "node:fs";
import * as os from "node:os";

/** An address and why it was chosen, for the start-up line. */
export interface HostAddress {
  readonly address: string;
  readonly reason: string;
}

/** The interface of the IPv4 default route, from /proc/net/route (Linux), if any. */
export function defaultRouteInterface(routeTable?: string): string | undefined {
  let text = routeTable;
  if (text === undefined) {
    try {
      text = fs.readFileSync("/proc/net/route", "utf8");
    } catch {
      return undefined; // not Linux: fall back to the interface list
    }
  }
  // Iface Destination Gateway Flags ...: destination 0 with RTF_UP (0x1) is the default route.
  for (const line of text.split("\n").slice(1)) {
    const [iface, destination, , flags] = line.trim().split(/\s+/);
    if (iface && destination === "00000000" && (parseInt(flags ?? "0", 16) & 1) === 1) {
      return iface;
    }
  }
  return undefined;
}

type Interfaces = ReturnType<typeof os.networkInterfaces>;

function ipv4Of(addresses: Interfaces[string]): string | undefined {
  return addresses?.find((a) => a.family === "IPv4" && !a.internal)?.address;
}

/** The address to advertise by default, or undefined when the host has only loopback. */
export function defaultHostAddress(
  interfaces: Interfaces = os.networkInterfaces(),
  routeInterface = defaultRouteInterface(),
): HostAddress | undefined {
  if (routeInterface !== undefined) {
    const address = ipv4Of(interfaces[routeInterface]);
    if (address !== undefined) {
      return { address, reason: `interface ${routeInterface}, which has the default route` };
    }
  }
  for (const [name, addresses] of Object.entries(interfaces)) {
    const address = ipv4Of(addresses);
    if (address !== undefined) return { address, reason: `interface ${name}` };
  }
  return undefined;
}
