// Goal: NBD over TLS as users run it: the built ./sheepdog (Node) with --nbd-tls-* flags serves
// qemu-io, qemu-img and nbdinfo over x509 and PSK, refuses plain clients with a clear error,
// survives broken handshakes (wrong key, wrong CA, garbage after STARTTLS) with one log line
// each, counts them in /metrics, and refuses unusable credential files before it starts.
// Method: openssl makes a CA, server and client certificates and psk files in a temp dir; one-node
// clusters on loopback ports; the real clients, plus the raw test client for byte-level abuse.
// PSK is tested here only: Deno's node:tls has no PSK suites (tests/nbd/tls_test.ts says more).
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import * as C from "../../net/nbd/constants.ts";
import { randomBytes, tempDir } from "../harness.ts";
import { RawClient } from "../nbd/raw_client.ts";
import { makeTlsFiles, type TlsFiles } from "../nbd/tls_certs.ts";
import { ok as toolOk, requireTools, run } from "../nbd/tools.ts";
import { sample } from "../http/prom_text.ts";
import { requireExecutable, sheepdog, stopDaemon } from "./cli.ts";
import { eventually, quietPort } from "./herd.ts";

const MiB = 1024 * 1024;

/** A one-node cluster whose NBD export requires TLS. */
class TlsSheep {
  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly nbdPort: number,
    readonly httpPort: number,
  ) {}

  static async start(root: string, name: string, tlsArgs: string[]): Promise<TlsSheep> {
    const [port, nbdPort, httpPort] = [await quietPort(), await quietPort(), await quietPort()];
    const sheep = new TlsSheep(path.join(root, name), port!, nbdPort!, httpPort!);
    const started = await sheepdog([
      ...["sheep", sheep.dir, "--port", String(port), "--multicast", "off"],
      ...["--nbd-port", String(nbdPort), "--http-port", String(httpPort), ...tlsArgs],
    ]);
    assert.equal(started.code, 0, `starting ${name} failed: ${started.stderr}`);
    await sheep.ok(["shepherd", "mkfs", "--copies=1"]);
    return sheep;
  }

  async ok(args: string[]): Promise<string> {
    const result = await sheepdog([...args, "--cluster", `127.0.0.1:${this.port}`]);
    assert.equal(result.code, 0, `sheepdog ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  }

  log(): string {
    return fs.readFileSync(path.join(this.dir, "sheep.log"), "utf8");
  }

  /** Log lines (JSON) whose message starts with `prefix`. */
  lines(prefix: string): string[] {
    return this.log().split("\n").filter((line) => {
      try {
        return String((JSON.parse(line) as { msg?: string }).msg).startsWith(prefix);
      } catch {
        return false;
      }
    });
  }

  async metric(outcome: string): Promise<number> {
    const response = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`);
    const text = await response.text();
    return sample(text, "sheepdog_nbd_tls_connections_total", { outcome }) ?? 0;
  }

  /** qemu's --image-opts for an export through TLS object `tls0`. */
  imageOpts(vdi: string): string {
    return `driver=nbd,host=127.0.0.1,port=${this.nbdPort},export=${vdi},tls-creds=tls0`;
  }

  uri(vdi: string, scheme = "nbd", query = ""): string {
    return `${scheme}://127.0.0.1:${this.nbdPort}/${vdi}${query}`;
  }

  async stop(): Promise<void> {
    if (fs.existsSync(path.join(this.dir, "sheep.pid"))) await stopDaemon(this.dir);
  }
}

const x509Client = (dir: string) => `tls-creds-x509,id=tls0,dir=${dir},endpoint=client`;
const pskClient = (dir: string) => `tls-creds-psk,id=tls0,dir=${dir},endpoint=client,username=qemu`;

/** qemu-io with a TLS object on an export; resolves with status and output. */
function qemuIo(sheep: TlsSheep, object: string, vdi: string, commands: string[]) {
  return run("qemu-io", [
    ...["--object", object, "--image-opts", sheep.imageOpts(vdi)],
    ...commands.flatMap((c) => ["-c", c]),
  ]);
}

