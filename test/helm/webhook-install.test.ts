/**
 * The chart's admission webhook installed into the harness's real kube-apiserver (no kubelet: the operator
 * does not run, and the harness's Services route nowhere). What a platform team relies on:
 *
 * - `helm upgrade` keeps the generated certificate and the ledger's audit API token (lookup of the existing
 *   Secrets), and the configuration's
 *   caBundle stays the CA of that Secret;
 * - failurePolicy Fail: while no operator serves the webhook, FineTuneJob writes are refused (no unvalidated
 *   job slips through); failurePolicy Ignore: they are admitted unchecked.
 *
 * That the API server accepts the chart's certificate is shown in chart.test.ts by a TLS handshake under the
 * Service's name with only the caBundle trusted (this harness cannot route a Service to a process).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse } from "yaml";
import { EXAMPLE } from "../helpers/rft-job.js";
import type { KObject } from "../k8s/api.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";
import { CHART, helm } from "./helm.js";

const NS = "rft-system";
const SECRET = "rft-rft-operator-operator-webhook-tls";
let cluster: Cluster;

before(async () => {
  cluster = await startCluster({ kubelet: false });
  await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
});
after(async () => cluster?.close());

const release = (verb: "install" | "upgrade", ...set: string[]) =>
  helm(
    verb,
    "rft",
    CHART,
    "--namespace",
    NS,
    "--kubeconfig",
    cluster.kubeconfig,
    "--set",
    "webhook.enabled=true",
    "--set",
    "webhook.timeoutSeconds=5",
    ...set.flatMap((s) => ["--set", s]),
  );

function job(name: string): KObject {
  const j = parse(readFileSync(join(EXAMPLE, "rft.yaml"), "utf8"));
  j.metadata = { name, namespace: NS };
  Object.assign(j.spec, { model: "base", storage: { modelClaim: "data" }, suspend: true });
  return j;
}

test("helm upgrade keeps the webhook certificate; failurePolicy Fail refuses FineTuneJobs while no operator serves it, Ignore admits them", async () => {
  const install = await release("install");
  assert.equal(install.code, 0, install.stdout + install.stderr);
  assert.match(
    install.stdout,
    /Webhook: {3}validating admission webhook on \(failurePolicy Fail; certificate in Secret/,
  );
  const secret = await cluster.getJson("secret", "-n", NS, SECRET);
  assert.equal(secret.type, "kubernetes.io/tls");
  const vwc = await cluster.getJson("validatingwebhookconfiguration", "rft-rft-operator-operator");
  assert.equal(vwc.webhooks[0].clientConfig.caBundle, secret.data["ca.crt"]);
  await waitFor("CRD established", async () => {
    const crd = await cluster.getJson("crd", "finetunejobs.rft.dev");
    return (crd.status?.conditions ?? []).some((c: KObject) => c.type === "Established" && c.status === "True");
  });

  // Fail: the API server cannot reach the webhook, so the write is refused.
  const refused = await waitFor(
    "a FineTuneJob refused by the unreachable webhook",
    async () => {
      try {
        await cluster.apply(job("refused"), "--dry-run=server");
        return undefined;
      } catch (e) {
        return /failed calling webhook "validate\.finetunejobs\.rft\.dev"/.test(String(e)) ? String(e) : undefined;
      }
    },
    60_000,
    500,
  );
  assert.match(refused, /rft-rft-operator-operator-webhook\.rft-system\.svc/);

  // Upgrade to Ignore: same certificate (not rotated), and the write is admitted unchecked.
  const token = await cluster.getJson("secret", "-n", NS, "rft-rft-operator-ledger-token");
  assert.match(Buffer.from(token.data.token, "base64").toString(), /^[A-Za-z0-9]{48}$/);
  const upgrade = await release("upgrade", "webhook.failurePolicy=Ignore");
  assert.equal(upgrade.code, 0, upgrade.stdout + upgrade.stderr);
  const tokenAfter = await cluster.getJson("secret", "-n", NS, "rft-rft-operator-ledger-token");
  assert.equal(tokenAfter.data.token, token.data.token, "helm upgrade keeps the audit API's token");
  const after = await cluster.getJson("secret", "-n", NS, SECRET);
  assert.deepEqual(after.data, secret.data, "helm upgrade reuses the generated certificate");
  const vwc2 = await cluster.getJson("validatingwebhookconfiguration", "rft-rft-operator-operator");
  assert.equal(vwc2.webhooks[0].failurePolicy, "Ignore");
  assert.equal(vwc2.webhooks[0].clientConfig.caBundle, secret.data["ca.crt"]);
  await waitFor(
    "a FineTuneJob admitted with failurePolicy Ignore",
    async () => {
      try {
        await cluster.apply(job("admitted"));
        return true;
      } catch {
        return undefined;
      }
    },
    60_000,
    500,
  );
  assert.equal((await cluster.getJson("ftj", "-n", NS, "admitted")).metadata.name, "admitted");

  const uninstall = await helm("uninstall", "rft", "--namespace", NS, "--kubeconfig", cluster.kubeconfig);
  assert.equal(uninstall.code, 0, uninstall.stderr);
  const left = await cluster.kubectl("get", "validatingwebhookconfigurations", "-o", "name");
  assert.doesNotMatch(left, /rft-rft-operator-operator/, "uninstall removes the configuration");
});
