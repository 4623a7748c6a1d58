// Goal: NBD over TLS with x509, in process, driven byte by byte: STARTTLS upgrades the
// connection and haggling continues inside TLS; a server that requires TLS refuses everything
// else the way the NBD spec says; broken handshakes (garbage, a client that gives up, a wrong
// CA, a missing or foreign client certificate, a stall) cost one log line and one connection.
// Method: an NbdServer over memory exports with an NbdTls from openssl-made certificates, the
// raw client, and node:tls on the client side. PSK needs Node's OpenSSL (Deno's node:tls has no
// PSK suites): tests/e2e/nbd_tls_test.ts covers it against the built ./sheepdog.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as net from "node:net";
import * as tls from "node:tls";
import * as C from "../../net/nbd/constants.ts";
import * as P from "../../net/nbd/protocol.ts";
import { type NbdLogger, NbdTls, type NbdTlsEvent } from "../../net/nbd/mod.ts";
import { tempDir } from "../harness.ts";
import { type Harness, pattern, withServer } from "./harness.ts";
import { RawClient } from "./raw_client.ts";
import { makeTlsFiles, type TlsFiles } from "./tls_certs.ts";

interface Line {
  level: string;
  message: string;
  data: Record<string, unknown> | undefined;
}

/** A logger that keeps lines and lets a test wait for one without polling. */
class Recorder implements NbdLogger {
  readonly lines: Line[] = [];
  readonly events: NbdTlsEvent[] = [];
  #waiters: (() => void)[] = [];

  #add(level: string, message: string, data?: Record<string, unknown>): void {
    this.lines.push({ level, message, data });
    this.#wake();
  }
  debug = (m: string, d?: Record<string, unknown>) => this.#add("debug", m, d);
  info = (m: string, d?: Record<string, unknown>) => this.#add("info", m, d);
  warn = (m: string, d?: Record<string, unknown>) => this.#add("warn", m, d);
  error = (m: string, d?: Record<string, unknown>) => this.#add("error", m, d);

  onTls = (event: NbdTlsEvent): void => {
    this.events.push(event);
    this.#wake();
  };

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once `check` holds, re-checked on every new line or event (fails after 10 s). */
  async waitFor(what: string, check: () => boolean): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out waiting for ${what}: ${this.dump()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The first `count` TLS events, once reported. */
  async tlsEvents(count: number): Promise<NbdTlsEvent[]> {
    await this.waitFor(`${count} TLS events`, () => this.events.length >= count);
    return this.events.slice(0, count);
  }

  warnings(): Line[] {
    return this.lines.filter((l) => l.level === "warn" || l.level === "error");
  }

  dump(): string {
    return JSON.stringify(this.lines);
  }
}

let files: Promise<TlsFiles> | null = null;
/** Certificates are made once for the whole file. */
function tlsFiles(): Promise<TlsFiles> {
  files ??= tempDir("sd-nbd-tls-").then((root) => makeTlsFiles(root));
  return files;
}

globalThis.addEventListener("unload", () => {
  void files?.then((f) => fs.rmSync(f.root, { recursive: true, force: true }));
});

async function x509(options: { clientCerts?: boolean } = {}): Promise<NbdTls> {
  const f = await tlsFiles();
  return new NbdTls({
    cert: await fsp.readFile(f.serverCert, "utf8"),
    key: await fsp.readFile(f.serverKey, "utf8"),
    ...(options.clientCerts ? { ca: await fsp.readFile(f.caCert, "utf8") } : {}),
  });
}

async function clientOptions(
  which: "trusting" | "wrong-ca" | "with-cert" | "stranger",
): Promise<tls.ConnectionOptions> {
  const f = await tlsFiles();
  const ca = await fsp.readFile(which === "wrong-ca" ? f.otherCaCert : f.caCert);
  const base: tls.ConnectionOptions = { ca, servername: "localhost" };
  if (which === "with-cert") {
    return {
      ...base,
      cert: await fsp.readFile(`${f.clientDir}/client-cert.pem`),
      key: await fsp.readFile(`${f.clientDir}/client-key.pem`),
    };
  }
  if (which === "stranger") {
    return {
      ...base,
      cert: await fsp.readFile(f.strangerCert),
      key: await fsp.readFile(f.strangerKey),
    };
  }
  return base;
}

