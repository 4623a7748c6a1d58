/**
 * Goal: the cluster works across hosts as it does on one: sheep started with default flags on
 * separate hosts find each other by multicast and advertise their own addresses; a partition
 * leaves the minority side refusing writes and the majority serving, and both converge when it
 * heals; a host cut off rejoins and catches up; a host with another key is refused by address
 * and stays alone; clients without the key are served only from --allow-clients networks; NBD
 * is served to another host.
 * Method: each host is a network namespace on a bridge in a namespace of its own (hosts.ts),
 * running the built ./sheepdog as an operator would (host_sheep.ts); partitions and cut links
 * are made in the bridge namespace. Waits poll the CLI's JSON (or a log) with a deadline.
 * Where namespaces cannot be made (not root, no iproute2, a container that forbids it), every
 * test prints one line saying so and passes.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as path from "node:path";
import { writeNewKeyFile } from "../../net/auth/cluster_key.ts";
import { oidToHex, vdiOid } from "../../core/vdi/oid.ts";
import { randomBytes } from "../harness.ts";
import { eventually } from "../e2e/herd.ts";
import { HostSheep, PORT } from "./host_sheep.ts";
import { namespacesUnavailable, type Run, run } from "./ip.ts";

/** A test that runs only where network namespaces can be made. */
function netnsTest(name: string, test: () => Promise<void>): void {
  Deno.test(`netns: ${name}`, async () => {
    const unavailable = await namespacesUnavailable();
    if (unavailable !== undefined) {
      console.log(`skipped: network namespaces cannot be made here (${unavailable})`);
      return;
    }
    await test();
  });
}

/** Writes `bytes` to a new file under the herd's directory; returns its path. */
function file(herd: HostSheep, name: string, bytes: Uint8Array): string {
  const p = path.join(herd.root, name);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Exports VDI `vdi` to a raw file through host n (`img convert -O raw`); returns the bytes. */
async function readVdi(herd: HostSheep, n: number, vdi: string): Promise<Uint8Array> {
  const out = path.join(herd.root, `out-h${n}-${Math.random().toString(36).slice(2)}.raw`);
  await herd.ok(n, ["img", "convert", "-O", "raw", vdi, out]);
  return new Uint8Array(fs.readFileSync(out));
}

/** The file name of the inode object of VDI `vdi` (as `img info --json` on host 1 names it). */
async function inodeFile(herd: HostSheep, vdi: string): Promise<string> {
  const row = JSON.parse(await herd.ok(1, ["img", "info", "--json", vdi])) as { vid: number };
  return oidToHex(vdiOid(row.vid));
}

const WRITE_OBJECT = path.resolve(new URL("./write_object.ts", import.meta.url).pathname);

/**
 * One WRITE_OBJ to VDI `vdi` from host n through its own sheep, as QEMU's driver sends it
 * (write_object.ts). Not `img convert -n`: after a refused write it still flushes, and a flush
 * waits on every node of the view, so on the minority side the refusal would surface only
 * after the request timeout to each node across the partition.
 */
function writeObject(herd: HostSheep, n: number, vdi: string): Promise<Run> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const name of ["HOME", "DENO_DIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value; // Deno's cache, where the test's own is
  }
  return herd.hosts.exec(n, Deno.execPath(), ["run", "-A", "--quiet", WRITE_OBJECT, vdi], {
    env,
  });
}

/** Starts a sheep on every host in `which`, waits for their view, formats with `copies`. */
async function formed(herd: HostSheep, which: number[], copies: number): Promise<void> {
  await Promise.all(which.map((n) => herd.startSheep(n)));
  // Format once all see each other: a format while the group forms is another test's subject.
  await herd.waitView(which, "waiting-for-format");
  await herd.ok(which[0]!, ["shepherd", "mkfs", `--copies=${copies}`]);
  await herd.waitView(which);
}

const sorted = (ids: string[]) => [...ids].sort();

