/**
 * The NBD export of a sheep's VDIs: export name = VDI name (writable, one writer at a time),
 * `NAME:SNAP` = a snapshot by id or tag (read-only). I/O goes through `VdiIo` over the sheep's
 * in-process client, so an NBD request takes no network hop to reach the gateway.
 *
 * @module
 */

import { isResult, promiseOf, ResultCode, SheepdogError } from "../../core/errors.ts";
import { type InodeHeader, isSnapshot } from "../../core/vdi/inode.ts";
import { type ObjectAccess, VdiIo } from "../../core/vdi/io.ts";
import type { Vid } from "../../core/vdi/oid.ts";
import type { ReplicatedStateReader } from "../../core/cluster/cluster_state_machine.ts";
import { parseVdiRef } from "../admin/admin_service.ts";
import {
  type BlockExport,
  ExportError,
  type ExportInfo,
  type ExportProvider,
  type Extent,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_EPERM,
  type NbdAddress,
  NbdIoError,
  type NbdListenOptions,
  type NbdLogger,
  NbdServer,
  type NbdTls,
} from "../nbd/mod.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { Changes } from "./changes.ts";
import type { Logger } from "./logger.ts";
import { instrumentExport } from "./nbd_metrics.ts";

/**
 * What the NBD export uses of its sheep: the VDI table and attach locks (read), the attach lock
 * operations, VDI I/O into the gateway, and the sheep's name, logger and metrics.
 */
export interface ExportHost {
  readonly id: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly registry: ReplicatedStateReader["registry"];
  readonly locks: ReplicatedStateReader["locks"];
  /** Notified when the replicated state (locks included) changes. */
  readonly stateChanges: Pick<Changes, "until">;
  /** VDI I/O without an object-protocol hop. */
  readonly localAccess: ObjectAccess;
  lockVdi(vid: Vid, client: string, options?: { force?: boolean }): Promise<void>;
  unlockVdi(vid: Vid, client?: string): Promise<void>;
  /** Releases a client's lock now, or as soon as the cluster takes changes again. */
  releaseVdi(vid: Vid, client: string): Promise<void>;
}

/** How a VdiExportProvider treats writers. */
export interface VdiExportOptions {
  /**
   * Lets a second client open a VDI writable while another has it (operator override, e.g. for
   * a cluster file system on top). Default false: a second client gets the VDI read-only.
   */
  forceShared?: boolean;
}

/** One client that has a VDI open writable. */
interface Writer {
  /** "ADDR:PORT" or "unix", as the NBD server names the client. */
  client: string;
  /** Its name in the VDI's lock. */
  lockClient: string;
  /** True while the VDI's lock is recorded for this writer. */
  locked: boolean;
}

/** Retries of one request across snapshots taken beneath it. */
const FOLLOW_ATTEMPTS = 5;
/** WRITE_ZEROES with NO_HOLE writes real zeros in slices of this size, from one shared buffer. */
const ZERO_SLICE = 1024 * 1024;
let zeroSlice: Uint8Array | undefined;

/** Maps a storage error to the NBD error value a client sees, keeping the message. */
export function toNbdError(error: unknown): unknown {
  if (!(error instanceof SheepdogError)) return error;
  const errno = error.code === ResultCode.READONLY
    ? NBD_EPERM
    : error.code === ResultCode.NO_SPACE
    ? NBD_ENOSPC
    : error.code === ResultCode.INVALID_PARMS
    ? NBD_EINVAL
    : NBD_EIO;
  return new NbdIoError(errno, error.message, { cause: error });
}

/**
 * Exports every live VDI (writable) and snapshot (read-only) of one sheep. A writable open takes
 * the VDI's cluster-wide lock (`ExportHost.lockVdi`), so `shepherd info -t vm` shows "running on
 * ADDR:PORT" and a writer through another sheep is refused too; the lock follows the VDI to its
 * new vid when it is snapshotted (the sheep moves it) and goes when the client disconnects.
 */
export class VdiExportProvider implements ExportProvider {
  readonly #sheep: ExportHost;
  readonly #forceShared: boolean;
  /** Writable opens through this provider by VDI name, oldest first. */
  readonly #writers = new Map<string, Writer[]>();

  constructor(sheep: ExportHost, options: VdiExportOptions = {}) {
    this.#sheep = sheep;
    this.#forceShared = options.forceShared ?? false;
  }

