/** Unit tests of the operator's pure parts: CRD generation, desired children, conditions and decisions. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { isTerminal, setCondition, stateOf } from "../../operator/conditions.js";
import { CRD_FILE, crdYaml } from "../../operator/crd/crd.js";
import { type Decision, decide, type Observed } from "../../operator/decide.js";
import {
  desiredConfigMap,
  desiredTrainerJob,
  desiredTrainerJobSet,
  type FineTuneJobObject,
  rankJobName,
  workloadPlan,
} from "../../operator/desired.js";
import type { ProgressMessage } from "../../proto/finetunejob-status.js";

const settings = { image: "rft:dev", natsUrl: "nats://127.0.0.1:4222" };

const QUEUED = { "kueue.x-k8s.io/queue-name": "gpu" };

function ftj(
  spec: Record<string, unknown> = {},
  status?: FineTuneJobObject["status"],
  labels: Record<string, string> = {},
): FineTuneJobObject {
  return {
    apiVersion: "rft.dev/v1alpha1",
    kind: "FineTuneJob",
    metadata: {
      name: "sorter",
      namespace: "ml",
      uid: "0123456789abcdef",
      generation: 1,
      labels,
    },
    spec: {
      model: "base",
      trainingFile: "train.jsonl",
      method: { type: "reinforcement", reinforcement: { grader: { type: "string_check" } } },
      backoffLimit: 2,
      ...spec,
    } as FineTuneJobObject["spec"],
    status,
  };
}

const t0 = new Date("2026-01-01T00:00:00Z");
const at = (s: number) => new Date(t0.getTime() + s * 1000);
const trainerJob = (name: string, status: Record<string, unknown>) => ({ metadata: { name }, status });
const cond = (d: Decision, type: string) => d.status.conditions?.find((c) => c.type === type);

/** Runs decide, then feeds the new status back, as the controller does across reconciles. */
function step(job: FineTuneJobObject, o: Partial<Observed> & { now: Date }): { job: FineTuneJobObject; d: Decision } {
  const d = decide(job, o);
  return { job: { ...job, status: d.status }, d };
}

describe("CRD", () => {
  test("the committed CRD is the generated one (run `npm run gen:crd`)", () => {
    assert.equal(readFileSync(CRD_FILE, "utf8"), crdYaml());
  });
  test("method.*.lora: bounded rank, alpha and dropout, PEFT module names as a set", () => {
    const spec = parse(crdYaml()).spec.versions[0].schema.openAPIV3Schema.properties.spec;
    for (const m of ["supervised", "reinforcement"]) {
      const lora = spec.properties.method.properties[m].properties.lora.properties;
      assert.deepEqual([lora.rank.minimum, lora.rank.maximum], [1, 1024], m);
      assert.deepEqual([lora.alpha.minimum, lora.alpha.exclusiveMinimum], [0, true], m);
      assert.deepEqual([lora.dropout.maximum, lora.dropout.exclusiveMaximum], [1, true], m);
      assert.equal(lora.targetModules["x-kubernetes-list-type"], "set", m);
      assert.equal(lora.targetModules.maxItems, 7, m);
      assert.deepEqual(lora.targetModules.items.enum, [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
      ]);
      assert.equal(lora.adapter.maxLength, 1024, m);
    }
  });
  test("printer columns, short name, status subresource, immutability and list-map conditions", () => {
    const crd = parse(crdYaml());
    const v = crd.spec.versions[0];
    assert.deepEqual(crd.spec.names.shortNames, ["ftj"]);
    assert.deepEqual(v.subresources, { status: {} });
    assert.deepEqual(
      v.additionalPrinterColumns.filter((c: { priority?: number }) => !c.priority).map((c: { name: string }) => c.name),
      ["State", "Step", "Valid reward", "Age"],
    );
    const spec = v.schema.openAPIV3Schema.properties.spec;
    for (const f of ["model", "trainingFile", "method", "governance"]) {
      assert.equal(spec.properties[f]["x-kubernetes-validations"][0].rule, "self == oldSelf", f);
    }
    assert.equal(
      spec.properties.method.properties.reinforcement.properties.grader["x-kubernetes-preserve-unknown-fields"],
      true,
    );
    assert.equal(
      spec.properties.method.properties.reinforcement.properties.hyperparameters.properties.nEpochs[
        "x-kubernetes-int-or-string"
      ],
      true,
    );
    assert.equal(spec.properties.replicas.default, 1);
    const conds = v.schema.openAPIV3Schema.properties.status.properties.conditions;
    assert.equal(conds["x-kubernetes-list-type"], "map");
  });
});