netnsTest(
  "five hosts with default flags find each other by multicast, each at its own address; a VDI written on one host reads back identical on another",
  async () => {
    await HostSheep.with(5, async (herd) => {
      const all = herd.hosts.numbers;
      await Promise.all(all.map((n) => herd.startSheep(n)));
      for (const n of all) {
        // No --host: the address comes from the interface with the default route.
        const address = herd.hosts.address(n).replaceAll(".", "\\.");
        await herd.waitLog(n, new RegExp(`^advertising ${address}:${PORT} \\(interface eth0, `));
      }
      const expected = sorted(all.map((n) => herd.id(n)));
      let last = "";
      const lists = await eventually(
        "every host to list the five nodes",
        async () => {
          const lists = await Promise.all(all.map((n) => herd.nodes(n)));
          last = JSON.stringify(lists.map((rows) => rows?.map((r) => r.id)));
          return lists.every((rows) =>
              rows !== undefined && JSON.stringify(sorted(rows.map((r) => r.id))) ===
                JSON.stringify(expected)
            )
            ? lists
            : undefined;
        },
        60_000,
        () => `Last seen: ${last}`,
      );
      for (const rows of lists) {
        for (const row of rows!) {
          assert.notEqual(row.host, "127.0.0.1");
          assert.equal(`${row.host}:${row.port}`, row.id);
        }
      }
      await herd.waitView(all, "waiting-for-format");
      await herd.ok(1, ["shepherd", "mkfs", "--copies=3"]);
      await herd.waitView(all);

      const data = randomBytes(10 * 1024 * 1024 + 64 * 1024); // three objects, the last partial
      await herd.ok(2, ["img", "convert", file(herd, "in.raw", data), "netns-disk"]);
      assert.deepEqual(await readVdi(herd, 4, "netns-disk"), data);
    });
  },
);

netnsTest(
  "a 2|3 partition: the two refuse writes, the three serve them; healed, all converge and the two read what the three wrote",
  async () => {
    await HostSheep.with(5, async (herd) => {
      const all = herd.hosts.numbers;
      await formed(herd, all, 3);
      const before = randomBytes(4 * 1024 * 1024);
      await herd.ok(1, ["img", "convert", file(herd, "before.raw", before), "before"]);
      const epochBefore = await herd.waitView(all);
      // The two are hosts holding a copy of the inode of "before": a write looks the VDI up
      // and reads its inode first, and a read across a real partition waits for the request
      // timeout (60 s per unreachable copy) instead of failing over, so a host whose copy is
      // across would stall rather than refuse (a limit of the product, reported).
      const inode = await inodeFile(herd, "before");
      const two = all.filter((n) => herd.objects(n).includes(inode)).slice(0, 2);
      const three = all.filter((n) => !two.includes(n));
      assert.equal(two.length, 2, `two hosts hold inode ${inode}`);

      await herd.hosts.partition(two);
      const majorityEpoch = await herd.waitView(three);
      assert.ok(majorityEpoch > epochBefore, "the three installed a view without the two");
      await herd.waitStatus(two, "minority");

      // The two refuse changes and writes, and say why.
      const create = await herd.sheepdog(two[0]!, ["img", "create", "refused", "16M"]);
      assert.notEqual(create.code, 0, `img create on the minority side: ${create.stdout}`);
      assert.match(create.stderr, /cut off from the majority of the cluster: changes are refused/);
      const write = await writeObject(herd, two[1]!, "before");
      assert.notEqual(write.code, 0, `a write on the minority side: ${write.stdout}`);
      assert.match(write.stderr, /cut off from the majority of the cluster: writes are refused/);

      // The three serve writes.
      const after = randomBytes(6 * 1024 * 1024);
      await herd.ok(three[0]!, ["img", "convert", file(herd, "after.raw", after), "after"]);

      await herd.hosts.heal();
      const healed = await herd.waitRecovered(all);
      assert.ok(healed > majorityEpoch, `healed epoch ${healed} after ${majorityEpoch}`);
      assert.deepEqual(await readVdi(herd, two[0]!, "after"), after);
      assert.deepEqual(
        await readVdi(herd, two[1]!, "before"),
        before,
        "the refused write left no trace",
      );
    });
  },
);

