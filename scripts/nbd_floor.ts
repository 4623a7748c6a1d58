/**
 * Two NBD servers over one raw file, for `bench_nbd.ts` to find where the time of a sheepdog
 * request goes and what this runtime can do at all (issue 11: "the profile that shows the
 * floor"). Run on Node, as the sheep is (bench_nbd.ts bundles this file and starts it with the
 * `node` that built ./sheepdog):
 *
 *   node floor.mjs bare FILE PORT      the least a Node NBD server does: fixed newstyle,
 *                                      NBD_OPT_GO, simple replies, pread/pwrite on the event
 *                                      loop's thread, no checks, no layers
 *   node floor.mjs session FILE PORT   sheepdog's own NBD server (net/nbd: handshake, request
 *                                      ordering, admission, reply coalescing) over an export that
 *                                      reads and writes FILE directly: the sheep minus the VDI,
 *                                      gateway, store and checksums
 *   node floor.mjs checksummed FILE PORT
 *                                      the same plus the sheep's block checksums: each written
 *                                      4 KiB block hashed (block_checksum.ts, as the store does)
 *                                      into a table in memory, each read block hashed and
 *                                      compared with it: the least the checksums the sheep must
 *                                      keep cost on this runtime (no checksum file, no journal)
 *
 * Benchmark scaffolding only: no product code depends on it.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as net from "node:net";
import process from "node:process";
import { blockChecksums } from "../core/store/block_checksum.ts";
import { CHECKSUM_BLOCK_BYTES } from "../core/limits.ts";
import type { BlockExport } from "../net/nbd/export.ts";
import { NbdServer } from "../net/nbd/server.ts";

const OPTS_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const NBD_OPT_INFO = 6;
const NBD_OPT_GO = 7;
const NBD_REP_ACK = 1;
const NBD_REP_INFO = 3;
const NBD_REP_ERR_UNSUP = 0x80000001;
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const NBD_CMD_DISC = 2;
const NBD_CMD_FLUSH = 3;
/** NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA */
const TRANSMISSION_FLAGS = 1 | 4 | 8;

/** The hand-rolled server: one parse loop per connection, replies written at once. */
function serveBare(fd: number, size: number, port: number): void {
  net.createServer({ noDelay: true }, (socket) => {
    let pending: Buffer = Buffer.alloc(0);
    let phase: "flags" | "options" | "transmission" = "flags";
    const hello = Buffer.alloc(18);
    hello.write("NBDMAGICIHAVEOPT");
    hello.writeUInt16BE(3, 16); // FIXED_NEWSTYLE | NO_ZEROES
    socket.write(hello);
    const optionReply = (option: number, type: number, data = Buffer.alloc(0)) => {
      const head = Buffer.alloc(20);
      head.writeBigUInt64BE(OPTS_MAGIC, 0);
      head.writeUInt32BE(option, 8);
      head.writeUInt32BE(type >>> 0, 12);
      head.writeUInt32BE(data.length, 16);
      socket.write(Buffer.concat([head, data]));
    };
    const step = (): boolean => {
      if (phase === "flags") {
        if (pending.length < 4) return false;
        pending = pending.subarray(4);
        phase = "options";
        return true;
      }
      if (phase === "options") {
        if (pending.length < 16) return false;
        const option = pending.readUInt32BE(8);
        const length = pending.readUInt32BE(12);
        if (pending.length < 16 + length) return false;
        pending = pending.subarray(16 + length);
        if (option === NBD_OPT_GO || option === NBD_OPT_INFO) {
          const info = Buffer.alloc(12); // NBD_INFO_EXPORT
          info.writeBigUInt64BE(BigInt(size), 2);
          info.writeUInt16BE(TRANSMISSION_FLAGS, 10);
          optionReply(option, NBD_REP_INFO, info);
          optionReply(option, NBD_REP_ACK);
          if (option === NBD_OPT_GO) phase = "transmission";
        } else {
          optionReply(option, NBD_REP_ERR_UNSUP);
        }
        return true;
      }
      if (pending.length < 28) return false;
      if (pending.readUInt32BE(0) !== REQUEST_MAGIC) {
        socket.destroy();
        return false;
      }
      const type = pending.readUInt16BE(6);
      const offset = Number(pending.readBigUInt64BE(16));
      const length = pending.readUInt32BE(24);
      if (type === NBD_CMD_WRITE && pending.length < 28 + length) return false;
      const reply = Buffer.alloc(16);
      reply.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
      pending.copy(reply, 8, 8, 16); // the handle
      if (type === NBD_CMD_READ) {
        const data = Buffer.allocUnsafe(length);
        fs.readSync(fd, data, 0, length, offset);
        socket.cork();
        socket.write(reply);
        socket.write(data);
        socket.uncork();
        pending = pending.subarray(28);
      } else if (type === NBD_CMD_WRITE) {
        fs.writeSync(fd, pending, 28, length, offset);
        socket.write(reply);
        pending = pending.subarray(28 + length);
      } else if (type === NBD_CMD_FLUSH) {
        fs.fdatasyncSync(fd);
        socket.write(reply);
        pending = pending.subarray(28);
      } else if (type === NBD_CMD_DISC) {
        socket.end();
        return false;
      } else {
        reply.writeUInt32BE(22, 4); // EINVAL
        socket.write(reply);
        pending = pending.subarray(28);
      }
      return true;
    };
    socket.on("data", (chunk: Buffer) => {
      pending = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
      while (step());
    });
    socket.on("error", () => {});
  }).listen(port, "127.0.0.1");
}