async function qemuIoOk(sheep: TlsSheep, object: string, vdi: string, commands: string[]) {
  const r = await qemuIo(sheep, object, vdi, commands);
  const what = `qemu-io ${commands.join("; ")} with ${object}`;
  assert.equal(r.code, 0, `${what} failed:\n${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stdout, /Pattern verification failed/, what);
}

async function withTls(test: (files: TlsFiles, root: string) => Promise<void>): Promise<void> {
  requireExecutable();
  await requireTools();
  const root = await tempDir("sd-e2e-tls-");
  try {
    await test(await makeTlsFiles(root), root);
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
}

Deno.test("e2e: NBD over TLS: qemu-io, qemu-img and nbdinfo with x509 and PSK; plain clients refused", async () => {
  await withTls(async (f, root) => {
    const sheep = await TlsSheep.start(root, "sheep", [
      ...["--nbd-tls-cert", f.serverCert, "--nbd-tls-key", f.serverKey],
      ...["--nbd-tls-psk", f.pskFile],
    ]);
    try {
      assert.equal(sheep.lines("NBD export on").length, 1);
      assert.match(sheep.lines("NBD export on")[0]!, /\(TLS required: x509\+psk\)/);
      await sheep.ok(["img", "create", "disk", "64M"]);
      await sheep.ok(["img", "create", "conv", "8M"]);

      // Written through x509, read back through PSK, and the other way round.
      await qemuIoOk(sheep, x509Client(f.clientDirNoCert), "disk", ["write -P 0xa5 0 4M", "flush"]);
      await qemuIoOk(sheep, pskClient(f.pskDir), "disk", [
        "read -P 0xa5 0 4M",
        "write -P 0x3c 5M 1M",
      ]);
      await qemuIoOk(sheep, x509Client(f.clientDir), "disk", ["read -P 0x3c 5M 1M"]);
      // TLS 1.2 clients too (qemu's priority string can forbid 1.3): PSK and x509 suites.
      const tls12 = ",priority=NORMAL:-VERS-TLS1.3";
      await qemuIoOk(sheep, pskClient(f.pskDir) + tls12, "disk", ["read -P 0x3c 5M 1M"]);
      await qemuIoOk(sheep, x509Client(f.clientDir) + tls12, "disk", ["read -P 0x3c 5M 1M"]);
      const attached = sheep.lines("nbd: export attached");
      assert.equal(attached.length, 5);
      assert.ok(attached.every((l) => /\\"tls\\":\\"TLSv1\.[23] /.test(l)), attached.join("\n"));
      assert.equal(attached.filter((l) => /\\"identity\\":\\"qemu\\"/.test(l)).length, 2);
      assert.match(attached[3]!, /\\"tls\\":\\"TLSv1\.2 [A-Z0-9-]*PSK/);
      assert.match(attached[4]!, /\\"tls\\":\\"TLSv1\.2 ECDHE-/);

      // qemu-img: a file in over x509, back out over PSK, byte-identical.
      const data = randomBytes(8 * MiB);
      await fsp.writeFile(path.join(root, "in.raw"), data);
      await toolOk("qemu-img", [
        ...["convert", "-n", "-f", "raw", "--object", x509Client(f.clientDirNoCert)],
        ...["--target-image-opts", path.join(root, "in.raw"), sheep.imageOpts("conv")],
      ]);
      await toolOk("qemu-img", [
        ...["convert", "--object", pskClient(f.pskDir), "--image-opts", sheep.imageOpts("conv")],
        ...["-O", "raw", path.join(root, "out.raw")],
      ]);
      assert.ok(
        Buffer.from(await fsp.readFile(path.join(root, "out.raw"))).equals(Buffer.from(data)),
        "qemu-img round trip over TLS is not byte-identical",
      );

      // nbdinfo (libnbd, GnuTLS): nbds:// requires TLS; the username is the PSK identity.
      const byCert = JSON.parse(
        await toolOk("nbdinfo", [
          "--json",
          sheep.uri("disk", "nbds", `?tls-certificates=${f.clientDir}`),
        ]),
      );
      assert.equal(byCert.TLS, true);
      assert.equal(byCert.exports[0]["export-size"], 64 * MiB);
      const byPsk = JSON.parse(
        await toolOk("nbdinfo", [
          "--json",
          `nbds://qemu@127.0.0.1:${sheep.nbdPort}/disk?tls-psk-file=${f.pskFile}`,
        ]),
      );
      assert.equal(byPsk.TLS, true);

      // Plain clients are refused, each with one log line naming it.
      const plainQemu = await run("qemu-io", ["-f", "raw", "-c", "read 0 4k", sheep.uri("disk")]);
      assert.notEqual(plainQemu.code, 0);
      assert.match(plainQemu.stderr, /TLS negotiation required/);
      assert.match(plainQemu.stderr, /TLS is required: use NBD_OPT_STARTTLS/);
      const plainInfo = await run("nbdinfo", [sheep.uri("disk")]);
      assert.notEqual(plainInfo.code, 0);
      assert.match(plainInfo.stdout, /without TLS/);
      // Asking for TLS with a key the server does not have fails too.
      const wrongPsk = await qemuIo(sheep, pskClient(f.wrongPskDir), "disk", ["read 0 4k"]);
      assert.notEqual(wrongPsk.code, 0);
      assert.match(wrongPsk.stderr, /TLS handshake failed/);

      // A raw client that sends garbage after the STARTTLS ACK, and one without fixed newstyle.
      const raw = await RawClient.connect({ port: sheep.nbdPort });
      await raw.start();
      const [ack] = await raw.ask(C.NBD_OPT_STARTTLS);
      assert.equal(ack?.type, C.NBD_REP_ACK);
      const rawPeer = `127.0.0.1:${raw.socket.localPort}`;
      raw.write(Buffer.from("this is not a TLS ClientHello\r\n"));
      await raw.waitClosed();
      const oldStyle = await RawClient.connect({ port: sheep.nbdPort });
      await oldStyle.start(C.NBD_FLAG_C_NO_ZEROES);
      assert.deepEqual(await oldStyle.waitClosed(), { extra: 0 });

      // The server is fine: a good client still reads what was written.
      await qemuIoOk(sheep, pskClient(f.pskDir), "disk", ["read -P 0xa5 0 4M"]);

      // Two plain clients and the old-style one refused; the wrong PSK and the garbage failed:
      // one warning each, naming the peer.
      const { refused, failed } = await eventually("the refusals and failures in the log", () => {
        const refused = sheep.lines("nbd: refused a client without TLS");
        const failed = sheep.lines("nbd: TLS handshake failed");
        return Promise.resolve(refused.length >= 3 && failed.length >= 2 && { refused, failed });
      }, 10_000);
      assert.equal(refused.length, 3, refused.join("\n"));
      assert.equal(failed.length, 2, failed.join("\n"));
      for (const line of [...refused, ...failed]) {
        assert.match(line, /\\"client\\":\\"127\.0\.0\.1:\d+\\"/);
      }
      assert.ok(failed.some((l) => l.includes(rawPeer)), `no line names ${rawPeer}`);
      assert.ok(refused.some((l) => l.includes("fixed newstyle")));
      assert.equal(await sheep.metric("refused"), 3);
      assert.equal(await sheep.metric("failed"), 2);
      assert.ok((await sheep.metric("secured")) >= 8);
      assert.equal(sheep.lines("nbd: session failed").length, 0);

      // A client whose CA did not sign the server's certificate fails. (qemu and libnbd check
      // the certificate once the handshake is done: the server sees a failed handshake or a
      // secured connection that closes, depending on timing, so these are not counted.)
      const wrongCa = await qemuIo(sheep, x509Client(f.clientDirWrongCa), "disk", ["read 0 4k"]);
      assert.notEqual(wrongCa.code, 0);
      assert.match(wrongCa.stderr, /certificate/i);
      const wrongCaInfo = await run("nbdinfo", [
        sheep.uri("disk", "nbds", `?tls-certificates=${f.clientDirWrongCa}`),
      ]);
      assert.notEqual(wrongCaInfo.code, 0);
    } catch (error) {
      console.error(sheep.log().split("\n").slice(-30).join("\n"));
      throw error;
    } finally {
      await sheep.stop();
    }
  });
});