describe("desired children", () => {
  test("an Indexed Job with a native grader sidecar, rank from the completion index, owner and queue label", () => {
    const j = desiredTrainerJob(
      ftj({ replicas: 1, storage: { modelClaim: "models", checkpointClaim: "ckpt" } }, undefined, QUEUED),
      2,
      settings,
    );
    assert.equal(j.metadata.name, "sorter-a2");
    assert.equal(j.spec.completionMode, "Indexed");
    assert.equal(j.spec.completions, 1);
    assert.equal(j.spec.parallelism, 1);
    assert.equal(j.metadata.ownerReferences[0].controller, true);
    assert.equal(j.metadata.ownerReferences[0].blockOwnerDeletion, true);
    assert.equal(j.metadata.labels["kueue.x-k8s.io/queue-name"], "gpu");
    const pod = j.spec.template.spec;
    assert.equal(pod.automountServiceAccountToken, false);
    // The non-root image reads its Secret's files (the signing key, 0400) through the pod's fsGroup.
    assert.equal(pod.securityContext.fsGroup, 65532);
    const [grader] = pod.initContainers;
    assert.equal(grader.restartPolicy, "Always");
    // gRPC and the grading API on the pod's loopback; the probe on the monitoring port (the kubelet probes the
    // pod IP).
    assert.deepEqual(grader.args.slice(0, 3), ["grader", "--host", "127.0.0.1"]);
    assert.deepEqual(grader.startupProbe.httpGet, { path: "/healthz", port: "grader-metrics" });
    const env = Object.fromEntries(pod.containers[0].env.map((e: any) => [e.name, e.value ?? e.valueFrom]));
    assert.deepEqual(env.RFT_RANK, {
      fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" },
    });
    assert.equal(env.RFT_WORLD_SIZE, "1");
    assert.equal(env.RFT_ATTEMPT, "2");
    assert.match(env.RFT_PEERS, /^sorter-a2-0\.sorter\.ml\.svc:29500$/);
    assert.equal(env.RFT_DATA_PORT, "29501");
    // Rank 0's metrics on the port the chart's PodMonitor scrapes by name.
    assert.equal(env.RFT_METRICS_PORT, "9400");
    const trainer = pod.containers.find((c: { name: string }) => c.name === "trainer");
    assert.ok(
      trainer.ports.some(
        (p: { name: string; containerPort: number }) => p.name === "metrics" && p.containerPort === 9400,
      ),
    ); // the collective's data link, allowed by the chart's NetworkPolicy
  });
  test("the ConfigMap's job config resolves data paths onto the data mount", () => {
    const cm = desiredConfigMap(ftj({ model: "models/base", validationFile: "/abs/valid.jsonl" }));
    const cfg = JSON.parse(cm.data["job.json"]);
    assert.equal(cfg.spec.model, "/var/rft/data/models/base");
    assert.equal(cfg.spec.validationFile, "/abs/valid.jsonl");
    assert.deepEqual(cfg.spec.governance, {
      authorities: [],
      signingKey: { file: "/var/run/rft/signing/signing-key.pem" },
    });
    const own = { file: "/keys/mine.pem" };
    const cfg2 = JSON.parse(
      desiredConfigMap(ftj({ governance: { authorities: [], signingKey: own } })).data["job.json"],
    );
    assert.deepEqual(cfg2.spec.governance.signingKey, own, "a job's own signing key is kept");
  });
});

