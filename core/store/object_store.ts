/**
 * The storage engine's contract: objects addressed by oid, created atomically, written and read
 * positionally, made durable by `flush`. Implementations: `FsObjectStore` (files under DIR/obj/).
 *
 * @module
 */

import type { Oid } from "../vdi/oid.ts";

/** Space on the store's file system. */
export interface StoreSpace {
  usedBytes: number;
  freeBytes: number;
  totalBytes: number;
}

/** The object store of one sheep. Errors are SheepdogErrors (NO_OBJ, NO_SPACE, EIO). */
export interface ObjectStore {
  /**
   * Creates (or atomically replaces) `oid` so that it holds `data` at `offset` and zeros
   * elsewhere. The object becomes visible only complete: a crash leaves the old one or none.
   */
  create(oid: Oid, data: Uint8Array, offset: number): Promise<void>;
  /** Writes `data` at `offset` of an existing object; NO_OBJ when it does not exist. */
  write(oid: Oid, data: Uint8Array, offset: number): Promise<void>;
  /** Reads `length` bytes at `offset`; bytes never written read as zeros. NO_OBJ if missing. */
  read(oid: Oid, offset: number, length: number): Promise<Uint8Array>;
  exists(oid: Oid): Promise<boolean>;
  /** Removes `oid`; removing a missing object is not an error. */
  remove(oid: Oid): Promise<void>;
  /** Every stored oid. */
  list(): Promise<Oid[]>;
  /** Makes every completed write durable (one sync per dirty file). */
  flush(): Promise<void>;
  space(): Promise<StoreSpace>;
  close(): Promise<void>;
}
