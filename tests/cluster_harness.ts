/**
 * In-process clusters: several sheep in one process on loopback, joined through unicast seeds
 * (the built-in group) or through a real etcd cluster (tests/etcd_harness.ts), with fast failure
 * detection, started, killed and restarted at will.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { Sheep } from "../net/sheep/sheep.ts";
import { ObjectClient } from "../net/object/client.ts";
import { TcpTransport } from "../net/object/tcp_transport.ts";
import { generateKey } from "../net/auth/cluster_key.ts";
import { AdminService } from "../net/admin/admin_service.ts";
import { clusterIdOf, EtcdClient, EtcdDriver, EtcdLayout } from "../net/etcd/mod.ts";
import { freePort, tempDir } from "./harness.ts";
import type { EtcdProxy, EtcdTestCluster } from "./etcd_harness.ts";
import type { Logger } from "../net/sheep/logger.ts";
import type { Disk } from "../core/store/disk.ts";

export { freePort };

export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  describe: () => string = () => "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what} ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export interface TestClusterOptions {
  nodes: number;
  copies: number;
  failureTimeoutMs?: number;
  /** Zone of node i; by default every node is its own zone. */
  zone?: (index: number) => number;
  /** Format with `--strict`: refuse writes when zones are fewer than copies. */
  strict?: boolean;
  /** Extra unicast seeds every node gets (e.g. a dog witness). */
  extraSeeds?: string[];
  /** The cluster key (default: a new one), e.g. to share it with a dog witness. */
  key?: Uint8Array;
  /**
   * Run the cluster on this etcd instead of the built-in group: each sheep reaches it through a
   * proxy of its own (see `cutFromEtcd`), its keys under a prefix of its own.
   */
  etcd?: EtcdTestCluster;
  /** Where node `index` logs (default: nowhere, or stderr with SHEEPDOG_TEST_LOG=1). */
  logger?: (index: number) => Logger;
  /** With etcd: events kept before the oldest are trimmed (default: the driver's). */
  etcdEventsKept?: number;
  /** The disk under node `index`'s store, asked at each start (default: the real one). */
  disk?: (index: number) => Disk | undefined;
  /** Fixed vnodes of node `index` (`--vnodes`); default: by capacity. */
  vnodes?: (index: number) => number | undefined;
  /** Checksum worker threads per sheep (default 0: every checksum on the main thread). */
  checksumWorkers?: number;
  /** Recovery bytes per second while clients are busy (`--recovery-rate`; default the sheep's). */
  recoveryRate?: number;
  /**
   * Format the moment the nodes answer, before they have found each other (as `shepherd mkfs`
   * right after starting the sheep), instead of once they share one view.
   */
  formatAtOnce?: boolean;
  /**
   * Node `index`'s wall clock, asked at each start (default: the machine's): a machine whose
   * clock is off, or was set back while its sheep was down.
   */
  clock?: (index: number) => (() => number) | undefined;
}

/** The cluster driver a test cluster runs on. */
export type DriverName = "builtin" | "etcd";

/** Lines to stderr, for a test run with SHEEPDOG_TEST_LOG=1. */
function consoleLogger(name: string) {
  const line = (level: string) => (message: string) =>
    console.error(`${new Date().toISOString().slice(11, 23)} ${name} ${level} ${message}`);
  return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
}

export class TestCluster {
  readonly root: string;
  readonly ports: number[] = [];
  readonly sheep: (Sheep | undefined)[] = [];
  readonly #options: TestClusterOptions;
  /** Partition sides by node index; undefined = everyone reaches everyone. */
  #sides: Map<number, number> | undefined;
  #clients: AdminService[] = [];
  /** The cluster key: peers authenticate and datagrams are sealed, as in production. */
  readonly key: Uint8Array;
  /** With etcd: where this cluster's keys are, and each node's own way to etcd. */
  readonly etcdPrefix: string;
  readonly #etcdProxies: EtcdProxy[] = [];

