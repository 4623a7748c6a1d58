/**
 * VDI I/O straight into this sheep's gateway: what the NBD export uses, so a VM's request takes
 * no object-protocol encode/decode and no trip through the op table on its way to the replicas
 * (ARCHITECTURE §11). Remote clients reach the same gateway through the object protocol.
 *
 * @module
 */

import { promiseOf } from "../../core/errors.ts";
import type { ObjectAccess } from "../../core/vdi/io.ts";
import type { Oid, Vid } from "../../core/vdi/oid.ts";
import type { SnapshotRef, VdiRegistry } from "../../core/vdi/registry.ts";
import type { Gateway } from "./gateway.ts";

export class GatewayAccess implements ObjectAccess {
  readonly #gateway: Gateway;
  readonly #registry: VdiRegistry;
  readonly #checkServing: () => void;

  /** `checkServing` throws the reason this sheep cannot serve clients now (as the op table does). */
  constructor(gateway: Gateway, registry: VdiRegistry, checkServing: () => void) {
    this.#gateway = gateway;
    this.#registry = registry;
    this.#checkServing = checkServing;
  }

  // Reads and writes hand the gateway's promise straight back: no async frame of their own.
  readObject(oid: Oid, offset: number, length: number): Promise<Uint8Array> {
    return promiseOf(() => {
      this.#checkServing();
      return this.#gateway.read(oid, offset, length);
    });
  }

  readObjectNow(oid: Oid, offset: number, length: number): Uint8Array | undefined {
    this.#checkServing();
    return this.#gateway.readNow(oid, offset, length);
  }

  writeObject(oid: Oid, data: Uint8Array, offset: number): Promise<void> {
    return promiseOf(() => {
      this.#checkServing();
      return this.#gateway.write(oid, data, offset);
    });
  }

  async createObject(oid: Oid, data: Uint8Array, offset: number, cowFrom?: Oid): Promise<void> {
    this.#checkServing();
    await this.#gateway.create(oid, data, offset, cowFrom);
  }

  async removeObject(oid: Oid): Promise<void> {
    this.#checkServing();
    await this.#gateway.remove(oid);
  }

  async flush(vid?: Vid): Promise<void> {
    this.#checkServing();
    await this.#gateway.flush(vid);
  }

  lookupVdi(name: string, ref?: SnapshotRef): Promise<Vid> {
    return promiseOf(() => {
      this.#checkServing();
      return Promise.resolve(this.#registry.lookup(name, ref).vdiId);
    });
  }
}
