/**
 * Incremental backup in Ceph's rbd diff format (v1): `img export-diff` writes what changed
 * between two snapshots (or since creation), `img import-diff` applies such a diff to a VDI
 * sitting at its "from" snapshot and takes its "to" snapshot, `img diff` lists the extents.
 * Files interchange with Ceph's own `rbd export-diff`, `import-diff` and `merge-diff`.
 *
 * import-diff checks the whole diff, and the VDI, before it writes anything; a diff on standard
 * input is spooled to a temporary file first for that. Should writing fail halfway (the
 * cluster, not the diff), the VDI is rolled back to its "from" snapshot.
 *
 * @module
 */

import { isResult, ResultCode, SheepdogError } from "../core/errors.ts";
import { DiffParser, type DiffSummary, validateDiff } from "../core/format/rbd_diff.ts";
import { formatSize } from "../core/size.ts";
import { validateTag } from "../core/vdi/cow.ts";
import { changedExtents, encodeVdiDiff, openDiffEnds, snapshotName } from "../core/vdi/diff.ts";
import { decodeInode, type Inode, INODE_SIZE, isSnapshot } from "../core/vdi/inode.ts";
import { VdiIo } from "../core/vdi/io.ts";
import { vdiOid } from "../core/vdi/oid.ts";
import { type AdminService, parseVdiRef } from "../net/admin/admin_service.ts";
import type { ObjectClient } from "../net/object/client.ts";
import { CLUSTER_FLAG, parseFlags, print, UsageError } from "./cli.ts";
import {
  createDiffFile,
  type DiffSink,
  openDiffFile,
  spoolStdin,
  stdoutDiffSink,
} from "./diff_streams.ts";
import { attachForWriting, dataRuns, detach } from "./img_convert.ts";
import { endProgress, progressReporter } from "./progress.ts";
import { withAdmin } from "./vdi_address.ts";

/** The lines `img --help` shows for these commands. */
export const DIFF_USAGE = `  export-diff [--from-snap SNAP] [-p] NAME[:SNAP] FILE|-
                                 write what changed since snapshot SNAP (or since creation)
                                 up to NAME:SNAP (or NAME's current data) as a Ceph rbd diff
                                 (v1) to a new FILE, or to standard output with -
  import-diff [-p] FILE|- NAME   apply an rbd diff: NAME must sit unchanged at the diff's
                                 "from" snapshot (a diff without one needs a new or empty VDI;
                                 a missing NAME is created), and the "to" snapshot is taken
                                 after; the whole diff is checked before anything is written
                                 (standard input is first copied to the temporary directory)
  diff [--from-snap SNAP] [--json] NAME[:SNAP]
                                 list the extents that changed, as 'rbd diff' does`;

/** A snapshot argument (id or tag) as a reference. */
function snapRef(text: string) {
  return parseVdiRef(`x:${text}`).ref;
}

/** Opens the two versions a diff of `vdi` ("NAME" or "NAME:SNAP") since `fromSnap` is between. */
function diffEnds(client: ObjectClient, vdi: string, fromSnap: string | undefined) {
  const { name, ref } = parseVdiRef(vdi);
  if (fromSnap === "") throw new UsageError("--from-snap needs a snapshot id or tag");
  return openDiffEnds(client, {
    name,
    ...(ref === undefined ? {} : { to: ref }),
    ...(fromSnap === undefined ? {} : { from: snapRef(fromSnap) }),
  });
}

async function exportDiff(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    "from-snap": { type: "string" },
    progress: { type: "boolean", short: "p", default: false },
  });
  if (positionals.length !== 2) throw new UsageError("export-diff takes NAME[:SNAP] and FILE|-");
  const target = positionals[1]!;
  await withAdmin(positionals[0]!, values, async (admin, vdi) => {
    const started = performance.now();
    const ends = await diffEnds(admin.client, vdi, values["from-snap"]);
    const sink: DiffSink = target === "-" ? stdoutDiffSink() : await createDiffFile(target);
    const onProgress = progressReporter(values.progress);
    let bytes = 0;
    let completed = false;
    try {
      for await (const chunk of encodeVdiDiff(admin.client, ends, onProgress)) {
        await sink.write(chunk);
        bytes += chunk.length;
      }
      completed = true;
    } finally {
      await sink.finish(completed);
      endProgress(onProgress);
    }
    if (values.progress) {
      const line = `${formatSize(bytes)} of diff in ${
        ((performance.now() - started) / 1000).toFixed(2)
      } s`;
      // Standard output may be the diff itself.
      if (target === "-") process.stderr.write(line + "\n");
      else print(line);
    }
  });
}

