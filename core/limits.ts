/**
 * Every bound of the system, in one place, with how they relate checked at load.
 *
 * @module
 */

/** Default object size: 4 MiB (Sheepdog's SD_DEFAULT_BLOCK_SIZE_SHIFT). */
export const BLOCK_SIZE_SHIFT_DEFAULT = 22;
/** Smallest and largest object size shift accepted by `mkfs` (1 MiB .. 2 GiB, as Sheepdog 1.0). */
export const BLOCK_SIZE_SHIFT_MIN = 20;
export const BLOCK_SIZE_SHIFT_MAX = 31;
/** Data objects per VDI: `data_vdi_id` has 2^20 entries. */
export const DATA_OBJECTS_PER_VDI_MAX = 1 << 20;
/** The 24-bit VDI id space; vid 0 is invalid. */
export const VDI_SPACE = 1 << 24;
/** Name, tag: at most 255 bytes plus the NUL of the 256-byte field. */
export const NAME_BYTES_MAX = 255;
export const TAG_BYTES_MAX = 255;
/** Copies per object. */
export const COPIES_DEFAULT = 3;
export const COPIES_MAX = 31;
/** Virtual nodes per storage node on the ring. */
export const VNODES_DEFAULT = 128;
export const VNODES_MAX = 1024;
/** Nodes in a cluster (Sheepdog's SD_MAX_NODES). */
export const NODES_MAX = 6144;
/** Largest payload of one object-protocol message (a whole inode is 4,198,968 bytes). */
export const MESSAGE_BYTES_MAX = 64 * 1024 * 1024;
/**
 * Inode headers per "found" cluster event (header_drift.ts): each is carried whole, 4,664 bytes
 * (6,220 in base64), and the built-in group takes proposals of at most 60,000 bytes
 * (net/group/limits.ts): nine would fit, eight leave room (header_drift_test.ts checks).
 */
export const FOUND_HEADERS_PER_EVENT = 8;
/**
 * The least time between two writes of a sheep's VDI table to its file
 * (net/sheep/vdi_table_file.ts): a lone change is written at once, a burst shares one write per
 * this. Written at every change, its sync queued behind each next create's own syncs: 300
 * creates in a row took 8-10 ms more each (2026-11-30).
 */
export const VDI_TABLE_WRITE_DELAY_MS = 100;
/**
 * A member reporting a clock this far ahead of a node's own (net/sheep/clock_probe.ts), or a
 * copy carrying a version issued this far ahead of the node's timeline (a node ahead it has not
 * heard from yet, or one too far ahead to follow), is said in the node's log, at most once per
 * CLOCK_WARN_INTERVAL_MS: versions follow the latest clock in the cluster, so they stay ordered,
 * but a write through a node behind can still lose to a copy issued on a clock it never heard of.
 */
export const CLOCK_AHEAD_WARN_MS = 1_000;
/** See CLOCK_AHEAD_WARN_MS. */
export const CLOCK_WARN_INTERVAL_MS = 60_000;
/** A sheep whose disk is full says so at most once per this long (every refused write counts). */
export const NO_SPACE_LOG_INTERVAL_MS = 10_000;
/**
 * How often a sheep asks every member for its timeline (net/sheep/clock_probe.ts), besides at
 * every new view: monotonic clocks drift apart by up to ~100 ppm (0.5 ms in 5 s), and a clock
 * stepped forward by NTP is heard within this.
 */
export const CLOCK_PROBE_INTERVAL_MS = 5_000;
/**
 * A peer's timeline further ahead of this node's wall clock than this is not adopted (and is
 * said in the log): adopting moves every version this node issues, and a clock a day or more
 * ahead is broken (a wrong date), not skewed; the versions it issues still outrank others.
 */
export const CLOCK_ADOPT_MAX_MS = 24 * 60 * 60 * 1000;
/** Requests one object-protocol connection may have in flight before the server stops reading. */
export const REQUESTS_IN_FLIGHT_MAX = 256;
/**
 * Bytes an object-protocol connection may hold in the server before it stops reading: payloads
 * of requests being handled, the replies they will make (a read's length) and replies queued
 * for a client that does not read them. One message of MESSAGE_BYTES_MAX always gets through.
 */
export const CONNECTION_BUFFER_BYTES_MAX = 64 * 1024 * 1024;
/** The same, for all connections of a server together: what bounds a sheep's memory. */
export const SERVER_BUFFER_BYTES_MAX = 192 * 1024 * 1024;
/** A client whose queued replies have not moved for this long is cut off. */
export const REPLY_STALL_MS = 30_000;
/**
 * Recovery bytes per second a sheep moves (pulls, and reads for other nodes' pulls) while its
 * clients are busy (`sheep --recovery-rate`); with no client about, recovery runs at full speed.
 */
