/**
 * A trainer pod serves rank 0's Prometheus metrics on RFT_METRICS_PORT (the container port named `metrics`
 * that the chart's PodMonitor scrapes): rewards and steps of the running job, labelled with its name.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { loadManifest } from "../../trainer/job/manifest.js";
import { runTrainerPod } from "../../trainer/job/pod.js";
import { freePort } from "../k8s/cluster.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

test("a trainer pod serves its metrics while it trains: rft_step, rft_train_reward_mean, rft_policy_entropy, labelled with the job", async () => {
  const dir = tempJobDir("pod-metrics");
  await tinyModel(join(dir, "model"), { layers: 1 });
  const file = rftManifest(
    dir,
    { model: "model" },
    { nEpochs: 1, batchSize: 4, samplesPerPrompt: 2, maxCompletionTokens: 4, evalInterval: 100, evalSamples: 1 },
  );
  const manifest = loadManifest(file);
  const port = await freePort();
  const run = runTrainerPod({
    configFile: manifest.file,
    env: {
      RFT_CHECKPOINT_DIR: join(dir, "ckpt"),
      RFT_JOB_NAMESPACE: "team-a",
      RFT_JOB_NAME: "sorter",
      RFT_METRICS_PORT: String(port),
      RFT_MIN_STEP_MS: "400", // keeps the run alive while the test scrapes
    },
    signals: false,
  });
  let page = "";
  const deadline = Date.now() + 120_000;
  while (!/^rft_step\{job="sorter"\} [1-9]/m.test(page)) {
    assert.ok(Date.now() < deadline, `no step in the trainer's metrics:\n${page}`);
    await new Promise((r) => setTimeout(r, 100));
    page = await fetch(`http://127.0.0.1:${port}/metrics`)
      .then((r) => r.text())
      .catch(() => "");
  }
  assert.match(page, /^rft_train_reward_mean\{job="sorter"\} [0-9.e-]+$/m);
  assert.match(page, /^rft_total_steps\{job="sorter"\} \d+$/m);
  // The step's policy statistics: the entropy estimate of the sampled tokens (a random model's is well above 0).
  const entropy = /^rft_policy_entropy\{job="sorter"\} ([0-9.e+-]+)$/m.exec(page);
  assert.ok(entropy && Number(entropy[1]) > 0, `rft_policy_entropy in:\n${page}`);
  const r = await run;
  assert.equal(r.status, "succeeded");
  await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`), "the server closes with the pod's work");
});
