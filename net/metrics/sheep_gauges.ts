/**
 * The state gauges of a sheep, read at scrape time: epoch, nodes, objects stored, space, VDIs,
 * attached VDIs. `watchSheep` registers the collector once per sheep.
 *
 * @module
 */

import { isSnapshot } from "../../core/vdi/inode.ts";
import type { Sheep } from "../sheep/sheep.ts";
import type { Metrics } from "./metrics.ts";

/** What the collector reads from a sheep. */
export type GaugeSource = Pick<
  Sheep,
  "view" | "store" | "locks" | "registry" | "status" | "recovery"
>;

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
    attachedVdis: sheep.locks.size,
  });
  const recovery = sheep.recovery.status();
  metrics.setRecovery({
    active: recovery.state === "gathering" || recovery.state === "recovering",
    done: recovery.done,
    total: recovery.total,
    rate: recovery.objectsPerSecond,
  });
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
