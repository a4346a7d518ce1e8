/**
 * `promtool check metrics` on each component's real /metrics page, with the labelled series present (the
 * grader has graded, with an error; the ledger has rejected a message; the trainer has stepped):
 * the grader service (in process), the ledger service (against a real nats-server), the operator's registry,
 * and a local `rft run --metrics-port`.
 *
 * One finding is not ours: prom-client's default Node.js metrics name three gauges `nodejs_active_*_total`,
 * which promtool flags ("non-counter metrics should not have _total suffix"). They are listed here and
 * tolerated on the pages that include the default metrics; anything else fails the test.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { connect } from "nats";
import { startGraderService } from "../../grader-sidecar/src/server.js";
import { LedgerService } from "../../ledger/service.js";
import { generateKeyPair } from "../../ledger/sign.js";
import { OperatorMetrics } from "../../operator/metrics.js";
import { LEDGER_SUBJECT_PREFIX } from "../../proto/ledger-events.js";
import { NatsServer } from "../ledger/nats-server.js";
import { startRftRun } from "./rft-run.js";
import { promtool, run } from "./tools.js";

const PROM_CLIENT_DEFAULTS = [
  'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
];

async function lint(page: string): Promise<string[]> {
  const r = await run(promtool(), ["check", "metrics"], { input: page });
  const findings = (r.stdout + r.stderr).split("\n").filter(Boolean);
  // promtool exits 3 on lint findings (and prints them), 1 on a page it cannot parse.
  assert.ok(r.code === 0 || (r.code === 3 && findings.length > 0), `promtool exited ${r.code}: ${findings.join("\n")}`);
  return findings;
}

function assertClean(component: string, findings: string[], tolerated: string[] = []) {
  const ours = findings.filter((f) => !tolerated.includes(f));
  assert.deepEqual(ours, [], `${component}: promtool check metrics findings`);
}

const families = (page: string) => new Set([...page.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

test("grader service /metrics passes promtool check metrics", async () => {
  const svc = await startGraderService({ engine: { python: { size: 1 } } });
  cleanup.push(() => svc.close());
  const url = `http://127.0.0.1:${svc.httpPort}`;
  const graders = [
    { type: "python", name: "raises", source: "def grade(sample, item):\n    raise ValueError('no')\n" },
    { type: "string_check", name: "exact", input: "{{ sample.output_text }}", reference: "a", operation: "eq" },
  ];
  for (const grader of graders) {
    const r = await fetch(`${url}/v1/fine_tuning/alpha/graders/run`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ grader, model_sample: "a", item: {} }),
    });
    assert.equal(r.status, 200);
  }
  const page = await (await fetch(`${url}/metrics`)).text();
  assert.match(
    page,
    /^rft_grader_errors_total\{grader_type="python",grader_name="raises",error="python_grader_runtime_error"\} 1$/m,
  );
  for (const f of [
    "rft_grader_requests_total",
    "rft_grader_duration_seconds",
    "rft_grader_python_workers",
    "process_cpu_seconds_total",
  ])
    assert.ok(families(page).has(f), f);
  assertClean("grader", await lint(page), PROM_CLIENT_DEFAULTS);
});

test("ledger service /metrics passes promtool check metrics", async () => {
  const nats = await NatsServer.start();
  cleanup.push(() => nats.kill());
  const svc = await LedgerService.start({ servers: nats.url, key: generateKeyPair().privateKey, port: 0 });
  cleanup.push(() => svc.stop());
  const nc = await connect({ servers: nats.url });
  cleanup.push(() => nc.close());
  await nc.jetstream().publish(`${LEDGER_SUBJECT_PREFIX}.team-a.broken`, new TextEncoder().encode("not json"));
  let page = "";
  for (let i = 0; i < 100 && !/rft_ledger_verification_failures_total\{reason="malformed"\} 1/.test(page); i++) {
    await new Promise((r) => setTimeout(r, 100));
    page = await (await fetch(`${svc.url}/metrics`)).text();
  }
  assert.match(page, /rft_ledger_verification_failures_total\{reason="malformed"\} 1/);
  assertClean("ledger", await lint(page));
});

test("operator metrics pass promtool check metrics", async () => {
  const m = new OperatorMetrics();
  m.reconcileTotal.inc({ controller: "finetunejob", result: "success" });
  m.reconcileTotal.inc({ controller: "finetunejob", result: "error" });
  m.reconcileErrors.inc({ controller: "finetunejob" });
  m.reconcileTime.observe({ controller: "finetunejob" }, 0.02);
  m.jobs.set({ state: "Running" }, 1);
  m.leader.set({ name: "finetunejob" }, 1);
  m.apiRequests.inc(3);
  const q = m.queueMetrics();
  q.adds();
  q.depth(1);
  q.queueDuration(0.01);
  q.workDuration(0.02);
  q.retries();
  q.unfinished(0);
  const page = await m.registry.metrics();
  assert.ok(families(page).has("controller_runtime_reconcile_errors_total"));
  assertClean("operator", await lint(page));
});

test("rft run --metrics-port /metrics passes promtool check metrics", async () => {
  // Long enough (300 steps) that it is still running when scraped, however fast the machine; stopped below.
  const job = await startRftRun("metrics-lint", { trainRows: 48, hyperparameters: { nEpochs: 50 } });
  cleanup.push(() => job.stop());
  await job.waitForLog(/Step 2\/300\b/, 240_000);
  const page = await job.metrics();
  for (const f of [
    "rft_step",
    "rft_valid_reward_mean",
    "rft_step_duration_seconds",
    "rft_graded_samples_total",
    "rft_last_step_timestamp_seconds",
  ])
    assert.ok(families(page).has(f), f);
  assert.match(page, /^rft_valid_reward_mean\{job="sort-digits-rft"\} [0-9.e-]+$/m);
  assertClean("trainer", await lint(page), PROM_CLIENT_DEFAULTS);
  assert.equal(await job.stop(), 0);
});
