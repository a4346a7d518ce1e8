/** `rft trainer`: the trainer pod's entry point (logic in trainer/job/pod.ts). */
import type { Command } from "commander";
import { ManifestError } from "../../trainer/job/manifest.js";
import { runTrainerPod, TrainerPodError } from "../../trainer/job/pod.js";

export function register(program: Command) {
  program
    .command("trainer")
    .description(
      "run one trainer rank of a FineTuneJob in a pod (config from the ConfigMap mount, grader sidecar, NATS)",
    )
    .option(
      "--config <file>",
      "resolved job config (env RFT_JOB_CONFIG)",
      process.env.RFT_JOB_CONFIG ?? "/etc/rft/job/job.json",
    )
    .action(async (o) => {
      try {
        const r = await runTrainerPod({ configFile: o.config, env: process.env });
        process.exit(r.exitCode);
      } catch (e) {
        if (e instanceof TrainerPodError || e instanceof ManifestError) {
          process.stderr.write(`rft trainer: ${e.message}\n`);
          process.exit(2);
        }
        throw e;
      }
    });
}
