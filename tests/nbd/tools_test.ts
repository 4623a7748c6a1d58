/**
 * Interoperability with real NBD clients: qemu-io, qemu-img, nbdinfo, nbdcopy. These tools are
 * required (CI installs qemu-utils and libnbd-bin); a missing one fails the test loudly.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { NbdServer } from "../../net/nbd/mod.ts";
import { MemoryExportProvider } from "./memory_export.ts";
import { RawClient } from "./raw_client.ts";
import { MiB } from "./harness.ts";
import { ok, requireTools, run } from "./tools.ts";

interface Ctx {
  provider: MemoryExportProvider;
  uri: (name: string) => string;
  port: number;
  dir: string;
}

async function withTools(fn: (ctx: Ctx) => Promise<void>): Promise<void> {
  await requireTools();
  const provider = new MemoryExportProvider();
  provider.recordEvents = false;
  provider.add("vol", 64 * MiB, { description: "test volume" });
  provider.add("ro", 4 * MiB, { readOnly: true, description: "a snapshot" });
  const server = new NbdServer({ provider });
  const address = await server.listen({ host: "127.0.0.1", port: 0 });
  assert.ok("port" in address);
  const dir = await Deno.makeTempDir({ prefix: "nbd-tools-" });
  try {
    await fn({
      provider,
      port: address.port,
      uri: (name) => `nbd://127.0.0.1:${address.port}/${name}`,
      dir,
    });
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
  assert.deepEqual(provider.violations, []);
  for (const e of provider.opened) assert.equal(e.closeCount, 1);
}

function randomBytes(length: number, zeroRanges: [number, number][] = []): Uint8Array {
  const out = new Uint8Array(length);
  for (let pos = 0; pos < length; pos += 65536) {
    crypto.getRandomValues(out.subarray(pos, Math.min(length, pos + 65536)));
  }
  for (const [start, end] of zeroRanges) out.fill(0, start, end);
  return out;
}

/** nbdinfo --map lines as [offset, length, type description]. */
function parseMap(text: string): [number, number, string][] {
  return text.trim().split("\n").map((line) => {
    const [offset, length, , ...desc] = line.trim().split(/\s+/);
    return [Number(offset), Number(length), desc.join(" ")];
  });
}

Deno.test("qemu-io: aligned, unaligned and large I/O, zeroes, discard, flush", async () => {
  await withTools(async ({ uri, provider }) => {
    const out = await ok("qemu-io", [
      "-f",
      "raw",
      "-c",
      "write -P 0xab 0 1M",
      "-c",
      "read -P 0xab 0 1M",
      "-c",
      "write -P 0xcd 1000 3000",
      "-c",
      "read -P 0xcd 1000 3000",
      "-c",
      "read -P 0xab 0 1000",
      "-c",
      "read -P 0xab 4000 1044576",
      "-c",
      "write -P 0x5e 8M 40M", // larger than the 32 MiB maximum: the client splits it
      "-c",
      "read -P 0x5e 8M 40M",
      "-c",
      "write -z 9M 64k",
      "-c",
      "read -P 0 9M 64k",
      "-c",
      "aio_write -P 0x11 60M 512k",
      "-c",
      "aio_write -P 0x22 61M 512k",
      "-c",
      "aio_flush",
      "-c",
      "read -P 0x22 61M 512k",
      "-c",
      "flush",
      uri("vol"),
    ]);
    assert.doesNotMatch(out, /fail|error/i);
    assert.match(out, /wrote 41943040\/41943040 bytes at offset 8388608/);
    assert.match(out, /read 41943040\/41943040 bytes at offset 8388608/);
    // Check the bytes on the server side, too.
    const v = provider.volume("vol");
    assert.deepEqual(v.read(0, 1000), new Uint8Array(1000).fill(0xab));
    assert.deepEqual(v.read(1000, 3000), new Uint8Array(3000).fill(0xcd));
    assert.deepEqual(v.read(4000, 100), new Uint8Array(100).fill(0xab));
    assert.deepEqual(v.read(9 * MiB - 10, 10), new Uint8Array(10).fill(0x5e));
    assert.deepEqual(v.read(9 * MiB, 65536), new Uint8Array(65536));
    assert.deepEqual(v.read(60 * MiB, 16), new Uint8Array(16).fill(0x11));
  });
});

Deno.test("nbdinfo --list and --json describe every export", async () => {
  await withTools(async ({ port }) => {
    const text = await ok("nbdinfo", ["--list", `nbd://127.0.0.1:${port}`]);
    assert.match(text, /export="vol":\n\s+description: test volume\n\s+export-size: 67108864/);
    assert.match(text, /export="ro":/);
    const json = JSON.parse(await ok("nbdinfo", ["--json", "--list", `nbd://127.0.0.1:${port}`]));
    assert.equal(json.protocol, "newstyle-fixed");
    assert.equal(json.structured, true);
    const byName = Object.fromEntries(
      (json.exports as Record<string, unknown>[]).map((e) => [e["export-name"], e]),
    );
    assert.deepEqual(Object.keys(byName).sort(), ["ro", "vol"]);
    const vol = byName.vol as Record<string, unknown>;
    const ro = byName.ro as Record<string, unknown>;
    for (
      const [key, want] of Object.entries({
        "export-size": 64 * MiB,
        "description": "test volume",
        "is_read_only": false,
        "can_flush": true,
        "can_fua": true,
        "can_trim": true,
        "can_zero": true,
        "can_df": true,
        "can_multi_conn": false,
        "block_size_minimum": 1,
        "block_size_preferred": 4096,
        "block_size_maximum": 32 * MiB,
      })
    ) assert.deepEqual(vol[key], want, `vol ${key}`);
    assert.deepEqual(vol.contexts, ["base:allocation"]);
    assert.equal(ro["is_read_only"], true);
    assert.equal(ro["can_multi_conn"], true);
    assert.equal(ro["can_trim"], false);
    assert.equal(ro["export-size"], 4 * MiB);
  });
});

