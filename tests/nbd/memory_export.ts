/**
 * Test double for the storage side: sparse in-memory volumes tracked in 64 KiB chunks (so block
 * status reports real holes), read-only volumes, and a one-writer lock that refuses a second
 * writer with a message naming the holder. Hooks let tests delay, gate or fail operations.
 */
import { Buffer } from "node:buffer";
import {
  type BlockExport,
  ExportError,
  type ExportInfo,
  type ExportProvider,
  type Extent,
} from "../../net/nbd/mod.ts";

export const CHUNK = 64 * 1024;

export type OpName =
  | "read"
  | "readNow"
  | "write"
  | "flush"
  | "trim"
  | "writeZeroes"
  | "blockStatus";

export interface OpEvent {
  op: OpName;
  volume: string;
  offset: number;
  length: number;
  fua?: boolean;
  noHole?: boolean;
}

export class MemoryVolume {
  readonly chunks = new Map<number, Uint8Array>();
  /** "ADDR:PORT" of the client holding the write lock, or null. */
  holder: string | null = null;

  constructor(
    readonly name: string,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
    readonly description: string,
  ) {}

  read(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.#each(offset, length, (chunk, at, len, pos) => {
      const c = this.chunks.get(chunk);
      if (c !== undefined) out.set(c.subarray(at, at + len), pos);
    });
    return out;
  }

  write(offset: number, data: Uint8Array): void {
    this.#each(offset, data.length, (chunk, at, len, pos) => {
      let c = this.chunks.get(chunk);
      if (c === undefined) {
        c = new Uint8Array(CHUNK);
        this.chunks.set(chunk, c);
      }
      c.set(data.subarray(pos, pos + len), at);
    });
  }

  /** Drops whole chunks, zeroes partial ones: reads back as zeroes, holes where possible. */
  punch(offset: number, length: number): void {
    this.#each(offset, length, (chunk, at, len) => {
      if (len === CHUNK) this.chunks.delete(chunk);
      else this.chunks.get(chunk)?.fill(0, at, at + len);
    });
  }

  /** Allocates and zeroes (write zeroes with NO_HOLE). */
  zero(offset: number, length: number): void {
    this.#each(offset, length, (chunk, at, len) => {
      const c = this.chunks.get(chunk);
      if (c === undefined) this.chunks.set(chunk, new Uint8Array(CHUNK));
      else c.fill(0, at, at + len);
    });
  }

  blockStatus(offset: number, length: number): Extent[] {
    const out: Extent[] = [];
    this.#each(offset, length, (chunk, _at, len) => {
      const hole = !this.chunks.has(chunk);
      const last = out[out.length - 1];
      if (last !== undefined && last.hole === hole) last.length += len;
      else out.push({ length: len, hole, zero: hole });
    });
    return out;
  }

  /** Allocated chunk indexes, sorted. */
  allocated(): number[] {
    return [...this.chunks.keys()].sort((a, b) => a - b);
  }

  #each(
    offset: number,
    length: number,
    fn: (chunk: number, at: number, len: number, pos: number) => void,
  ): void {
    let pos = 0;
    while (pos < length) {
      const abs = offset + pos;
      const chunk = Math.floor(abs / CHUNK);
      const at = abs - chunk * CHUNK;
      const len = Math.min(CHUNK - at, length - pos);
      fn(chunk, at, len, pos);
      pos += len;
    }
  }
}

export class MemoryExport implements BlockExport {
  closeCount = 0;

  constructor(
    readonly provider: MemoryExportProvider,
    readonly volume: MemoryVolume,
    readonly client: string,
    readonly readOnly: boolean,
  ) {}

  get name(): string {
    return this.volume.name;
  }

  get sizeBytes(): number {
    return this.volume.sizeBytes;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.provider.run({ op: "read", volume: this.name, offset, length }, () => {
      this.#check(offset, length);
      return this.volume.read(offset, length);
    });
  }

  /** Answers at once when the provider says so (`readsNow`), else leaves it to `read`. */
  readNow(offset: number, length: number): Uint8Array | undefined {
    const answer = this.provider.readsNow?.(offset, length);
    if (answer === undefined) return undefined;
    if (this.provider.recordEvents) {
      this.provider.events.push({ op: "readNow", volume: this.name, offset, length });
    }
    if (answer === "throw") throw new Error("readNow failed");
    this.#check(offset, length);
    return this.volume.read(offset, length);
  }

  write(offset: number, data: Uint8Array, options: { fua: boolean }): Promise<void> {
    // Copy now: the session may hand us a view of its input buffer.
    const copy = Buffer.from(data);
    return this.provider.run(
      { op: "write", volume: this.name, offset, length: data.length, fua: options.fua },
      () => {
        this.#check(offset, data.length, true);
        this.volume.write(offset, copy);
      },
    );
  }

