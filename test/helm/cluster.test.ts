/**
 * The rendered chart against the harness's real kube-apiserver (test/k8s, no kubelet needed):
 * `kubectl apply --dry-run=server` accepts every manifest of the default and non-default renderings (API
 * validation, the CRD's structural schema, RBAC objects, NetworkPolicies, PDBs, the admission webhook's
 * configuration and TLS Secret), and `helm install --dry-run=server` against the cluster renders NOTES.txt.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Cluster, startCluster } from "../k8s/cluster.js";
import { CHART, helm, template, VALUES } from "./helm.js";

let cluster: Cluster;
before(async () => {
  cluster = await startCluster({ kubelet: false });
  for (const ns of ["rft-system", "ml-team"])
    await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
});
after(async () => cluster?.close());

// The Prometheus Operator's CRDs are not in the harness: render without ServiceMonitor/PrometheusRule there.
const NO_PROM_OPERATOR = ["--set", "metrics.serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false"];

for (const [name, args] of Object.entries({
  default: [],
  ha: ["-f", `${VALUES}/ha.yaml`, ...NO_PROM_OPERATOR],
  "external-nats": ["-f", `${VALUES}/external-nats.yaml`],
  webhook: ["--set", "webhook.enabled=true", "--set", "watchNamespaces={ml-team}"],
}))
  test(`kubectl apply --dry-run=server accepts the ${name} rendering`, async () => {
    const { text, objects } = await template(args);
    const out = await cluster.kubectlInput(text, "apply", "--dry-run=server", "-f", "-");
    const lines = out.trim().split("\n");
    assert.equal(lines.length, objects.length, out);
    for (const l of lines) assert.match(l, /(created|configured|unchanged) \(server dry run\)$/);
  });

test("helm install --dry-run=server against the cluster renders NOTES.txt", async () => {
  const r = await helm(
    "install",
    "rft",
    CHART,
    "--namespace",
    "rft-system",
    "--dry-run=server",
    "--kubeconfig",
    cluster.kubeconfig,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /NOTES:\s*\nrft-operator 0\.1\.0 is installed in namespace rft-system as "rft"/);
  assert.match(r.stdout, /kubectl get finetunejobs -w/);
  assert.match(r.stdout, /its signing key was generated into Secret rft-rft-operator-ledger-key: back it up/);
});
