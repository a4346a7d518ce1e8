/**
 * Where a run resumes: the latest checkpoint whose checkpoint.saved the ledger still holds. A ledger that lost
 * its tail (events that never reached the disk before a crash of the machine, or a restored backup) ends before
 * the latest checkpoint's event: resuming from it would point the chain at events that are not there, so the
 * run falls back to the last checkpoint the ledger fully records (or the base model), removes the checkpoints
 * it no longer records (their steps are trained again), and says so in one line (`fallback`).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { CheckpointInfo } from "../checkpoint/retention.js";
import type { CheckpointStore } from "../checkpoint/store.js";
import { ledgerRecords, ledgerTail } from "../governance/ledger.js";
import type { ChainHead } from "../../ledger/client.js";

/** The ledger position a checkpoint's state.json records (undefined: unreadable). */
function headOf(store: CheckpointStore, c: CheckpointInfo): ChainHead | undefined {
  try {
    return (JSON.parse(readFileSync(join(store.dir(c.name), "state.json"), "utf8")) as { ledger?: ChainHead }).ledger;
  } catch {
    return undefined;
  }
}

export async function recordedCheckpoint(
  store: CheckpointStore,
  latest: CheckpointInfo,
  o: { ledger: Omit<Parameters<typeof ledgerTail>[0], "outDir">; outDir: string },
): Promise<{ latest: CheckpointInfo | null; fallback: string | null }> {
  const { sink, last } = await ledgerTail({ ...o.ledger, outDir: o.outDir });
  const records = (c: CheckpointInfo) => ledgerRecords(sink, last, o.ledger.job, headOf(store, c));
  if (await records(latest)) return { latest, fallback: null };
  const dropped: string[] = [];
  let chosen: CheckpointInfo | null = null;
  for (const c of store.list().sort((a, b) => b.step - a.step)) {
    let ok: boolean;
    try {
      store.verify(c.name);
      ok = await records(c);
    } catch {
      ok = false; // a damaged checkpoint is never the resume point
    }
    if (ok) {
      chosen = c;
      break;
    }
    dropped.push(c.name);
  }
  const expected = headOf(store, latest);
  const where = last ? `ends at seq ${last.seq}` : "holds no events";
  const fallback =
    `The ledger ${where}, short of checkpoint ${latest.name}'s checkpoint.saved` +
    `${expected ? ` (seq ${expected.seq - 1})` : ""}: its tail was lost; resuming from ` +
    `${chosen ? `checkpoint ${chosen.name} (step ${chosen.step})` : "the base model"}, the last state it records` +
    ` (checkpoints ${dropped.join(", ")} removed)`;
  for (const name of dropped) store.remove(name);
  return { latest: chosen, fallback };
}