  flush(): Promise<void> {
    return this.provider.run({ op: "flush", volume: this.name, offset: 0, length: 0 }, () => {});
  }

  trim(offset: number, length: number): Promise<void> {
    return this.provider.run({ op: "trim", volume: this.name, offset, length }, () => {
      this.#check(offset, length, true);
      this.volume.punch(offset, length);
    });
  }

  writeZeroes(
    offset: number,
    length: number,
    options: { fua: boolean; noHole: boolean },
  ): Promise<void> {
    return this.provider.run(
      { op: "writeZeroes", volume: this.name, offset, length, ...options },
      () => {
        this.#check(offset, length, true);
        if (options.noHole) this.volume.zero(offset, length);
        else this.volume.punch(offset, length);
      },
    );
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.provider.run({ op: "blockStatus", volume: this.name, offset, length }, () => {
      this.#check(offset, length, false, 2 ** 32 - 1);
      return this.volume.blockStatus(offset, length);
    });
  }

  close(): Promise<void> {
    this.closeCount++;
    this.provider.closes.push({ volume: this.name, client: this.client });
    if (this.closeCount === 1 && !this.readOnly && this.volume.holder === this.client) {
      this.volume.holder = null;
    }
    return Promise.resolve();
  }

  /** The session must never pass bad ranges, nor call after close. */
  #check(offset: number, length: number, write = false, max = 32 * 1024 * 1024): void {
    const bad = this.closeCount > 0 ? "I/O after close" : offset < 0 || length < 0 ||
        offset + length > this.sizeBytes
      ? `range ${offset}+${length} outside ${this.sizeBytes}`
      : length > max
      ? `length ${length} over ${max}`
      : write && this.readOnly
      ? "write to a read-only export"
      : null;
    if (bad !== null) {
      this.provider.violations.push(bad);
      throw new Error(`contract violation: ${bad}`);
    }
  }
}

export class MemoryExportProvider implements ExportProvider {
  readonly volumes = new Map<string, MemoryVolume>();
  readonly events: OpEvent[] = [];
  readonly opened: MemoryExport[] = [];
  readonly closes: { volume: string; client: string }[] = [];
  /** Contract violations by the session (ranges, I/O after close...): must stay empty. */
  readonly violations: string[] = [];
  /** Runs before every operation: may delay it (return a promise) or throw to fail it. */
  beforeOp: ((e: OpEvent) => Promise<void> | void) | null = null;
  /**
   * Whether an export answers a read at once (`BlockExport.readNow`): "bytes" or "throw"; unset
   * or undefined, it leaves the read to `read`.
   */
  readsNow: ((offset: number, length: number) => "bytes" | "throw" | undefined) | null = null;
  active = 0;
  maxActive = 0;
  recordEvents = true;

  add(
    name: string,
    sizeBytes: number,
    options: { readOnly?: boolean; description?: string } = {},
  ): MemoryVolume {
    const v = new MemoryVolume(
      name,
      sizeBytes,
      options.readOnly ?? false,
      options.description ?? "",
    );
    this.volumes.set(name, v);
    return v;
  }

  volume(name: string): MemoryVolume {
    const v = this.volumes.get(name);
    if (v === undefined) throw new Error(`no volume ${name}`);
    return v;
  }

  list(): Promise<ExportInfo[]> {
    return Promise.resolve(
      [...this.volumes.values()].map((v) => ({
        name: v.name,
        description: v.description,
        sizeBytes: v.sizeBytes,
        readOnly: v.readOnly,
      })),
    );
  }

  open(name: string, options: { client: string }): Promise<BlockExport> {
    const v = this.volumes.get(name);
    if (v === undefined) return Promise.reject(ExportError.unknown(name));
    if (!v.readOnly) {
      if (v.holder !== null) return Promise.reject(ExportError.locked(name, v.holder));
      v.holder = options.client;
    }
    const exp = new MemoryExport(this, v, options.client, v.readOnly);
    this.opened.push(exp);
    return Promise.resolve(exp);
  }

  async run<T>(e: OpEvent, body: () => T): Promise<T> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      if (this.recordEvents) this.events.push(e);
      const hook = this.beforeOp;
      if (hook !== null) await hook(e);
      return body();
    } finally {
      this.active--;
    }
  }
}

/** A promise opened later by the test: `gate.open()`. */
export class Gate {
  readonly promise: Promise<void>;
  open!: () => void;
  constructor() {
    this.promise = new Promise((resolve) => (this.open = resolve));
  }
}
