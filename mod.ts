/**
 * sheepdog as a library: the core, the object-protocol client, a sheep to embed, the admin
 * service every front end uses, and the NBD and HTTP services.
 *
 * @example
 * ```ts
 * import { AdminService, Sheep } from "./mod.ts";
 * const sheep = new Sheep({ dir: "/tmp/sd0", host: "127.0.0.1", port: 0 });
 * await sheep.start();
 * const admin = new AdminService(sheep.localClient());
 * await admin.mkfs({ copies: 1, blockSizeShift: 22 });
 * await sheep.stop();
 * ```
 *
 * @module
 */

export * from "./core/mod.ts";
export { ObjectClient } from "./net/object/client.ts";
export { TcpTransport } from "./net/object/tcp_transport.ts";
export { LocalTransport, type Transport } from "./net/object/transport.ts";
export { Opcode } from "./net/object/ops.ts";
export { Sheep, type SheepOptions } from "./net/sheep/sheep.ts";
export { AdminService, parseVdiRef } from "./net/admin/admin_service.ts";
export { startNbdService, VdiExportProvider } from "./net/sheep/vdi_exports.ts";
export { createAdminApp, startHttpService } from "./net/http/mod.ts";
export { GroupDriver, Membership } from "./net/group/mod.ts";
