/**
 * N hosts on one Ethernet segment, each a network namespace, for tests that must cross real
 * interfaces (multicast discovery, default addresses, peers refused by address) and cut links.
 *
 * ```
 *  namespace <tag>-br:  br0 (the segment)   br1 (the far side of a partition)
 *                        |  |  |  |  |
 *                        h1 h2 h3 h4 h5     (veth ends; a partition moves some to br1)
 *                        |  |  |  |  |
 *  namespace <tag>-hN:  eth0 10.77.0.N/24, lo up, default route via 10.77.0.254
 * ```
 *
 * Nothing lives in the root namespace: both veth ends are made inside namespaces, the bridges
 * in a namespace of their own, so the host's network is never touched and 10.77.0.0/24 exists
 * only inside. Host numbers start at 1, as the last octet of their address does.
 *
 * @module
 */

import { deleteNamespace, execIn, ip, newRunTag, type Run } from "./ip.ts";

/** The test subnet (a /24 inside our namespaces only; unlikely to clash with anything). */
const SUBNET = "10.77.0";
/**
 * The default gateway of every host. Nothing answers there: the route exists so that a sheep
 * finds a default-route interface, as on a real host, and multicast leaves through eth0.
 */
const GATEWAY = `${SUBNET}.254`;

export class Hosts {
  /** `sdnt<pid>-<random>`: every namespace of this set starts with it. */
  readonly tag: string;
  readonly count: number;
  /** Hosts whose link is on br1 (a partition), to put back on heal. */
  readonly #apart = new Set<number>();

  private constructor(tag: string, count: number) {
    this.tag = tag;
    this.count = count;
  }

  /** Makes the bridge namespace and `count` hosts on it; on failure removes what it made. */
  static async create(count: number): Promise<Hosts> {
    if (count < 1 || count > 200) throw new RangeError(`hosts: ${count} is not 1..200`);
    const hosts = new Hosts(newRunTag(), count);
    try {
      await hosts.#makeBridges();
      await Promise.all(hosts.numbers.map((n) => hosts.#makeHost(n)));
    } catch (error) {
      await hosts.destroy();
      throw error;
    }
    return hosts;
  }

  /** 1..count. */
  get numbers(): number[] {
    return Array.from({ length: this.count }, (_, i) => i + 1);
  }

  get bridgeNamespace(): string {
    return `${this.tag}-br`;
  }

  namespace(n: number): string {
    this.#check(n);
    return `${this.tag}-h${n}`;
  }

  /** Host n's address: 10.77.0.n. */
  address(n: number): string {
    this.#check(n);
    return `${SUBNET}.${n}`;
  }

  /** Runs `command ARGS` on host n, with PATH plus `env` as its whole environment. */
  exec(
    n: number,
    command: string,
    args: string[],
    options: { env?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<Run> {
    return execIn(this.namespace(n), command, args, options);
  }

  /**
   * Cuts the segment in two: the hosts in `side` go to br1, the others stay on br0. Each side
   * still reaches its own members, as in a switch failure between two racks.
   */
  async partition(side: number[]): Promise<void> {
    for (const n of side) {
      await ip(["-n", this.bridgeNamespace, "link", "set", `h${n}`, "master", "br1"]);
      this.#apart.add(n);
    }
  }

  /** Puts every host back on br0. */
  async heal(): Promise<void> {
    for (const n of [...this.#apart]) {
      await ip(["-n", this.bridgeNamespace, "link", "set", `h${n}`, "master", "br0"]);
      this.#apart.delete(n);
    }
  }

  /**
   * Unplugs host n: its port on the bridge goes down, so its eth0 loses carrier but keeps its
   * address and routes (setting eth0 itself down would remove the default route).
   */
  async cut(n: number): Promise<void> {
    await ip(["-n", this.bridgeNamespace, "link", "set", `h${n}`, "down"]);
  }

  /** Plugs host n back in. */
  async reconnect(n: number): Promise<void> {
    await ip(["-n", this.bridgeNamespace, "link", "set", `h${n}`, "up"]);
  }

  /**
   * Removes every namespace of this set (killing, by pid, anything left running in one), so
   * the veth pairs and bridges go with them. Safe to call twice or after a failed create.
   */
  async destroy(): Promise<void> {
    const all = [...this.numbers.map((n) => `${this.tag}-h${n}`), this.bridgeNamespace];
    await Promise.all(all.map((ns) => deleteNamespace(ns)));
  }

  async #makeBridges(): Promise<void> {
    const br = this.bridgeNamespace;
    await ip(["netns", "add", br]);
    for (const bridge of ["br0", "br1"]) {
      // Multicast snooping off: the bridge floods the group's datagrams to every port, instead
      // of waiting to learn members from IGMP reports that no querier here ever asks for.
      await ip(["-n", br, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0"]);
      await ip(["-n", br, "link", "set", bridge, "up"]);
    }
  }

  async #makeHost(n: number): Promise<void> {
    const ns = this.namespace(n);
    const br = this.bridgeNamespace;
    await ip(["netns", "add", ns]);
    await ip(["-n", ns, "link", "set", "lo", "up"]);
    // Both ends are made from inside namespaces: nothing appears in the root namespace.
    await ip([
      "-n",
      ns,
      "link",
      "add",
      "eth0",
      "type",
      "veth",
      "peer",
      "name",
      `h${n}`,
      "netns",
      br,
    ]);
    await ip(["-n", ns, "addr", "add", `${this.address(n)}/24`, "dev", "eth0"]);
    await ip(["-n", ns, "link", "set", "eth0", "up"]);
    await ip(["-n", br, "link", "set", `h${n}`, "master", "br0"]);
    await ip(["-n", br, "link", "set", `h${n}`, "up"]);
    await ip(["-n", ns, "route", "add", "default", "via", GATEWAY, "dev", "eth0"]);
  }

  #check(n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > this.count) {
      throw new RangeError(`there is no host ${n} (hosts are 1..${this.count})`);
    }
  }
}
