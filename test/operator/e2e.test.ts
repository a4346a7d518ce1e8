/**
 * The operator against the real harness (kube-apiserver + etcd + kube-controller-manager) with a real node
 * (kubelet + containerd + kube-scheduler: the trainer and grader run as containers of the project's image built
 * from deploy/Dockerfile) and a real nats-server: CRD validation by the API server, a FineTuneJob of the
 * sort-digits example reaching Succeeded with rewards and checkpoints in status, printer columns, and garbage
 * collection. RFT_TEST_NODE=process runs the same tests on the process kubelet instead (no image build).
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { Operator } from "../../operator/manager.js";
import { createLogger } from "../../proto/log.js";
import { EXAMPLE, tinyModel } from "../helpers/rft-job.js";
import type { KObject } from "../k8s/api.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";
import { NatsServer } from "../ledger/nats-server.js";

const NS = "rft-e2e";
const REAL = process.env.RFT_TEST_NODE !== "process";
let cluster: Cluster;
let nats: NatsServer;
let op: Operator;

function exampleJob(name: string, spec: Record<string, unknown> = {}, hyper: Record<string, unknown> = {}): KObject {
  const job = parse(readFileSync(join(EXAMPLE, "rft.yaml"), "utf8"));
  job.metadata = { name, namespace: NS };
  Object.assign(job.spec, {
    model: "base",
    trainingFile: "train.jsonl",
    validationFile: "valid.jsonl",
    storage: { modelClaim: "data", checkpointClaim: "ckpt" },
    trainer: { backend: "wasm" },
    ...spec,
  });
  Object.assign(job.spec.method.reinforcement.hyperparameters, {
    nEpochs: 1,
    batchSize: 2,
    samplesPerPrompt: 2,
    maxCompletionTokens: 4,
    evalInterval: 1,
    evalSamples: 1,
    ...hyper,
  });
  return job;
}

const cond = (o: KObject, type: string) => (o.status?.conditions ?? []).find((c: KObject) => c.type === type);

/** The host folder of a claim's volume, on either node. */
const claimDir = (claim: string) =>
  cluster.realNode ? cluster.realNode.pvcPath(NS, claim) : join(cluster.dir, "kubelet", "pvc", NS, claim);
const trainerLog = (pod: string) =>
  (cluster.realNode ? cluster.realNode.readLog(NS, pod, "trainer") : cluster.kubelet?.readLog(NS, pod, "trainer")) ??
  "";
const trainerPid = (pod: string) =>
  cluster.realNode
    ? cluster.realNode.containerPid(NS, pod, "trainer")
    : cluster.kubelet?.containerPid(NS, pod, "trainer");

before(async () => {
  if (REAL) {
    // Pods reach NATS at the node's address (they have their own loopback).
    cluster = await startCluster({ realNode: true });
    nats = await NatsServer.start(undefined, { host: cluster.realNode!.nodeIp });
  } else {
    nats = await NatsServer.start();
    cluster = await startCluster({ kubelet: { hostPorts: [nats.port] } });
  }
  await cluster.kubectl("apply", "--server-side", "-f", "crds/finetunejobs.rft.dev.yaml");
  await waitFor("CRD established", async () => {
    const crd = await cluster.getJson("crd", "finetunejobs.rft.dev");
    return cond(crd, "Established")?.status === "True";
  });
  await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
  const pvc = (name: string) => ({
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name, namespace: NS },
    spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
  });
  await cluster.apply([pvc("data"), pvc("ckpt")]);
  // The data volume: a tiny model and a few rows of the example.
  const dataDir = claimDir("data");
  mkdirSync(dataDir, { recursive: true });
  await tinyModel(join(dataDir, "base"));
  const rows = readFileSync(join(EXAMPLE, "train.jsonl"), "utf8").trim().split("\n");
  writeFileSync(join(dataDir, "train.jsonl"), `${rows.slice(0, 4).join("\n")}\n`);
  writeFileSync(join(dataDir, "train-long.jsonl"), `${rows.slice(0, 48).join("\n")}\n`);
  copyFileSync(join(EXAMPLE, "valid.jsonl"), join(dataDir, "valid-all.jsonl"));
  const valid = readFileSync(join(EXAMPLE, "valid.jsonl"), "utf8").trim().split("\n");
  writeFileSync(join(dataDir, "valid.jsonl"), `${valid.slice(0, 2).join("\n")}\n`);
  op = startOperator();
  await op.start();
  await waitFor("operator leads", () => op.isLeader);
});

