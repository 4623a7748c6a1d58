/**
 * Block checksums: where the time goes. Measures, under Node (as the sheep runs), the store's
 * block checksum (core/store/block_checksum.ts) and, for comparison, the CRC-32 of `node:zlib`
 * per 4 KiB block and per MiB (the store's before) and hash-wasm's CRC-32C and xxh3 (the copy
 * into the module's memory included), what shared memory costs,
 * and the hand-off of a read's bytes to a checksum worker (core/store/checksum_workers.ts) at
 * each size, against hashing them on the calling thread.
 *
 *   deno run -A scripts/bench_checksum.ts [--no-write]
 *
 * Bundles scripts/checksum_probe.ts for Node, runs it, prints a table and writes the section
 * "## Block checksums: where the time goes" of BENCHMARKS.md unless --no-write.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { root, writeSection } from "./bench_cluster.ts";

const TITLE = "## Block checksums: where the time goes";

interface Cost {
  wallUs: number;
  mainUs: number;
}

interface Probe {
  node: string;
  storeBlocksUs: number;
  storePerBlockUs: number;
  zlibBlocksUs: number;
  zlibWholeUs: number;
  crc32cBlocksUs: number;
  xxh3BlocksUs: number;
  xxh3WholeUs: number;
  plainReadUs: number;
  sharedReadUs: number;
  plainFillUs: number;
  sharedFillUs: number;
  plainCopyUs: number;
  sharedCopyUs: number;
  sharedQd1: Cost;
  offload: { length: number; inlineUs: number; qd1: Cost; qd8: Cost }[];
  fallbacks: number;
}

const { values } = parseArgs({ options: { "no-write": { type: "boolean", default: false } } });
const probe = path.join(root, "dist", "checksum_probe.cjs");
fs.mkdirSync(path.dirname(probe), { recursive: true });
execFileSync(path.join(root, "node_modules", ".bin", "deno"), [
  "bundle",
  "--quiet",
  "--format=cjs",
  "--platform=node",
  "-o",
  probe,
  path.join(root, "scripts", "checksum_probe.ts"),
], { stdio: "inherit", env: { ...process.env, NO_COLOR: "1" } });
const loadBefore = os.loadavg()[0]!;
const result = JSON.parse(execFileSync("node", [probe], { encoding: "utf8" })) as Probe;
const loadAfter = os.loadavg()[0]!;
if (result.fallbacks !== 0) throw new Error(`${result.fallbacks} jobs fell back: measure again`);

const us = (value: number) => value < 10 ? value.toFixed(1) : Math.round(value).toLocaleString();
const mibps = (usPerMiB: number) => Math.round(1e6 / usPerMiB).toLocaleString();
const size = (bytes: number) =>
  bytes >= 1 << 20 ? `${bytes / (1 << 20)} MiB` : `${bytes / 1024} KiB`;
const cpus = os.cpus();
const lines = [
  TITLE,
  "",
  `Machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, Node ${result.node}. ` +
  `Date: ${new Date().toISOString()}. Load average (1 min) before/after: ` +
  `${loadBefore.toFixed(1)}/${loadAfter.toFixed(1)}. Each figure is the median of 5 trials of ` +
  "0.4 s; main thread = the event loop's active time (what every other client waits for). " +
  "Reproduce: `deno run -A scripts/bench_checksum.ts`.",
  "",
  "One MiB of random bytes hashed on the calling thread:",
  "",
  "| hash | µs per MiB | MiB/s |",
  "|---|---:|---:|",
  `| block_checksum.ts (XXH64 in WebAssembly), one call per MiB (what the store does) | ${
    us(result.storeBlocksUs)
  } | ${mibps(result.storeBlocksUs)} |`,
  `| block_checksum.ts, a call per 4 KiB block (small reads and writes) | ${
    us(result.storePerBlockUs)
  } | ${mibps(result.storePerBlockUs)} |`,
  `| node:zlib CRC-32, a call per 4 KiB block (checksum format 1, before) | ${
    us(result.zlibBlocksUs)
  } | ${mibps(result.zlibBlocksUs)} |`,
  `| node:zlib CRC-32, one call per MiB | ${us(result.zlibWholeUs)} | ${
    mibps(result.zlibWholeUs)
  } |`,
  `| hash-wasm CRC-32C per 4 KiB block (copy into wasm memory included) | ${
    us(result.crc32cBlocksUs)
  } | ${mibps(result.crc32cBlocksUs)} |`,
  `| hash-wasm xxh3 per 4 KiB block (same) | ${us(result.xxh3BlocksUs)} | ${
    mibps(result.xxh3BlocksUs)
  } |`,
  `| hash-wasm xxh3, one call per MiB | ${us(result.xxh3WholeUs)} | ${mibps(result.xxh3WholeUs)} |`,
  "",
  "A read's checksums handed to a checksum worker (the product's pool, one worker; the bytes " +
  "are moved there and back, not copied), against hashing them on the calling thread. QD: " +
  "jobs in flight at once.",
  "",
  "| read | inline µs | worker QD1: main µs | QD1 wall µs | QD8: main µs per job | QD8 wall µs per job |",
  "|---|---:|---:|---:|---:|---:|",
  ...result.offload.map((row) =>
    `| ${size(row.length)} | ${us(row.inlineUs)} | ${us(row.qd1.mainUs)} | ${
      us(row.qd1.wallUs)
    } | ${us(row.qd8.mainUs)} | ${us(row.qd8.wallUs)} |`
  ),
  "",
  "Shared memory instead (a SharedArrayBuffer the worker reads in place), 1 MiB:",
  "",
  "| | plain buffer µs | shared buffer µs |",
  "|---|---:|---:|",
  `| a new buffer filled by a read (from /dev/zero) | ${us(result.plainReadUs)} | ${
    us(result.sharedReadUs)
  } |`,
  `| filled in JS (\`fill\`) | ${us(result.plainFillUs)} | ${us(result.sharedFillUs)} |`,
  `| copied out (\`set\`) | ${us(result.plainCopyUs)} | ${us(result.sharedCopyUs)} |`,
  `| round trip to a worker that hashes it in place, QD1: main / wall | ` +
  `${us(result.offload.find((r) => r.length === 1 << 20)!.qd1.mainUs)} / ${
    us(result.offload.find((r) => r.length === 1 << 20)!.qd1.wallUs)
  } (moved) | ${us(result.sharedQd1.mainUs)} / ${us(result.sharedQd1.wallUs)} |`,
];
const section = lines.join("\n");
console.log(section);
if (!values["no-write"]) writeSection(TITLE, section);
