/**
 * The pure part of test/k8s/gang.ts: a controller's in-cluster manifests turned into what a host-process
 * controller needs (its CRDs and webhooks on loopback with the cluster CA). The controllers themselves run in
 * test/operator/gang.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { localManifests } from "./gang.js";

const svc = (path: string) => ({ service: { name: "webhook-service", namespace: "kueue-system", path } });

const rendered = [
  { apiVersion: "v1", kind: "Namespace", metadata: { name: "kueue-system" } },
  {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: "workloads.kueue.x-k8s.io", annotations: { "cert-manager.io/inject-ca-from": "x/y" } },
    spec: {
      group: "kueue.x-k8s.io",
      conversion: { strategy: "Webhook", webhook: { clientConfig: svc("/convert"), conversionReviewVersions: ["v1"] } },
    },
  },
  {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "MutatingWebhookConfiguration",
    metadata: { name: "kueue-mutating-webhook-configuration" },
    webhooks: [
      { name: "mjob.kb.io", clientConfig: svc("/mutate-batch-v1-job"), failurePolicy: "Fail" },
      { name: "mpod.kb.io", clientConfig: svc("/mutate--v1-pod"), failurePolicy: "Fail" },
    ],
  },
  {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: { name: "only-pods" },
    webhooks: [{ name: "vpod.kb.io", clientConfig: svc("/validate--v1-pod") }],
  },
  { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "kueue-controller-manager" } },
  { apiVersion: "v1", kind: "Service", metadata: { name: "webhook-service" } },
  { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: "kueue-manager-role" } },
];

test("webhooks and conversion point at the loopback URL with the CA; unserved webhooks and the rest are dropped", () => {
  const ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
  const out = localManifests(rendered, { url: "https://127.0.0.1:9443", caPem: ca, keepPath: /batch-v1-job/ });
  assert.deepEqual(
    out.map((o) => `${o.kind}/${o.metadata.name}`),
    [
      "Namespace/kueue-system",
      "CustomResourceDefinition/workloads.kueue.x-k8s.io",
      "MutatingWebhookConfiguration/kueue-mutating-webhook-configuration",
    ],
  );
  const caBundle = Buffer.from(ca).toString("base64");
  const crd = out[1]!;
  assert.deepEqual(crd.spec.conversion.webhook.clientConfig, { url: "https://127.0.0.1:9443/convert", caBundle });
  assert.deepEqual(crd.spec.conversion.webhook.conversionReviewVersions, ["v1"]);
  assert.equal(crd.metadata.annotations, undefined, "no cert-manager injection");
  const hooks = out[2]!.webhooks;
  assert.equal(hooks.length, 1, "the pod webhook is not served");
  assert.deepEqual(hooks[0].clientConfig, { url: "https://127.0.0.1:9443/mutate-batch-v1-job", caBundle });
  assert.equal(hooks[0].failurePolicy, "Fail");
  // Without a filter every webhook is kept.
  assert.equal(localManifests(rendered, { url: "https://127.0.0.1:1", caPem: ca }).length, 4);
});
