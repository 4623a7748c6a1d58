/**
 * The pure core of sheepdog: hashing and placement, the object and inode formats, VDI rules and
 * client-side VDI I/O, the object store, and every limit.
 *
 * @module
 */

export * from "./limits.ts";
export * from "./errors.ts";
export { assert, AssertionError } from "./assert.ts";
export { fnv1a64, sdHash, sdHashNext, sdHashOid } from "./hash/fnv.ts";
export {
  buildRing,
  defaultZone,
  oidToNodes,
  type Ring,
  type RingNode,
  weighByCapacity,
} from "./hash/ring.ts";
export * from "./vdi/oid.ts";
export * from "./vdi/inode.ts";
export * from "./vdi/cow.ts";
export { probeChain, VdiBitmap, vidHash } from "./vdi/vid.ts";
export { type SnapshotRef, type VdiChange, type VdiEvent, VdiRegistry } from "./vdi/registry.ts";
export { type ObjectAccess, splitRange, VdiIo } from "./vdi/io.ts";
export type { ObjectStore, StoreSpace } from "./store/object_store.ts";
export { FsObjectStore } from "./store/fs_object_store.ts";
export { type ClusterView, makeView, targetsOf } from "./cluster/view.ts";
export * from "./format/mod.ts";
