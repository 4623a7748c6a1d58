/**
 * A real etcd cluster for tests: three `etcd` members (Debian's etcd-server) on free loopback
 * ports, each with its data directory under one temporary directory, started and killed by PID;
 * plus per-sheep TCP proxies in front of them, so a test can cut one sheep off etcd while the
 * others keep talking to it.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as path from "node:path";
import { freePort, tempDir } from "./harness.ts";
import { waitFor } from "./cluster_harness.ts";

/** Whether the `etcd` binary is installed (tests that need it say so and skip without). */
export function etcdInstalled(): boolean {
  try {
    return new Deno.Command("etcd", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  dir: string;
  process: Deno.ChildProcess | undefined;
}

export class EtcdTestCluster {
  readonly root: string;
  readonly #members: Member[];

  private constructor(root: string, members: Member[]) {
    this.root = root;
    this.#members = members;
  }

  /** Starts `size` members and waits until the cluster answers. */
  static async start(size = 3): Promise<EtcdTestCluster> {
    const root = await tempDir("sd-etcd-");
    const members: Member[] = [];
    for (let i = 0; i < size; i++) {
      members.push({
        name: `m${i}`,
        clientPort: await freePort(),
        peerPort: await freePort(),
        dir: path.join(root, `m${i}`),
        process: undefined,
      });
    }
    const cluster = new EtcdTestCluster(root, members);
    for (let i = 0; i < size; i++) cluster.#spawn(i);
    try {
      await cluster.waitHealthy();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** Client endpoints, "127.0.0.1:port", one per member. */
  get endpoints(): string[] {
    return this.#members.map((m) => `127.0.0.1:${m.clientPort}`);
  }

  #spawn(index: number): void {
    const member = this.#members[index]!;
    const cluster = this.#members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(",");
    member.process = new Deno.Command("etcd", {
      args: [
        "--name",
        member.name,
        "--data-dir",
        member.dir,
        "--listen-client-urls",
        `http://127.0.0.1:${member.clientPort}`,
        "--advertise-client-urls",
        `http://127.0.0.1:${member.clientPort}`,
        "--listen-peer-urls",
        `http://127.0.0.1:${member.peerPort}`,
        "--initial-advertise-peer-urls",
        `http://127.0.0.1:${member.peerPort}`,
        "--initial-cluster",
        cluster,
        "--initial-cluster-token",
        path.basename(this.root),
        // Fast elections, so that a killed leader costs a second, not several.
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
        "--logger",
        "zap",
        "--log-outputs",
        path.join(this.root, `${member.name}.log`),
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  }

  /** Waits until every running member reports itself healthy (it has a leader). */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    await waitFor("etcd to be healthy", async () => {
      const running = this.#members.filter((m) => m.process);
      const health = await Promise.all(running.map((m) => this.#healthy(m.clientPort)));
      return health.every(Boolean);
    }, timeoutMs);
  }

  async #healthy(port: number): Promise<boolean> {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/health`, {
        signal: AbortSignal.timeout(1000),
      });
      const body = await response.json() as { health?: string };
      return body.health === "true";
    } catch {
      return false;
    }
  }

  /** The index of the current leader. */
  async leader(): Promise<number> {
    let found = -1;
    await waitFor("an etcd leader", async () => {
      for (const [index, member] of this.#members.entries()) {
        if (!member.process) continue;
        try {
          const response = await fetch(
            `http://127.0.0.1:${member.clientPort}/v3/maintenance/status`,
            {
              method: "POST",
              body: "{}",
              signal: AbortSignal.timeout(1000),
            },
          );
          const status = await response.json() as {
            header?: { member_id?: string };
            leader?: string;
          };
          if (status.leader && status.leader === status.header?.member_id) found = index;
        } catch {
          // Not answering: not the leader.
        }
      }
      return found >= 0;
    });
    return found;
  }

  /** Kills member `index` with SIGKILL, by its PID. */
  async kill(index: number): Promise<void> {
    const member = this.#members[index]!;
    const process = member.process;
    if (!process) return;
    member.process = undefined;
    Deno.kill(process.pid, "SIGKILL");
    await process.status;
  }

  /** Starts member `index` again from its data directory. */
  restart(index: number): void {
    if (!this.#members[index]!.process) this.#spawn(index);
  }

  /** Kills every member. */
  async killAll(): Promise<void> {
    for (let i = 0; i < this.#members.length; i++) await this.kill(i);
  }

  /** Starts every member that is not running from its data directory; waits until healthy. */
  async restartMissing(): Promise<void> {
    for (let i = 0; i < this.#members.length; i++) this.restart(i);
    await this.waitHealthy();
  }

  /** Compacts the history up to the current revision: watches from before it are cancelled. */
  async compact(): Promise<number> {
    const status = await this.post<{ header: { revision: string } }>("/v3/kv/range", {
      key: btoa("/"),
    });
    const revision = status.header.revision;
    await this.post("/v3/kv/compaction", { revision, physical: true });
    return Number(revision);
  }

  /**
   * A set of proxies, one per member, for one sheep: its own way to etcd, to cut and heal. The
   * caller closes it.
   */
  proxy(): Promise<EtcdProxy> {
    return EtcdProxy.start(this.#members.map((m) => m.clientPort));
  }

  /** A POST to the JSON gateway of the first running member (test set-up and inspection). */
  async post<T>(apiPath: string, body: unknown): Promise<T> {
    const member = this.#members.find((m) => m.process)!;
    const response = await fetch(`http://127.0.0.1:${member.clientPort}${apiPath}`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    return await response.json() as T;
  }

  async stop(): Promise<void> {
    for (let i = 0; i < this.#members.length; i++) await this.kill(i);
    await fsp.rm(this.root, { recursive: true, force: true });
  }
}

/** TCP proxies from local ports to etcd members' client ports, which a test can cut. */
export class EtcdProxy {
  readonly #servers: net.Server[];
  readonly ports: number[];
  readonly #sockets = new Set<net.Socket>();
  #cut = false;

  private constructor(servers: net.Server[], ports: number[]) {
    this.#servers = servers;
    this.ports = ports;
  }

  static async start(targets: number[]): Promise<EtcdProxy> {
    const servers: net.Server[] = [];
    const ports: number[] = [];
    const proxy = new EtcdProxy(servers, ports);
    for (const target of targets) {
      const server = net.createServer((client) => proxy.#accept(client, target));
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      servers.push(server);
      ports.push((server.address() as net.AddressInfo).port);
    }
    return proxy;
  }

  get endpoints(): string[] {
    return this.ports.map((port) => `127.0.0.1:${port}`);
  }

  #accept(client: net.Socket, target: number): void {
    if (this.#cut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, "127.0.0.1");
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Cuts every connection and refuses new ones, as a broken link to etcd would. */
  cut(): void {
    this.#cut = true;
    for (const socket of this.#sockets) socket.destroy();
  }

  heal(): void {
    this.#cut = false;
  }

  async close(): Promise<void> {
    this.cut();
    await Promise.all(
      this.#servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  }
}
