/**
 * End to end with a real Prometheus (Debian's package) scraping a local `rft run --metrics-port` every second:
 * it sees rft_valid_reward_mean, and the alert rules of helm/rft-operator/alerts/rft-alerts.yaml — loaded as
 * they are, with a test override of RftTrainingGraderErrorRateHigh's window (10m → 15s) and `for` (10m → 2s)
 * so it can fire within the test — fire RftTrainingGraderErrorRateHigh when a python grader raises on about a
 * quarter of the rows (rft_grader_sample_errors_total rises; fewer than half, so the job keeps running).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, test } from "node:test";
import { parse, stringify } from "yaml";
import { startPrometheus } from "./prometheus.js";
import { startRftRun } from "./rft-run.js";
import { ALERTS_FILE } from "./tools.js";

const FAILING_GRADER = `import re

def grade(sample, item):
    if sum(int(c) for c in item["answer"]) % 4 == 0:
        raise ValueError("grader bug on " + item["answer"])
    m = re.search(r"Answer:\\s*(\\d+)", sample["output_text"])
    return 1.0 if m and m.group(1) == item["answer"] else 0.0
`;

/** The rules file with a shorter window and `for` on one alert: the same expression, minutes become seconds. */
function rulesWithTestOverride(): string {
  const doc = parse(readFileSync(ALERTS_FILE, "utf8")) as { groups: { rules: Record<string, string>[] }[] };
  let found = 0;
  for (const g of doc.groups)
    for (const r of g.rules)
      if (r.alert === "RftTrainingGraderErrorRateHigh") {
        found++;
        assert.match(r.expr!, /\[10m\]/);
        r.expr = r.expr!.replaceAll("[10m]", "[15s]");
        r.for = "2s";
      }
  assert.equal(found, 1);
  return stringify(doc);
}

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

test("Prometheus scrapes rft run, sees rft_valid_reward_mean and fires the grader error alert", async () => {
  // 50 epochs: still running while Prometheus scrapes and evaluates, however fast the machine; stopped below.
  const job = await startRftRun("prom-e2e", {
    pythonGrader: FAILING_GRADER,
    trainRows: 1024,
    hyperparameters: { nEpochs: 50 },
  });
  cleanup.push(() => job.stop());
  const prom = await startPrometheus(
    {
      global: { scrape_interval: "1s", evaluation_interval: "1s" },
      rule_files: ["rft-alerts.yaml"],
      scrape_configs: [
        {
          job_name: "rft-run",
          honor_labels: true, // the trainer's `job` label (the FineTuneJob name) wins over the target's
          static_configs: [{ targets: [`127.0.0.1:${job.metricsPort}`] }],
        },
      ],
    },
    { "rft-alerts.yaml": rulesWithTestOverride() },
  );
  cleanup.push(() => prom.close());

  const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await fn();
      if (v !== undefined) return v;
      if (job.child.exitCode !== null)
        throw new Error(`rft run exited ${job.child.exitCode} while waiting for ${what}:\n${job.log()}`);
      if (Date.now() > deadline)
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}\nrft run:\n${job.log()}\nprometheus:\n${prom.log()}`,
        );
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  const valid = await until(
    "rft_valid_reward_mean in Prometheus",
    async () => (await prom.query('rft_valid_reward_mean{job="sort-digits-rft"}'))[0],
    240_000,
  );
  assert.equal(valid.metric.instance, `127.0.0.1:${job.metricsPort}`);
  const reward = Number(valid.value[1]);
  assert.ok(reward >= 0 && reward <= 1, `valid reward ${reward}`);

  const errors = await until(
    "python grader errors counted",
    async () =>
      (
        await prom.query('rft_grader_sample_errors_total{job="sort-digits-rft",error="python_grader_runtime_error"}')
      )[0],
    240_000,
  );
  assert.ok(Number(errors.value[1]) > 0);

  const alert = await until(
    "RftTrainingGraderErrorRateHigh firing",
    async () =>
      (await prom.alerts()).find(
        (a) => a.labels.alertname === "RftTrainingGraderErrorRateHigh" && a.state === "firing",
      ),
    240_000,
  );
  assert.equal(alert.labels.job, "sort-digits-rft");
  assert.equal(alert.labels.severity, "warning");
  const rate = Number(alert.value);
  assert.ok(rate > 0.05 && rate < 1, `error rate ${rate}`);
  assert.match(
    alert.annotations.summary!,
    /^FineTuneJob sort-digits-rft: [\d.]+% of training samples have grader errors$/,
  );
  assert.match(alert.annotations.runbook_url!, /docs\/operations\.md#rfttraininggradererrorratehigh$/);

  // The job keeps running (fewer than half of the samples fail); nothing else fires on a healthy short run.
  assert.equal(job.child.exitCode, null, job.log());
  const others = (await prom.alerts()).filter((a) => a.labels.alertname !== "RftTrainingGraderErrorRateHigh");
  assert.deepEqual(others, []);
  assert.equal(await job.stop(), 0, job.log());
});
