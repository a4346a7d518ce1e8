/**
 * The job lifecycle, pure: OpenAI's statuses and which action moves a job where.
 *   validating_files → queued → running → succeeded | failed | cancelled
 *   running → pausing → paused → (resume) queued → running …   (pause of a queued job: paused at once)
 * A wrong transition (pausing a succeeded job) is an error with OpenAI's body, status 400.
 */
export const STATUSES = [
  "validating_files",
  "queued",
  "running",
  "pausing",
  "paused",
  "succeeded",
  "failed",
  "cancelled",
] as const;
export type JobStatus = (typeof STATUSES)[number];

export const FINAL: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

export type Action = "cancel" | "pause" | "resume";

/** What the manager must do to the job's worker for an accepted action. */
export type Effect = "none" | "signal_worker" | "enqueue" | "dequeue";

export type Decision = { ok: true; next: JobStatus; effect: Effect } | { ok: false; message: string };

export function decide(status: JobStatus, action: Action, id: string): Decision {
  if (FINAL.includes(status))
    return {
      ok: false,
      message: `Job ${id} has already ${status === "succeeded" ? "completed" : status}; cannot ${action} it.`,
    };
  switch (action) {
    case "cancel":
      return {
        ok: true,
        next: "cancelled",
        effect: status === "running" || status === "pausing" ? "signal_worker" : "dequeue",
      };
    case "pause":
      if (status === "running") return { ok: true, next: "pausing", effect: "signal_worker" };
      if (status === "queued") return { ok: true, next: "paused", effect: "dequeue" };
      return { ok: false, message: `Job ${id} is ${status}; only a running or queued job can be paused.` };
    case "resume":
      if (status === "paused") return { ok: true, next: "queued", effect: "enqueue" };
      if (status === "pausing") return { ok: true, next: "running", effect: "signal_worker" };
      return { ok: false, message: `Job ${id} is ${status}; only a paused job can be resumed.` };
  }
}

/** The status after the worker of a job ended with `result`, given what the API had set meanwhile. */
export function afterWorker(current: JobStatus, result: "succeeded" | "paused" | "cancelled" | "failed"): JobStatus {
  if (current === "cancelled") return "cancelled"; // a cancel wins over whatever the last step did
  return result;
}
