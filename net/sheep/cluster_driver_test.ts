import assert from "node:assert/strict";
import { isResult, ResultCode } from "../../core/errors.ts";
import { admitProposal, type ClusterStanding } from "./cluster_driver.ts";
import { Changes } from "./changes.ts";

/** A driver's standing as admitProposal sees it, changed by the test. */
function driverStub(initial: ClusterStanding) {
  const changes = new Changes();
  const stub = {
    standing: initial,
    running: true,
    changes,
    set(standing: ClusterStanding) {
      stub.standing = standing;
      changes.notify();
    },
    admit: () =>
      admitProposal(changes, { standing: () => stub.standing, running: () => stub.running }),
  };
  return stub;
}

Deno.test("admitProposal waits for the change to primary, woken by it (no poll)", async () => {
  const driver = driverStub("forming");
  let admitted = false;
  const admission = driver.admit().then(() => (admitted = true));
  driver.set("forming"); // a change that is not a standing: still waiting
  await Promise.resolve();
  assert.equal(admitted, false);
  driver.set("primary");
  // Admitted within the microtasks the change starts, before any timer could fire (a poll's).
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(admitted, true);
  await admission;
});

Deno.test("admitProposal refuses a minority at once, and gives up when the driver stops", async () => {
  await assert.rejects(
    driverStub("minority").admit(),
    (error) => isResult(error, ResultCode.HALT),
  );
  const driver = driverStub("waiting-for-nodes");
  const admission = driver.admit();
  driver.running = false;
  driver.changes.notify();
  await assert.rejects(admission, (error) => isResult(error, ResultCode.SHUTDOWN));
});
