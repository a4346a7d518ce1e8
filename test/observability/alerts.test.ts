/**
 * The alert rules (helm/rft-operator/alerts/rft-alerts.yaml, the one source of the plain rules file and the
 * PrometheusRule): `promtool check rules`, the `promtool test rules` unit tests in alerts.promtest.yaml (each
 * alert fires on a realistic series and stays silent on a near miss), each alert's metadata and runbook, and
 * that every metric the rules read is exported by one of our components (or is kube-state-metrics').
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { REPO_ROOT } from "../k8s/binaries.js";
import { ALERTS_FILE, githubAnchor, OPERATIONS_DOC, promtool, run } from "./tools.js";

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}
const rules = (
  parse(readFileSync(ALERTS_FILE, "utf8")) as { groups: { name: string; rules: Rule[] }[] }
).groups.flatMap((g) => g.rules);
const UNIT_TESTS = join(REPO_ROOT, "test/observability/alerts.promtest.yaml");

test("promtool check rules accepts the rules file", async () => {
  const r = await run(promtool(), ["check", "rules", ALERTS_FILE]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`));
});

test("promtool test rules: every alert fires and stays silent as the unit tests expect", async () => {
  const r = await run(promtool(), ["test", "rules", UNIT_TESTS]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /SUCCESS/);
});

test("the unit tests cover each alert both firing and silent", () => {
  type Case = { alertname: string; exp_alerts?: unknown[] };
  const doc = parse(readFileSync(UNIT_TESTS, "utf8")) as { tests: { alert_rule_test?: Case[] }[] };
  const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? []);
  for (const { alert } of rules) {
    const mine = cases.filter((c) => c.alertname === alert);
    assert.ok(
      mine.some((c) => (c.exp_alerts ?? []).length > 0),
      `${alert}: no unit test where it fires`,
    );
    assert.ok(
      mine.some((c) => (c.exp_alerts ?? []).length === 0),
      `${alert}: no unit test where it stays silent`,
    );
  }
});

test("each alert has a severity, summary, description and a runbook section in docs/operations.md", () => {
  const doc = readFileSync(OPERATIONS_DOC, "utf8");
  const anchors = new Set([...doc.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => githubAnchor(m[1]!)));
  assert.deepEqual(new Set(rules.map((r) => r.alert)).size, rules.length, "alert names are unique");
  for (const r of rules) {
    assert.match(r.alert, /^Rft[A-Z][A-Za-z]+$/);
    assert.ok(["warning", "critical"].includes(r.labels.severity!), `${r.alert}: severity ${r.labels.severity}`);
    assert.ok(r.labels.component, `${r.alert}: component label`);
    assert.ok(r.annotations.summary && r.annotations.description, `${r.alert}: summary and description`);
    const url = new URL(r.annotations.runbook_url!);
    assert.ok(url.pathname.endsWith("/docs/operations.md"), `${r.alert}: runbook_url ${url}`);
    assert.equal(url.hash, `#${r.alert.toLowerCase()}`);
    assert.ok(anchors.has(url.hash.slice(1)), `${r.alert}: docs/operations.md has no heading for ${url.hash}`);
  }
});

test("every metric the rules read is exported by a component or kube-state-metrics", () => {
  const sources = [
    "trainer/rl/prom.ts",
    "grader-sidecar/src/metrics.ts",
    "grader-sidecar/src/server.ts",
    "ledger/service.ts",
    "operator/metrics.ts",
  ]
    .map((f) => readFileSync(join(REPO_ROOT, f), "utf8"))
    .join("\n");
  const ksm = new Set(["kube_pod_container_status_restarts_total", "kube_job_failed"]);
  for (const r of rules) {
    const names = new Set([...r.expr.matchAll(/\b((?:rft|controller_runtime|kube)_[a-z0-9_]+)/g)].map((m) => m[1]!));
    assert.ok(names.size > 0, `${r.alert}: no metric found in ${r.expr}`);
    for (const n of names)
      assert.ok(ksm.has(n) || sources.includes(`"${n}"`), `${r.alert} reads ${n}, which no component exports`);
  }
});
