// `npm start`: a working local cluster on a default directory (.sheepdog/ in the checkout, or
// $SHEEPDOG_HOME). Starts the sheep in the foreground, formats the cluster on first start, prints
// how to use it, and stops everything cleanly on Ctrl-C.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import net from "node:net";

const root = new URL("..", import.meta.url).pathname;
const home = process.env.SHEEPDOG_HOME ?? join(root, ".sheepdog");
const nodes = Number(process.env.SHEEPDOG_NODES ?? 3);
const copies = Math.min(3, nodes);
const basePort = Number(process.env.SHEEPDOG_PORT ?? 7000);
// `npm start` builds ./sheepdog first, so the commands printed below work as shown.
const sheepdog = [join(root, "sheepdog")];

function waitForPort(port, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = net.connect({ host: "127.0.0.1", port }, () => {
        socket.destroy();
        resolve();
      });
      socket.on("error", () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`sheep on port ${port} did not start`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

// A cluster already running from this directory (or anything on our ports) is reported before
// anything is built or started: rebuilding ./sheepdog under running sheep, or waiting on ports
// another process answers, would only confuse.
function runningPid(dir) {
  try {
    const pid = Number(readFileSync(join(dir, "sheep.pid"), "utf8").trim());
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}
function portInUse(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(true));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(false)));
  });
}
for (let i = 0; i < nodes; i++) {
  const pid = runningPid(join(home, `sheep${i}`));
  if (pid !== undefined) {
    console.error(
      `sheepdog is already running from ${home} (sheep ${i}, pid ${pid}): stop it first ` +
        `(Ctrl-C where it runs, or kill ${pid})`,
    );
    process.exit(1);
  }
  for (const port of [basePort + i, 10809 + i, 7080 + i]) {
    if (await portInUse(port)) {
      console.error(
        `Port ${port} on 127.0.0.1 is in use by another program: stop it, or set ` +
          `SHEEPDOG_PORT to start elsewhere`,
      );
      process.exit(1);
    }
  }
}
execFileSync(process.execPath, [join(root, "scripts", "build.mjs")], { stdio: "inherit" });

// One cluster key for the local sheep (each would otherwise make its own in its directory);
// commands find it through the note each sheep leaves, so the user never handles it.
mkdirSync(home, { recursive: true });
const keyFile = join(home, "cluster.key");
if (!existsSync(keyFile)) execFileSync(sheepdog[0], ["shepherd", "keygen", keyFile]);

const children = [];
for (let i = 0; i < nodes; i++) {
  const dir = join(home, `sheep${i}`);
  mkdirSync(dir, { recursive: true });
  const port = basePort + i;
  // On one machine the sheep find each other through seeds; multicast is for real networks.
  // Each node is its own zone, so three copies land on three different sheep.
  const seeds = Array.from({ length: nodes }, (_, j) => basePort + j).filter((p) => p !== port)
    .flatMap((p) => ["--seed", `127.0.0.1:${p}`]);
  const args = [
    "sheep",
    dir,
    "--port",
    String(port),
    // A local cluster: loopback only (by default a sheep listens on every address).
    "--host",
    "127.0.0.1",
    "--key-file",
    keyFile,
    "--zone",
    String(i + 1),
    "--multicast",
    "off",
    // Node i serves NBD on 10809+i and HTTP on 7080+i, so three sheep fit on one machine.
    "--nbd-port",
    String(10809 + i),
    "--http-port",
    String(7080 + i),
  ];
  const child = spawn(sheepdog[0], [...sheepdog.slice(1), ...args, ...seeds, "--foreground"], {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  child.on("exit", (code, signal) => {
    if (!stopping) {
      console.error(`sheep ${i} exited (${signal ?? code}); stopping`);
      stop(1);
    }
  });
  children.push(child);
}

let stopping = false;
function stop(code = 0) {
  stopping = true;
  for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
  setTimeout(() => process.exit(code), 1500).unref();
  Promise.all(children.map((c) => c.exitCode !== null ? null : new Promise((r) => c.on("exit", r))))
    .then(() => process.exit(code));
}
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

await Promise.all(children.map((_, i) => waitForPort(basePort + i)));
const cluster = `127.0.0.1:${basePort}`;
if (!existsSync(join(home, "sheep0", "config"))) {
  execFileSync(sheepdog[0], [
    ...sheepdog.slice(1),
    "shepherd",
    "mkfs",
    `--copies=${copies}`,
    "--cluster",
    cluster,
  ], {
    stdio: "inherit",
  });
}
console.log(`
sheepdog is running: ${nodes} sheep on ${cluster}${
  nodes > 1 ? ` to ${basePort + nodes - 1}` : ""
}, data in ${home}
  ./sheepdog img create "Alice's Disk" 10G
  ./sheepdog img convert disk.raw "Bob's Disk"
  ./sheepdog shepherd info -t vdi
  qemu-img info nbd://127.0.0.1:10809/Bob%27s%20Disk   (NBD on 10809-${10808 + nodes})
  dashboard: http://127.0.0.1:7080/
Press Ctrl-C to stop.`);