Deno.test("nbdinfo --map: holes, then data, then holes again after a trim", async () => {
  await withTools(async ({ uri }) => {
    assert.deepEqual(parseMap(await ok("nbdinfo", ["--map", uri("vol")])), [
      [0, 64 * MiB, "hole,zero"],
    ]);
    await ok("qemu-io", ["-f", "raw", "-c", "write -P 0x77 1M 2M", uri("vol")]);
    assert.deepEqual(parseMap(await ok("nbdinfo", ["--map", uri("vol")])), [
      [0, 1 * MiB, "hole,zero"],
      [1 * MiB, 2 * MiB, "data"],
      [3 * MiB, 61 * MiB, "hole,zero"],
    ]);
    await ok("qemu-io", ["-f", "raw", "-c", "discard 1M 1M", uri("vol")]);
    assert.deepEqual(parseMap(await ok("nbdinfo", ["--map", uri("vol")])), [
      [0, 2 * MiB, "hole,zero"],
      [2 * MiB, 1 * MiB, "data"],
      [3 * MiB, 61 * MiB, "hole,zero"],
    ]);
    await ok("qemu-io", ["-f", "raw", "-c", "discard 2M 1M", uri("vol")]);
    assert.deepEqual(parseMap(await ok("nbdinfo", ["--map", uri("vol")])), [
      [0, 64 * MiB, "hole,zero"],
    ]);
  });
});

Deno.test("qemu-img convert: a raw file into an export and back out, byte-identical", async () => {
  await withTools(async ({ uri, provider, dir }) => {
    const size = 24 * MiB + 3 * 4096;
    provider.add("img", size);
    const data = randomBytes(size, [[5 * MiB, 9 * MiB], [20 * MiB + 100, 20 * MiB + 70000]]);
    await Deno.writeFile(`${dir}/in.raw`, data);
    await ok("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", `${dir}/in.raw`, uri("img")]);
    assert.ok(
      Buffer.from(provider.volume("img").read(0, size)).equals(Buffer.from(data)),
      "export content differs from the source file",
    );
    await ok("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri("img"), `${dir}/out.raw`]);
    const back = await Deno.readFile(`${dir}/out.raw`);
    assert.equal(back.length, size);
    assert.ok(Buffer.from(back).equals(Buffer.from(data)), "round trip is not byte-identical");
    const info = JSON.parse(await ok("qemu-img", ["info", "--output=json", uri("img")]));
    assert.equal(info["virtual-size"], size);
  });
});

Deno.test("nbdcopy: file → export → file, and a multi-connection read of a snapshot", async () => {
  await withTools(async ({ uri, provider, dir }) => {
    const size = 16 * MiB + 512;
    provider.add("copy", size);
    const data = randomBytes(size, [[2 * MiB, 6 * MiB]]);
    await Deno.writeFile(`${dir}/in.raw`, data);
    await ok("nbdcopy", [`${dir}/in.raw`, uri("copy")]);
    await ok("nbdcopy", [uri("copy"), `${dir}/out.raw`]);
    assert.ok(Buffer.from(await Deno.readFile(`${dir}/out.raw`)).equals(Buffer.from(data)));

    // The snapshot advertises multi-conn: nbdcopy opens several connections.
    const snap = randomBytes(4 * MiB);
    provider.volume("ro").write(0, snap);
    const opensBefore = provider.opened.length;
    await ok("nbdcopy", ["--connections=4", uri("ro"), `${dir}/snap.raw`]);
    assert.ok(Buffer.from(await Deno.readFile(`${dir}/snap.raw`)).equals(Buffer.from(snap)));
    assert.ok(provider.opened.length - opensBefore >= 2, "expected several connections");
  });
});

Deno.test("a read-only export refuses writes from real clients", async () => {
  await withTools(async ({ uri, dir }) => {
    const w = await run("qemu-io", ["-f", "raw", "-c", "write -P 1 0 4k", uri("ro")]);
    assert.notEqual(w.code, 0);
    assert.match(w.stderr + w.stdout, /Permission denied|read-only/i);
    assert.match(
      await ok("qemu-io", ["-r", "-f", "raw", "-c", "read -P 0 0 4k", uri("ro")]),
      /read 4096\/4096/,
    );
    await Deno.writeFile(`${dir}/small.raw`, new Uint8Array(4096));
    const c = await run("nbdcopy", [`${dir}/small.raw`, uri("ro")]);
    assert.notEqual(c.code, 0);
    assert.match(c.stderr, /read-only/);
  });
});

Deno.test("a second writer is refused with the holder's address; admitted once it leaves", async () => {
  await withTools(async ({ uri, port }) => {
    const holder = await RawClient.connect({ port });
    try {
      await holder.start();
      await holder.go("vol");
      const r = await run("qemu-io", ["-f", "raw", "-c", "read 0 4k", uri("vol")]);
      assert.notEqual(r.code, 0);
      assert.match(
        r.stderr,
        new RegExp(`export "vol" is locked by 127\\.0\\.0\\.1:${holder.socket.localPort}`),
      );
      const info = await run("nbdinfo", [uri("vol")]);
      assert.equal(info.code, 1);
    } finally {
      await holder.destroy();
    }
    // The lock goes with the connection.
    let last = "";
    for (let i = 0; i < 50; i++) {
      const r = await run("qemu-io", ["-f", "raw", "-c", "write -P 9 0 4k", uri("vol")]);
      if (r.code === 0) return;
      last = r.stderr;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.fail(`writer still refused after the holder left: ${last}`);
  });
});
