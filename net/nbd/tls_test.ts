import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { loadNbdTls, parsePskFile } from "./tls.ts";

Deno.test("parsePskFile() reads qemu's and nbdkit's identity:hexkey lines", () => {
  const keys = parsePskFile("qemu:0123456789abcdefABCDEF\n\nalice:00ff\r\n");
  assert.deepEqual([...keys.keys()], ["qemu", "alice"]);
  assert.equal(Buffer.from(keys.get("qemu")!).toString("hex"), "0123456789abcdefabcdef");
  assert.deepEqual([...keys.get("alice")!], [0, 255]);
  // An identity may hold colons: the key follows the last one.
  assert.deepEqual([...parsePskFile("a:b:01").keys()], ["a:b"]);
});

Deno.test("parsePskFile() names the line it cannot use", () => {
  assert.throws(() => parsePskFile(""), /holds no identity:hexkey line/);
  assert.throws(() => parsePskFile("\n  \n"), /holds no identity:hexkey line/);
  assert.throws(() => parsePskFile("qemu:01\nnokey\n"), /line 2: use identity:hexkey/);
  assert.throws(() => parsePskFile(":0102"), /line 1: use identity:hexkey/);
  assert.throws(() => parsePskFile("qemu:012"), /line 1: the key must be an even number/);
  assert.throws(() => parsePskFile("qemu:zz"), /line 1: the key must be an even number/);
  assert.throws(() => parsePskFile("qemu:"), /line 1: the key must be an even number/);
  assert.throws(() => parsePskFile("qemu:01\nqemu:02"), /line 2: identity 'qemu' appears twice/);
  assert.throws(() => parsePskFile(`qemu:${"00".repeat(513)}`), /longer than 512 bytes/);
});

Deno.test("loadNbdTls() reads the files and refuses missing, empty and shared secret ones", async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "sd-tls-files-"));
  try {
    assert.equal(loadNbdTls({}), undefined);
    const file = async (name: string, text: string, mode: number) => {
      const at = path.join(dir, name);
      await fsp.writeFile(at, text);
      await fsp.chmod(at, mode);
      return at;
    };
    const cert = await file("cert.pem", "CERT\n", 0o644);
    const key = await file("key.pem", "KEY\n", 0o600);
    const psk = await file("keys.psk", "qemu:abcd\n", 0o600);
    assert.deepEqual(loadNbdTls({ certFile: cert, keyFile: key }), {
      cert: "CERT", // trimmed, as every secret file is read (net/auth/secret_file.ts)
      key: "KEY",
    });
    assert.deepEqual([...loadNbdTls({ pskFile: psk })!.psk!.keys()], ["qemu"]);

    const missing = path.join(dir, "nope.pem");
    assert.throws(
      () => loadNbdTls({ certFile: missing }),
      { message: `Cannot read --nbd-tls-cert ${missing}: no such file or directory` },
    );
    assert.throws(() => loadNbdTls({ caFile: dir }), /--nbd-tls-ca .*: not a file/);
    const empty = await file("empty.pem", " \n", 0o644);
    assert.throws(() => loadNbdTls({ certFile: empty }), /: it is empty$/);
    const shared = await file("shared.key", "KEY\n", 0o640);
    assert.throws(
      () => loadNbdTls({ keyFile: shared }),
      {
        message: `Cannot use --nbd-tls-key ${shared}: others can read or change it (mode 0640); ` +
          `run chmod 600 ${shared}`,
      },
    );
    const sharedPsk = await file("shared.psk", "qemu:abcd\n", 0o604);
    assert.throws(() => loadNbdTls({ pskFile: sharedPsk }), /chmod 600/);
    const badPsk = await file("bad.psk", "qemu abcd\n", 0o600);
    assert.throws(
      () => loadNbdTls({ pskFile: badPsk }),
      /--nbd-tls-psk .*bad\.psk: cannot parse line 1: use identity:hexkey/,
    );
    if (process.getuid?.() !== 0) {
      const unreadable = await file("unreadable.psk", "qemu:abcd\n", 0o000);
      assert.throws(() => loadNbdTls({ pskFile: unreadable }), /: EACCES$/);
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
