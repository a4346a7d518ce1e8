/**
 * spec.serve, pure (operator/serving.ts): which model is served and when, the Deployment and Service it runs
 * (`rft serve` on the checkpoint claim read-only, non-root, read-only root, /healthz probes, the token from
 * the Secret), status.serve and the Serving condition's reasons.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { FineTuneJobObject } from "../../operator/desired.js";
import { serving, servedModel } from "../../operator/serving.js";
import type { FineTuneJobStatus } from "../../proto/finetunejob-status.js";

const NOW = "2026-01-01T00:00:00Z";
const settings = { image: "rft:dev" };
const DIR = "/var/rft/checkpoints/sorter-01234567";
const succeeded: FineTuneJobStatus = {
  conditions: [
    {
      type: "Succeeded",
      status: "True",
      reason: "TrainerCompleted",
      message: "",
      lastTransitionTime: NOW,
    },
  ],
  fineTunedModel: `${DIR}/model`,
  checkpoints: [{ name: "step-000002", step: 2, path: `${DIR}/checkpoints/step-000002` }],
};

function ftj(serve: Record<string, unknown> | undefined, extra: Record<string, unknown> = {}): FineTuneJobObject {
  return {
    apiVersion: "rft.dev/v1alpha1",
    kind: "FineTuneJob",
    metadata: { name: "sorter", namespace: "ml", uid: "0123456789abcdef", generation: 3 },
    spec: {
      model: "base",
      trainingFile: "train.jsonl",
      method: { type: "reinforcement", reinforcement: { grader: { type: "string_check" } } },
      storage: { modelClaim: "models", checkpointClaim: "ckpt" },
      ...(serve ? { serve: { tokenSecretRef: { name: "sorter-dataset", key: "serve-token" }, ...serve } } : {}),
      ...extra,
    } as FineTuneJobObject["spec"],
  };
}
const cond = (s: FineTuneJobStatus) => s.conditions?.find((c) => c.type === "Serving");

describe("servedModel", () => {
  test("final after Succeeded, a checkpoint once listed; LoRA adapters on their base", () => {
    assert.deepEqual(servedModel(ftj({ model: "final" }), succeeded), {
      ok: true,
      model: "final",
      dir: `${DIR}/model`,
    });
    assert.deepEqual(servedModel(ftj({ model: "step-000002" }), succeeded), {
      ok: true,
      model: "step-000002",
      dir: `${DIR}/checkpoints/step-000002/model`,
    });
    const lora = { type: "reinforcement", reinforcement: { grader: { type: "string_check" }, lora: { rank: 8 } } };
    assert.deepEqual(servedModel(ftj({ model: "step-000002" }, { method: lora }), succeeded), {
      ok: true,
      model: "step-000002",
      dir: `${DIR}/checkpoints/step-000002/adapter`,
      base: "/var/rft/data/base",
    });
  });

  test("NoModel: not succeeded yet, a checkpoint not kept, no checkpoint claim", () => {
    const running: FineTuneJobStatus = { checkpoints: succeeded.checkpoints };
    const r1 = servedModel(ftj({ model: "final" }), running);
    assert.equal(r1.ok, false);
    assert.match((r1 as { message: string }).message, /once the job has Succeeded/);
    const r2 = servedModel(ftj({ model: "step-000009" }), succeeded);
    assert.match(
      (r2 as { message: string }).message,
      /step-000009 is not in status\.checkpoints \(kept: step-000002\)/,
    );
    const r3 = servedModel(ftj({ model: "final" }, { storage: { modelClaim: "models" } }), succeeded);
    assert.match((r3 as { message: string }).message, /no spec\.storage\.checkpointClaim/);
  });
});

describe("serving", () => {
  test("the Deployment and Service: rft serve, read-only claim, non-root, read-only root, probes, the token", () => {
    const job = ftj({ model: "final", modelId: "ft:base:acme::abc", resources: { limits: { memory: "4Gi" } } });
    const d = serving(job, succeeded, undefined, settings, NOW);
    const [dep, svc] = d.apply;
    assert.equal(dep!.kind, "Deployment");
    assert.equal(dep!.metadata.name, "sorter-serve");
    assert.deepEqual(dep!.metadata.ownerReferences[0], {
      apiVersion: "rft.dev/v1alpha1",
      kind: "FineTuneJob",
      name: "sorter",
      uid: "0123456789abcdef",
      controller: true,
      blockOwnerDeletion: true,
    });
    assert.equal(dep!.spec.replicas, 1);
    const pod = dep!.spec.template.spec;
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.automountServiceAccountToken, false);
    const c = pod.containers[0];
    assert.equal(c.image, "rft:dev");
    assert.deepEqual(c.args, [
      "serve",
      `${DIR}/model`,
      "--host",
      "0.0.0.0",
      "--port",
      "8000",
      "--model-id",
      "ft:base:acme::abc",
    ]);
    assert.deepEqual(c.env, [
      { name: "RFT_SERVE_API_KEY", valueFrom: { secretKeyRef: { name: "sorter-dataset", key: "serve-token" } } },
    ]);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
    for (const p of [c.startupProbe, c.readinessProbe, c.livenessProbe])
      assert.deepEqual(p.httpGet, { path: "/healthz", port: "http" });
    assert.deepEqual(c.resources, { limits: { memory: "4Gi" } });
    assert.deepEqual(pod.volumes.find((v: { name: string }) => v.name === "checkpoints").persistentVolumeClaim, {
      claimName: "ckpt",
      readOnly: true,
    });
    assert.ok(c.volumeMounts.every((m: { name: string; readOnly?: boolean }) => m.name === "tmp" || m.readOnly));
    assert.equal(svc!.kind, "Service");
    assert.equal(svc!.metadata.name, "sorter-serve");
    assert.deepEqual(svc!.spec.selector, dep!.spec.selector.matchLabels);
    assert.deepEqual(svc!.spec.ports, [{ name: "http", port: 8000, targetPort: "http", protocol: "TCP" }]);
    assert.equal(d.remove, false);
    // Starting until a pod of this model is ready; then Ready (and looked at now and then).
    assert.equal(cond(d.status)?.reason, "Starting");
    assert.equal(d.requeueAfterMs, 2000);
    assert.deepEqual(d.status.serve, {
      service: "sorter-serve",
      model: "final",
      modelPath: `${DIR}/model`,
      replicas: 1,
      readyReplicas: 0,
    });
    const observed = {
      ...dep,
      metadata: { ...dep!.metadata, generation: 2 },
      status: { observedGeneration: 2, replicas: 1, updatedReplicas: 1, readyReplicas: 1 },
    };
    // Mid-rollout a ready pod may still be the previous model's (the Service routes to it): not ready yet.
    for (const status of [
      { observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1 },
      { observedGeneration: 2, replicas: 2, updatedReplicas: 1, readyReplicas: 1 },
    ])
      assert.equal(cond(serving(job, d.status, { ...observed, status }, settings, NOW).status)?.reason, "Starting");
    const ready = serving(job, d.status, observed, settings, NOW);
    assert.equal(cond(ready.status)?.status, "True");
    assert.equal(cond(ready.status)?.reason, "Ready");
    assert.equal(ready.status.serve?.readyReplicas, 1);
    // A ready server of another model does not count for this one.
    const other = serving(ftj({ model: "step-000002" }), d.status, observed, settings, NOW);
    assert.equal(cond(other.status)?.reason, "Starting");
  });

  test("NoModel before the job has it (nothing created); ScaledToZero keeps the Deployment at 0", () => {
    const early = serving(ftj({ model: "final" }), { conditions: [] }, undefined, settings, NOW);
    assert.deepEqual(early.apply, []);
    assert.equal(cond(early.status)?.reason, "NoModel");
    assert.equal(cond(early.status)?.status, "False");
    assert.equal(early.status.serve, undefined);
    const zero = serving(ftj({ model: "final", replicas: 0 }), succeeded, undefined, settings, NOW);
    assert.equal(zero.apply[0]!.spec.replicas, 0);
    assert.equal(cond(zero.status)?.reason, "ScaledToZero");
    assert.equal(zero.requeueAfterMs, undefined);
  });

  test("spec.serve removed: the server is deleted and Serving says NotRequested; never set: nothing at all", () => {
    const started = serving(ftj({ model: "final" }), succeeded, undefined, settings, NOW);
    const gone = serving(ftj(undefined), started.status, started.apply[0], settings, NOW);
    assert.equal(gone.remove, true);
    assert.equal(cond(gone.status)?.reason, "NotRequested");
    assert.equal(gone.status.serve, undefined);
    assert.equal(serving(ftj(undefined), gone.status, undefined, settings, NOW).remove, false, "deleted once");
    const never = serving(ftj(undefined), succeeded, undefined, settings, NOW);
    assert.deepEqual(never, { status: succeeded, apply: [], remove: false });
  });
});
