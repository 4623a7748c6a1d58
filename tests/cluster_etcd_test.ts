// The cluster tests (tests/cluster_cases.ts) on the etcd driver: one real three-member etcd on
// loopback for the whole file (each test cluster keeps its keys under a prefix of its own), each
// sheep reaching it through a proxy of its own; 1.5 s failure detection (a 2 s lease).
import { TestCluster } from "./cluster_harness.ts";
import { CLUSTER_CASES } from "./cluster_cases.ts";
import { etcdInstalled, EtcdTestCluster } from "./etcd_harness.ts";

Deno.test({
  name: "cluster on etcd (three members): the cluster tests",
  ignore: !etcdInstalled(),
  fn: async (t) => {
    const etcd = await EtcdTestCluster.start();
    try {
      for (const clusterCase of CLUSTER_CASES.filter((c) => !c.builtinOnly)) {
        await t.step(
          clusterCase.name,
          () => clusterCase.run((options) => TestCluster.start({ ...options, etcd })),
        );
      }
    } finally {
      await etcd.stop();
    }
  },
});