/** A full session over TLS: GO, a write and a read back, DISC. */
async function roundTrip(
  h: Harness,
  options: tls.ConnectionOptions,
  seed: number,
  name = "vol",
): Promise<void> {
  const c = await h.connect();
  await c.start();
  const secure = await c.startTls(options);
  assert.ok(secure.encrypted);
  const go = await c.go(name);
  assert.equal(go.sizeBytes, h.provider.volume(name).sizeBytes);
  const data = pattern(300_000, seed);
  assert.equal((await c.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 4096 }, data)).errno, 0);
  assert.deepEqual(await c.readAt(2n, 4096, data.length), Buffer.from(data));
  c.request(C.NBD_CMD_DISC, { handle: 3n });
  await c.waitClosed();
  assert.deepEqual(
    Buffer.from(h.provider.volume(name).read(4096, data.length)),
    Buffer.from(data),
  );
}

Deno.test("NBD_OPT_STARTTLS upgrades to TLS; haggling and transmission continue inside it", async () => {
  const log = new Recorder();
  await withServer(async (h) => {
    assert.equal(h.server.tls, "x509");
    await roundTrip(h, await clientOptions("trusting"), 1);
    const [event] = await log.tlsEvents(1);
    assert.equal(event?.outcome, "secured");
    assert.match(event?.detail ?? "", /^TLSv1\.[23] /);
    const attached = log.lines.find((l) => l.message === "nbd: export attached");
    assert.equal(attached?.data?.tls, event?.detail);
    assert.deepEqual(log.warnings(), []);
  }, { tls: await x509(), logger: log, onTls: log.onTls });
});

Deno.test("a server requiring TLS answers options before STARTTLS with TLS_REQD, then logs one refusal", async () => {
  const log = new Recorder();
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    for (const option of [C.NBD_OPT_LIST, C.NBD_OPT_STRUCTURED_REPLY, C.NBD_OPT_GO]) {
      const data = option === C.NBD_OPT_GO ? P.encodeInfoRequest("vol", []) : undefined;
      const [reply] = await c.ask(option, data);
      assert.equal(reply?.type, C.NBD_REP_ERR_TLS_REQD, `option ${option}`);
    }
    assert.equal(h.provider.opened.length, 0, "nothing is opened before TLS");
    const [ack] = await c.ask(C.NBD_OPT_ABORT);
    assert.equal(ack?.type, C.NBD_REP_ACK);
    await c.waitClosed();
    const [event] = await log.tlsEvents(1);
    assert.deepEqual(event, {
      outcome: "refused",
      client: `127.0.0.1:${c.socket.localPort}`,
      detail: "NBD_OPT_LIST before NBD_OPT_STARTTLS",
    });
    const warnings = log.warnings();
    assert.equal(warnings.length, 1, log.dump());
    assert.equal(warnings[0]?.message, "nbd: refused a client without TLS (TLS is required)");
    assert.equal(warnings[0]?.data?.client, `127.0.0.1:${c.socket.localPort}`);

    // A refusal followed by STARTTLS is no refusal: the client may have probed.
    await roundTrip(h, await clientOptions("trusting"), 2);
  }, { tls: await x509(), logger: log, onTls: log.onTls });
});

Deno.test("a server requiring TLS closes on NBD_OPT_EXPORT_NAME and on plain newstyle clients", async () => {
  const log = new Recorder();
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    c.option(C.NBD_OPT_EXPORT_NAME, Buffer.from("vol"));
    assert.deepEqual(await c.waitClosed(), { extra: 0 });
    // No fixed newstyle: no option replies, so no way to start TLS.
    const d = await h.connect();
    await d.start(C.NBD_FLAG_C_NO_ZEROES);
    assert.deepEqual(await d.waitClosed(), { extra: 0 });
    const events = await log.tlsEvents(2);
    assert.deepEqual(events.map((e) => e.outcome), ["refused", "refused"]);
    assert.deepEqual(events.map((e) => e.detail).sort(), [
      "NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS",
      "the client does not use the fixed newstyle handshake, which TLS needs",
    ]);
    assert.equal(h.provider.opened.length, 0);
    assert.equal(log.warnings().length, 2, log.dump());
  }, { tls: await x509(), logger: log, onTls: log.onTls });
});