netnsTest(
  "a host cut off goes minority while the others go on; plugged back, it rejoins and catches up",
  async () => {
    await HostSheep.with(3, async (herd) => {
      const all = herd.hosts.numbers;
      await formed(herd, all, 3);
      const early = randomBytes(4 * 1024 * 1024);
      await herd.ok(1, ["img", "convert", file(herd, "early.raw", early), "early"]);

      await herd.hosts.cut(3);
      const without = await herd.waitView([1, 2]);
      await herd.waitStatus([3], "minority");
      const away = randomBytes(8 * 1024 * 1024);
      await herd.ok(2, ["img", "convert", file(herd, "away.raw", away), "while-away"]);

      await herd.hosts.reconnect(3);
      const back = await herd.waitRecovered(all);
      assert.ok(back > without, `rejoined at epoch ${back} after ${without}`);
      // Three copies on three hosts: host 3 must now hold every object, as host 1 does.
      const objects = herd.objects(1);
      assert.deepEqual(herd.objects(3), objects, "host 3 holds the same objects as host 1");
      for (const oid of objects) {
        assert.ok(
          Buffer.from(herd.object(3, oid)).equals(Buffer.from(herd.object(1, oid))),
          `object ${oid} differs between host 3 and host 1`,
        );
      }
      assert.deepEqual(await readVdi(herd, 3, "while-away"), away);
      assert.deepEqual(await readVdi(herd, 3, "early"), early);
    });
  },
);

netnsTest(
  "a host with another key is refused both ways, never listed by the others, and stays alone",
  async () => {
    await HostSheep.with(3, async (herd) => {
      const otherKey = path.join(herd.root, "other.key");
      writeNewKeyFile(otherKey);
      await Promise.all([herd.startSheep(1), herd.startSheep(2), herd.startSheep(3, [], otherKey)]);
      const badMac = "a group datagram without this cluster's MAC";
      for (const n of [1, 2]) {
        await herd.waitLog(n, new RegExp(`^refused 10\\.77\\.0\\.3:${PORT}: ${badMac}`));
      }
      await herd.waitLog(3, new RegExp(`^refused 10\\.77\\.0\\.[12]:${PORT}: ${badMac}`));

      await herd.waitView([1, 2], "waiting-for-format");
      await herd.ok(1, ["shepherd", "mkfs", "--copies=2"]);
      await herd.waitView([1, 2]);
      const pair = sorted([herd.id(1), herd.id(2)]);
      for (const n of [1, 2]) {
        const rows = await herd.nodes(n);
        assert.deepEqual(sorted(rows!.map((r) => r.id)), pair, `host ${n}'s nodes`);
      }
      // With no key given, a command finds its own host's sheep's key through the note that
      // sheep left: one per network namespace, though all three listen on port 7000.
      const alone = await herd.nodes(3, "none");
      assert.deepEqual(alone?.map((r) => r.id), [herd.id(3)], "host 3 lists itself alone");
      assert.deepEqual(sorted((await herd.nodes(1, "none"))!.map((r) => r.id)), pair);
      const own = JSON.parse(
        await herd.ok(3, ["shepherd", "info", "-t", "cluster", "--json"], {
          file: otherKey,
        }),
      ) as { status: string; nodes: string[] };
      assert.deepEqual(own.nodes, [herd.id(3)]);
      assert.equal(own.status, "waiting-for-format", "host 3 was never formatted with the others");
    });
  },
);

netnsTest(
  "a client without the key is refused from outside --allow-clients and served from inside it",
  async () => {
    await HostSheep.with(5, async (herd) => {
      await formed(herd, [1], 1);
      const data = randomBytes(5 * 1024 * 1024);
      await herd.ok(1, ["img", "convert", file(herd, "client.raw", data), "client-disk"]);
      // img convert -O raw sends only public requests (VDI lookup, object reads), as QEMU does.
      const uri = `sheepdog://${herd.id(1)}/client-disk`;
      const out = path.join(herd.root, "client-out.raw");

      const refused = await herd.sheepdog(5, ["img", "convert", "-O", "raw", uri, out], "none");
      assert.notEqual(refused.code, 0, "a keyless read from 10.77.0.5 is refused");
      // The sheep closes the connection (an old client would not understand a reply).
      assert.match(
        refused.stderr,
        /Cannot reach the cluster at 10\.77\.0\.1:7000: connection closed/,
      );
      await herd.waitLog(1, /^refused 10\.77\.0\.5:\d+: not a client address/);
      // The key opens the door from any address.
      await herd.ok(5, ["img", "convert", "-O", "raw", uri, out]);
      assert.deepEqual(new Uint8Array(fs.readFileSync(out)), data);
      fs.rmSync(out);

      await herd.stopSheep(1);
      await herd.startSheep(1, ["--allow-clients", "10.77.0.5/32"]);
      await herd.waitView([1]);
      await herd.ok(5, ["img", "convert", "-O", "raw", uri, out], "none");
      assert.deepEqual(new Uint8Array(fs.readFileSync(out)), data);
      // --allow-clients admits the public requests only: administration still needs the key.
      const admin = await herd.sheepdog(
        5,
        ["shepherd", "info", "-t", "node", "--cluster", herd.id(1)],
        "none",
      );
      assert.notEqual(admin.code, 0);
      assert.match(admin.stderr, /needs the cluster key/);
    });
  },
);

