/**
 * Three NBD servers over a raw file, for `bench_nbd.ts` to find where the time of a sheepdog
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
 *                                      the same plus what the store's layout and checksums cost
 *                                      at least: one file per 4 MiB object (FILE.objects/N, made
 *                                      from FILE's size) as the store lays a VDI out, writes over
 *                                      64 KiB in 64 KiB pieces as the store writes them
 *                                      (fs_disk.ts, WRITE_PIECE_BYTES), each written 4 KiB block
 *                                      hashed (block_checksum.ts, as the store does) into a table
 *                                      in memory, each read block hashed and compared with it
 *                                      (no checksum file, no journal, no layers)
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
import { WRITE_PIECE_BYTES } from "../core/store/fs_disk.ts";
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

/** Where a floor server's bytes live: one raw file, or one file per object. */
interface Backing {
  readonly size: number;
  read(data: Uint8Array, offset: number): void;
  write(data: Uint8Array, offset: number): void;
  sync(): void;
}

/** One raw file, each read or write one call. */
function fileBacking(fd: number, size: number): Backing {
  return {
    size,
    read: (data, offset) => void fs.readSync(fd, data, 0, data.length, offset),
    write: (data, offset) => void fs.writeSync(fd, data, 0, data.length, offset),
    sync: () => fs.fdatasyncSync(fd),
  };
}

/** The floor's object size: the store's default (4 MiB). */
const OBJECT_BYTES = 4 * 1024 * 1024;

/**
 * One file per `OBJECT_BYTES` of the export, opened once (as the store keeps objects open); a
 * write in pieces of `WRITE_PIECE_BYTES`, as the store's.
 */
function objectBacking(dir: string, size: number): Backing {
  fs.mkdirSync(dir, { recursive: true });
  const fds: number[] = [];
  for (let at = 0; at < size; at += OBJECT_BYTES) {
    const fd = fs.openSync(`${dir}/${fds.length}`, "w+");
    fs.ftruncateSync(fd, Math.min(OBJECT_BYTES, size - at));
    fds.push(fd);
  }
  const each = (
    data: Uint8Array,
    offset: number,
    io: (fd: number, part: Uint8Array, at: number) => void,
  ) => {
    for (let done = 0; done < data.length;) {
      const at = offset + done;
      const inObject = at % OBJECT_BYTES;
      const part = data.subarray(
        done,
        done + Math.min(data.length - done, OBJECT_BYTES - inObject),
      );
      io(fds[Math.floor(at / OBJECT_BYTES)]!, part, inObject);
      done += part.length;
    }
  };
  return {
    size,
    read: (data, offset) =>
      each(data, offset, (fd, part, at) => fs.readSync(fd, part, 0, part.length, at)),
    write: (data, offset) =>
      each(data, offset, (fd, part, at) => {
        for (let done = 0; done < part.length; done += WRITE_PIECE_BYTES) {
          const length = Math.min(WRITE_PIECE_BYTES, part.length - done);
          fs.writeSync(fd, part, done, length, at + done);
        }
      }),
    sync: () => fds.forEach((fd) => fs.fdatasyncSync(fd)),
  };
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
  write(backing: Backing, offset: number, data: Uint8Array): void {
    const first = Math.floor(offset / CHECKSUM_BLOCK_BYTES);
    if (offset % CHECKSUM_BLOCK_BYTES === 0 && data.length % CHECKSUM_BLOCK_BYTES === 0) {
      this.#sums.set(blockChecksums(data), first);
      backing.write(data, offset);
    } else {
      backing.write(data, offset);
      this.#sums.set(blockChecksums(this.#blocksAround(backing, offset, data.length)), first);
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
  #blocksAround(backing: Backing, offset: number, length: number): Uint8Array {
    const start = Math.floor(offset / CHECKSUM_BLOCK_BYTES) * CHECKSUM_BLOCK_BYTES;
    const end = Math.ceil((offset + length) / CHECKSUM_BLOCK_BYTES) * CHECKSUM_BLOCK_BYTES;
    const blocks = Buffer.alloc(Math.min(end, backing.size) - start);
    backing.read(blocks, start);
    return blocks;
  }
}

/** Sheepdog's NBD server over the file itself, with block checksums when `table` is given. */
async function serveSession(backing: Backing, port: number, table?: BlockTable): Promise<void> {
  const done = Promise.resolve();
  const size = backing.size;
  const readNow = (offset: number, length: number) => {
    const data = Buffer.allocUnsafe(length);
    backing.read(data, offset);
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
      if (table) table.write(backing, offset, data);
      else backing.write(data, offset);
      return done;
    },
    flush: () => {
      backing.sync();
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

const MODES = ["bare", "session", "checksummed"];
const [mode, path, portText] = process.argv.slice(2);
if (!MODES.includes(mode ?? "") || !path || !portText) {
  console.error(`usage: node floor.mjs ${MODES.join("|")} FILE PORT`);
  process.exit(2);
}
const fd = fs.openSync(path, "r+");
const size = fs.fstatSync(fd).size;
const port = Number(portText);
if (mode === "bare") serveBare(fd, size, port);
else if (mode === "session") await serveSession(fileBacking(fd, size), port);
else await serveSession(objectBacking(`${path}.objects`, size), port, new BlockTable(size));
