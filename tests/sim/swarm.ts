/**
 * One seeded simulation run (TigerBeetle's VOPR shape): a random cluster and fault mix
 * ("swarm"), a safety phase with crashes, restarts, partitions, loss, duplication, reordering
 * and corruption while members propose events, then a liveness phase: heal everything,
 * restart every node, and require convergence on one primary view with every proposal of
 * the surviving incarnations delivered, and known to its proposer to be. Checkers watch every delivery throughout.
 *
 * @module
 */

import { SimCluster, type SimNode } from "./cluster.ts";
import type { NetworkFaults } from "./network.ts";
import { Prng } from "./prng.ts";

/** The randomised knobs of one run. */
export interface Swarm {
  nodes: number;
  witnesses: number;
  bootstrapMinMembers: number;
  faults: NetworkFaults;
  crashRate: number;
  restartRate: number;
  partitionRate: number;
  healRate: number;
  proposeRate: number;
  crashAfterPersistRate: number;
  /** Probability per tick that a live member calls leave() (it exits once it has left). */
  leaveRate: number;
}

/** Ticks of the safety phase. */
export const safetyTicks = 700;
/** Ticks allowed for convergence after healing. */
export const convergeTicksMax = 1500;
/** Ticks allowed for the final proposals to reach everyone. */
export const deliverTicksMax = 400;

function randomFaults(prng: Prng, multicast: boolean): NetworkFaults {
  const delayMax = prng.int(1, 8);
  return {
    dropRate: prng.pick([0, 0.02, 0.1, 0.25]),
    duplicateRate: prng.pick([0, 0.02, 0.1]),
    delayMin: 1,
    delayMax,
    codecRate: 0.05,
    corruptRate: 0.1,
    multicast,
  };
}

/** Draws the knobs of a run from its own PRNG stream. */
export function swarmOf(seed: number): Swarm {
  const prng = new Prng(seed ^ 0x5a5a5a5a);
  const nodes = prng.int(3, 7);
  return {
    nodes,
    witnesses: prng.int(0, 1),
    bootstrapMinMembers: prng.chance(0.3) ? nodes : 1,
    faults: randomFaults(prng, prng.chance(0.7)),
    crashRate: prng.pick([0, 0.002, 0.01]),
    restartRate: prng.pick([0.01, 0.05]),
    partitionRate: prng.pick([0, 0.003, 0.01]),
    healRate: prng.pick([0.01, 0.03]),
    proposeRate: prng.pick([0.05, 0.3]),
    crashAfterPersistRate: prng.pick([0, 0.05]),
    leaveRate: prng.pick([0, 0, 0.002]),
  };
}

/** Runs one seed; throws (InvariantError, AssertionError or Error) on any violation. */
export function runSeed(
  seed: number,
): { ticks: number; deliveries: number; redeliveredAfterRegroup: number } {
  const swarm = swarmOf(seed);
  const cluster = new SimCluster({
    seed,
    nodes: swarm.nodes,
    witnesses: swarm.witnesses,
    faults: { ...swarm.faults, dropRate: Math.min(swarm.faults.dropRate, 0.1) },
    bootstrapMinMembers: swarm.bootstrapMinMembers,
    crashAfterPersistRate: 0,
  });
  bootstrap(cluster);
  cluster.network.faults = swarm.faults;
  safetyPhase(cluster, swarm);
  livenessPhase(cluster);
  const { deliveries, redeliveredAfterRegroup } = cluster.checker;
  return { ticks: cluster.now, deliveries, redeliveredAfterRegroup };
}

/** Starts every node within a few ticks of each other, and lets the first view form. */
function bootstrap(cluster: SimCluster): void {
  const starts = cluster.nodes.map(() => cluster.prng.int(0, 20));
  for (let tick = 0; tick <= 20; tick++) {
    cluster.nodes.forEach((node, i) => {
      if (starts[i] === tick) cluster.start(node);
    });
    cluster.tick();
  }
  const formed = cluster.runUntil(() => cluster.converged(), 400);
  if (!formed) throw new Error(`the first view did not form:\n${cluster.describe()}`);
}

