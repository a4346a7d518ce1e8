/**
 * Resuming a job's chain after a restart. The chain is append-only: a restarted trainer continues from the
 * ledger's last durable event (EventSink.lastEvent) with a signed job.resumed that names the checkpoint it
 * returns to and the steps it abandons, never from the checkpoint's older chain position.
 */
import type { LedgerEvent } from "../proto/ledger-events.js";

/**
 * The last training step the chain had reached when `last` was written (steps of one attempt are consecutive).
 * After a job.resumed it is the checkpoint's step; before any step it is 0.
 */
export function lastStepOf(last: LedgerEvent): number {
  switch (last.type) {
    case "update.applied":
    case "step.committed":
    case "checkpoint.saved":
      return last.body.step;
    case "job.resumed":
      return last.body.checkpoint?.step ?? 0;
    case "job.finished":
      return last.body.steps;
    default:
      return 0;
  }
}

/** Steps as ranges, for messages and reports: "4-6, 9" for [4, 5, 6, 9]. */
export function compressRanges(xs: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < xs.length;) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j]! + 1) j++;
    out.push(i === j ? `${xs[i]}` : `${xs[i]}-${xs[j]}`);
    i = j + 1;
  }
  return out.length > 12 ? `${out.slice(0, 12).join(", ")}, … (${xs.length} steps)` : out.join(", ");
}
