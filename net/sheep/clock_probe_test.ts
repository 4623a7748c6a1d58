import assert from "node:assert/strict";
import { VersionClock } from "../../core/cluster/version_clock.ts";
import { CLOCK_ADOPT_MAX_MS, CLOCK_WARN_INTERVAL_MS } from "../../core/limits.ts";
import type { RingNode } from "../../core/hash/ring.ts";
import { ClockProbe, type ClockProbeHost, parseClockReading } from "./clock_probe.ts";

const HOUR = 3_600_000;

function node(id: string): RingNode {
  return { id, host: id, port: 7000, zone: 0, vnodes: 1 } as unknown as RingNode;
}

/** A probe of "self" whose peers answer what `answers` says (a value, or an error to throw). */
function probeWith(answers: Record<string, () => unknown>, wall = 1_000_000) {
  let mono = 0;
  const clock = new VersionClock(() => wall, () => mono);
  const warnings: string[] = [];
  const debug: string[] = [];
  let asked = 0;
  const host: ClockProbeHost = {
    id: "self",
    members: () => ["self", ...Object.keys(answers)].map(node),
    peers: {
      get: (peer: Pick<RingNode, "id">) => ({
        json: () => {
          asked++;
          try {
            return Promise.resolve(answers[peer.id]!());
          } catch (error) {
            return Promise.reject(error);
          }
        },
      }),
    } as unknown as ClockProbeHost["peers"],
    adoptTimeline: (ms) => clock.adoptTimeline(ms),
    observeVersion: (version) => clock.observe(version),
    monotonic: () => mono,
    warn: (line) => warnings.push(line),
    debug: (line) => debug.push(line),
  };
  const probe = new ClockProbe(host);
  return {
    probe,
    clock,
    warnings,
    debug,
    asked: () => asked,
    pass: (ms: number) => mono += ms,
  };
}

Deno.test("parseClockReading takes {timelineMs, version} and refuses anything else in one line", () => {
  assert.deepEqual(parseClockReading({ timelineMs: 5, version: 7, extra: 1 }), {
    timelineMs: 5,
    version: 7,
  });
  for (
    const bad of [
      null,
      3,
      "x",
      {},
      { timelineMs: 1 },
      { timelineMs: 1.5, version: 1 },
      {
        timelineMs: 1,
        version: -1,
      },
      { timelineMs: 2 ** 60, version: 1 },
      { timelineMs: "1", version: 1 },
    ]
  ) {
    assert.throws(() => parseClockReading(bad), /not a clock reading/, JSON.stringify(bad));
  }
});

Deno.test("ClockProbe takes in the timeline and version of a member ahead, and says so once a while", async () => {
  const wall = 1_000_000;
  const t = probeWith({
    ahead: () => ({ timelineMs: wall + HOUR, version: (wall + HOUR) * 1024 + 5 }),
    behind: () => ({ timelineMs: wall - HOUR, version: 1 }),
  }, wall);
  await t.probe.start();
  t.probe.stop();
  assert.equal(t.clock.timelineMs(), wall + HOUR);
  assert.ok(t.clock.next() > (wall + HOUR) * 1024 + 5);
  assert.equal(t.warnings.length, 1);
  assert.match(t.warnings[0]!, /^ahead reports a clock 3600000 ms ahead of this node's/);
  // Asked again within the warning interval: taken in, not said again.
  await t.probe.start();
  assert.equal(t.warnings.length, 1);
  t.pass(CLOCK_WARN_INTERVAL_MS);
  await t.probe.probe();
  t.probe.stop();
  assert.equal(t.warnings.length, 2);
});

Deno.test("ClockProbe refuses a timeline more than a day ahead and its versions, and names it", async () => {
  const wall = 1_000_000;
  const far = wall + CLOCK_ADOPT_MAX_MS + 1;
  const t = probeWith({ broken: () => ({ timelineMs: far, version: far * 1024 }) }, wall);
  await t.probe.start();
  t.probe.stop();
  assert.equal(t.clock.timelineMs(), wall);
  assert.ok(t.clock.next() < far * 1024, "its version is not let in either");
  assert.equal(t.warnings.length, 1);
  assert.match(t.warnings[0]!, /^broken reports a clock \d+ ms ahead.*not followed/);
});

Deno.test("ClockProbe: a member down or answering garbage is a debug line; the others are still heard", async () => {
  const wall = 1_000_000;
  const t = probeWith({
    down: () => {
      throw new Error("Peer is unreachable");
    },
    garbage: () => ({ timelineMs: "soon" }),
    fine: () => ({ timelineMs: wall + 500, version: 0 }),
  }, wall);
  await t.probe.start();
  t.probe.stop();
  assert.equal(t.clock.timelineMs(), wall + 500);
  assert.deepEqual(t.warnings, []);
  assert.equal(t.debug.length, 2);
  assert.match(t.debug.join("\n"), /clock probe of down: Peer is unreachable/);
  assert.match(t.debug.join("\n"), /clock probe of garbage: not a clock reading/);
});

Deno.test("ClockProbe: a member still to answer is not asked again meanwhile; none asked after stop", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const t = probeWith({ peer: () => gate.then(() => ({ timelineMs: 1, version: 0 })) });
  const first = t.probe.start(); // asked, the answer held back
  await Promise.all([t.probe.probe(), t.probe.probe()]);
  assert.equal(t.asked(), 1, "not asked again while its answer is due");
  release();
  await first;
  await t.probe.probe();
  assert.equal(t.asked(), 2, "asked again once it answered");
  t.probe.stop();
  await t.probe.probe();
  assert.equal(t.asked(), 2);
});
