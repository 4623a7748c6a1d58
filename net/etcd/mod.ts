/**
 * The etcd cluster driver (ARCHITECTURE §13): membership by leased keys, the epoch as a
 * revision-checked key, and cluster events as keys applied in revision order, through etcd's
 * JSON gateway. The built-in group (net/group, net/sheep/cluster_member.ts) is the other
 * implementation of `ClusterDriver` (net/sheep/cluster_driver.ts).
 *
 * @module
 */

export { EtcdDriver, type EtcdDriverOptions } from "./etcd_driver.ts";
export { EtcdClient, EtcdError, EtcdUnavailable } from "./etcd_client.ts";
export { clusterIdOf } from "./cluster_id.ts";
export { DRIVER_DEFAULT, type DriverChoice, parseDriverUri } from "./etcd_uri.ts";
export { EtcdLayout } from "./etcd_layout.ts";
