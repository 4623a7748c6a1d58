// The cluster tests (tests/cluster_cases.ts) on the built-in group: unicast seeds, 1.5 s failure
// detection.
import { TestCluster } from "./cluster_harness.ts";
import { CLUSTER_CASES } from "./cluster_cases.ts";

for (const clusterCase of CLUSTER_CASES) {
  Deno.test(`cluster: ${clusterCase.name}`, () => clusterCase.run(TestCluster.start));
}