export const RECOVERY_BYTES_PER_SECOND_BUSY = 32 * 1024 * 1024;
/** A sheep's clients count as busy this long after their last request (recovery yields). */
export const CLIENT_QUIET_MS = 500;
/** Recovery takes copies from other holders this long after one said its clients are busy. */
export const BUSY_HOLDER_AVOID_MS = 2_000;
/**
 * glibc's mmap threshold for a daemonised sheep (MALLOC_MMAP_THRESHOLD_): allocations from this
 * size up (object payloads, replies) are mapped apart and unmapped when freed. By default glibc
 * raises the threshold after such a free, so later 4 MiB buffers come from the heap and the RSS
 * a burst grew is kept for good (213 MB after a stalled reader left, 140 MB with this).
 */
export const MALLOC_MMAP_THRESHOLD_BYTES = 128 * 1024;
/** Open object file handles a store keeps cached (an object holds two: its data and checksums). */
export const OPEN_FILES_MAX = 512;
/**
 * The most file handles a store caches when the process may open many more (a sheep takes a
 * quarter of its open-files limit, up to this): evicting a dirty object costs a sync, so the
 * cache should hold the working set of a busy VDI.
 */
export const OPEN_FILES_CAP = 8192;
/**
 * Free space on the file system of a sheep's object store that object data never takes: the
 * store refuses a create or write (NO_SPACE, "the disk is full") that could leave less than this
 * free. It keeps room for what the sheep must always be able to write durably beside its
 * objects, above all its epoch log (`DIR/epoch/`, one small file per view, written before the
 * view is acted on), the cluster config and the forgotten-nodes list: a sheep that cannot
 * persist its epoch log leaves the group, so without this a full data disk would cost the cluster
 * a vote. 8 MiB holds about 2,000 epoch records of a small cluster (one 4 KiB page each).
 */
export const METADATA_RESERVE_BYTES = 8 * 1024 * 1024;
/**
 * Far from the reserve, the store estimates the free space from its last look (statfs) minus
 * what it has admitted since, and looks again at most this long after the last look (another
 * process may fill the file system too) or once half the headroom it saw is admitted; near the
 * reserve it looks before every create or write.
 */
export const SPACE_RECHECK_MS = 1_000;
/** Bytes covered by one stored checksum: a read verifies, and a write rehashes, whole blocks. */
export const CHECKSUM_BLOCK_BYTES = 4096;
/** Bytes the store reads at a time when it goes through a whole object (verify, salvage, rebuilds). */
export const STORE_SCAN_BYTES = 1024 * 1024;
/**
 * Reads at least this long have their checksums computed in a worker thread
 * (core/store/checksum_workers.ts); shorter ones on the calling thread, where the checksum costs
 * less than the hand-off (BENCHMARKS.md, "Block checksums: where the time goes").
 */
export const CHECKSUM_OFFLOAD_BYTES_MIN = 128 * 1024;
/** Checksum worker threads a store starts at most (one per core but the main thread's). */
export const CHECKSUM_WORKERS_MAX = 4;
/**
 * Jobs a checksum worker holds at most (one hashing, one waiting); with every worker that busy
 * the calling thread hashes a read itself, so a worker that falls behind never delays reads.
 */
export const CHECKSUM_WORKER_JOBS_MAX = 2;
/** A checksum worker with jobs that answers nothing for this long is stuck: it is replaced. */
export const CHECKSUM_WORKER_STALL_MS = 10_000;
/** Checksum workers that may die in a row before checksums stay on the calling thread. */
export const CHECKSUM_WORKER_DEATHS_MAX = 8;
/** Largest object a store accepts: the largest object size `mkfs` allows (2 GiB). */
export const OBJECT_BYTES_MAX = 2 ** BLOCK_SIZE_SHIFT_MAX;
/** How long a connection attempt may take (a host that drops packets never refuses). */
export const CONNECT_TIMEOUT_MS = 10_000;
/** How long a client waits for a reply before it gives up on a connection. */
export const REQUEST_TIMEOUT_MS = 60_000;
/**
 * Removals of leftover copies (a removed object's copies outside its targets) a gateway keeps in
 * flight; past it, more are not sent (best effort: a member that does not answer must not pile up
 * the requests of a large delete).
 */
