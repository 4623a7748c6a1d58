/**
 * The built-in group at size: a seeded {@link SimCluster} of N members with the production
 * timing (ticks of {@link tickMs} ms, hellos every 500 ms, failure after 5 s, 3 s of settling), on
 * a clean network (no loss; each hop takes one tick, the simulation's shortest delay). Measures
 * the virtual time until all members are in one view, the datagrams and bytes a member sends
 * and receives at rest, and the time until the survivors install a view after a member (or the
 * master) crashes. The scale benchmark (scripts/bench_scale.ts) runs it at 50 to 200 members.
 *
 * @module
 */

import { encodeDatagram } from "../../net/group/codec.ts";
import {
  failureTimeoutTicksDefault,
  heartbeatTicksDefault,
  membersMax,
  retransmitTicksDefault,
  settleTicksDefault,
  tickMs,
} from "../../net/group/mod.ts";
import { SimCluster, type SimNode } from "./cluster.ts";

/** What to measure. */
export interface GroupScaleOptions {
  members: number;
  seed: number;
  /** Multicast as well as unicast hellos (default false: seeds only, as on most clouds). */
  multicast?: boolean;
  /** Members start at a random tick in [0, startSpreadTicks] (default 10: within a second). */
  startSpreadTicks?: number;
  /** Give up forming after this many ticks (default 600: one minute). */
  formTicksMax?: number;
  /** Ticks of rest over which traffic is counted (default 50: five seconds). */
  restTicks?: number;
  /** Give up waiting for a view after a crash after this many ticks (default 600). */
  failureTicksMax?: number;
  /** Encode one datagram in this many to measure sizes (default 10). */
  sizeSampleEvery?: number;
}

/** Traffic of one member at rest, averaged over the members of the view. */
export interface RestTraffic {
  /** Datagrams a member sends per second (a multicast counts once). */
  sentPerSecond: number;
  /** Datagrams a member receives per second. */
  receivedPerSecond: number;
  /** Bytes a member sends per second (UDP payloads, estimated from a sample). */
  sentBytesPerSecond: number;
  /** Mean size of a datagram, in bytes, and of the largest seen. */
  meanBytes: number;
  maxBytes: number;
  /** Datagrams sent at rest by message type, over the whole cluster. */
  byType: Record<string, number>;
}

export interface GroupScaleReport {
  members: number;
  /** What the group machines told the operator (e.g. joiners a full view left out). */
  notices: string[];
  seed: number;
  /** Seconds from the first start until every member is primary in one view, or null. */
  formSeconds: number | null;
  /** Seconds until the first primary view of min(members, membersMax), or null. */
  fullViewSeconds: number | null;
  /** Members of the largest primary view at the end of forming. */
  largestView: number;
  /** Members in no primary view at the end of forming, by state (e.g. waiting to be admitted). */
  outside: Record<string, number>;
  rest: RestTraffic;
  /** Seconds from a member's crash (not the master) until the survivors install a view. */
  memberFailureSeconds: number | null;
  /** The same after the master's crash. */
  masterFailureSeconds: number | null;
  /** Real seconds the simulation took. */
  wallSeconds: number;
}

const groupTag = 0x5eed;
const ticksPerSecond = 1000 / tickMs;

/** The live nodes that are primary, grouped by the view they are primary in; largest first. */
function primaryViews(cluster: SimCluster): SimNode[][] {
  const views = new Map<string, SimNode[]>();
  for (const node of cluster.live()) {
    const status = node.status();
    if (status.state !== "primary" || status.view === null) continue;
    const key = `${status.cluster}|${status.view.epoch}`;
    views.set(key, [...(views.get(key) ?? []), node]);
  }
  return [...views.values()].sort((a, b) => b.length - a.length);
}

/** Whether `survivors` are all primary in one view after `epoch` without `gone`. */
function reformed(survivors: SimNode[], epoch: number, gone: string): boolean {
  let key: string | null = null;
  for (const node of survivors) {
    const status = node.status();
    if (status.state !== "primary" || status.view === null) return false;
    if (status.view.epoch <= epoch || status.view.members.some((m) => m.id === gone)) return false;
    const nodeKey = `${status.cluster}|${status.view.epoch}`;
    if (key !== null && key !== nodeKey) return false;
    key = nodeKey;
  }
  return true;
}