Deno.test("STARTTLS with data, twice, or with bytes behind it is refused", async () => {
  const log = new Recorder();
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    const [bad] = await c.ask(C.NBD_OPT_STARTTLS, Buffer.from("x"));
    assert.equal(bad?.type, C.NBD_REP_ERR_INVALID);
    await c.startTls(await clientOptions("trusting"));
    const [again] = await c.ask(C.NBD_OPT_STARTTLS);
    assert.equal(again?.type, C.NBD_REP_ERR_INVALID);
    assert.match(again?.data.toString() ?? "", /already/);
    await c.destroy();

    // A client that does not wait for the ACK: its next bytes would be read as TLS.
    const d = await h.connect();
    await d.start();
    d.write(Buffer.concat([P.encodeOptionRequest(C.NBD_OPT_STARTTLS), Buffer.from([0x16, 3, 1])]));
    await d.waitClosed();
    await log.waitFor(
      "the violation",
      () => log.lines.some((l) => l.message === "nbd: protocol violation, closing"),
    );
    const violation = log.lines.find((l) => l.message === "nbd: protocol violation, closing");
    assert.match(String(violation?.data?.error), /data after NBD_OPT_STARTTLS/);
  }, { tls: await x509(), logger: log, onTls: log.onTls });
});

Deno.test("Without TLS credentials, STARTTLS is refused by policy and haggling goes on", async () => {
  await withServer(async (h) => {
    assert.equal(h.server.tls, null);
    const c = await h.connect();
    await c.start();
    const [reply] = await c.ask(C.NBD_OPT_STARTTLS);
    assert.equal(reply?.type, C.NBD_REP_ERR_POLICY);
    assert.equal((await c.go("vol")).sizeBytes, 16 * 1024 * 1024);
  });
});

/** Plain STARTTLS haggling on a bare socket, returning it right after the ACK. */
async function ackedSocket(port: number): Promise<net.Socket> {
  const c = await RawClient.connect({ port });
  await c.start();
  const [ack] = await c.ask(C.NBD_OPT_STARTTLS);
  assert.equal(ack?.type, C.NBD_REP_ACK);
  return c.socket;
}

Deno.test("garbage after the STARTTLS ACK fails the handshake: one line, the connection closed, others unaffected", async () => {
  const log = new Recorder();
  await withServer(async (h) => {
    // A good client in transmission while the bad one comes and goes.
    const good = await h.connect();
    await good.start();
    await good.startTls(await clientOptions("trusting"));
    await good.go("big");

    const socket = await ackedSocket(h.port);
    const peer = `127.0.0.1:${socket.localPort}`;
    const closed = new Promise((resolve) => socket.once("close", resolve));
    socket.write("GET / HTTP/1.1\r\nHost: nbd\r\n\r\n");
    await closed;
    const [secured, failed] = await log.tlsEvents(2);
    assert.equal(secured?.outcome, "secured");
    assert.equal(failed?.outcome, "failed");
    assert.equal(failed?.client, peer);
    const warnings = log.warnings();
    assert.equal(warnings.length, 1, log.dump());
    assert.equal(warnings[0]?.message, "nbd: TLS handshake failed, closing");
    assert.doesNotMatch(String(warnings[0]?.data?.error), /\n|deps\/openssl/);

    const data = pattern(70_000, 3);
    assert.equal((await good.command(C.NBD_CMD_WRITE, { handle: 1n, offset: 0 }, data)).errno, 0);
    assert.deepEqual(await good.readAt(2n, 0, data.length), Buffer.from(data));
    await roundTrip(h, await clientOptions("trusting"), 4);
  }, { tls: await x509(), logger: log, onTls: log.onTls });
});

