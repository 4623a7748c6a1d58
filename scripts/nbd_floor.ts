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
 *
 * Benchmark scaffolding only: no product code depends on it.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as net from "node:net";
import process from "node:process";
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

/** Sheepdog's NBD server over the file itself. */
async function serveSession(fd: number, size: number, port: number): Promise<void> {
  const done = Promise.resolve();
  const file: BlockExport = {
    name: "",
    sizeBytes: size,
    readOnly: false,
    read: (offset, length) => {
      const data = Buffer.allocUnsafe(length);
      fs.readSync(fd, data, 0, length, offset);
      return Promise.resolve(data);
    },
    readNow: (offset, length) => {
      const data = Buffer.allocUnsafe(length);
      fs.readSync(fd, data, 0, length, offset);
      return data;
    },
    write: (offset, data) => {
      fs.writeSync(fd, data, 0, data.length, offset);
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
if ((mode !== "bare" && mode !== "session") || !path || !portText) {
  console.error("usage: node floor.mjs bare|session FILE PORT");
  process.exit(2);
}
const fd = fs.openSync(path, "r+");
const size = fs.fstatSync(fd).size;
if (mode === "bare") serveBare(fd, size, Number(portText));
else await serveSession(fd, size, Number(portText));