export const LEFTOVER_REMOVALS_MAX = 256;
/** Default ports. */
export const OBJECT_PORT_DEFAULT = 7000;
export const NBD_PORT_DEFAULT = 10809;
export const HTTP_PORT_DEFAULT = 7080;
/** Bytes of a key `shepherd keygen` makes, and the fewest a key file may hold. */
export const CLUSTER_KEY_BYTES = 32;
export const CLUSTER_KEY_BYTES_MIN = 16;
/** Bytes of the MAC on a group datagram and of each proof of the connection handshake. */
export const AUTH_MAC_BYTES = 16;
/** How long a connection may take to authenticate before it is cut. */
export const AUTH_TIMEOUT_MS = 10_000;
/** Datagrams a receiver accepts out of order per sender; older ones count as replays. */
export const REPLAY_WINDOW = 256;
/** Refusal log lines per peer address per minute at most (the metrics count every one). */
export const REFUSAL_LOGS_PER_MINUTE = 1;
/**
 * The etcd driver: how long one request to one etcd member may take before the next member is
 * tried (etcd itself gives up on a proposal after about 7 s; a member without quorum answers
 * sooner, asked with `hasleader`).
 */
export const ETCD_REQUEST_TIMEOUT_MS = 5_000;
/** Cluster events kept in etcd; older ones are deleted (a node that fell behind asks peers). */
export const ETCD_EVENTS_KEPT = 10_000;
/** Event keys deleted per transaction when trimming (etcd's default --max-txn-ops is 128). */
export const ETCD_TRIM_BATCH = 100;

/** Longest snapshot name an rbd diff's 'f' or 't' record may carry (Ceph's own bound). */
export const RBD_DIFF_NAME_BYTES_MAX = 4096;
/** Granularity at which `img export-diff` compares a changed object with its old version. */
export const DIFF_BLOCK_BYTES = 4096;
/** Objects `img export-diff` reads ahead (each may need its old version too): bounds memory. */
export const DIFF_OBJECTS_IN_FLIGHT = 4;

/** Object size for a block size shift. */
export function objectSize(blockSizeShift: number): number {
  return 2 ** blockSizeShift;
}

/** Largest VDI for an object size: object size × 2^20 (4 TiB with 4 MiB objects). */
export function vdiSizeMax(blockSizeShift: number): number {
  return objectSize(blockSizeShift) * DATA_OBJECTS_PER_VDI_MAX;
}

function checkLimits(): void {
  if (BLOCK_SIZE_SHIFT_MIN > BLOCK_SIZE_SHIFT_DEFAULT) throw new Error("limits: shift min");
  if (BLOCK_SIZE_SHIFT_DEFAULT > BLOCK_SIZE_SHIFT_MAX) throw new Error("limits: shift max");
  // A VDI's byte size must stay an exact JS number at the largest object size.
  if (!Number.isSafeInteger(vdiSizeMax(BLOCK_SIZE_SHIFT_MAX))) throw new Error("limits: size");
  // A whole inode must fit one message.
  if (MESSAGE_BYTES_MAX < 4664 + 4 * DATA_OBJECTS_PER_VDI_MAX) throw new Error("limits: inode");
  if (MESSAGE_BYTES_MAX < objectSize(BLOCK_SIZE_SHIFT_DEFAULT)) throw new Error("limits: object");
  if (COPIES_DEFAULT > COPIES_MAX) throw new Error("limits: copies");
  // Object sizes are whole checksum blocks, and a block index fits the meta file's u32 count.
  if (objectSize(BLOCK_SIZE_SHIFT_MIN) % CHECKSUM_BLOCK_BYTES !== 0) {
    throw new Error("limits: checksum");
  }
  if (OBJECT_BYTES_MAX / CHECKSUM_BLOCK_BYTES > 2 ** 32) throw new Error("limits: checksum count");
  // A changed object is compared in whole blocks.
  if (objectSize(BLOCK_SIZE_SHIFT_MIN) % DIFF_BLOCK_BYTES !== 0) throw new Error("limits: diff");
}
checkLimits();
/**
 * V8's heap growing factor for every command (set in main.ts), as a percentage over 1 (400: the heap may grow to 5× what
 * the last full collection kept). V8 counts the bytes of ArrayBuffers (every socket read, every
 * payload) toward the limit that starts a full collection, and with its default factor for a small
 * heap a sheep moving 1 MiB requests ran a mark-compact every ~10 requests: 114 of them in 5 s of
 * 1 MiB writes, 1.1 s of the main thread, while scavenges freed those buffers anyway. With 400:
 * 0-2 in the same runs, and the peak RSS about the same; `img convert` of 512 MiB in or out is
 * 20-35% faster (BENCHMARKS.md, "Garbage collection").
 */
export const HEAP_GROWING_PERCENT = 400;