  list(): Promise<ExportInfo[]> {
    const exports: ExportInfo[] = [];
    for (const header of this.#sheep.registry.live()) {
      if (isSnapshot(header)) {
        const what = header.tag === "" ? `snapshot ${header.snapId}` : `snapshot '${header.tag}'`;
        exports.push({
          name: `${header.name}:${header.snapId}`,
          description: `${what} of ${header.name}`,
          sizeBytes: header.vdiSize,
          readOnly: true,
        });
      } else {
        const holder = this.#holderOf(header);
        exports.push({
          name: header.name,
          description: holder === undefined ? "VDI" : `VDI, attached by ${holder}`,
          sizeBytes: header.vdiSize,
          // What a new client gets: read-only while another client writes (#openReadOnly).
          readOnly: holder !== undefined && !this.#forceShared,
        });
      }
    }
    return Promise.resolve(exports);
  }

  async open(name: string, options: { client: string }): Promise<BlockExport> {
    return instrumentExport(await this.#open(name, options), this.#sheep.metrics);
  }

  async #open(name: string, options: { client: string }): Promise<BlockExport> {
    const working = this.#working(name);
    if (working !== undefined) return await this.#openWritable(working, options.client);
    const { name: vdiName, ref } = parseVdiRef(name);
    if (ref === undefined) throw ExportError.unknown(name);
    const access = this.#sheep.localAccess;
    let io: VdiIo;
    try {
      io = await VdiIo.open(access, vdiName, ref);
    } catch (error) {
      throw this.#openError(name, error);
    }
    return new VdiExport(name, io, { readOnly: true, onClose: () => Promise.resolve() });
  }

  /** Who has the working VDI `header` attached, if anyone. */
  #holderOf(header: InodeHeader): string | undefined {
    return this.#writers.get(header.name)?.[0]?.client ??
      this.#sheep.locks.get(header.vdiId)?.client;
  }

  /** The working VDI exactly named `name`, if there is one. */
  #working(name: string): InodeHeader | undefined {
    try {
      return this.#sheep.registry.lookup(name);
    } catch {
      return undefined;
    }
  }

  #openError(name: string, error: unknown): unknown {
    if (isResult(error, ResultCode.NO_VDI, ResultCode.NO_TAG)) {
      return new ExportError("unknown", `export "${name}" does not exist: ${error.message}`);
    }
    return error;
  }

  /** The lock owner a client is recorded as: unique per connection, cluster-wide. */
  #lockClient(client: string): string {
    return client === "unix" ? `unix@${this.#sheep.id}` : client;
  }

  async #openWritable(working: InodeHeader, client: string): Promise<BlockExport> {
    const name = working.name;
    const local = this.#writers.get(name) ?? [];
    if (local.length > 0 && !this.#forceShared) {
      return await this.#openReadOnly(working, client, local[0]!.client);
    }
    // Registered before the first await, so two clients racing here cannot both win.
    const writer: Writer = { client, lockClient: this.#lockClient(client), locked: false };
    this.#writers.set(name, [...local, writer]);
    try {
      if (local.length === 0) {
        try {
          await this.#sheep.lockVdi(working.vdiId, writer.lockClient);
          writer.locked = true;
        } catch (error) {
          // Attached through another sheep (or by an old client's LOCK_VDI).
          if (!isResult(error, ResultCode.VDI_LOCKED)) throw error;
          if (!this.#forceShared && await this.#lockHandedOver(working.vdiId)) {
            await this.#sheep.lockVdi(working.vdiId, writer.lockClient);
            writer.locked = true;
          } else if (!this.#forceShared) {
            await this.#release(name, writer, working.vdiId);
            const holder = this.#sheep.locks.get(working.vdiId)?.client ?? "another client";
            return await this.#openReadOnly(working, client, holder);
          }
        }
      }
      const io = await VdiIo.open(this.#sheep.localAccess, name);
      return new VdiExport(name, io, {
        readOnly: false,
        follow: (vid) => this.#follow(name, io, vid),
        onClose: () => this.#release(name, writer, working.vdiId),
      });
    } catch (error) {
      await this.#release(name, writer, working.vdiId).catch(() => undefined);
      throw this.#openError(name, error);
    }
  }

  /**
   * Waits a moment for another client's lock to go: a client that just disconnected (a VM
   * moving to another host, a tool run after another) releases it through a cluster event that
   * may still be on its way. True when the lock is gone.
   */
  #lockHandedOver(vid: Vid): Promise<boolean> {
    return this.#sheep.stateChanges.until(() => !this.#sheep.locks.has(vid), LOCK_HANDOVER_MS);
  }

  /**
   * A second client of a VDI another client writes: NBD cannot say whether a client means to
   * write, so it gets the VDI read-only (NBD_FLAG_READ_ONLY; `qemu-io -r` and `nbdinfo` work,
   * a writer's open fails on the read-only flag), and the log says who holds it for writing.
   */
  async #openReadOnly(working: InodeHeader, client: string, holder: string): Promise<BlockExport> {
    this.#sheep.logger.info(
      `NBD client ${client} attached '${working.name}' read-only: ${holder} has it attached ` +
        "for writing",
    );
    let io: VdiIo;
    try {
      io = await VdiIo.open(this.#sheep.localAccess, working.name);
    } catch (error) {
      throw this.#openError(working.name, error);
    }
    return new VdiExport(working.name, io, { readOnly: true, onClose: () => Promise.resolve() });
  }

  /**
   * Forgets a writer. Its lock goes, or passes to the next writer of this provider (forced
   * sharing). The lock is found by name: after a snapshot it sits on a newer vid than at open.
   */
  async #release(name: string, writer: Writer, openedVid: Vid): Promise<void> {
    const rest = (this.#writers.get(name) ?? []).filter((w) => w !== writer);
    if (rest.length > 0) this.#writers.set(name, rest);
    else this.#writers.delete(name);
    if (!writer.locked) return;
    writer.locked = false;
    const vid = this.#working(name)?.vdiId ?? openedVid;
    const next = rest[0];
    if (next !== undefined) {
      await this.#sheep.lockVdi(vid, next.lockClient, { force: true });
      next.locked = true;
      return;
    }
    await this.#sheep.releaseVdi(vid, writer.lockClient);
    // A rollback replaced the VDI: the lock may still be on the vid it was taken on.
    if (vid !== openedVid) await this.#sheep.releaseVdi(openedVid, writer.lockClient);
  }

  /**
   * Called when a request on `io` failed in a way a snapshot taken beneath it explains. True
   * when the VDI has moved to a new working vid and `io` now has its inode (retry the
   * request); false when nothing moved (the error is real).
   */
  async #follow(name: string, io: VdiIo, vid: Vid): Promise<boolean> {
    const working = this.#working(name);
    if (working === undefined) return false; // deleted: nothing to follow
    if (working.vdiId === vid && io.inode.vdiId === vid) return false;
    // The new working inode is durable before the registry changes (DURABILITY.md): it is
    // there to read as soon as the registry names it.
    if (io.inode.vdiId !== working.vdiId) await io.reload();
    return io.inode.vdiId !== vid;
  }
}

