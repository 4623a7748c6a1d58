/**
 * Goal: a client that pipelines thousands of large reads and never reads the replies costs the
 * server a bounded amount of memory, is cut off once its replies stall, and gives every byte
 * back when it goes. Method: an ObjectServer on 127.0.0.1 whose handler answers every read
 * with a 4 MiB payload; a raw socket sends 3,000 read headers and never reads.
 */

import assert from "node:assert/strict";
import * as net from "node:net";
import { CONNECTION_BUFFER_BYTES_MAX, MESSAGE_BYTES_MAX } from "../../core/limits.ts";
import { requestHeader } from "./client.ts";
import type { Message } from "./header.ts";
import { Opcode } from "./ops.ts";
import { ObjectServer } from "./server.ts";
import { Changes } from "../sheep/changes.ts";

const REPLY = 4 * 1024 * 1024;

Deno.test("ObjectServer: unread replies are bounded, stall the client off, and are given back", async () => {
  let handled = 0;
  let peak = 0;
  const changes = new Changes();
  const errors: string[] = [];
  const server = new ObjectServer(
    (request: Message) => {
      handled++;
      changes.notify();
      const reply = request.header.reply(0, 1);
      return Promise.resolve({ header: reply, data: new Uint8Array(REPLY) });
    },
    {
      onError: (message) => {
        errors.push(message);
        changes.notify();
      },
      replyStallMs: 1_500,
    },
  );
  const bound = await server.listen({ host: "127.0.0.1", port: 0 });
  const watch = setInterval(() => peak = Math.max(peak, server.budget.used), 5);
  const socket = net.connect({ host: "127.0.0.1", port: bound.port });
  try {
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    socket.pause(); // never read a reply
    const requests = new Uint8Array(3000 * 48);
    for (let i = 0; i < 3000; i++) {
      const header = requestHeader(Opcode.READ_OBJ);
      header.id = i;
      header.dataLength = REPLY;
      requests.set(header.bytes, i * 48);
    }
    socket.write(requests);
    // The client stalls: the server cuts it off after the stall time.
    assert.ok(
      await changes.until(() => errors.some((e) => /has not read its replies/.test(e)), 20_000),
      errors.join("\n"),
    );
    assert.ok(handled < 3000, `the server stopped reading: ${handled} of 3000 handled`);
    const bound_ = CONNECTION_BUFFER_BYTES_MAX + MESSAGE_BYTES_MAX + REPLY;
    assert.ok(peak <= bound_, `held at most ${peak} bytes (bound ${bound_})`);
    assert.ok(
      await changes.until(() => server.budget.used === 0, 5_000) || server.budget.used === 0,
    );
    assert.equal(server.budget.used, 0, "every byte is given back");
  } finally {
    clearInterval(watch);
    socket.destroy();
    await server.close();
  }
});