function startOperator(): Operator {
  return new Operator({
    kubeconfig: cluster.kubeconfig,
    settings: cluster.realNode
      ? { image: cluster.realNode.image, imagePullPolicy: "Never", natsUrl: nats.url }
      : { image: "rft:dev", natsUrl: nats.url },
    port: 0,
    leaseDurationMs: 4_000,
    renewDeadlineMs: 3_000,
    retryPeriodMs: 500,
    log: createLogger("operator-test"),
    onLeaseLost: () => {},
  });
}

async function getFtj(name: string): Promise<KObject> {
  return cluster.getJson("ftj", "-n", NS, name);
}

async function waitStatus(what: string, name: string, ok: (o: KObject) => boolean, timeoutMs = 240_000) {
  return waitFor(
    what,
    async () => {
      const o = await getFtj(name);
      return ok(o) ? o : undefined;
    },
    timeoutMs,
    500,
  );
}

async function trainerPod(name: string, attempt: number): Promise<KObject | undefined> {
  const pods = await cluster.getJson("pods", "-n", NS, "-l", `batch.kubernetes.io/job-name=${name}-a${attempt}`);
  return pods.items.find((p: KObject) => p.status?.phase === "Running");
}

after(async () => {
  await op?.stop();
  await cluster?.close();
  await nats?.stop();
});

