/**
 * Which addresses may send the public requests of old clients (QEMU's driver cannot
 * authenticate): loopback always, and the IPv4 networks of `--allow-clients CIDR[,CIDR]`.
 *
 * @module
 */

/** One IPv4 network. */
interface Network {
  readonly base: number;
  readonly mask: number;
  readonly text: string;
}

/** Parses "a.b.c.d" to a u32, or undefined. */
function ipv4(text: string): number | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!match) return undefined;
  const octets = match.slice(1).map(Number);
  if (octets.some((o) => o > 255)) return undefined;
  return ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
}

/** The IPv4 address of a peer as sockets report it ("::ffff:10.0.0.1" included). */
function peerIpv4(address: string): number | undefined {
  return ipv4(address.startsWith("::ffff:") ? address.slice(7) : address);
}

export class ClientAddresses {
  readonly #networks: readonly Network[];

  private constructor(networks: readonly Network[]) {
    this.#networks = networks;
  }

  /** Loopback only. */
  static readonly loopbackOnly = new ClientAddresses([]);

  /**
   * Parses "CIDR[,CIDR...]" (an address alone is a /32).
   *
   * @throws {RangeError} naming the entry that is not an IPv4 network.
   */
  static parse(list: string): ClientAddresses {
    const networks: Network[] = [];
    for (const entry of list.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
      const [address, bitsText] = entry.split("/");
      const base = ipv4(address ?? "");
      const bits = bitsText === undefined ? 32 : Number(bitsText);
      if (base === undefined || !/^\d*$/.test(bitsText ?? "") || !(bits >= 0 && bits <= 32)) {
        throw new RangeError(`'${entry}' is not an IPv4 network (use e.g. 10.0.0.0/24)`);
      }
      const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      networks.push({ base: (base & mask) >>> 0, mask, text: entry });
    }
    return new ClientAddresses(networks);
  }

  /** True for loopback and for an address inside one of the networks. */
  allows(address: string): boolean {
    if (address === "::1") return true;
    const ip = peerIpv4(address);
    if (ip === undefined) return false;
    if (ip >>> 24 === 127) return true;
    return this.#networks.some((n) => ((ip & n.mask) >>> 0) === n.base);
  }

  /** The networks as given, for logs and help. */
  toString(): string {
    return ["loopback", ...this.#networks.map((n) => n.text)].join(", ");
  }
}
