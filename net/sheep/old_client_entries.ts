/**
 * What a sheep knows of old clients' tables (QEMU's sheepdog driver, which keeps its VDI's table
 * in its own memory): per working VDI, the indexes whose `data_vdi_id` entry this sheep wrote or
 * read durably naming the VDI's own object. An old client's first write in place into such an
 * object through this sheep checks the entry once (`recordOwnObject` in request_handlers.ts);
 * the ones known here are not read again. A VDI id used again by a later VDI is told apart by its
 * creation time.
 *
 * @module
 */

import type { InodeHeader } from "../../core/vdi/inode.ts";

export class OldClientEntries {
  readonly #byVid = new Map<number, { since: bigint; indexes: Set<number> }>();

  /** The indexes known for `inode`'s VDI (empty for a VDI not seen, or a new one of its id). */
  of(inode: InodeHeader): Set<number> {
    let known = this.#byVid.get(inode.vdiId);
    if (!known || known.since !== inode.createTime) {
      known = { since: inode.createTime, indexes: new Set() };
      this.#byVid.set(inode.vdiId, known);
    }
    return known.indexes;
  }
}
