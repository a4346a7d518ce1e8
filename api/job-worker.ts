/**
 * One fine-tuning job of `rft api`, in a child process (training keeps the CPU busy; the server stays
 * responsive): the same `runJob` as `rft run`, with its hooks sent to the parent over IPC and the parent's
 * pause / resume / cancel applied to the loop's control. argv: MANIFEST OUT [BACKEND].
 * If the parent goes away, the job pauses (checkpoints) and exits; the server resumes it on restart.
 */
import { loadManifest } from "../trainer/job/manifest.js";
import { runJob } from "../trainer/job/run-job.js";
import { parseBackendName } from "../trainer/model/backend.js";
import type { RftControl } from "../trainer/rl/loop.js";

export type WorkerMessage =
  | { type: "event"; event: { level: string; message: string; type: string; data: unknown } }
  | { type: "checkpoint" }
  | {
      type: "result";
      status: "succeeded" | "paused" | "cancelled" | "failed";
      error?: string;
      modelDir?: string;
      trainingSeconds: number;
    }
  | { type: "error"; message: string };

export interface ControlMessage {
  pause: boolean;
  cancel: boolean;
}

const send = (m: WorkerMessage) => process.send?.(m);
/** Sends the last message, then exits (a loaded backend may keep the process alive otherwise). */
const finish = (m: WorkerMessage, code: number) =>
  process.connected ? process.send!(m, undefined, {}, () => process.exit(code)) : process.exit(code);

async function main() {
  const [manifestFile, outDir, backend] = process.argv.slice(2);
  const control: RftControl = { pause: false, cancel: false };
  process.on("message", (m: ControlMessage) => {
    control.pause = Boolean(m.pause);
    control.cancel = Boolean(m.cancel);
  });
  process.on("disconnect", () => {
    control.pause = true;
  });
  // Signals are the parent's business (it sends control messages); a terminal's Ctrl-C reaches the server.
  process.on("SIGINT", () => undefined);
  let trainingSeconds = 0;
  try {
    const result = await runJob({
      manifest: loadManifest(manifestFile!),
      outDir: outDir!,
      backend: backend ? parseBackendName(backend) : undefined,
      control,
      hooks: {
        onEvent: (e) => send({ type: "event", event: e }),
        onStep: (m) => {
          const t = (m.data as { timing?: { step?: { full_iteration?: number } } }).timing?.step?.full_iteration;
          if (typeof t === "number") trainingSeconds += t;
          send({ type: "event", event: m });
        },
        onCheckpoint: () => send({ type: "checkpoint" }),
        onSftStep: (e, total) =>
          send({
            type: "event",
            event: {
              level: "info",
              type: "metrics",
              message: `Step ${e.step}/${total}: training loss=${e.trainLoss.toFixed(4)}${e.validLoss !== undefined ? `, validation loss=${e.validLoss.toFixed(4)}` : ""}`,
              data: {
                step: e.step,
                total_steps: total,
                train_loss: e.trainLoss,
                ...(e.validLoss !== undefined ? { valid_loss: e.validLoss } : {}),
              },
            },
          }),
      },
    });
    finish(
      {
        type: "result",
        status: result.status,
        ...(result.method === "reinforcement" && result.error ? { error: result.error } : {}),
        ...(result.modelDir ? { modelDir: result.modelDir } : {}),
        trainingSeconds,
      },
      0,
    );
  } catch (e) {
    finish({ type: "error", message: (e as Error).message }, 1);
  }
}

await main();
