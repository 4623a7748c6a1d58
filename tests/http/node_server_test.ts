/**
 * The HTTP service on a real loopback socket: serving, Host checks, closing with open
 * connections, the port-in-use error and the read-only policy off loopback.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as http from "node:http";
import { httpPolicy, isLoopback, startHttpService } from "../../net/http/node_server.ts";
import { withSheep } from "../harness.ts";

function get(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: "127.0.0.1", port, path, headers, agent: false },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk) => body += chunk);
        response.on("end", () => resolve({ status: response.statusCode!, body }));
      },
    );
    request.on("error", reject);
    request.end();
  });
}

Deno.test("startHttpService() serves the API, the dashboard and metrics on 127.0.0.1", async () => {
  await withSheep(async ({ sheep }) => {
    const lines: string[] = [];
    const logger = {
      debug() {},
      info: (m: string) => lines.push(m),
      warn: (m: string) => lines.push(m),
      error() {},
    };
    const service = await startHttpService(sheep, { port: 0, logger });
    try {
      assert.equal(service.address.host, "127.0.0.1");
      assert.ok(service.address.port > 0);
      assert.equal(service.url, `http://127.0.0.1:${service.address.port}`);
      assert.equal(service.mutable, true);
      assert.deepEqual(lines, [`HTTP admin API and dashboard on ${service.url}`]);

      const cluster = await fetch(`${service.url}/api/v1/cluster`);
      assert.equal(cluster.status, 200);
      assert.equal((await cluster.json()).status, "running");
      const created = await fetch(`${service.url}/api/v1/vdis`, {
        method: "POST",
        body: JSON.stringify({ name: "Dora", size: "1G" }),
      });
      assert.equal(created.status, 201);
      await created.body?.cancel();
      const index = await (await fetch(`${service.url}/api/v1`)).json();
      assert.equal(index.self, sheep.id);
      const page = await fetch(`${service.url}/`);
      assert.match(await page.text(), /<title>sheepdog<\/title>/);
      const metrics = await (await fetch(`${service.url}/metrics`)).text();
      assert.match(
        metrics,
        /sheepdog_requests_total\{protocol="object",op="NEW_VDI",result="ok"\} 1/,
      );
      assert.match(metrics, /sheepdog_vdis 1/);

      const rebound = await get(service.address.port, "/api/v1/cluster", {
        host: "attacker.example",
      });
      assert.equal(rebound.status, 403);
      assert.match(JSON.parse(rebound.body).error, /does not answer to host 'attacker\.example'/);
      assert.equal(
        (await get(service.address.port, "/api/v1/cluster", { host: "localhost:1" })).status,
        200,
      );
    } finally {
      await service.close();
    }
    await assert.rejects(fetch(`${service.url}/api/v1`), "closed");
  });
});

Deno.test("startHttpService() closes with a keep-alive connection open", async () => {
  await withSheep(async ({ sheep }) => {
    const service = await startHttpService(sheep, { port: 0 });
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((resolve, reject) => {
      http.get({ host: "127.0.0.1", port: service.address.port, path: "/api/v1", agent }, (res) => {
        res.resume();
        res.on("end", resolve);
      }).on("error", reject);
    });
    await service.close();
    await service.close();
    agent.destroy();
  });
});

Deno.test("startHttpService() names the address when the port is taken", async () => {
  await withSheep(async ({ sheep }) => {
    const first = await startHttpService(sheep, { port: 0 });
    try {
      await assert.rejects(
        startHttpService(sheep, { port: first.address.port }),
        { message: `Cannot serve HTTP on 127.0.0.1:${first.address.port}: EADDRINUSE` },
      );
    } finally {
      await first.close();
    }
  });
});

Deno.test("httpPolicy(): loopback may change things; elsewhere only with a token", () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"]) {
    assert.ok(isLoopback(host), host);
    assert.equal(httpPolicy(host, undefined).mutable, true);
    assert.ok(httpPolicy(host, undefined).allowedHosts!.includes("127.0.0.1"));
  }
  for (const host of ["0.0.0.0", "::", "192.168.1.10", "sheep1.example"]) {
    assert.ok(!isLoopback(host), host);
    assert.deepEqual(httpPolicy(host, undefined), { mutable: false });
    assert.deepEqual(httpPolicy(host, ""), { mutable: false });
    assert.deepEqual(httpPolicy(host, "s3cret"), { mutable: true });
  }
});
