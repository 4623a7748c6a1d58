/**
 * Crash holds: a copy this node's crash left suspect is not served while a node that may hold
 * acknowledged writes it lost is absent.
 *
 * A crash loses the writes a copy had not synced, and may lose all of them without a trace: the
 * copy then looks exactly as it did at its last sync ("nothing changed"). Those writes were
 * acknowledged only once every target of the object had them, so another target holds them
 * unless it crashed too; recovery takes its newer copy once it is listed. While such a node is
 * outside the view, nothing here can tell whether the suspect copy lacks writes: serving it, or
 * trusting it enough to let new writes land on it, would return or build on bytes older than
 * acknowledged ones, and the newer copy would be overwritten when its holder came back (found by
 * the simulation, seed 618). So the copy is held: every read, write or copy of it is refused with
 * WAIT_FOR_JOIN (the client's request stalls, then fails) until those nodes are back or the copy
 * is replaced by a newer one or checked against them.
 *
 * Which nodes: the targets of the object in every view this node logged from the epoch of the
 * copy's journal entry on (a lower bound of the epoch of its first unsynced write; a copy of an
 * older build's journal counts from the start of the log). Views after the crash add nothing a
 * write could have reached here, and views this node did not see put no writes on it.
 *
 * A node that will never come back (its disk died) would hold such copies forever: an operator
 * says so with `shepherd cluster forget NODE` (`forget`, kept in `DIR/forgotten-nodes`), and the
 * copies are checked against the nodes that are there, the writes only that node had given up.
 *
 * @module
 */

import { ResultCode, SheepdogError } from "../../core/errors.ts";
import { type ClusterView, targetsOf } from "../../core/cluster/view.ts";
import { type Oid, oidToHex } from "../../core/vdi/oid.ts";

/** What the holds need from the sheep. */
export interface CrashHoldsContext {
  readonly selfId: string;
  /** The epoch a crash-suspect copy's journal entry carried; undefined for any other copy. */
  crashSuspectSince(oid: Oid): number | undefined;
  copies(oid: Oid): number;
}

export class CrashHolds {
  readonly #context: CrashHoldsContext;
  /** The views this node logged before it started, oldest first. */
  readonly #past: readonly ClusterView[];
  /** Per object and view: the absent nodes found last (the check runs on every access). */
  readonly #cache = new Map<Oid, { epoch: number; absent: readonly string[] }>();
  /** Nodes an operator declared gone for good: nothing waits for them. */
  readonly #forgotten: Set<string>;

  constructor(
    context: CrashHoldsContext,
    pastViews: readonly ClusterView[],
    forgotten: Iterable<string> = [],
  ) {
    this.#context = context;
    this.#past = [...pastViews].sort((a, b) => a.epoch - b.epoch);
    this.#forgotten = new Set(forgotten);
  }

  /** Copies stop waiting for `nodes`: they are gone for good (see the module doc). */
  forget(nodes: Iterable<string>): void {
    for (const node of nodes) this.#forgotten.add(node);
    this.#cache.clear();
  }

  /**
   * The nodes absent from `view` that may hold acknowledged writes this node's copy of `oid`
   * lost in a crash; empty when there are none (or the copy is not crash-suspect).
   */
  absentHolders(oid: Oid, view: ClusterView): readonly string[] {
    const since = this.#context.crashSuspectSince(oid);
    if (since === undefined) {
      this.#cache.delete(oid);
      return [];
    }
    const cached = this.#cache.get(oid);
    if (cached?.epoch === view.epoch) return cached.absent;
    const present = new Set(view.nodes.map((n) => n.id));
    const absent = new Set<string>();
    const copies = this.#context.copies(oid);
    for (const past of this.#past) {
      if (past.epoch < since || !past.nodes.some((n) => n.id === this.#context.selfId)) continue;
      for (const target of targetsOf(past, oid, copies)) {
        if (!present.has(target.id) && !this.#forgotten.has(target.id)) absent.add(target.id);
      }
    }
    const result = [...absent].sort();
    this.#cache.set(oid, { epoch: view.epoch, absent: result });
    return result;
  }

  /** Throws WAIT_FOR_JOIN while `oid`'s copy here is held (see the module doc). */
  check(oid: Oid, view: ClusterView): void {
    const absent = this.absentHolders(oid, view);
    if (absent.length === 0) return;
    throw new SheepdogError(
      ResultCode.WAIT_FOR_JOIN,
      `Object ${oidToHex(oid)}: the copy a crash left here may lack acknowledged writes ` +
        `that ${absent.join(", ")} ${absent.length === 1 ? "holds" : "hold"}; it is held until ${
          absent.length === 1 ? "that node rejoins" : "those nodes rejoin"
        }`,
    );
  }
}
