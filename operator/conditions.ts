/** metav1.Condition helpers (pure): set with lastTransitionTime kept when the status does not change. */
import type { Condition, ConditionType, JobState } from "../proto/finetunejob-status.js";

export interface ConditionInput {
  type: ConditionType;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

const MAX_MESSAGE = 1000;

export function getCondition(conds: readonly Condition[] | undefined, type: ConditionType): Condition | undefined {
  return conds?.find((c) => c.type === type);
}

export function isTrue(conds: readonly Condition[] | undefined, type: ConditionType): boolean {
  return getCondition(conds, type)?.status === "True";
}

/** Returns a new list with `c` set; the transition time moves only when the status changes. */
export function setCondition(
  conds: readonly Condition[] | undefined,
  c: ConditionInput,
  generation: number,
  now: string,
): Condition[] {
  const list = [...(conds ?? [])];
  const i = list.findIndex((x) => x.type === c.type);
  const prev = i >= 0 ? list[i] : undefined;
  const next: Condition = {
    type: c.type,
    status: c.status,
    reason: c.reason,
    message: c.message.length > MAX_MESSAGE ? `${c.message.slice(0, MAX_MESSAGE - 1)}…` : c.message,
    observedGeneration: generation,
    lastTransitionTime: prev && prev.status === c.status ? prev.lastTransitionTime : now,
  };
  if (i >= 0) list[i] = next;
  else list.push(next);
  return list;
}

export const TERMINAL: readonly ConditionType[] = ["Succeeded", "Failed", "Cancelled"];

export function isTerminal(conds: readonly Condition[] | undefined): boolean {
  return TERMINAL.some((t) => isTrue(conds, t));
}

/** The display state for the printer column, derived from the conditions (never read back as truth). */
export function stateOf(conds: readonly Condition[] | undefined): JobState {
  for (const t of TERMINAL) if (isTrue(conds, t)) return t as JobState;
  if (isTrue(conds, "Suspended")) return "Suspended";
  if (getCondition(conds, "Admitted")?.status === "False") return "Queued";
  if (isTrue(conds, "Running")) return "Running";
  if (getCondition(conds, "Running")?.reason === "Restarting") return "Restarting";
  if (isTrue(conds, "Created")) return "Created";
  return "Pending";
}
