// Goal: the herd works as separate processes: three `sheep` daemons find each other (through
// seeds with the built-in group; through a real three-member etcd with the etcd driver),
// `mkfs --copies=3` puts every object on all three, a `kill -9` of one loses nothing, and
// `info -t recovery` reaches done once the survivors have re-replicated.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { randomBytes, tempDir } from "../harness.ts";
import { freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";
import { etcdInstalled, EtcdTestCluster } from "../etcd_harness.ts";
import { Herd } from "./herd.ts";

/** How sheep `i` of `ports` finds the others: its cluster-driver flags. */
type Membership = (i: number, ports: number[]) => string[];

const seeded: Membership = (i, ports) => [
  ...["--multicast", "off"],
  ...ports.filter((_, j) => j !== i).flatMap((p) => ["--seed", `127.0.0.1:${p}`]),
];

async function eventually(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

Deno.test("e2e: three sheep processes, 3 copies, kill -9 one, nothing lost", async () => {
  await threeSheep(seeded);
});

Deno.test({
  name: "e2e: three sheep processes on a three-member etcd, kill -9 one, nothing lost",
  ignore: !etcdInstalled(),
  fn: async () => {
    const etcd = await EtcdTestCluster.start();
    try {
      const uri = `etcd://${etcd.endpoints.join(",")}/e2e`;
      await threeSheep(() => ["--cluster-driver", uri], async ({ dir }) => {
        // Another cluster (another key) on the same prefix is refused, and this one is intact.
        const other = path.join(dir, "other");
        const result = await sheepdog([
          ...["sheep", other, "--port", String(await freePort()), "--host", "127.0.0.1"],
          ...["--no-http", "--no-nbd", "--cluster-driver", uri],
        ]);
        assert.equal(result.code, 1, result.stderr);
        assert.match(result.stderr, /holds another cluster's data under \/e2e\/ \(cluster id/);
        assert.equal(result.stderr.trim().split("\n").length, 1, "one line");
        assert.ok(!fs.existsSync(path.join(other, "sheep.pid")), "nothing left running");
      });
    } finally {
      await etcd.stop();
    }
  },
});

/** Three sheep that find each other through `membership`; then `more` with them running. */
async function threeSheep(
  membership: Membership,
  more: (context: { dir: string }) => Promise<void> = () => Promise.resolve(),
): Promise<void> {
  requireExecutable();
  const dir = await tempDir("sd-e2e-cluster-");
  const ports = [await freePort(), await freePort(), await freePort()];
  const dirs = ports.map((_, i) => path.join(dir, `sheep${i}`));
  const cluster = (i: number) => ["--cluster", `127.0.0.1:${ports[i]}`];
  const ok = async (args: string[]) => {
    const result = await sheepdog(args);
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")} failed: ${result.stderr}`);
    return result.stdout;
  };
  const raw = path.join(dir, "raw.img");
  const image = randomBytes(20 << 20);
  image.fill(0, 6 << 20, 13 << 20); // a hole of whole objects
  await fsp.writeFile(raw, image);
  const keyFile = path.join(dir, "cluster.key");
  await ok(["shepherd", "keygen", keyFile]);
  try {
    await Promise.all(ports.map((port, i) => {
      return ok([
        "sheep",
        dirs[i]!,
        "--port",
        String(port),
        "--host",
        "127.0.0.1",
        "--key-file",
        keyFile,
        "--zone",
        String(i + 1),
        "--no-http",
        "--no-nbd",
        "--failure-timeout",
        "2000",
        ...membership(i, ports),
      ]);
    }));
    // Formatted the moment the sheep answer, before they have found each other: the format
    // waits for this node's first view and lands once, on all three.
    await ok(["shepherd", "mkfs", "--copies=3", ...cluster(0)]);
    assert.match(
      await ok(["shepherd", "info", "-t", "node", ...cluster(1)]),
      /127\.0\.0\.1:\d+\s+128\s+3/,
    );
    await ok(["img", "convert", raw, "Disk", ...cluster(1)]);
    const objects = (i: number) =>
      fs.readdirSync(path.join(dirs[i]!, "obj")).filter((n) => /^[0-9a-f]{16}$/.test(n));
    assert.deepEqual(
      objects(0).sort(),
      objects(2).sort(),
      "3 copies on 3 nodes: every node has every object",
    );
    // Objects 0, 1, 3, 4 hold data; object 2 (8-12 MiB) lies in the hole and is never created.
    assert.equal(objects(0).length, 1 + 4, "the inode and 4 data objects");

    const pid = Number(fs.readFileSync(path.join(dirs[2]!, "sheep.pid"), "utf8"));
    process.kill(pid, "SIGKILL");
    const out = path.join(dir, "out.raw");
    await ok(["img", "convert", "-O", "raw", "Disk", out, ...cluster(0)]);
    assert.deepEqual(
      new Uint8Array(await fsp.readFile(out)),
      image,
      "export after kill -9 is byte-identical",
    );
    await eventually("a new epoch without the dead node", async () => {
      const info = JSON.parse(
        await ok(["shepherd", "info", "-t", "cluster", "--json", ...cluster(0)]),
      );
      return info.nodes.length === 2;
    });
    // Two zones left for three copies: the cluster keeps serving and says so.
    assert.match(
      await ok(["shepherd", "info", "-t", "cluster", ...cluster(0)]),
      /Redundancy reduced: only 2 zone\(s\) alive for 3 copies/,
    );
    await eventually("recovery done", async () => {
      const text = await ok(["shepherd", "info", "-t", "recovery", ...cluster(1)]);
      return text.startsWith("Recovery: done") && !/gathering|recovering/.test(text);
    });
    const history = await ok(["shepherd", "info", "-t", "cluster", ...cluster(1)]);
    assert.match(history, /Cluster status: running/);
    assert.match(
      history,
      /\s2 \[127\.0\.0\.1:\d+:128, 127\.0\.0\.1:\d+:128\]\n.*\s1 \[/,
      "epochs newest first",
    );
    await ok(["img", "convert", "-O", "raw", "Disk", out, ...cluster(1)]);
    assert.deepEqual(new Uint8Array(await fsp.readFile(out)), image);
    await more({ dir });
  } finally {
    for (const d of dirs) await stopDaemon(d).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

Deno.test("e2e: --cluster-driver: a wrong URI is a usage error; an unreachable etcd is one line", async () => {
  requireExecutable();
  const dir = await tempDir("sd-e2e-driver-");
  try {
    const sheep = async (driver: string, more: string[] = []) =>
      await sheepdog([
        ...["sheep", path.join(dir, "sd"), "--port", String(await freePort())],
        ...["--host", "127.0.0.1", "--no-http", "--no-nbd", "--cluster-driver", driver, ...more],
      ]);
    for (const wrong of ["zookeeper://127.0.0.1:2181", "etcd://", "etcd://127.0.0.1", "etcd:/x"]) {
      const result = await sheep(wrong);
      assert.equal(result.code, 2, `${wrong}: ${result.stderr}`);
      assert.match(result.stderr.split("\n")[0]!, /^sheep: Invalid --cluster-driver/);
    }
    const seeded = await sheep("etcd://127.0.0.1:2379", ["--seed", "127.0.0.1:7000"]);
    assert.equal(seeded.code, 2);
    assert.match(seeded.stderr, /--seed and --multicast are for the builtin cluster driver/);
    // Two ports nothing listens on: the sheep says so in one line, naming both, and is gone.
    const [a, b] = [await freePort(), await freePort()];
    const down = await sheep(`etcd://127.0.0.1:${a},127.0.0.1:${b}`);
    assert.equal(down.code, 1, down.stderr);
    assert.equal(down.stderr.trim().split("\n").length, 1, down.stderr);
    assert.match(
      down.stderr,
      new RegExp(`Cannot reach etcd at 127\\.0\\.0\\.1:${a},127\\.0\\.0\\.1:${b}`),
    );
    assert.ok(!fs.existsSync(path.join(dir, "sd", "sheep.pid")), "nothing left running");
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

Deno.test("mkfs says when the nodes' zones cannot hold the copies asked for (sheep sharing one host)", async () => {
  // Every sheep on one address gets one zone by default: mkfs --copies=2 printed "formatted
  // with 2 copies" and every object got one, found out only when a disk was lost.
  await Herd.with(
    { nodes: 2, copies: 2, prefix: "sd-e2e-zones-", sheepArgs: ["--zone", "7"] },
    async (herd) => {
      const result = await sheepdog([
        "shepherd",
        "mkfs",
        "--copies=2",
        "--force",
        "--cluster",
        herd.id(0),
      ]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /Cluster formatted with 2 copies/);
      assert.match(
        result.stderr,
        /warning: the nodes are in 1 zone\(s\), so objects get 1 copy, not 2, until nodes of more zones join/,
      );
      assert.match(
        await herd.shepherd(["info", "-t", "cluster"]),
        /Redundancy reduced: only 1 zone\(s\) alive for 2 copies/,
      );
    },
  );
});
