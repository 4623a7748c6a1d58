/**
 * Goal: the scale measurement of the built-in group (group_scale.ts) measures what the
 * protocol is specified to do: a fresh cluster forms once the settle time has passed, a crash
 * is followed by a view once the failure timeout has, and at rest a member's only traffic is
 * one hello per heartbeat to every peer (plus one multicast when multicast is on). Views stop
 * at membersMax members: the rest wait outside.
 */
import assert from "node:assert/strict";
import {
  failureTimeoutTicksDefault,
  heartbeatTicksDefault,
  membersMax,
  settleTicksDefault,
  tickMs,
} from "../../net/group/mod.ts";
import { measureGroupScale } from "./group_scale.ts";

const seconds = (ticks: number) => (ticks * tickMs) / 1000;
const heartbeatsPerSecond = 1000 / tickMs / heartbeatTicksDefault;

Deno.test("group scale: 8 members form, survive a crash, and only say hello at rest", () => {
  for (const multicast of [false, true]) {
    const report = measureGroupScale({ members: 8, seed: 7, multicast });
    assert.ok(report.formSeconds !== null, "formed");
    assert.ok(report.formSeconds >= seconds(settleTicksDefault), `${report.formSeconds}`);
    assert.ok(report.formSeconds < seconds(settleTicksDefault) + 3, `${report.formSeconds}`);
    assert.equal(report.largestView, 8);
    assert.deepEqual(report.outside, {});
    for (const failed of [report.memberFailureSeconds, report.masterFailureSeconds]) {
      assert.ok(failed !== null, "a view after the crash");
      assert.ok(failed >= seconds(failureTimeoutTicksDefault), `${failed}`);
      assert.ok(failed < seconds(failureTimeoutTicksDefault) + 2, `${failed}`);
    }
    const peers = 7;
    assert.deepEqual(Object.keys(report.rest.byType), ["hello"]);
    const sent = (peers + (multicast ? 1 : 0)) * heartbeatsPerSecond;
    const received = peers * (multicast ? 2 : 1) * heartbeatsPerSecond;
    assert.equal(report.rest.sentPerSecond, sent);
    assert.equal(report.rest.receivedPerSecond, received);
    assert.ok(report.rest.meanBytes > 100 && report.rest.maxBytes >= report.rest.meanBytes);
  }
});

Deno.test("group scale: past membersMax, one full view forms and the rest wait outside", () => {
  const members = membersMax + 3;
  const report = measureGroupScale({
    members,
    seed: 1,
    formTicksMax: 100,
    restTicks: 10,
    failureTicksMax: 100,
  });
  assert.equal(report.formSeconds, null);
  assert.ok(report.fullViewSeconds !== null);
  assert.equal(report.largestView, membersMax);
  assert.equal(Object.values(report.outside).reduce((a, b) => a + b, 0), 3);
  // Not silently: the master says which nodes the full view leaves out, and what to use instead.
  assert.ok(
    report.notices.some((text) =>
      /the view is full \(64 members.*3 node\(s\) cannot join.*etcd/.test(text)
    ),
    JSON.stringify(report.notices),
  );
});
