/**
 * VDI administration on the sheep side: an event is applied to the registry (in total order, on
 * every node, through `submit`), then the proposing node writes the inode objects it implies
 * and, for a delete, sweeps the data no live inode of the family references any more.
 *
 * @module
 */

import {
  decodeInode,
  encodeInode,
  encodeInodeHeader,
  type Inode,
  INODE_SIZE,
  isSnapshot,
} from "../../core/vdi/inode.ts";
import { trimTrailingZeros } from "../../core/bytes.ts";
import { DATA_OBJECTS_PER_VDI_MAX } from "../../core/limits.ts";
import { tombstone, unreferencedObjects } from "../../core/vdi/cow.ts";
import { vdiOid, type Vid } from "../../core/vdi/oid.ts";
import type { VdiChange, VdiEvent, VdiRegistry } from "../../core/vdi/registry.ts";
import type { Gateway } from "./gateway.ts";

/** Applies an event everywhere and resolves with the local result. */
export type SubmitEvent = (event: VdiEvent) => Promise<VdiChange>;

export class VdiService {
  readonly #registry: VdiRegistry;
  readonly #gateway: Gateway;
  readonly #submit: SubmitEvent;
  /** VDI administration is serialised per sheep: each step reads what the last one wrote. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: { registry: VdiRegistry; gateway: Gateway; submit: SubmitEvent }) {
    this.#registry = options.registry;
    this.#gateway = options.gateway;
    this.#submit = options.submit;
  }

  #serialised<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(work, work);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async readInode(vid: Vid): Promise<Inode> {
    return decodeInode(await this.#gateway.read(vdiOid(vid), 0, INODE_SIZE));
  }

  /** Creates, snapshots, clones, rolls back or resizes; resolves with the vid asked about. */
  change(event: VdiEvent): Promise<Vid> {
    return this.#serialised(async () => {
      if (event.type === "delete") return await this.#delete(event.vid);
      if (event.type === "rollback") {
        // Rolling back deletes the working VDI first, reclaiming what only it referenced.
        const name = this.#registry.get(event.snapshotVid)?.name ?? "";
        const working = this.#registry.live().find((h) => h.name === name && !isSnapshot(h));
        if (working) {
          await this.#delete(working.vdiId);
          return await this.#applyAndWrite({ ...event, afterSnapId: working.snapId });
        }
      }
      return await this.#applyAndWrite(event);
    });
  }

  async #applyAndWrite(event: VdiEvent): Promise<Vid> {
    const change = await this.#submit(event);
    await this.#writeInodes(change);
    return change.vid;
  }

  async #writeInodes(change: VdiChange): Promise<void> {
    for (const header of change.updated) {
      // Only the header changes (a freeze, a resize); the table after it stays as it is.
      await this.#gateway.writeAt(vdiOid(header.vdiId), encodeInodeHeader(header), 0);
    }
    for (const header of change.created) {
      const table = change.copyTableFrom === undefined
        ? new Uint32Array(DATA_OBJECTS_PER_VDI_MAX)
        : (await this.readInode(change.copyTableFrom)).dataVdiId;
      // Inodes are stored sparse: the zero tail of an unallocated table is not written.
      const bytes = encodeInode({ ...header, dataVdiId: table });
      await this.#gateway.createAt(vdiOid(header.vdiId), trimTrailingZeros(bytes), 0);
    }
  }

  async #delete(vid: Vid): Promise<Vid> {
    const doomed = await this.readInode(vid);
    const change = await this.#submit({ type: "delete", vid });
    const dead = tombstone(doomed);
    // The tombstone replaces the inode whole: its table is gone, so nothing references through it.
    await this.#gateway.createAt(vdiOid(vid), encodeInodeHeader(dead), 0);
    const family: Inode[] = [];
    for (const header of this.#registry.family(vid)) {
      family.push(await this.readInode(header.vdiId));
    }
    for (const oid of unreferencedObjects(doomed, family)) await this.#gateway.remove(oid);
    return change.vid;
  }
}
