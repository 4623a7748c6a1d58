/**
 * The state gauges of a sheep, read at scrape time: epoch, nodes, objects stored, space, VDIs,
 * attached VDIs, recovery, integrity (scrub progress and findings, repairs, checksum
 * errors) and the checksum worker threads. `watchSheep` registers the collector once per sheep.
 *
 * @module
 */

import {
  ADMIN_LOCK_VID,
  type ReplicatedStateReader,
} from "../../core/cluster/cluster_state_machine.ts";
import type { ClusterView } from "../../core/cluster/view.ts";
import { isSnapshot } from "../../core/vdi/inode.ts";
import type { ObjectStore } from "../../core/store/object_store.ts";
import type { ChecksumWorkers } from "../../core/store/checksum_workers.ts";
import type { Recovery } from "../sheep/recovery.ts";
import type { ScrubStatus } from "../sheep/scrub.ts";
import type { SheepStatus } from "../sheep/sheep_status.ts";
import type { Metrics } from "./metrics.ts";

/** What the collector reads from a sheep. */
export interface GaugeSource {
  readonly view: ClusterView;
  readonly status: SheepStatus;
  readonly registry: Pick<ReplicatedStateReader["registry"], "live">;
  readonly locks: ReplicatedStateReader["locks"];
  readonly recovery: Pick<Recovery, "status">;
  readonly repairs: number;
  readonly store: Pick<ObjectStore, "list" | "space" | "health">;
  /** Where large reads are verified, if not on the main thread (none: the metrics read 0). */
  readonly checksumWorkers?: Pick<ChecksumWorkers, "stats"> | undefined;
  /** The sheep's scrubber, once it has one. */
  readonly scrubber?: { status(): Pick<ScrubStatus, "state" | "finishedMs" | "totals"> };
}

/** Reads the sheep's state into `metrics`. */
export async function collectSheepGauges(metrics: Metrics, sheep: GaugeSource): Promise<void> {
  let vdis = 0;
  let snapshots = 0;
  for (const header of sheep.registry.live()) {
    if (isSnapshot(header)) snapshots++;
    else vdis++;
  }
  metrics.setGauges({
    epoch: sheep.view.epoch,
    nodes: sheep.view.nodes.length,
    vdis,
    snapshots,
    attachedVdis: [...sheep.locks.keys()].filter((vid) => vid !== ADMIN_LOCK_VID).length,
  });
  const recovery = sheep.recovery.status();
  metrics.setRecovery({
    active: recovery.state === "gathering" || recovery.state === "recovering",
    done: recovery.done,
    total: recovery.total,
    rate: recovery.objectsPerSecond,
  });
  const scrub = sheep.scrubber?.status();
  const health = sheep.store.health();
  metrics.setIntegrity({
    objectRepairs: sheep.repairs,
    checksumErrors: health.checksumErrors,
    noSpaceErrors: health.noSpaceErrors,
    syncFailed: health.syncError !== undefined,
    ...(scrub
      ? {
        scrubRunning: scrub.state === "running",
        scrubFinishedMs: scrub.finishedMs,
        scrubBytesVerified: scrub.totals.bytesVerified,
        scrubBadBlocks: scrub.totals.badBlocks,
        scrubUnrepaired: scrub.totals.repairFailed,
      }
      : {}),
  });
  metrics.setChecksumWorkers(
    sheep.checksumWorkers?.stats ?? { running: 0, answered: 0, fallbacks: 0, deaths: 0 },
  );
  if (sheep.status === "stopped") return;
  const [oids, space] = await Promise.all([sheep.store.list(), sheep.store.space()]);
  metrics.setGauges({ objects: oids.length, ...space });
}

const watched = new WeakSet<Metrics>();

/** Makes every scrape of `metrics` refresh the gauges from `sheep` (idempotent). */
export function watchSheep(metrics: Metrics, sheep: GaugeSource): void {
  if (watched.has(metrics)) return;
  watched.add(metrics);
  metrics.addCollector(() => collectSheepGauges(metrics, sheep));
}
