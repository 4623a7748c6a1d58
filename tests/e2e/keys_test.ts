// Goal: the cluster key and secret files from the command line, as a user meets them: keygen
// makes a private file and never replaces one; a sheep refuses a key or token file that is
// missing, empty, or readable by others, in one line, before it daemonises; two sheep with
// different keys never form one cluster, and each logs the other's refusal; a bad
// --allow-clients is a usage error; --http-token-file guards changes as --http-token does.
// Method: the built ./sheepdog as separate processes on loopback ports.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { tempDir } from "../harness.ts";
import { waitFor } from "../cluster_harness.ts";
import { freePort, requireExecutable, sheepdog, stopDaemon } from "./cli.ts";

const oneLine = (text: string) => text.trim().split("\n").length === 1;

Deno.test("e2e: keygen, key and token files, and what a sheep refuses at start", async () => {
  requireExecutable();
  const dir = await tempDir("sd-e2e-keys-");
  const started: string[] = [];
  try {
    const key = path.join(dir, "cluster.key");
    const made = await sheepdog(["shepherd", "keygen", key]);
    assert.equal(made.code, 0, made.stderr);
    assert.equal(fs.statSync(key).mode & 0o777, 0o600);
    const before = fs.readFileSync(key, "utf8");
    const again = await sheepdog(["shepherd", "keygen", key]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists already/);
    assert.equal(fs.readFileSync(key, "utf8"), before, "an existing key is never replaced");

    const open = path.join(dir, "open.key");
    fs.writeFileSync(open, before, { mode: 0o644 });
    fs.chmodSync(open, 0o644);
    const empty = path.join(dir, "empty.key");
    fs.writeFileSync(empty, "", { mode: 0o600 });
    const port = String(await freePort());
    const base = ["sheep", path.join(dir, "refused"), "--host", "127.0.0.1", "--port", port];
    const quiet = ["--multicast", "off", "--no-nbd", "--no-http"];
    for (
      const [flags, pattern] of [
        [
          ["--key-file", path.join(dir, "missing.key")],
          /Cannot read key file .*no such file or directory/,
        ],
        [["--key-file", open], /others can read or change it \(mode 0644\); run chmod 600/],
        [["--key-file", empty], /it is empty/],
        [["--key-file", key, "--http-token-file", open], /token file .* others can read/],
      ] as const
    ) {
      const result = await sheepdog([...base, ...quiet, ...flags]);
      assert.equal(result.code, 1, `${flags.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, pattern);
      assert.ok(oneLine(result.stderr), `one line: ${result.stderr}`);
      assert.ok(!fs.existsSync(path.join(dir, "refused", "sheep.pid")), "nothing started");
    }
    const usage = await sheepdog([...base, ...quiet, "--allow-clients", "10.0.0.0/40"]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /Invalid --allow-clients: '10\.0\.0\.0\/40' is not an IPv4 network/);

    // Two sheep that seed each other but hold different keys stay two clusters of one.
    const ports = [await freePort(), await freePort()];
    const other = path.join(dir, "other.key");
    assert.equal((await sheepdog(["shepherd", "keygen", other])).code, 0);
    const token = path.join(dir, "token");
    fs.writeFileSync(token, "s3cret\n", { mode: 0o600 });
    const http = await freePort();
    for (const [i, keyFile] of [key, other].entries()) {
      const sheepDir = path.join(dir, `sheep${i}`);
      const result = await sheepdog([
        ...["sheep", sheepDir, "--host", "127.0.0.1", "--port", String(ports[i])],
        ...["--key-file", keyFile, "--multicast", "off", "--no-nbd"],
        ...["--seed", `127.0.0.1:${ports[1 - i]}`, "--failure-timeout", "1000"],
        ...(i === 0 ? ["--http-port", String(http), "--http-token-file", token] : ["--no-http"]),
      ]);
      assert.equal(result.code, 0, result.stderr);
      started.push(sheepDir);
    }
    const logOf = (i: number) => fs.readFileSync(path.join(dir, `sheep${i}`, "sheep.log"), "utf8");
    await waitFor(
      "each sheep to refuse the other's datagrams",
      () =>
        [0, 1].every((i) =>
          new RegExp(
            `refused 127\\.0\\.0\\.1:${ports[1 - i]}: a group datagram without this cluster's MAC`,
          )
            .test(logOf(i))
        ),
    );
    for (const [i, keyFile] of [key, other].entries()) {
      const nodes = await sheepdog(
        [
          "shepherd",
          "info",
          "-t",
          "node",
          "--json",
          "--cluster",
          `127.0.0.1:${ports[i]}`,
          "--key-file",
          keyFile,
        ],
      );
      assert.equal(nodes.code, 0, nodes.stderr);
      assert.deepEqual(JSON.parse(nodes.stdout).map((n: { id: string }) => n.id), [
        `127.0.0.1:${ports[i]}`,
      ]);
    }
    // The wrong key for a sheep: refused, with the reason.
    const wrong = await sheepdog(
      ["shepherd", "info", "-t", "node", "--cluster", `127.0.0.1:${ports[0]}`, "--key-file", other],
    );
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /holds another cluster key/);

    // --http-token-file: changes need the token, and it is not on the command line.
    const mkfs = await sheepdog([
      "shepherd",
      "mkfs",
      "--copies=1",
      "--cluster",
      `127.0.0.1:${ports[0]}`,
    ]);
    assert.equal(mkfs.code, 0, `the local key note serves mkfs: ${mkfs.stderr}`);
    const api = `http://127.0.0.1:${http}/api/v1`;
    const list = await fetch(`${api}/vdis`);
    assert.equal(list.status, 200);
    await list.body?.cancel();
    const body = JSON.stringify({ name: "t", size: "1G" });
    const headers = { "content-type": "application/json" };
    const anonymous = await fetch(`${api}/vdis`, { method: "POST", body, headers });
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    const authorised = await fetch(`${api}/vdis`, {
      method: "POST",
      body,
      headers: { ...headers, authorization: "Bearer s3cret" },
    });
    assert.equal(authorised.status, 201, await authorised.text());
    const cmdline = fs.readFileSync(
      `/proc/${fs.readFileSync(path.join(dir, "sheep0", "sheep.pid"), "utf8").trim()}/cmdline`,
      "utf8",
    );
    assert.ok(!cmdline.includes("s3cret"), "the token is not in the process's arguments");
  } finally {
    for (const sheepDir of started) await stopDaemon(sheepDir).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