describe("conditions", () => {
  test("lastTransitionTime moves only when the status changes; state derives from conditions", () => {
    const a = setCondition([], { type: "Running", status: "True", reason: "Running", message: "" }, 1, "t1");
    const b = setCondition(a, { type: "Running", status: "True", reason: "Running", message: "x" }, 2, "t2");
    assert.equal(b[0]!.lastTransitionTime, "t1");
    assert.equal(b[0]!.observedGeneration, 2);
    const c = setCondition(b, { type: "Running", status: "False", reason: "Restarting", message: "" }, 2, "t3");
    assert.equal(c[0]!.lastTransitionTime, "t3");
    assert.equal(stateOf(c), "Restarting");
    assert.equal(isTerminal(c), false);
  });
});

describe("decide", () => {
  const progress = (p: Partial<ProgressMessage>): ProgressMessage => ({
    step: 1,
    totalSteps: 4,
    trainRewardMean: 0.2,
    validRewardMean: 0.3,
    checkpoints: [],
    status: "running",
    rank: 0,
    attempt: 0,
    time: "2026-01-01T00:00:05Z",
    ...p,
  });

  test("a new job gets its children, Created=True, startTime, and runs once the rank is ready", () => {
    let { job, d } = step(ftj(), { now: at(0) });
    assert.deepEqual(d.actions, [{ type: "ensureChildren", attempt: 0 }]);
    assert.equal(cond(d, "Created")?.status, "True");
    assert.equal(cond(d, "Created")?.reason, "ChildrenCreated");
    assert.equal(d.status.startTime, "2026-01-01T00:00:00Z");
    assert.equal(d.status.state, "Created");
    ({ job, d } = step(job, { now: at(2), trainerJob: trainerJob("sorter-a0", { active: 1, ready: 0 }) }));
    assert.equal(cond(d, "GradersReady")?.status, "False");
    assert.equal(cond(d, "CheckpointSaved"), undefined);
    ({ job, d } = step(job, {
      now: at(5),
      trainerJob: trainerJob("sorter-a0", { active: 1, ready: 1 }),
      progress: progress({}),
    }));
    assert.equal(cond(d, "Running")?.status, "True");
    assert.equal(cond(d, "GradersReady")?.status, "True");
    assert.equal(cond(d, "GradersReady")?.reason, "StartupProbeSucceeded");
    assert.equal(d.status.trainerStatus?.step, 1);
    assert.equal(d.status.trainerStatus?.progress, 25);
    assert.ok(d.events.some((e) => e.reason === "Running"));
    // Same inputs again: same status, no new events (level-triggered).
    const again = decide(job, {
      now: at(5),
      trainerJob: trainerJob("sorter-a0", { active: 1, ready: 1 }),
      progress: progress({}),
    });
    assert.deepEqual(again.status, d.status);
    assert.equal(again.events.length, 0);
  });

  test("a Complete Job succeeds with the model and checkpoints; afterwards nothing is ever recreated", () => {
    let { job } = step(ftj({ ttlSecondsAfterFinished: 60 }), { now: at(0) });
    let d: Decision;
    const ckpt = [{ name: "step-000004", step: 4, validRewardMean: 0.5, path: "/c/step-000004" }];
    ({ job, d } = step(job, {
      now: at(10),
      trainerJob: trainerJob("sorter-a0", { conditions: [{ type: "Complete", status: "True" }] }),
      progress: progress({ step: 4, status: "succeeded", fineTunedModel: "/c/model", checkpoints: ckpt }),
    }));
    assert.equal(cond(d, "Succeeded")?.reason, "TrainerCompleted");
    assert.equal(d.status.fineTunedModel, "/c/model");
    assert.deepEqual(d.status.checkpoints, ckpt);
    assert.equal(cond(d, "CheckpointSaved")?.status, "True");
    assert.equal(cond(d, "CheckpointSaved")?.message, "step 4: /c/step-000004");
    assert.equal(d.status.completionTime, "2026-01-01T00:00:10Z");
    assert.equal(d.requeueAfterMs, 60_000);
    // Children deleted by TTL or by hand: sticky, no ensureChildren.
    ({ job, d } = step(job, { now: at(30) }));
    assert.deepEqual(d.actions, []);
    assert.equal(d.status.state, "Succeeded");
    ({ d } = step(job, { now: at(71) }));
    assert.deepEqual(d.actions, [{ type: "deleteSelf" }]);
  });

  test("usage and checkpoint times: copied from the current attempt's progress, kept when a message has none", () => {
    const usage = { trainingSeconds: 12.5, trainedTokens: 300, judgeTokens: {} };
    const ckpt = [
      { name: "step-000002", step: 2, validRewardMean: 0.5, path: "/c/step-000002", createdAt: "2026-01-01T00:00:04Z" },
    ];
    let { job } = step(ftj(), { now: at(0) });
    let d: Decision;
    ({ job, d } = step(job, {
      now: at(5),
      trainerJob: trainerJob("sorter-a0", { active: 1, ready: 1 }),
      progress: progress({ step: 2, checkpoints: ckpt, usage }),
    }));
    assert.deepEqual(d.status.usage, usage);
    assert.deepEqual(d.status.checkpoints, ckpt);
    // The next attempt's first message (no usage yet) keeps the totals; an older attempt's message is ignored.
    ({ job, d } = step(job, {
      now: at(6),
      trainerJob: trainerJob("sorter-a0", { active: 1, ready: 1 }),
      progress: progress({ step: 2 }),
    }));
    assert.deepEqual(d.status.usage, usage);
    ({ d } = step(job, {
      now: at(7),
      trainerJob: trainerJob("sorter-a0", { active: 1, ready: 1 }),
      progress: progress({ step: 3, attempt: 5, usage: { ...usage, trainingSeconds: 999 } }),
    }));
    assert.deepEqual(d.status.usage, usage);
  });

  test("a failed rank restarts the gang as the next attempt until backoffLimit, then Failed for good", () => {
    const failed = (n: string) =>
      trainerJob(n, {
        conditions: [{ type: "Failed", status: "True", reason: "BackoffLimitExceeded", message: "pod failed" }],
      });
    let { job } = step(ftj({ backoffLimit: 1 }), { now: at(0) });
    let d: Decision;
    ({ job, d } = step(job, { now: at(5), trainerJob: failed("sorter-a0") }));
    assert.equal(d.status.restartCount, 1);
    assert.deepEqual(d.actions, [
      { type: "deleteTrainerJob", name: "sorter-a0" },
      { type: "ensureChildren", attempt: 1 },
    ]);
    assert.equal(d.status.state, "Restarting");
    assert.ok(d.events.some((e) => e.reason === "GangRestart"));
    ({ job, d } = step(job, { now: at(6) }));
    assert.deepEqual(d.actions, [{ type: "ensureChildren", attempt: 1 }]);
    ({ job, d } = step(job, { now: at(9), trainerJob: failed("sorter-a1") }));
    assert.equal(cond(d, "Failed")?.reason, "BackoffLimitExceeded");
    assert.equal(d.status.restartCount, 1);
    ({ d } = step(job, { now: at(20) }));
    assert.deepEqual(d.actions, [], "no child is recreated after failure");
  });

  test("with ledgerNats, trainers get RFT_LEDGER_NATS_URL (the ledger goes to JetStream); without, they do not", () => {
    const envOf = (s: typeof settings & { ledgerNats?: boolean }) =>
      Object.fromEntries(
        desiredTrainerJob(ftj(), 0, s).spec.template.spec.containers[0].env.map((e: any) => [e.name, e.value]),
      );
    assert.equal(envOf({ ...settings, ledgerNats: true }).RFT_LEDGER_NATS_URL, settings.natsUrl);
    assert.equal(envOf(settings).RFT_LEDGER_NATS_URL, undefined);
  });

  test("a trainer exiting with the permanent code (podFailurePolicy) fails at once without spending the budget", () => {
    const tj = desiredTrainerJob(ftj(), 0, settings);
    assert.deepEqual(tj.spec.podFailurePolicy.rules, [
      { action: "FailJob", onExitCodes: { containerName: "trainer", operator: "In", values: [2] } },
    ]);
    let { job } = step(ftj({ backoffLimit: 3 }), { now: at(0) });
    let d: Decision;
    ({ job, d } = step(job, {
      now: at(5),
      trainerJob: trainerJob("sorter-a0", {
        conditions: [
          {
            type: "FailureTarget",
            status: "True",
            reason: "PodFailurePolicy",
            message:
              "Container trainer for pod ml/sorter-a0-0-x failed with exit code 2 matching FailJob rule at index 0",
          },
        ],
      }),
    }));
    assert.equal(cond(d, "Failed")?.reason, "TrainerConfigError");
    assert.match(cond(d, "Failed")!.message, /exit code 2/);
    assert.equal(d.status.restartCount ?? 0, 0);
    assert.deepEqual(d.actions, []);
    ({ d } = step(job, { now: at(20) }));
    assert.deepEqual(d.actions, [], "nothing is recreated");
  });

  test("suspend pauses the trainers and suspends; resume resets the deadline clock", () => {
    let { job, d } = step(ftj({ activeDeadlineSeconds: 100 }), { now: at(0) });
    assert.equal(d.requeueAfterMs, 100_000);
    ({ job, d } = step({ ...job, spec: { ...job.spec, suspend: true } }, { now: at(50) }));
    assert.equal(cond(d, "Suspended")?.status, "True");
    assert.ok(d.actions.some((a) => a.type === "control" && a.action === "pause"));
    assert.equal(d.status.state, "Suspended");
    ({ job, d } = step({ ...job, spec: { ...job.spec, suspend: false } }, { now: at(500) }));
    assert.equal(cond(d, "Suspended")?.reason, "Resumed");
    assert.equal(d.status.lastResumeTime, "2026-01-01T00:08:20Z");
    assert.equal(d.requeueAfterMs, 100_000);
    ({ d } = step(job, { now: at(601) }));
    assert.equal(cond(d, "Failed")?.reason, "DeadlineExceeded");
  });

  test("a Complete Job succeeds even when the last progress message says failed (the exit codes decide)", () => {
    // Core NATS does not say who published a message: a forged "failed" must not fail a job whose every rank
    // exited 0 (`rft trainer` exits 1 when it reports failed, which fails the Job instead).
    const { job } = step(ftj(), { now: at(0) });
    const { d } = step(job, {
      now: at(6),
      trainerJob: trainerJob("sorter-a0", { conditions: [{ type: "Complete", status: "True" }] }),
      progress: progress({ step: 4, status: "failed", error: "forged" }),
    });
    assert.equal(d.status.state, "Succeeded");
    assert.equal(cond(d, "Succeeded")?.reason, "TrainerCompleted");
    assert.equal(cond(d, "Failed"), undefined);
  });

  test("a job that completes while a suspend is pending is Succeeded and no longer Suspended", () => {
    let { job } = step(ftj(), { now: at(0) });
    let d: Decision;
    ({ job, d } = step({ ...job, spec: { ...job.spec, suspend: true } }, { now: at(5) }));
    assert.equal(cond(d, "Suspended")?.status, "True");
    ({ d } = step(job, {
      now: at(6),
      trainerJob: trainerJob("sorter-a0", { conditions: [{ type: "Complete", status: "True" }] }),
      progress: progress({ step: 4, status: "succeeded", fineTunedModel: "/c/model" }),
    }));
    assert.equal(d.status.state, "Succeeded");
    assert.equal(cond(d, "Suspended")?.status, "False");
    assert.equal(cond(d, "Suspended")?.reason, "Finished");
  });

  test("cancel stops the trainers and is terminal", () => {
    const { job } = step(ftj(), { now: at(0) });
    const { d } = step(
      { ...job, spec: { ...job.spec, cancel: true } },
      { now: at(3), trainerJob: trainerJob("sorter-a0", { active: 1 }) },
    );
    assert.equal(cond(d, "Cancelled")?.status, "True");
    assert.deepEqual(d.actions, [
      { type: "control", action: "cancel" },
      { type: "deleteTrainerJob", name: "sorter-a0" },
    ]);
  });
});

