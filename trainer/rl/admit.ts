/**
 * Phase "admit": the training rows a run may train on (those the ledger admitted, in file order), each with
 * its admission (the envelope of groups its gradient may reach), and the hyperparameters resolved for that
 * many rows. Pure.
 */
import type { AdmittedRow } from "../governance/admission.js";
import type { RftRow } from "../data/dataset.js";
import { type ResolvedRft, resolveRft } from "../settings/hyperparameters.js";
import type { ReinforcementHyperparameters } from "../../proto/finetunejob.js";

export interface AdmittedRows {
  /** Admission of each training row (rows not admitted never appear in a batch). */
  admission: Map<RftRow, AdmittedRow>;
  /** The admitted rows, in file order: what the epoch permutation orders. */
  trainRows: RftRow[];
  /** Hyperparameters resolved for the admitted rows. */
  hp: ResolvedRft;
}

export function admitTrainingRows(
  train: readonly RftRow[],
  admitted: readonly AdmittedRow[],
  hyperparameters: ReinforcementHyperparameters | undefined,
): AdmittedRows {
  const trainRows = admitted.map((a) => train[a.index]!);
  if (trainRows.length === 0)
    throw new Error("no training row was admitted (see the row.rejected events in the ledger)");
  return {
    admission: new Map(admitted.map((a) => [train[a.index]!, a])),
    trainRows,
    hp: resolveRft(hyperparameters, trainRows.length),
  };
}