Deno.test("e2e: --nbd-tls-ca lets in only clients with a certificate from that CA", async () => {
  await withTls(async (f, root) => {
    const sheep = await TlsSheep.start(root, "sheep", [
      ...["--nbd-tls-cert", f.serverCert, "--nbd-tls-key", f.serverKey],
      ...["--nbd-tls-ca", f.caCert],
    ]);
    try {
      await sheep.ok(["img", "create", "disk", "16M"]);
      await qemuIoOk(sheep, x509Client(f.clientDir), "disk", ["write -P 0x11 0 1M"]);
      const info = JSON.parse(
        await toolOk("nbdinfo", [
          "--json",
          sheep.uri("disk", "nbds", `?tls-certificates=${f.clientDir}`),
        ]),
      );
      assert.equal(info.TLS, true);
      const noCert = await qemuIo(sheep, x509Client(f.clientDirNoCert), "disk", ["read 0 4k"]);
      assert.notEqual(noCert.code, 0, "a client without a certificate got in");
      const failed = await eventually(
        "the failure in the log",
        () => Promise.resolve(sheep.lines("nbd: TLS handshake failed")[0]),
        10_000,
      );
      assert.match(failed, /certificate/);
      await qemuIoOk(sheep, x509Client(f.clientDir), "disk", ["read -P 0x11 0 1M"]);
    } finally {
      await sheep.stop();
    }
  });
});