  private constructor(root: string, options: TestClusterOptions) {
    this.root = root;
    this.#options = options;
    this.key = options.key ?? generateKey();
    this.etcdPrefix = `/${path.basename(root)}/`;
  }

  get driver(): DriverName {
    return this.#options.etcd ? "etcd" : "builtin";
  }

  static async start(options: TestClusterOptions): Promise<TestCluster> {
    const cluster = new TestCluster(await tempDir("sd-cluster-"), options);
    for (let i = 0; i < options.nodes; i++) cluster.ports.push(await freePort());
    await Promise.all(cluster.ports.map((_, i) => cluster.startNode(i)));
    if (!options.formatAtOnce) await cluster.waitForView(options.nodes);
    await cluster.admin(0).mkfs({
      copies: options.copies,
      blockSizeShift: 22,
      strict: options.strict ?? false,
    });
    await waitFor(
      "every node formatted",
      () => cluster.live().every((s) => s.status === "running"),
    );
    return cluster;
  }

  /** Starts (or restarts) node `index` on its directory and port. */
  async startNode(index: number): Promise<Sheep> {
    if (index >= this.ports.length) this.ports.push(await freePort());
    const port = this.ports[index]!;
    const failureTimeoutMs = this.#options.failureTimeoutMs ?? 1500;
    const etcd = this.#options.etcd;
    if (etcd && !this.#etcdProxies[index]) this.#etcdProxies[index] = await etcd.proxy();
    const proxy = this.#etcdProxies[index];
    const disk = this.#options.disk?.(index);
    const vnodes = this.#options.vnodes?.(index);
    const now = this.#options.clock?.(index);
    const sheep = new Sheep({
      dir: path.join(this.root, `sheep${index}`),
      host: "127.0.0.1",
      port,
      zone: this.#options.zone?.(index) ?? index + 1,
      security: { key: this.key },
      ...(disk ? { disk } : {}),
      ...(vnodes === undefined ? {} : { vnodes }),
      // The wall clock only: the sheep's monotonic clock is the machine's, never set.
      ...(now ? { now, monotonic: () => performance.now() } : {}),
      ...(this.#options.checksumWorkers ? { checksumWorkers: this.#options.checksumWorkers } : {}),
      ...(this.#options.recoveryRate ? { recoveryRate: this.#options.recoveryRate } : {}),
      ...(this.#options.logger
        ? { logger: this.#options.logger(index) }
        : Deno.env.get("SHEEPDOG_TEST_LOG")
        ? { logger: consoleLogger(`sheep${index}`) }
        : {}),
      ...(proxy
        ? {
          driver: (host) =>
            new EtcdDriver(host, {
              endpoints: proxy.endpoints,
              prefix: this.etcdPrefix,
              clusterId: clusterIdOf(this.key),
              failureTimeoutMs,
              settleMs: 500,
              ...(this.#options.etcdEventsKept ? { eventsKept: this.#options.etcdEventsKept } : {}),
            }),
        }
        : {
          cluster: {
            seeds: [
              ...this.ports.filter((p) => p !== port).map((p) => `127.0.0.1:${p}`),
              ...(this.#options.extraSeeds ?? []),
            ],
            multicast: false,
            failureTimeoutMs,
            settleMs: 500,
            reachable: (id) => this.#reachable(index, id),
          },
        }),
    });
    await sheep.start();
    this.sheep[index] = sheep;
    return sheep;
  }

  /** Cuts node `index` off etcd (every connection to every member), or heals it. */
  cutFromEtcd(index: number, cut = true): void {
    const proxy = this.#etcdProxies[index];
    if (!proxy) throw new Error(`node ${index} does not run on etcd`);
    if (cut) proxy.cut();
    else proxy.heal();
  }

  #reachable(from: number, id: string): boolean {
    if (!this.#sides) return true;
    const to = this.ports.indexOf(Number(id.split(":")[1]));
    return to === -1 || this.#sides.get(from) === this.#sides.get(to);
  }

  /** Cuts the network between the groups of node indexes (each group still talks inside). */
  partition(...groups: number[][]): void {
    this.#sides = new Map(
      groups.flatMap((group, side) => group.map((index) => [index, side] as const)),
    );
  }

  /** Ends the partition. */
  heal(): void {
    this.#sides = undefined;
  }

  node(index: number): Sheep {
    const sheep = this.sheep[index];
    if (!sheep) throw new Error(`node ${index} is not running`);
    return sheep;
  }

  live(): Sheep[] {
    return this.sheep.filter((s): s is Sheep => s !== undefined);
  }

  /** An admin client talking TCP to node `index`. */
  admin(index: number): AdminService {
    const admin = new AdminService(
      new ObjectClient(
        new TcpTransport({ host: "127.0.0.1", port: this.ports[index]!, key: this.key }),
      ),
    );
    this.#clients.push(admin);
    return admin;
  }

  /** Kills node `index` without a goodbye, as a crash would. */
  async kill(index: number): Promise<void> {
    const sheep = this.node(index);
    this.sheep[index] = undefined;
    await sheep.stop({ graceful: false });
  }

  /**
   * Waits until the driver can know that the killed nodes `indexes` are gone: at once for the
   * built-in group (a restarted node hears nobody there), on etcd once their leases lapsed (a
   * member key outlives its sheep by up to a TTL). A restart after this is a full stop's.
   */
  async waitForLapse(indexes: number[]): Promise<void> {
    const etcd = this.#options.etcd;
    if (!etcd) return;
    const client = new EtcdClient({ endpoints: etcd.endpoints });
    const layout = new EtcdLayout(this.etcdPrefix);
    const ids = indexes.map((i) => `127.0.0.1:${this.ports[i]}`);
    await waitFor("the killed nodes' leases to lapse", async () => {
      const { kvs } = await client.range(layout.members, { prefix: true });
      return !kvs.some((kv) => ids.includes(kv.key.slice(layout.members.length)));
    });
  }

  /** Waits until every live node is running in one view of `size` storage nodes. */
  async waitForView(size: number, timeoutMs = 20_000): Promise<number> {
    await waitFor(`a view of ${size} nodes`, () => {
      const live = this.live();
      const epochs = new Set(live.map((s) => s.view.epoch));
      return epochs.size === 1 &&
        live.every((s) => s.view.nodes.length === size && s.member?.state === "primary");
    }, timeoutMs);
    return this.live()[0]!.view.epoch;
  }

  /**
   * Waits until every live node finished recovering the current epoch and, once all had,
   * purged what no longer belongs to it.
   */
  async waitForRecovery(timeoutMs = 30_000): Promise<void> {
    await waitFor(
      "recovery to finish",
      () =>
        this.live().every((s) => {
          const status = s.recovery.status();
          return status.state === "done" && status.epoch === s.view.epoch &&
            status.purgedEpoch === s.view.epoch;
        }),
      timeoutMs,
      () => this.#describe(),
    );
    // What `info -t recovery` shows once done: every object counted, whoever pulled it.
    for (const s of this.live()) {
      const { done, total } = s.recovery.status();
      if (done !== total) {
        throw new Error(`node ${s.id}: recovery done with ${done}/${total} objects counted`);
      }
    }
  }

  #describe(): string {
    return JSON.stringify(
      this.live().map((s) => ({
        id: s.id,
        epoch: s.view.epoch,
        state: s.member?.state,
        recovery: s.recovery.status(),
      })),
    );
  }

  async stop(): Promise<void> {
    for (const client of this.#clients) await client.client.close();
    await Promise.all(this.live().map((s) => s.stop({ graceful: false })));
    for (const proxy of this.#etcdProxies) await proxy?.close();
    await fsp.rm(this.root, { recursive: true, force: true });
  }
}