function safetyPhase(cluster: SimCluster, swarm: Swarm): void {
  const prng = cluster.prng;
  const leaving = new Set<SimNode>();
  for (let i = 0; i < safetyTicks; i++) {
    const down = cluster.nodes.filter((n) => !n.alive);
    const live = cluster.live();
    if (live.length > 0 && prng.chance(swarm.crashRate)) cluster.crash(prng.pick(live));
    if (down.length > 0 && prng.chance(swarm.restartRate)) cluster.start(prng.pick(down));
    if (prng.chance(swarm.partitionRate)) partitionRandomly(cluster);
    if (cluster.network.partitioned && prng.chance(swarm.healRate)) cluster.network.heal();
    if (prng.chance(0.005)) cluster.network.faults = randomFaults(prng, swarm.faults.multicast);
    const proposer = cluster.live().filter((n) => n.status().state !== "left");
    if (proposer.length > 0 && prng.chance(swarm.proposeRate)) {
      proposeRandom(cluster, prng.pick(proposer));
    }
    if (proposer.length > 0 && prng.chance(swarm.leaveRate)) leaving.add(prng.pick(proposer));
    for (const node of leaving) node.machine?.leave();
    exitLeftMembers(cluster, leaving);
    // Only in the safety phase: a crash between persisting and acting must be harmless.
    cluster.crashAfterPersistRate = swarm.crashAfterPersistRate;
    cluster.tick();
  }
  cluster.crashAfterPersistRate = 0;
  exitLeftMembers(cluster, leaving, true);
}

/**
 * A member that has left the group exits; one still leaving when the faults stop is killed.
 * Either may be started again later, as a new incarnation.
 */
function exitLeftMembers(cluster: SimCluster, leaving: Set<SimNode>, all = false): void {
  for (const node of leaving) {
    if (node.alive && (all || node.status().state === "left")) cluster.crash(node);
    if (!node.alive) leaving.delete(node);
  }
}

function partitionRandomly(cluster: SimCluster): void {
  const ids = cluster.prng.shuffle(cluster.nodes.map((n) => n.id));
  const cut = cluster.prng.int(1, ids.length - 1);
  const groups = [ids.slice(0, cut), ids.slice(cut)];
  if (cluster.prng.chance(0.3) && groups[1]!.length > 1) {
    // A third group: some nodes are isolated alone.
    groups.push(groups[1]!.splice(0, 1));
  }
  cluster.network.partition(groups);
}

function proposeRandom(cluster: SimCluster, node: SimNode): void {
  const prng = cluster.prng;
  const size = prng.chance(0.01) ? prng.int(1000, 60_000) : prng.int(0, 64);
  try {
    cluster.propose(node, prng.bytes(size));
  } catch (error) {
    // Too many pending proposals on a member cut off for long is an expected refusal.
    if (!(error instanceof RangeError)) throw error;
  }
}

function livenessPhase(cluster: SimCluster): void {
  cluster.network.heal();
  cluster.network.faults = {
    ...cluster.network.faults,
    dropRate: 0.02,
    duplicateRate: 0.02,
    delayMax: Math.min(cluster.network.faults.delayMax, 3),
  };
  for (const node of cluster.nodes) if (!node.alive) cluster.start(node);
  const converged = cluster.runUntil(() => cluster.converged(), convergeTicksMax);
  if (!converged) throw new Error(`no convergence after healing:\n${cluster.describe()}`);
  const finals = cluster.live().map((node) => {
    const pid = cluster.propose(node, new TextEncoder().encode(`final ${node.id}`));
    return `${node.id}#${node.incarnation}#${pid}`;
  });
  const everywhere = () =>
    cluster.live().every((node) => finals.every((key) => node.history!.delivered.has(key)));
  if (!cluster.runUntil(everywhere, deliverTicksMax)) {
    throw new Error(`final proposals not delivered everywhere:\n${cluster.describe()}`);
  }
  for (const node of cluster.live()) {
    for (const pid of node.proposals) {
      const key = `${node.id}#${node.incarnation}#${pid}`;
      if (!cluster.checker.deliveredProposals.has(key)) {
        throw new Error(`proposal ${key} of a live member was never delivered`);
      }
      // Its proposer is answered: at its delivery there, or by a resync that says the history
      // it missed held it (its driver then answers from the state it fetches).
      if (!node.history!.delivered.has(key) && pid > node.history!.ownMissed) {
        throw new Error(`proposal ${key} was delivered, but its proposer was never told`);
      }
    }
  }
}