/** What a VdiExport needs from its provider. */
interface VdiExportHooks {
  readOnly: boolean;
  /** Follows the VDI to a new working vid after a failure under `vid` (writable only). */
  follow?: (vid: Vid) => Promise<boolean>;
  /** Releases the VDI's lock. */
  onClose: () => Promise<void>;
}

/** One client's view of a VDI or snapshot. */
class VdiExport implements BlockExport {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly #io: VdiIo;
  readonly #hooks: VdiExportHooks;
  #closed = false;
  #following: { vid: Vid; moved: Promise<boolean> } | undefined;

  constructor(name: string, io: VdiIo, hooks: VdiExportHooks) {
    this.name = name;
    this.#io = io;
    this.sizeBytes = io.sizeBytes;
    this.readOnly = hooks.readOnly;
    this.#hooks = hooks;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    return await this.#run(() => this.#io.read(offset, length));
  }

  readNow(offset: number, length: number): Uint8Array | undefined {
    return this.#io.readNow(offset, length);
  }

  async write(offset: number, data: Uint8Array, options: { fua: boolean }): Promise<void> {
    await this.#run(() => this.#io.write(offset, data));
    if (options.fua) await this.flush();
  }

  async flush(): Promise<void> {
    await this.#run(() => this.#io.flush());
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.#run(() => this.#io.discard(offset, length, { zeroPartial: false }));
  }

  async writeZeroes(
    offset: number,
    length: number,
    options: { fua: boolean; noHole: boolean },
  ): Promise<void> {
    if (options.noHole) {
      await this.#run(() => this.#writeRealZeros(offset, length));
    } else {
      await this.#run(() => this.#io.discard(offset, length, { zeroPartial: true }));
    }
    if (options.fua) await this.flush();
  }

