/**
 * `deno run -A write_object.ts VDI`: writes 4 KiB at the start of VDI's first data object
 * through the sheep of this host (127.0.0.1:7000) with one WRITE_OBJ, as QEMU's sheepdog
 * driver does, and nothing more: no flush, which `img convert` sends at the end even after a
 * failed write and which waits on every node of the view. Prints "written" and exits 0, or
 * prints the sheep's error and exits 1.
 *
 * @module
 */

import { OBJECT_PORT_DEFAULT } from "../../core/limits.ts";
import { dataOid } from "../../core/vdi/oid.ts";
import { ObjectClient } from "../../net/object/client.ts";
import { TcpTransport } from "../../net/object/tcp_transport.ts";

const [vdi] = Deno.args;
if (vdi === undefined) throw new Error("usage: write_object.ts VDI");
const client = new ObjectClient(new TcpTransport({ host: "127.0.0.1", port: OBJECT_PORT_DEFAULT }));
try {
  const vid = await client.lookupVdi(vdi);
  await client.writeObject(dataOid(vid, 0), new Uint8Array(4096).fill(0xee), 0);
  console.log("written");
} catch (error) {
  console.error((error as Error).message);
  Deno.exitCode = 1;
} finally {
  await client.close();
}