async function diff(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    "from-snap": { type: "string" },
    json: { type: "boolean", default: false },
  });
  if (positionals.length !== 1) throw new UsageError("diff takes one VDI name");
  await withAdmin(positionals[0]!, values, async (admin, vdi) => {
    const ends = await diffEnds(admin.client, vdi, values["from-snap"]);
    // Printed as found: a large VDI's list is never held whole. rbd's shapes: a JSON array of
    // {offset, length, exists}, or a table of Offset, Length and Type (data or zero).
    let first = true;
    if (values.json) process.stdout.write("[");
    else print(`${"Offset".padEnd(14)}${"Length".padEnd(12)}Type`);
    for await (const extent of changedExtents(admin.client, ends)) {
      if (values.json) {
        const item = { offset: extent.offset, length: extent.length, exists: String(!extent.zero) };
        process.stdout.write((first ? "" : ",") + JSON.stringify(item));
      } else {
        print(
          `${String(extent.offset).padEnd(14)}${String(extent.length).padEnd(12)}${
            extent.zero ? "zero" : "data"
          }`,
        );
      }
      first = false;
    }
    if (values.json) print("]");
  });
}

/** The VDI an import-diff goes into, as found before anything is written. */
interface ImportTarget {
  name: string;
  /** Undefined: it does not exist yet (a diff without "from" creates it). */
  working: Inode | undefined;
  /** The snapshot its data is (the "from" of the diff), when the diff has one. */
  base: Inode | undefined;
  sizeBytes: number;
  /** The tag of the snapshot to take after: undefined for none, "" for an untagged one. */
  snapshotTag: string | undefined;
}

function refuse(text: string): never {
  throw new SheepdogError(ResultCode.INVALID_PARMS, text);
}

async function readInode(client: ObjectClient, vid: number): Promise<Inode> {
  return decodeInode(await client.readObject(vdiOid(vid), 0, INODE_SIZE));
}

/** The snapshot the working VDI `working` was made from (its newest), if it is one of its own. */
async function baseSnapshot(client: ObjectClient, working: Inode): Promise<Inode | undefined> {
  if (working.parentVdiId === 0) return undefined;
  const parent = await readInode(client, working.parentVdiId);
  return isSnapshot(parent) && parent.name === working.name ? parent : undefined;
}