  async #writeRealZeros(offset: number, length: number): Promise<void> {
    zeroSlice ??= new Uint8Array(ZERO_SLICE);
    const slices: Promise<void>[] = [];
    for (let done = 0; done < length; done += ZERO_SLICE) {
      const part = Math.min(ZERO_SLICE, length - done);
      slices.push(this.#io.write(offset + done, zeroSlice.subarray(0, part)));
    }
    await Promise.all(slices);
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    try {
      const runs = this.#io.allocation(offset, Math.min(length, this.sizeBytes - offset));
      return Promise.resolve(runs.map((run) => ({
        length: run.length,
        hole: !run.allocated,
        zero: !run.allocated,
      })));
    } catch (error) {
      return Promise.reject(toNbdError(error));
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // The lock goes first: a client that reconnects at once is not refused by its old self.
    await this.#hooks.onClose().catch(() => undefined);
    // What the client wrote survives it, as with qemu-nbd (which flushes on close).
    if (!this.readOnly) await this.#io.flush().catch(() => undefined);
  }

  /** One follow at a time: the requests that failed under the same vid share it. */
  #follow(follow: (vid: Vid) => Promise<boolean>, vid: Vid): Promise<boolean> {
    const current = this.#following;
    if (current !== undefined && current.vid === vid) return current.moved;
    const moved = follow(vid).finally(() => {
      if (this.#following?.moved === moved) this.#following = undefined;
    });
    this.#following = { vid, moved };
    return moved;
  }

  /**
   * Runs a request (ordering is not this layer's job: the NBD session orders overlapping byte
   * ranges in arrival order, and `VdiIo` makes an allocation, with the table write that records
   * it, and a discard atomic for every writer of the object); when a snapshot taken beneath a
   * writable export explains its failure,
   * follows the VDI to its new working vid and runs it again. Errors leave as NBD errors.
   */
  #run<T>(operation: () => Promise<T>): Promise<T> {
    // The first attempt without a wrapper: the hot path, nearly every request succeeds at once.
    const vid = this.#io.inode.vdiId;
    return promiseOf(operation).catch((error) => this.#runAgain(operation, error, vid));
  }

  /** `#run` after its first attempt failed under `failedVid` (see there). */
  async #runAgain<T>(operation: () => Promise<T>, failure: unknown, failedVid: Vid): Promise<T> {
    let error = failure;
    let vid = failedVid;
    for (let attempt = 1;; attempt++) {
      const follow = this.#hooks.follow;
      const movable = isResult(error, ResultCode.READONLY, ResultCode.NO_OBJ);
      if (follow === undefined || !movable || attempt >= FOLLOW_ATTEMPTS) {
        throw toNbdError(error);
      }
      let moved: boolean;
      try {
        moved = await this.#follow(follow, vid);
      } catch {
        throw toNbdError(error);
      }
      if (!moved) throw toNbdError(error);
      vid = this.#io.inode.vdiId;
      try {
        return await operation();
      } catch (next) {
        error = next;
      }
    }
  }
}

/** A running NBD service of one sheep. */
export interface NbdService {
  readonly address: NbdAddress;
  readonly provider: VdiExportProvider;
  readonly server: NbdServer;
  /** Stops listening and closes every connection (their VDIs are flushed and unlocked). */
  close(): Promise<void>;
}

/** How long a new writer waits for a lock that is being released before it is read-only. */
const LOCK_HANDOVER_MS = 2_000;

/** Adapts the sheep's logger (lines only) to the NBD server's (message and fields). */
function nbdLoggerOf(logger: Logger): NbdLogger {
  const line = (message: string, data?: Record<string, unknown>) =>
    data === undefined || Object.keys(data).length === 0
      ? message
      : `${message} ${JSON.stringify(data)}`;
  return {
    debug: (message, data) => logger.debug(line(message, data)),
    info: (message, data) => logger.info(line(message, data)),
    warn: (message, data) => logger.warn(line(message, data)),
    error: (message, data) => logger.error(line(message, data)),
  };
}

/**
 * Serves `sheep`'s VDIs over NBD on TCP (`{ host, port }`; port 0 picks one, 10809 is NBD's)
 * or a Unix socket (`{ path }`). With `tls`, every client must start TLS; how each connection
 * fared is counted in the sheep's metrics.
 */
export async function startNbdService(
  sheep: ExportHost,
  listen: NbdListenOptions,
  options: VdiExportOptions & { logger?: NbdLogger; tls?: NbdTls } = {},
): Promise<NbdService> {
  const provider = new VdiExportProvider(sheep, options);
  const server = new NbdServer({
    provider,
    logger: options.logger ?? nbdLoggerOf(sheep.logger),
    ...(options.tls !== undefined
      ? { tls: options.tls, onTls: (event) => sheep.metrics.nbdTls(event.outcome) }
      : {}),
  });
  const address = await server.listen(listen);
  return { address, provider, server, close: () => server.close() };
}
