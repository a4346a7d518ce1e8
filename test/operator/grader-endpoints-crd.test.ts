/**
 * The CRD's rules for spec.graderEndpoints, on a real kube-apiserver (test/k8s harness, no kubelet): schema
 * bounds and unknown fields, and the CEL rule that a local-only key (apiKey.env / apiKey.file) needs a
 * secretRef beside it in a cluster.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { KObject } from "../k8s/api.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";

let cluster: Cluster;
before(async () => {
  cluster = await startCluster({ kubelet: false });
  await cluster.kubectl("apply", "--server-side", "-f", "crds/finetunejobs.rft.dev.yaml");
  await waitFor("CRD established", async () => {
    const crd = await cluster.getJson("crd", "finetunejobs.rft.dev");
    return (crd.status?.conditions ?? []).some((c: KObject) => c.type === "Established" && c.status === "True");
  });
});
after(async () => cluster?.close());

const job = (name: string, graderEndpoints: unknown): KObject => ({
  apiVersion: "rft.dev/v1alpha1",
  kind: "FineTuneJob",
  metadata: { name, namespace: "default" },
  spec: {
    model: "base",
    trainingFile: "train.jsonl",
    method: {
      type: "reinforcement",
      reinforcement: { grader: { type: "string_check", name: "x", input: "a", reference: "a", operation: "eq" } },
    },
    graderEndpoints,
    suspend: true,
  },
});

test("the API server accepts judge endpoints with a Secret, and rejects what cannot work in a cluster", async () => {
  await cluster.apply(
    job("judged", [
      {
        models: ["gpt-4o-2024-08-06"],
        baseUrl: "https://api.openai.com/v1",
        apiKey: { secretRef: { name: "openai", key: "api-key" }, env: "OPENAI_API_KEY" },
        maxConcurrency: 4,
        timeoutSeconds: 30,
      },
      { baseUrl: "http://judge.ml.svc:8000/v1", servedModel: "judge", structuredOutputs: false },
    ]),
  );
  const got = await cluster.getJson("ftj", "judged");
  assert.equal(got.spec.graderEndpoints[0].apiKey.secretRef.name, "openai");

  const reject = (name: string, eps: unknown, pattern: RegExp) =>
    assert.rejects(cluster.apply(job(name, eps)), pattern);
  await reject("env-only", [{ baseUrl: "http://a/v1", apiKey: { env: "K" } }], /in a cluster give apiKey.secretRef/);
  await reject(
    "env-and-file",
    [{ baseUrl: "http://a/v1", apiKey: { secretRef: { name: "s", key: "k" }, env: "K", file: "k.txt" } }],
    /set apiKey.env or apiKey.file, not both/,
  );
  await reject("bad-url", [{ baseUrl: "ftp://a" }], /graderEndpoints\[0\]\.baseUrl/);
  await reject(
    "bad-field",
    [{ baseUrl: "http://a/v1", modles: ["x"] }],
    /unknown field "spec.graderEndpoints\[0\].modles"/,
  );
  await reject("bad-cap", [{ baseUrl: "http://a/v1", maxConcurrency: 0 }], /maxConcurrency/);
});