/** A PSK for NBD over TLS, as qemu's tls-creds-psk reads it: DIR/keys.psk, `identity:hexkey`. */
function pskDir(herd: HostSheep): string {
  const dir = path.join(herd.root, "nbd-psk");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(
    path.join(dir, "keys.psk"),
    `qemu:${Buffer.from(randomBytes(32)).toString("hex")}\n`,
    {
      mode: 0o600,
    },
  );
  return dir;
}

netnsTest(
  "NBD over TLS on 0.0.0.0 is read and written by qemu-io on another host; plain NBD is refused",
  async () => {
    const qemuIo = await run("/bin/sh", ["-c", "command -v qemu-io"]);
    assert.equal(qemuIo.code, 0, "this test needs qemu-io: apt-get install qemu-utils");
    await HostSheep.with(2, async (herd) => {
      const psk = pskDir(herd);
      await herd.startSheep(1, [
        ...["--nbd-address", "0.0.0.0"],
        ...["--nbd-tls-psk", path.join(psk, "keys.psk")],
      ]);
      await herd.waitView([1], "waiting-for-format");
      await herd.ok(1, ["shepherd", "mkfs", "--copies=1"]);
      await herd.waitView([1]);
      const mib = 1024 * 1024;
      await herd.ok(1, ["img", "create", "nbd-disk", "8M"]);
      await herd.ok(1, [
        "img",
        "convert",
        "-n",
        file(herd, "5c.raw", new Uint8Array(mib).fill(0x5c)),
        "nbd-disk",
      ]);
      const host = herd.hosts.address(1);
      const tlsArgs = [
        ...["--object", `tls-creds-psk,id=tls0,dir=${psk},endpoint=client,username=qemu`],
        "--image-opts",
        `driver=raw,file.driver=nbd,file.host=${host},file.port=10809,file.export=nbd-disk,` +
        "file.tls-creds=tls0",
      ];
      const io = async (command: string) => {
        const r = await herd.hosts.exec(2, "qemu-io", ["-c", command, ...tlsArgs]);
        assert.equal(r.code, 0, `qemu-io '${command}' on host 2: ${r.stdout}${r.stderr}`);
        assert.doesNotMatch(r.stdout, /Pattern verification failed|failed/, r.stdout);
        return r.stdout;
      };
      assert.match(await io("read -P 0x5c 0 1M"), /read 1048576\/1048576 bytes at offset 0/);
      await io("write -P 0xc3 1M 1M");
      // A client that does not start TLS is refused.
      const plain = await herd.hosts.exec(2, "qemu-io", [
        ...["-f", "raw", "-c", "read 0 4k", `nbd://${host}:10809/nbd-disk`],
      ]);
      assert.notEqual(plain.code, 0, `plain NBD must be refused: ${plain.stdout}`);
      const back = await readVdi(herd, 1, "nbd-disk");
      assert.ok(back.subarray(0, mib).every((b) => b === 0x5c), "the first MiB as host 1 wrote it");
      assert.ok(back.subarray(mib, 2 * mib).every((b) => b === 0xc3), "the second as host 2 did");
      assert.ok(back.subarray(2 * mib).every((b) => b === 0), "the rest unwritten");
    });
  },
);