describe("operator on the harness", () => {
  test("the API server rejects invalid FineTuneJobs with messages that say what to fix", async () => {
    const reject = async (job: KObject, pattern: RegExp) => {
      await assert.rejects(cluster.apply(job), pattern);
    };
    await reject(
      exampleJob("bad-epochs", {}, { nEpochs: 99 }),
      /nEpochs: Invalid value.*must be "auto" or an integer >= 1 and <= 50/,
    );
    await reject(exampleJob("bad-loss", {}, { loss: "ppo" }), /loss: Unsupported value: "ppo"/);
    await reject(exampleJob("bad-field", { bogus: 1 }), /unknown field "spec.bogus"/);
    await reject(
      exampleJob("bad-replicas", { replicas: 0 }),
      /spec.replicas: Invalid value: 0: .*should be greater than or equal to 1/,
    );
    await reject(
      exampleJob("bad-env", { trainer: { env: [{ name: "RFT_RANK", value: "1" }] } }),
      /must not set the names the operator sets/,
    );
    const sup = exampleJob("bad-method");
    sup.spec.method.type = "supervised";
    await reject(sup, /method.type supervised must not set method.reinforcement/);
    const rf = exampleJob("bad-method2");
    delete rf.spec.method.reinforcement;
    await reject(rf, /method.type reinforcement needs method.reinforcement/);
    await reject(
      exampleJob("bad-key", {
        governance: { authorities: [{ name: "a", publicKey: {}, lawfulBasis: "x", envelope: ["lm_head"] }] },
      }),
      /set exactly one of inline, file, secretRef/,
    );
    await reject(
      exampleJob("a-name-that-is-much-too-long-for-the-children-names"),
      /metadata.name must be a DNS-1035 label/,
    );
  });

  test("a FineTuneJob reaches Succeeded with rewards and checkpoints; printer columns; immutability; GC", async () => {
    const name = "sorter";
    await cluster.apply(exampleJob(name));
    const created = await waitFor("Created=True", async () => {
      const o = await cluster.getJson("ftj", "-n", NS, name);
      return cond(o, "Created")?.status === "True" ? o : undefined;
    });
    assert.equal(cond(created, "Created").reason, "ChildrenCreated");
    assert.match(created.status.ledger.publicKey, /^[A-Za-z0-9+/]{43}=$/);
    await assert.rejects(
      cluster.kubectl("patch", "ftj", "-n", NS, name, "--type=merge", "-p", '{"spec":{"model":"other"}}'),
      /spec.model is immutable/,
    );
    const done = await waitFor(
      "Succeeded",
      async () => {
        const o = await cluster.getJson("ftj", "-n", NS, name);
        assert.notEqual(cond(o, "Failed")?.status, "True", JSON.stringify(o.status));
        return cond(o, "Succeeded")?.status === "True" ? o : undefined;
      },
      240_000,
      1000,
    );
    const s = done.status;
    assert.equal(s.state, "Succeeded");
    if (cluster.realNode) {
      // The trainer ran as a container of the project's image on the real node, scheduled by kube-scheduler.
      const pods = await cluster.getJson("pods", "-n", NS, "-l", `batch.kubernetes.io/job-name=${name}-a0`);
      const p = pods.items[0];
      assert.equal(p.spec.nodeName, cluster.realNode.nodeName);
      const trainer = p.status.containerStatuses.find((c: KObject) => c.name === "trainer");
      assert.equal(trainer.image.replace(/^docker\.io\//, ""), cluster.realNode.image);
      assert.equal(trainer.state.terminated.exitCode, 0);
    }
    assert.equal(s.trainerStatus.step, s.trainerStatus.totalSteps);
    assert.equal(s.trainerStatus.progress, 100);
    assert.equal(typeof s.trainerStatus.validRewardMean, "number");
    assert.ok(s.checkpoints.length >= 1, JSON.stringify(s));
    assert.match(cond(done, "CheckpointSaved")?.message ?? "", /^step \d+: \/var\/rft\/checkpoints\//);
    assert.match(s.fineTunedModel, /\/model$/);
    // The trainer signed the ledger with the key whose public half is in status.ledger.publicKey.
    const ckptRoot = claimDir("ckpt");
    const jobDir = readdirSync(ckptRoot).find((d) => d.startsWith(`${name}-`))!;
    const started = JSON.parse(readFileSync(join(ckptRoot, jobDir, "ledger", "events.jsonl"), "utf8").split("\n")[0]!);
    assert.equal(started.type, "job.started");
    assert.equal(started.body.signer.publicKey, created.status.ledger.publicKey);
    assert.ok(s.startTime && s.completionTime);
    for (const c of s.conditions) assert.equal(c.observedGeneration, done.metadata.generation);
    const table = await cluster.kubectl("get", "ftj", "-n", NS);
    assert.match(table, /NAME\s+STATE\s+STEP\s+VALID REWARD\s+AGE/);
    assert.match(table, new RegExp(`${name}\\s+Succeeded\\s+${s.trainerStatus.step}\\s+`));
    const events = await cluster.getJson("events", "-n", NS, "--field-selector", `involvedObject.name=${name}`);
    const reasons = events.items.map((e: KObject) => e.reason);
    for (const r of ["Created", "Succeeded"]) assert.ok(reasons.includes(r), reasons.join(","));

    if (cluster.realNode) {
      // spec.serve on the real node: the project image's `rft serve` of the final model, as the pod spec says
      // (non-root, read-only root and claim, /healthz probes), reached at its pod IP: 401 without the token.
      const token = "serve-token-0123456789abcdef";
      await cluster.apply({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: `${name}-serve-key`, namespace: NS },
        stringData: { token },
      });
      const serve = { model: "final", replicas: 1, tokenSecretRef: { name: `${name}-serve-key`, key: "token" } };
      await cluster.kubectl("patch", "ftj", "-n", NS, name, "--type=merge", "-p", JSON.stringify({ spec: { serve } }));
      await waitStatus("Serving=True", name, (o) => cond(o, "Serving")?.status === "True", 240_000);
      const pods = await cluster.getJson("pods", "-n", NS, "-l", `rft.dev/role=serve,rft.dev/finetunejob=${name}`);
      const pod = pods.items.find((p: KObject) => p.status?.phase === "Running")!;
      assert.equal(pod.spec.nodeName, cluster.realNode.nodeName);
      const c = pod.status.containerStatuses[0];
      assert.equal(c.image.replace(/^docker\.io\//, ""), cluster.realNode.image);
      assert.equal(c.ready, true);
      const url = `http://${pod.status.podIP}:8000/v1/chat/completions`;
      const body = JSON.stringify({ model: "sorter", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
      const headers = { "content-type": "application/json" };
      assert.equal((await fetch(url, { method: "POST", headers, body })).status, 401);
      const ok = await fetch(url, { method: "POST", headers: { ...headers, authorization: `Bearer ${token}` }, body });
      assert.equal(ok.status, 200, await ok.clone().text());
      assert.equal(((await ok.json()) as { object: string }).object, "chat.completion");
    }

    // Sticky: deleting the children by hand recreates nothing.
    await cluster.kubectl("delete", "job", "-n", NS, `${name}-a0`, "--wait=true");
    await new Promise((r) => setTimeout(r, 1500));
    await op.queue.idle();
    const jobs = await cluster.getJson("jobs", "-n", NS, "-l", `rft.dev/finetunejob=${name}`);
    assert.equal(jobs.items.length, 0, "no Job is recreated for a finished FineTuneJob");

    // Deleting the FineTuneJob garbage-collects every child.
    await cluster.kubectl("delete", "ftj", "-n", NS, name);
    await waitFor(
      "children garbage-collected",
      async () => {
        const left = await Promise.all(
          ["secrets", "configmaps", "services", "jobs", "pods"].map(
            async (k) => (await cluster.getJson(k, "-n", NS, "-l", `rft.dev/finetunejob=${name}`)).items.length,
          ),
        );
        return left.every((n) => n === 0);
      },
      60_000,
      500,
    );
  });

  test("suspend/resume continues from the checkpoint; a killed trainer restarts the gang; an operator restart changes nothing", async () => {
    const name = "life";
    await cluster.apply(
      exampleJob(
        name,
        // Paced (>= 500 ms a step, 24 steps): long enough to act mid-run however fast the machine is.
        {
          trainingFile: "train-long.jsonl",
          backoffLimit: 2,
          trainer: { backend: "wasm", env: [{ name: "RFT_MIN_STEP_MS", value: "500" }] },
        },
        { maxCompletionTokens: 12, evalInterval: 4 },
      ),
    );
    await waitStatus("step >= 1", name, (o) => (o.status?.trainerStatus?.step ?? 0) >= 1);
    await cluster.kubectl("patch", "ftj", "-n", NS, name, "--type=merge", "-p", '{"spec":{"suspend":true}}');
    const suspended = await waitStatus("Suspended", name, (o) => cond(o, "Suspended")?.status === "True");
    assert.equal(suspended.status.state, "Suspended", JSON.stringify(suspended.status));
    const attempt = suspended.status.attempt ?? 0;
    const job = await cluster.getJson("job", "-n", NS, `${name}-a${attempt}`);
    assert.equal(job.spec.suspend, true);
    await waitFor("pods gone", async () => (await trainerPod(name, attempt)) === undefined, 60_000, 500);
    const pausedAt = (await getFtj(name)).status.trainerStatus.step;
    const ckptRoot = claimDir("ckpt");
    const dirs = readdirSync(ckptRoot).filter((d) => d.startsWith(`${name}-`));
    assert.equal(dirs.length, 1);
    // A checkpoint at the step where it paused (named step-N-pause, or step-N when that was an eval step).
    const atPause = `step-${String(pausedAt).padStart(6, "0")}`;
    const ckpts = readdirSync(join(ckptRoot, dirs[0]!, "checkpoints"));
    assert.ok(
      ckpts.some((d) => d === atPause || d === `${atPause}-pause`),
      `the trainer checkpointed at step ${pausedAt}: ${ckpts.join(",")}; log: ${trainerLog((await cluster.getJson("pods", "-n", NS, "-l", `batch.kubernetes.io/job-name=${name}-a0`)).items[0]?.metadata.name ?? "").slice(-1500)}`,
    );

    await cluster.kubectl("patch", "ftj", "-n", NS, name, "--type=merge", "-p", '{"spec":{"suspend":false}}');
    const resumed = await waitStatus("Resumed", name, (o) => cond(o, "Suspended")?.reason === "Resumed");
    assert.ok(resumed.status.lastResumeTime);
    // It continues from the checkpoint: the first step reported after the resume is past the pause.
    const running = await waitStatus("running again", name, (o) => o.status?.trainerStatus?.step > pausedAt);
    assert.ok(running.status.trainerStatus.step > pausedAt);

    // Kill the trainer process: the rank fails, the gang restarts as attempt 1 from the last checkpoint.
    const before = (await getFtj(name)).status.attempt ?? 0;
    const pod = await waitFor("a running trainer pod", () => trainerPod(name, before), 60_000, 300);
    const pid = await waitFor("trainer pid", () => trainerPid(pod.metadata.name));
    process.kill(pid, "SIGKILL");
    const restarted = await waitStatus("gang restart", name, (o) => o.status?.restartCount === 1, 90_000);
    assert.equal(restarted.status.trainerJob, `${name}-a${before + 1}`);

    // Restart the operator mid-run: nothing changes (no new attempt, the budget is kept).
    await op.stop();
    op = startOperator();
    await op.start();
    await waitFor("new operator leads", () => op.isLeader, 30_000);
    const done = await waitStatus("Succeeded", name, (o) => {
      assert.notEqual(cond(o, "Failed")?.status, "True", JSON.stringify(o.status));
      return cond(o, "Succeeded")?.status === "True";
    });
    assert.equal(done.status.restartCount, 1);
    assert.equal(done.status.attempt, before + 1, "the operator restart started no new attempt");
    const jobs = await cluster.getJson("jobs", "-n", NS, "-l", `rft.dev/finetunejob=${name}`);
    assert.deepEqual(
      jobs.items.map((j: KObject) => j.metadata.name),
      [`${name}-a${before + 1}`],
    );
  });

  test("exceeding backoffLimit fails the job and nothing is recreated", async () => {
    const name = "fragile";
    await cluster.apply(
      exampleJob(name, {
        trainingFile: "train-long.jsonl",
        backoffLimit: 0,
        // Paced so that the trainer is still running when the test kills it.
        trainer: { backend: "wasm", env: [{ name: "RFT_MIN_STEP_MS", value: "500" }] },
      }),
    );
    const pod = await waitFor("a running trainer pod", () => trainerPod(name, 0), 120_000, 300);
    const pid = await waitFor("trainer pid", () => trainerPid(pod.metadata.name));
    process.kill(pid, "SIGKILL");
    const failed = await waitStatus("Failed", name, (o) => cond(o, "Failed")?.status === "True", 90_000);
    assert.equal(cond(failed, "Failed").reason, "BackoffLimitExceeded");
    assert.equal(failed.status.restartCount ?? 0, 0);
    await new Promise((r) => setTimeout(r, 2000));
    await op.queue.idle();
    const jobs = await cluster.getJson("jobs", "-n", NS, "-l", `rft.dev/finetunejob=${name}`);
    assert.deepEqual(
      jobs.items.map((j: KObject) => j.metadata.name),
      [`${name}-a0`],
      "no further attempt",
    );
  });

  test("two operator replicas elect one leader; the standby takes over when the leader stops", async () => {
    const standby = startOperator();
    await standby.start();
    try {
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(op.isLeader, true);
      assert.equal(standby.isLeader, false);
      const lease = await cluster.getJson("lease", "-n", "default", "rft-operator.rft.dev");
      assert.ok(lease.spec.holderIdentity);
      await op.stop();
      await waitFor("standby leads", () => standby.isLeader, 20_000);
      const res = await fetch(`http://127.0.0.1:${standby.port}/metrics`);
      const text = await res.text();
      assert.match(text, /controller_runtime_reconcile_total\{controller="finetunejob",result="success"\} \d+/);
      assert.match(text, /workqueue_adds_total\{name="finetunejob"\}/);
      assert.match(text, /rft_finetunejobs\{state="Failed"\} 1/);
      assert.equal((await fetch(`http://127.0.0.1:${standby.port}/readyz`)).status, 200);
    } finally {
      op = standby;
    }
  });

  test("activeDeadlineSeconds fails the job with DeadlineExceeded; ttlSecondsAfterFinished then deletes it", async () => {
    const name = "hasty";
    await cluster.apply(
      exampleJob(name, {
        trainingFile: "train-long.jsonl",
        activeDeadlineSeconds: 3,
        ttlSecondsAfterFinished: 5,
        trainer: { backend: "wasm", env: [{ name: "RFT_MIN_STEP_MS", value: "500" }] },
      }),
    );
    const failed = await waitStatus("Failed", name, (o) => cond(o, "Failed")?.status === "True", 90_000);
    assert.equal(cond(failed, "Failed").reason, "DeadlineExceeded", JSON.stringify(failed.status));
    assert.equal(failed.status.state, "Failed");
    assert.match(cond(failed, "Failed").message, /longer than activeDeadlineSeconds \(3\)/);
    // (decide.test.ts checks the instants on a fake clock: the deadline from lastResumeTime, the TTL from
    // completionTime.) Then the TTL: the FineTuneJob, seen above after it failed, is deleted with its children.
    await waitFor(
      "FineTuneJob deleted by its TTL",
      async () => {
        const left = await cluster.getJson("ftj", "-n", NS, "--field-selector", `metadata.name=${name}`);
        return left.items.length === 0 ? true : undefined;
      },
      60_000,
      500,
    );
    await waitFor(
      "children garbage-collected",
      async () => {
        const left = await Promise.all(
          ["secrets", "configmaps", "services", "jobs", "pods"].map(
            async (k) => (await cluster.getJson(k, "-n", NS, "-l", `rft.dev/finetunejob=${name}`)).items.length,
          ),
        );
        return left.every((n) => n === 0);
      },
      60_000,
      500,
    );
    const events = await cluster.getJson("events", "-n", NS, "--field-selector", `involvedObject.name=${name}`);
    assert.ok(events.items.some((e: KObject) => e.reason === "DeadlineExceeded"));
  });

  test("a trainer that rejects its configuration (exit code 2) fails the job at once: no retry is spent", async () => {
    const name = "misfit";
    // An invalid RFT_MIN_STEP_MS: the trainer exits 2 with a message that says what is wrong.
    await cluster.apply(
      exampleJob(name, {
        backoffLimit: 3,
        trainer: { backend: "wasm", env: [{ name: "RFT_MIN_STEP_MS", value: "-1" }] },
      }),
    );
    const failed = await waitStatus("Failed", name, (o) => cond(o, "Failed")?.status === "True", 120_000);
    assert.equal(cond(failed, "Failed").reason, "TrainerConfigError", JSON.stringify(failed.status));
    assert.match(cond(failed, "Failed").message, /exit code 2/);
    assert.equal(failed.status.restartCount ?? 0, 0);
    await new Promise((r) => setTimeout(r, 1500));
    await op.queue.idle();
    const jobs = await cluster.getJson("jobs", "-n", NS, "-l", `rft.dev/finetunejob=${name}`);
    assert.deepEqual(
      jobs.items.map((j: KObject) => j.metadata.name),
      [`${name}-a0`],
      "no further attempt",
    );
    const pods = await cluster.getJson("pods", "-n", NS, "-l", `batch.kubernetes.io/job-name=${name}-a0`);
    const log = trainerLog(pods.items[0]?.metadata.name ?? "");
    assert.match(log, /RFT_MIN_STEP_MS must be a number of milliseconds/);
    await cluster.kubectl("delete", "ftj", "-n", NS, name);
  });

  test("two replicas train data-parallel (one pod per rank, peers by hostname) to Succeeded", async () => {
    const name = "pair";
    await cluster.apply(exampleJob(name, { replicas: 2 }));
    const done = await waitStatus("Succeeded", name, (o) => {
      assert.notEqual(cond(o, "Failed")?.status, "True", JSON.stringify(o.status));
      return cond(o, "Succeeded")?.status === "True";
    });
    assert.equal(done.status.trainerStatus.step, done.status.trainerStatus.totalSteps);
    assert.equal(done.status.restartCount ?? 0, 0);
    const pods = await cluster.getJson("pods", "-n", NS, "-l", `batch.kubernetes.io/job-name=${name}-a0`);
    assert.deepEqual(
      pods.items.map((p: KObject) => p.metadata.annotations["batch.kubernetes.io/job-completion-index"]).sort(),
      ["0", "1"],
    );
    for (const p of pods.items) assert.equal(p.status.phase, "Succeeded", p.metadata.name);
    await cluster.kubectl("delete", "ftj", "-n", NS, name);
  });
});