describe("Kueue and JobSet", () => {
  const paused: ProgressMessage = {
    step: 3,
    totalSteps: 8,
    trainRewardMean: 0.2,
    validRewardMean: 0.3,
    checkpoints: [
      { name: "step-000003-pause", step: 3, validRewardMean: null, path: "/var/rft/checkpoints/x/step-000003-pause" },
    ],
    status: "paused",
    rank: 0,
    attempt: 0,
    time: "2026-01-01T00:00:30Z",
  };
  const rankJob = (name: string, suspend: boolean, status: Record<string, unknown> = {}) => ({
    metadata: { name },
    spec: { suspend },
    status,
  });

  test("with Kueue the Job is created suspended and never written again: Kueue owns spec.suspend", () => {
    const queued = ftj({ replicas: 2 }, undefined, QUEUED);
    assert.equal(desiredTrainerJob(queued, 0, settings).spec.suspend, true);
    assert.equal(workloadPlan(queued, undefined), "create");
    // Admitted (Kueue unsuspended it) or preempted (Kueue suspended it): the operator leaves it alone.
    assert.equal(workloadPlan(queued, rankJob("sorter-a0", false)), "none");
    assert.equal(workloadPlan(queued, rankJob("sorter-a0", true)), "none");
    // A suspended FineTuneJob's next attempt is not created at all (Kueue would admit and start it).
    assert.equal(workloadPlan({ ...queued, spec: { ...queued.spec, suspend: true } }, undefined), "none");
    // Without Kueue the operator owns suspend: applied when missing or different.
    const plain = ftj({ replicas: 2 });
    assert.equal(desiredTrainerJob(plain, 0, settings).spec.suspend, false);
    assert.equal(workloadPlan(plain, undefined), "apply");
    assert.equal(workloadPlan(plain, rankJob("sorter-a0", true)), "apply");
    assert.equal(workloadPlan(plain, rankJob("sorter-a0", false)), "none");
  });

  test("a queued gang is Queued until Kueue admits it whole; preempted, it checkpoints and is readmitted from the checkpoint", () => {
    let { job, d } = step(ftj({ replicas: 2, activeDeadlineSeconds: 100 }, undefined, QUEUED), { now: at(0) });
    assert.equal(cond(d, "Admitted")?.reason, "Queued");
    assert.equal(d.status.state, "Queued");
    assert.equal(d.status.startTime, undefined, "no start while queued");
    ({ job, d } = step(job, { now: at(1), trainerJob: rankJob("sorter-a0", true) }));
    assert.equal(cond(d, "Admitted")?.status, "False");
    assert.match(cond(d, "Admitted")!.message, /all 2 rank\(s\) at once \(LocalQueue gpu\)/);
    ({ job, d } = step(job, { now: at(2), trainerJob: rankJob("sorter-a0", false, { active: 2, ready: 2 }) }));
    assert.equal(cond(d, "Admitted")?.reason, "Admitted");
    assert.equal(cond(d, "Running")?.status, "True");
    assert.equal(d.status.startTime, "2026-01-01T00:00:02Z");
    assert.ok(d.events.some((e) => e.reason === "Admitted"));
    // Kueue suspends the running gang: Preempted (trainers checkpoint on SIGTERM).
    ({ job, d } = step(job, { now: at(20), trainerJob: rankJob("sorter-a0", true, { active: 2, ready: 2 }) }));
    assert.equal(cond(d, "Admitted")?.reason, "Preempted");
    assert.equal(cond(d, "Running")?.reason, "Preempted");
    assert.equal(d.status.state, "Queued");
    assert.ok(d.events.some((e) => e.reason === "Preempted"));
    // Time waiting in the queue does not count towards activeDeadlineSeconds.
    const later = decide(job, { now: at(500), trainerJob: rankJob("sorter-a0", true) });
    assert.notEqual(cond(later, "Failed")?.status, "True");
    // Every rank checkpointed and exited 0: the next attempt waits for readmission; no retry budget spent.
    ({ job, d } = step(job, {
      now: at(30),
      trainerJob: rankJob("sorter-a0", true, { conditions: [{ type: "Complete", status: "True" }] }),
      progress: paused,
    }));
    assert.equal(d.status.attempt, 1);
    assert.equal(d.status.restartCount ?? 0, 0);
    assert.deepEqual(d.actions, [
      { type: "deleteTrainerJob", name: "sorter-a0" },
      { type: "ensureChildren", attempt: 1 },
    ]);
    assert.equal(cond(d, "Admitted")?.reason, "Preempted");
    ({ job, d } = step(job, { now: at(40), trainerJob: rankJob("sorter-a1", true) }));
    assert.equal(cond(d, "Admitted")?.reason, "Preempted");
    ({ job, d } = step(job, { now: at(50), trainerJob: rankJob("sorter-a1", false, { active: 2, ready: 2 }) }));
    assert.equal(cond(d, "Admitted")?.reason, "Readmitted");
    assert.equal(cond(d, "Running")?.status, "True");
    assert.equal(d.status.lastResumeTime, "2026-01-01T00:00:50Z");
    assert.ok(d.events.some((e) => e.reason === "Readmitted"));
    // Level-triggered: the next reconcile keeps it (no second Event, the reason stays).
    ({ d } = step(job, { now: at(55), trainerJob: rankJob("sorter-a1", false, { active: 2, ready: 2 }) }));
    assert.equal(cond(d, "Admitted")?.reason, "Readmitted");
    assert.deepEqual(d.events, []);
  });

  test("suspending a queued job whose Job has no pods deletes that Job (Kueue would start it); running ones get the pause", () => {
    const queued = ftj({ replicas: 2, suspend: true }, undefined, QUEUED);
    let d = decide(queued, { now: at(1), trainerJob: rankJob("sorter-a0", true) });
    assert.ok(d.actions.some((a) => a.type === "deleteTrainerJob" && a.name === "sorter-a0"));
    assert.equal(d.status.state, "Suspended");
    d = decide(queued, { now: at(1), trainerJob: rankJob("sorter-a0", false, { active: 2 }) });
    assert.ok(!d.actions.some((a) => a.type === "deleteTrainerJob"), "admitted and running: the pause stops it");
    assert.ok(d.actions.some((a) => a.type === "control" && a.action === "pause"));
  });

  test("JobSet mode: one replicated Indexed Job on the job's Service; decide reads that Job", () => {
    const job = ftj({ replicas: 2, workloadKind: "JobSet" }, undefined, QUEUED);
    const js = desiredTrainerJobSet(job, 0, settings);
    assert.equal(js.apiVersion, "jobset.x-k8s.io/v1alpha2");
    assert.equal(js.kind, "JobSet");
    assert.equal(js.metadata.name, "sorter-a0");
    assert.equal(js.metadata.labels["kueue.x-k8s.io/queue-name"], "gpu");
    assert.equal(js.spec.suspend, true);
    assert.deepEqual(js.spec.network, { enableDNSHostnames: true, subdomain: "sorter" });
    const [rj] = js.spec.replicatedJobs;
    assert.equal(rj.replicas, 1);
    assert.equal(rj.template.spec.completions, 2);
    assert.equal(rj.template.spec.completionMode, "Indexed");
    // Kueue admits the JobSet; its Job and pods are not queued on their own.
    assert.equal(rj.template.metadata.labels["kueue.x-k8s.io/queue-name"], undefined);
    assert.equal(rj.template.metadata.labels["rft.dev/finetunejob"], "sorter");
    const env = Object.fromEntries(
      rj.template.spec.template.spec.containers[0].env.map((e: any) => [e.name, e.value ?? e.valueFrom]),
    );
    assert.equal(env.RFT_PEERS, "sorter-a0-trainer-0-0.sorter.ml.svc:29500,sorter-a0-trainer-0-1.sorter.ml.svc:29500");
    assert.equal(rankJobName(job, 0), "sorter-a0-trainer-0");
    const done = { conditions: [{ type: "Complete", status: "True" }] };
    let d = decide(job, { now: at(5), trainerJob: rankJob("sorter-a0-trainer-0", false, done) });
    assert.equal(cond(d, "Succeeded")?.status, "True");
    assert.equal(d.status.trainerJob ?? "sorter-a0", "sorter-a0");
    d = decide(job, { now: at(5), trainerJob: rankJob("sorter-a0", false, done) });
    assert.notEqual(cond(d, "Succeeded")?.status, "True", "a Job of another name is not this attempt's");
  });
});