Deno.test("a client that gives up mid-handshake, or stalls, costs one line each", async () => {
  const log = new Recorder();
  await withServer(async (h) => {
    const quitter = await ackedSocket(h.port);
    quitter.destroy();
    const [gone] = await log.tlsEvents(1);
    assert.equal(gone?.outcome, "failed");
    assert.equal(gone?.detail, "the connection closed during the TLS handshake");

    const staller = await ackedSocket(h.port);
    const closed = new Promise((resolve) => staller.once("close", resolve));
    await closed; // the handshake timeout ends it
    const [, stalled] = await log.tlsEvents(2);
    assert.deepEqual([stalled?.outcome, stalled?.detail], ["failed", "timed out"]);
    assert.equal(log.warnings().length, 2, log.dump());
  }, { tls: await x509(), logger: log, onTls: log.onTls, limits: { handshakeTimeoutMs: 300 } });
});

Deno.test("closing the server ends a connection in the middle of its TLS handshake", async () => {
  const log = new Recorder();
  await withServer(async (h) => {
    const socket = await ackedSocket(h.port);
    const closed = new Promise((resolve) => socket.once("close", resolve));
    await h.server.close();
    await closed;
    assert.equal(h.server.connections, 0);
  }, { tls: await x509(), logger: log, onTls: log.onTls });
});

Deno.test("a client that does not trust the server's CA fails the handshake; the server logs it", async () => {
  const log = new Recorder();
  await withServer(async (h) => {
    const c = await h.connect();
    await c.start();
    await assert.rejects(c.startTls(await clientOptions("wrong-ca")), /certificate/i);
    await c.destroy();
    const [event] = await log.tlsEvents(1);
    assert.equal(event?.outcome, "failed");
    assert.equal(log.warnings().length, 1, log.dump());
  }, { tls: await x509(), logger: log, onTls: log.onTls });
});

Deno.test("with a CA for clients: no certificate or a foreign one is refused, the CA's own is let in", async () => {
  const log = new Recorder();
  const tlsServer = await x509({ clientCerts: true });
  assert.equal(tlsServer.kind, "x509 (client certificates)");
  await withServer(async (h) => {
    for (const which of ["trusting", "stranger"] as const) {
      const c = await h.connect();
      await c.start();
      // TLS 1.3 clients finish before the server checks them; the refusal then shows as a close.
      const outcome = await c.startTls(await clientOptions(which)).then(
        async () => {
          const [reply] = await c.ask(C.NBD_OPT_LIST).catch(() => [undefined]);
          return reply === undefined ? "closed" : "answered";
        },
        () => "rejected",
      );
      assert.notEqual(outcome, "answered", which);
      await c.destroy();
    }
    const events = await log.tlsEvents(2);
    assert.deepEqual(events.map((e) => e.outcome), ["failed", "failed"], log.dump());
    assert.match(events[0]?.detail ?? "", /certificate/i);
    assert.match(events[1]?.detail ?? "", /^client certificate rejected: /);
    await roundTrip(h, await clientOptions("with-cert"), 5);
    const [, , secured] = await log.tlsEvents(3);
    assert.equal(secured?.outcome, "secured");
  }, { tls: tlsServer, logger: log, onTls: log.onTls });
});

Deno.test("NbdTls refuses incomplete credentials", async () => {
  const f = await tlsFiles();
  const cert = await fsp.readFile(f.serverCert, "utf8");
  const key = await fsp.readFile(f.serverKey, "utf8");
  assert.throws(() => new NbdTls({ cert }), TypeError);
  assert.throws(() => new NbdTls({}), TypeError);
  assert.throws(() => new NbdTls({ ca: cert }), TypeError);
  // (A key that does not match its certificate is refused at construction under Node only: see
  // tests/e2e/nbd_tls_test.ts.)
  assert.equal(new NbdTls({ cert, key }).kind, "x509");
});