/** Counts the traffic of `cluster` while `body` runs. */
function countTraffic(
  cluster: SimCluster,
  sampleEvery: number,
  body: () => void,
): {
  sent: number;
  received: number;
  bytes: number;
  maxBytes: number;
  byType: Record<string, number>;
} {
  const members = cluster.live().length;
  let sent = 0;
  let received = 0;
  let sampled = 0;
  let sampledBytes = 0;
  let maxBytes = 0;
  const byType: Record<string, number> = {};
  cluster.network.tap = (from, to, msg) => {
    sent++;
    received += to === "broadcast" ? members - 1 : 1;
    byType[msg.type] = (byType[msg.type] ?? 0) + 1;
    if (sent % sampleEvery === 0) {
      const size = encodeDatagram(from, msg, groupTag).length;
      sampled++;
      sampledBytes += size;
      maxBytes = Math.max(maxBytes, size);
    }
  };
  try {
    body();
  } finally {
    cluster.network.tap = null;
  }
  const meanBytes = sampled === 0 ? 0 : sampledBytes / sampled;
  return { sent, received, bytes: sent * meanBytes, maxBytes, byType };
}

/** Crashes `victim` and returns the seconds until the rest of its view install a new one. */
function failureSeconds(cluster: SimCluster, victim: SimNode, ticksMax: number): number | null {
  const view = victim.status().view!;
  const survivors = cluster.live().filter((n) =>
    n !== victim && view.members.some((m) => m.id === n.id)
  );
  cluster.crash(victim);
  const started = cluster.now;
  const done = cluster.runUntil(() => reformed(survivors, view.epoch, victim.id), ticksMax);
  return done ? (cluster.now - started) / ticksPerSecond : null;
}

/** Runs one measurement (deterministic for its options). */
export function measureGroupScale(options: GroupScaleOptions): GroupScaleReport {
  const wallStarted = performance.now();
  const cluster = new SimCluster({
    seed: options.seed,
    nodes: options.members,
    // A clean network; every datagram skips the codec (sizes are sampled separately).
    faults: { multicast: options.multicast ?? false, codecRate: 0 },
    timing: {
      heartbeatTicks: heartbeatTicksDefault,
      failureTimeoutTicks: failureTimeoutTicksDefault,
      settleTicks: settleTicksDefault,
      retransmitTicks: retransmitTicksDefault,
    },
  });
  const spread = options.startSpreadTicks ?? 10;
  const starts = cluster.nodes.map(() => cluster.prng.int(0, spread));
  for (let tick = 0; tick <= spread; tick++) {
    cluster.nodes.forEach((node, i) => {
      if (starts[i] === tick) cluster.start(node);
    });
    cluster.tick();
  }
  const full = Math.min(options.members, membersMax);
  let fullViewTick: number | null = null;
  const formed = cluster.runUntil(() => {
    if (fullViewTick === null && (primaryViews(cluster)[0]?.length ?? 0) >= full) {
      fullViewTick = cluster.now;
    }
    return cluster.converged();
  }, options.formTicksMax ?? 600);
  const formTick = formed ? cluster.now : null;
  const seconds = (tick: number | null) => (tick === null ? null : tick / ticksPerSecond);
  const views = primaryViews(cluster);
  const largest = views[0] ?? [];
  const outside: Record<string, number> = {};
  for (const node of cluster.live()) {
    if (largest.includes(node)) continue;
    const state = node.status().state;
    outside[state] = (outside[state] ?? 0) + 1;
  }

  const restTicks = options.restTicks ?? 50;
  const traffic = countTraffic(cluster, options.sizeSampleEvery ?? 10, () => {
    cluster.run(restTicks);
  });
  const restSeconds = restTicks / ticksPerSecond;
  const live = cluster.live().length;
  const rest: RestTraffic = {
    sentPerSecond: traffic.sent / live / restSeconds,
    receivedPerSecond: traffic.received / live / restSeconds,
    sentBytesPerSecond: traffic.bytes / live / restSeconds,
    meanBytes: traffic.sent === 0 ? 0 : traffic.bytes / traffic.sent,
    maxBytes: traffic.maxBytes,
    byType: traffic.byType,
  };

  const failureTicksMax = options.failureTicksMax ?? 600;
  let memberFailureSeconds: number | null = null;
  let masterFailureSeconds: number | null = null;
  const inView = primaryViews(cluster)[0] ?? [];
  const master = inView[0]?.status().master ?? null;
  const member = inView.find((n) => n.id !== master);
  if (member) memberFailureSeconds = failureSeconds(cluster, member, failureTicksMax);
  const masterNode = primaryViews(cluster)[0]?.find((n) => n.id === n.status().master);
  if (masterNode) masterFailureSeconds = failureSeconds(cluster, masterNode, failureTicksMax);

  return {
    members: options.members,
    notices: cluster.notices.map((n) => n.text),
    seed: options.seed,
    formSeconds: seconds(formTick),
    fullViewSeconds: seconds(fullViewTick),
    largestView: largest.length,
    outside,
    rest,
    memberFailureSeconds,
    masterFailureSeconds,
    wallSeconds: (performance.now() - wallStarted) / 1000,
  };
}