/** Checks that the diff applies to `name` as it is; nothing is written here. */
async function checkTarget(
  client: ObjectClient,
  name: string,
  summary: DiffSummary,
): Promise<ImportTarget> {
  const { from, to, size } = summary.header;
  let working: Inode | undefined;
  try {
    working = (await VdiIo.open(client, name)).inode;
  } catch (error) {
    if (!isResult(error, ResultCode.NO_VDI) || from !== undefined) throw error;
  }
  if (working === undefined) {
    if (size === undefined) {
      refuse(`Cannot create '${name}' from a diff without a size ('s') record: create it first`);
    }
  } else {
    // Held from here to the end by this connection: no VM attaches it half-applied.
    await attachForWriting(client, name);
  }
  const base = working === undefined ? undefined : await baseSnapshot(client, working);
  if (working !== undefined && from !== undefined) {
    if (base === undefined) {
      refuse(`Cannot apply a diff from snapshot '${from}' to '${name}': it has no snapshot`);
    }
    if (base.tag !== from && String(base.snapId) !== from) {
      refuse(
        `Cannot apply a diff from snapshot '${from}' to '${name}': its latest snapshot is ` +
          `'${snapshotName(base)}'`,
      );
    }
    if (working.dataVdiId.some((owner, index) => owner !== base.dataVdiId[index])) {
      refuse(
        `Cannot apply a diff to '${name}': it was written after its snapshot '${from}' ` +
          `(revert it with 'img snapshot -a ${from}' first)`,
      );
    }
  }
  if (working !== undefined && from === undefined && working.dataVdiId.some((o) => o !== 0)) {
    refuse(
      `Cannot apply a diff without a "from" snapshot to '${name}': it holds data ` +
        "(such a diff goes into a new or empty VDI)",
    );
  }
  const current = working?.vdiSize ?? 0;
  const sizeBytes = size ?? current;
  if (sizeBytes < current) {
    refuse(
      `Cannot apply a diff of a ${sizeBytes}-byte image to '${name}' (${current} bytes): ` +
        "shrinking is not supported",
    );
  }
  if (summary.end > sizeBytes) {
    refuse(
      `Cannot apply the diff to '${name}': its records reach byte ${summary.end}, past the ` +
        `VDI's ${sizeBytes} bytes`,
    );
  }
  let snapshotTag: string | undefined;
  if (to !== undefined) {
    // A snap id as the name (a snapshot without a tag): the new snapshot gets no tag either.
    snapshotTag = /^\d+$/.test(to) ? "" : to;
    if (snapshotTag !== "") {
      validateTag(snapshotTag);
      const taken = working !== undefined &&
        await client.lookupVdi(name, { tag: snapshotTag }).then(() => true, (error) => {
          if (isResult(error, ResultCode.NO_VDI) || isResult(error, ResultCode.NO_TAG)) {
            return false;
          }
          throw error;
        });
      if (taken) {
        refuse(`Cannot apply the diff to '${name}': it has a snapshot tagged '${to}' already`);
      }
    }
  }
  return { name, working, base, sizeBytes, snapshotTag };
}

/** Bounded concurrency: at most `limit` tasks in flight; the first failure stops new ones. */
class Window {
  readonly #limit: number;
  readonly #running = new Set<Promise<void>>();
  #failure: { error: unknown } | undefined;

  constructor(limit: number) {
    this.#limit = limit;
  }

