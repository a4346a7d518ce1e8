/**
 * Which checkpoints to keep (OpenAI's RFT policy): the three with the highest valid_reward_mean, plus the
 * latest one (the resume point). Ties keep the earlier step. Pure.
 */
export interface CheckpointInfo {
  name: string; // directory name, e.g. step-000010
  step: number;
  validRewardMean: number | null;
  trainRewardMean: number | null;
  createdAt: number; // unix seconds
  reason: "eval" | "pause" | "final";
}

export function retained(all: readonly CheckpointInfo[], best = 3): Set<string> {
  const keep = new Set<string>();
  const scored = all.filter((c) => c.validRewardMean !== null);
  scored
    .slice()
    .sort((a, b) => b.validRewardMean! - a.validRewardMean! || a.step - b.step)
    .slice(0, best)
    .forEach((c) => keep.add(c.name));
  const latest = all.reduce<CheckpointInfo | undefined>((l, c) => (!l || c.step >= l.step ? c : l), undefined);
  if (latest) keep.add(latest.name);
  return keep;
}

/** The checkpoint with the best validation reward (null when none was evaluated). */
export function bestCheckpoint(all: readonly CheckpointInfo[]): CheckpointInfo | null {
  let best: CheckpointInfo | null = null;
  for (const c of all) {
    if (c.validRewardMean === null) continue;
    if (
      !best ||
      c.validRewardMean > best.validRewardMean! ||
      (c.validRewardMean === best.validRewardMean && c.step < best.step)
    )
      best = c;
  }
  return best;
}