/**
 * The checksum of every block of the file, kept in memory, as the store keeps them for an open
 * object: a write records the checksums of the blocks it covers (a block it covers in part is
 * read and hashed whole, as the store does), a read hashes what it read and compares. Requests
 * of benchmarks are block-aligned; a mismatch (blocks the prefill wrote around this table) is
 * counted, not refused: what is measured is the arithmetic and the copies, as in the sheep.
 */
class BlockTable {
  readonly #sums: Uint32Array;
  mismatches = 0;

  constructor(size: number) {
    this.#sums = new Uint32Array(Math.ceil(size / CHECKSUM_BLOCK_BYTES));
  }

  /**
   * Writes `data` at `offset` and records its blocks' checksums: hashed before the write, from the
   * bytes meant to be there, as the store does; a write covering blocks in part is hashed after,
   * from the whole blocks read back.
   */
  write(fd: number, offset: number, data: Uint8Array): void {
    const first = Math.floor(offset / CHECKSUM_BLOCK_BYTES);
    if (offset % CHECKSUM_BLOCK_BYTES === 0 && data.length % CHECKSUM_BLOCK_BYTES === 0) {
      this.#sums.set(blockChecksums(data), first);
      fs.writeSync(fd, data, 0, data.length, offset);
    } else {
      fs.writeSync(fd, data, 0, data.length, offset);
      this.#sums.set(blockChecksums(this.#blocksAround(fd, offset, data.length)), first);
    }
  }

  read(offset: number, data: Uint8Array): void {
    const first = Math.floor(offset / CHECKSUM_BLOCK_BYTES);
    const sums = blockChecksums(data);
    for (let i = 0; i < sums.length; i++) {
      if (sums[i] !== this.#sums[first + i]) this.mismatches++;
    }
  }

  /** The whole blocks under [offset, offset + length), read back after the write. */
  #blocksAround(fd: number, offset: number, length: number): Uint8Array {
    const start = Math.floor(offset / CHECKSUM_BLOCK_BYTES) * CHECKSUM_BLOCK_BYTES;
    const end = Math.ceil((offset + length) / CHECKSUM_BLOCK_BYTES) * CHECKSUM_BLOCK_BYTES;
    const blocks = Buffer.alloc(end - start);
    fs.readSync(fd, blocks, 0, blocks.length, start);
    return blocks;
  }
}

/** Sheepdog's NBD server over the file itself, with block checksums when `table` is given. */
async function serveSession(
  fd: number,
  size: number,
  port: number,
  table?: BlockTable,
): Promise<void> {
  const done = Promise.resolve();
  const readNow = (offset: number, length: number) => {
    const data = Buffer.allocUnsafe(length);
    fs.readSync(fd, data, 0, length, offset);
    table?.read(offset, data);
    return data;
  };
  const file: BlockExport = {
    name: "",
    sizeBytes: size,
    readOnly: false,
    read: (offset, length) => Promise.resolve(readNow(offset, length)),
    readNow,
    write: (offset, data) => {
      if (table) table.write(fd, offset, data);
      else fs.writeSync(fd, data, 0, data.length, offset);
      return done;
    },
    flush: () => {
      fs.fdatasyncSync(fd);
      return done;
    },
    trim: () => done,
    writeZeroes: () => done,
    blockStatus: (_offset, length) => Promise.resolve([{ length, hole: false, zero: false }]),
    close: () => done,
  };
  const quiet = () => {};
  const server = new NbdServer({
    provider: {
      list: () =>
        Promise.resolve([{ name: "", description: "a file", sizeBytes: size, readOnly: false }]),
      open: () => Promise.resolve(file),
    },
    logger: { debug: quiet, info: quiet, warn: quiet, error: quiet },
  });
  await server.listen({ host: "127.0.0.1", port });
}

const [mode, path, portText] = process.argv.slice(2);
if ((mode !== "bare" && mode !== "session" && mode !== "checksummed") || !path || !portText) {
  console.error("usage: node floor.mjs bare|session|checksummed FILE PORT");
  process.exit(2);
}
const fd = fs.openSync(path, "r+");
const size = fs.fstatSync(fd).size;
if (mode === "bare") serveBare(fd, size, Number(portText));
else {await serveSession(
    fd,
    size,
    Number(portText),
    mode === "checksummed" ? new BlockTable(size) : undefined,
  );}