  async add(task: () => Promise<void>): Promise<void> {
    while (this.#running.size >= this.#limit) await Promise.race(this.#running);
    if (this.#failure) throw this.#failure.error;
    const running: Promise<void> = task().then(
      () => {
        this.#running.delete(running);
      },
      (error) => {
        this.#running.delete(running);
        this.#failure ??= { error };
      },
    );
    this.#running.add(running);
  }

  async drain(): Promise<void> {
    await Promise.all(this.#running);
    if (this.#failure) throw this.#failure.error;
  }
}

/** Writes in flight while applying a diff (each at most one object, or APPLY_CHUNK_BYTES). */
const APPLY_WINDOW = 8;
const APPLY_CHUNK_BYTES = 4 * 1024 * 1024;

/** Applies the (already validated) diff in `file` to `io`; resolves with bytes written. */
async function applyDiff(
  io: VdiIo,
  file: string,
  label: string,
  summary: DiffSummary,
  onProgress: ((done: number, total: number) => void) | undefined,
): Promise<number> {
  const source = await openDiffFile(file);
  const window = new Window(APPLY_WINDOW);
  const total = summary.dataBytes + summary.zeroBytes;
  let done = 0;
  let written = 0;
  // Zero runs inside 'w' data keep the VDI thin: written only where something is stored.
  const zero = async (offset: number, length: number) => {
    if (io.allocation(offset, length).some((run) => run.allocated)) {
      await io.discard(offset, length, { zeroPartial: true });
    }
  };
  try {
    const parser = new DiffParser(source, label);
    await parser.readHeader();
    for (let record = await parser.next(); record; record = await parser.next()) {
      if (record.kind === "z") {
        // A discard claims whole objects: let the writes before it finish first.
        await window.drain();
        await zero(record.offset, record.length);
        done += record.length;
        onProgress?.(done, total);
        continue;
      }
      let offset = record.offset;
      const end = record.offset + record.length;
      while (offset < end) {
        const toObjectEnd = io.objectBytes - (offset % io.objectBytes);
        const data = await parser.readData(Math.min(end - offset, toObjectEnd, APPLY_CHUNK_BYTES));
        const at = offset;
        await window.add(async () => {
          for (const run of dataRuns(data)) {
            if (run.zero) await zero(at + run.offset, run.length);
            else {
              await io.write(at + run.offset, data.subarray(run.offset, run.offset + run.length));
              written += run.length;
            }
          }
          done += data.length;
          onProgress?.(done, total);
        });
        offset += data.length;
      }
    }
    await window.drain();
    await io.flush();
  } catch (error) {
    await window.drain().catch(() => undefined);
    throw error;
  } finally {
    await source.close();
  }
  return written;
}

/** Puts the VDI back as it was after a failed apply, as far as it can; says what it did. */
async function undoImport(admin: AdminService, target: ImportTarget): Promise<string> {
  try {
    if (target.working === undefined) {
      await admin.deleteVdi(target.name);
      return `'${target.name}' was not created`;
    }
    if (target.base !== undefined) {
      await admin.rollback(`${target.name}:${target.base.snapId}`);
      return `'${target.name}' is back at snapshot '${snapshotName(target.base)}'`;
    }
    const io = await VdiIo.open(admin.client, target.name);
    await io.discard(0, io.sizeBytes, { zeroPartial: false });
    return `'${target.name}' is empty again`;
  } catch (error) {
    return `'${target.name}' may be partly written (${(error as Error).message})`;
  }
}

async function importDiff(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    ...CLUSTER_FLAG,
    progress: { type: "boolean", short: "p", default: false },
  });
  if (positionals.length !== 2) throw new UsageError("import-diff takes FILE|- and NAME");
  const input = positionals[0]!;
  const spooled = input === "-" ? await spoolStdin() : undefined;
  try {
    const file = spooled?.file ?? input;
    const label = spooled ? "on standard input" : `'${input}'`;
    const source = await openDiffFile(file);
    let summary: DiffSummary;
    try {
      summary = await validateDiff(source, label);
    } finally {
      await source.close();
    }
    await withAdmin(positionals[1]!, values, async (admin, vdi) => {
      const { name, ref } = parseVdiRef(vdi);
      if (ref !== undefined) refuse(`Cannot apply a diff to '${vdi}': it is a snapshot`);
      const target = await checkTarget(admin.client, name, summary);
      // Neither writes data: should one fail, there is nothing to undo.
      if (target.working === undefined) {
        await admin.createVdi({ name, sizeBytes: target.sizeBytes });
        await attachForWriting(admin.client, name);
      } else if (target.sizeBytes > target.working.vdiSize) {
        await admin.resize(name, target.sizeBytes);
      }
      try {
        await applyAndSnapshot(admin, target, file, label, summary, values.progress);
      } finally {
        await detach(admin.client, name);
      }
    });
  } finally {
    await spooled?.remove();
  }
}

/** Applies the checked diff to `target`, then takes its "to" snapshot; says what it did. */
async function applyAndSnapshot(
  admin: AdminService,
  target: ImportTarget,
  file: string,
  label: string,
  summary: DiffSummary,
  progress: boolean,
): Promise<void> {
  const name = target.name;
  const onProgress = progressReporter(progress);
  let written: number;
  try {
    written = await applyDiff(
      await VdiIo.open(admin.client, name),
      file,
      label,
      summary,
      onProgress,
    );
  } catch (error) {
    endProgress(onProgress);
    const undone = await undoImport(admin, target);
    const message = error instanceof Error ? error.message : String(error);
    throw new SheepdogError(
      error instanceof SheepdogError ? error.code : ResultCode.EIO,
      `${message}; ${undone}`,
    );
  }
  endProgress(onProgress);
  let taken = "";
  if (target.snapshotTag !== undefined) {
    const vid = await admin.snapshot(name, target.snapshotTag);
    const snap = await readInode(admin.client, vid);
    taken = `, snapshot '${snapshotName(snap)}' taken`;
  }
  print(
    `Applied ${summary.records} records to '${name}': ${formatSize(written)} written, ${
      formatSize(summary.zeroBytes)
    } zeroed${taken}`,
  );
}

/** The commands, for `img`'s table. */
export const DIFF_COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  "export-diff": exportDiff,
  "import-diff": importDiff,
  diff,
};