Deno.test("e2e: sheep refuses unusable TLS files with one line, before it starts", async () => {
  await withTls(async (f, root) => {
    const file = async (name: string, text: string, mode: number) => {
      const at = path.join(root, name);
      await fsp.writeFile(at, text, { mode });
      await fsp.chmod(at, mode);
      return at;
    };
    const openKey = await file("open-key.pem", await fsp.readFile(f.serverKey, "utf8"), 0o644);
    const notPem = await file("not.pem", "garbage\n", 0o600);
    const emptyPsk = await file("empty.psk", "", 0o600);
    const readablePsk = await file("readable.psk", `qemu:${f.pskHex}\n`, 0o644);
    const badPsk = await file("bad.psk", "qemu\n", 0o600);
    const otherKey = path.join(f.root, "work", "client-key.pem");
    const cases: [string[], RegExp][] = [
      [
        ["--nbd-tls-cert", f.serverCert, "--nbd-tls-key", path.join(root, "missing.pem")],
        /no such file/,
      ],
      [["--nbd-tls-cert", f.serverCert, "--nbd-tls-key", openKey], /chmod 600/],
      [["--nbd-tls-cert", notPem, "--nbd-tls-key", f.serverKey], /Cannot use the x509 files/],
      [["--nbd-tls-cert", f.serverCert, "--nbd-tls-key", otherKey], /key values mismatch/],
      [["--nbd-tls-psk", emptyPsk], /it is empty/],
      [["--nbd-tls-psk", readablePsk], /chmod 600/],
      [["--nbd-tls-psk", badPsk], /line 1: use identity:hexkey/],
      [["--nbd-tls-cert", f.serverCert], /--nbd-tls-cert and --nbd-tls-key go together/],
    ];
    for (const [args, expected] of cases) {
      const dir = path.join(root, "never");
      const port = await quietPort();
      const result = await sheepdog(["sheep", dir, "--port", String(port), ...args]);
      assert.notEqual(result.code, 0, `sheep started with ${args.join(" ")}`);
      const first = result.stderr.split("\n")[0]!;
      assert.match(first, /^sheep: /);
      assert.match(first, expected, result.stderr);
      assert.equal(fs.existsSync(dir), false, "the sheep got as far as its directory");
    }
  });
});
