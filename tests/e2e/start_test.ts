// Goal: `npm start` (scripts/start.mjs) refuses to start over a cluster that already runs from
// its directory, and over ports another program holds, before it builds or starts anything:
// ./sheepdog is not rebuilt under running sheep. Method: a home whose sheep0/sheep.pid names a
// live process (this test's own), and a port this test holds; ./sheepdog's mtime must not move.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { tempDir } from "../harness.ts";
import { EXECUTABLE, freePort, requireExecutable } from "./cli.ts";

const START = path.resolve(new URL("../../scripts/start.mjs", import.meta.url).pathname);

function start(env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile("node", [START], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
      timeout: 30_000,
    }, (error, _out, stderr) => {
      resolve({ code: error ? Number(error.code ?? 1) : 0, stderr });
    });
  });
}

Deno.test("e2e: npm start refuses a running cluster and busy ports before it builds anything", async () => {
  requireExecutable();
  const home = await tempDir("sd-e2e-start-");
  const built = fs.statSync(EXECUTABLE).mtimeMs;
  try {
    fs.mkdirSync(path.join(home, "sheep0"), { recursive: true });
    fs.writeFileSync(path.join(home, "sheep0", "sheep.pid"), `${process.pid}\n`);
    const running = await start({ SHEEPDOG_HOME: home, SHEEPDOG_PORT: String(await freePort()) });
    assert.equal(running.code, 1, running.stderr);
    assert.match(
      running.stderr,
      new RegExp(`already running from .* \\(sheep 0, pid ${process.pid}\\)`),
    );
    fs.rmSync(path.join(home, "sheep0", "sheep.pid"));

    const held = net.createServer();
    const port = await new Promise<number>((resolve) =>
      held.listen(0, "127.0.0.1", () => resolve((held.address() as net.AddressInfo).port))
    );
    try {
      const busy = await start({ SHEEPDOG_HOME: home, SHEEPDOG_PORT: String(port) });
      assert.equal(busy.code, 1, busy.stderr);
      assert.match(busy.stderr, new RegExp(`Port ${port} on 127\\.0\\.0\\.1 is in use`));
    } finally {
      held.close();
    }
    assert.equal(fs.statSync(EXECUTABLE).mtimeMs, built, "./sheepdog was not rebuilt");
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});
