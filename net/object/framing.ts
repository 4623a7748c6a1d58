/**
 * Splits a byte stream into messages: a 48-byte header, then the payload whose length the
 * header implies. Chunks are joined only when a message spans them, so a large payload arriving
 * in one chunk is passed on as a view, not copied (net/received_bytes.ts).
 *
 * @module
 */

import { ReceivedBytes } from "../received_bytes.ts";
import { MESSAGE_BYTES_MAX } from "../../core/limits.ts";
import { Flag } from "./ops.ts";
import { Header, HEADER_SIZE, type Message } from "./header.ts";

/** Bytes that follow a request header: only a write request carries its payload. */
export function requestPayloadLength(header: Header): number {
  return header.flags & Flag.WRITE ? header.dataLength : 0;
}

/** Bytes that follow a response header: always `data_length`. */
export function responsePayloadLength(header: Header): number {
  return header.dataLength;
}

/** Raised for a stream that cannot be a valid sequence of messages; the connection must close. */
export class FramingError extends Error {
  override name = "FramingError";
}

/** Incremental message parser. */
export class FrameReader {
  readonly #payloadLength: (header: Header) => number;
  readonly #bytes = new ReceivedBytes();
  #header: Header | undefined;

  constructor(payloadLength: (header: Header) => number) {
    this.#payloadLength = payloadLength;
  }

  /** Bytes received but not yet returned as messages. */
  get bufferedBytes(): number {
    return this.#bytes.length;
  }

  /** Adds a chunk and returns every message it completes. Throws FramingError on bad input. */
  push(chunk: Uint8Array): Message[] {
    if (chunk.length > 0) this.#bytes.add(chunk);
    const messages: Message[] = [];
    for (;;) {
      if (!this.#header) {
        if (this.#bytes.length < HEADER_SIZE) break;
        this.#header = new Header(this.#bytes.take(HEADER_SIZE).slice());
        const length = this.#payloadLength(this.#header);
        if (length > MESSAGE_BYTES_MAX) {
          throw new FramingError(`Message payload of ${length} bytes exceeds ${MESSAGE_BYTES_MAX}`);
        }
        this.#bytes.gather(length);
      }
      const length = this.#payloadLength(this.#header);
      if (this.#bytes.length < length) break;
      const data = length === 0 ? new Uint8Array(0) : this.#bytes.take(length);
      messages.push({ header: this.#header, data });
      this.#header = undefined;
    }
    return messages;
  }
}
