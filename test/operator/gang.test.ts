/**
 * Gang scheduling with the real Kueue (v0.19) and JobSet (v0.12) controllers on the harness (test/k8s: real
 * kube-apiserver, kube-controller-manager, etcd, process kubelet; test/k8s/gang.ts starts the controllers with
 * their webhooks on loopback), a real nats-server and the operator:
 * - a FineTuneJob over its ClusterQueue's quota stays queued (its Job suspended, no pod) and raising the quota
 *   admits its 2 ranks as one Kueue workload at once;
 * - a higher-priority job preempts a running one: Kueue suspends its Job, the trainer checkpoints, and once
 *   readmitted it resumes from that checkpoint to Succeeded (Preempted / Readmitted in its conditions);
 * - a `workloadKind: JobSet` FineTuneJob, queued by Kueue as a JobSet, runs its 2 ranks to Succeeded.
 */
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { Operator } from "../../operator/manager.js";
import { createLogger } from "../../proto/log.js";
import { EXAMPLE, tinyModel } from "../helpers/rft-job.js";
import type { KObject } from "../k8s/api.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";
import { type Gang, startGang } from "../k8s/gang.js";
import { NatsServer } from "../ledger/nats-server.js";

const NS = "rft-gang";
const CQ = "rft-cq";
const LQ = "rft-lq";
let cluster: Cluster;
let gang: Gang;
let nats: NatsServer;
let op: Operator;

/** A small FineTuneJob of the example, queued in LQ, each rank requesting `cpu` (what the quota counts). */
function queuedJob(name: string, o: { replicas?: number; cpu?: string; priority?: string; paced?: boolean } = {}) {
  const job = parse(readFileSync(join(EXAMPLE, "rft.yaml"), "utf8"));
  job.metadata = {
    name,
    namespace: NS,
    labels: {
      "kueue.x-k8s.io/queue-name": LQ,
      ...(o.priority ? { "kueue.x-k8s.io/priority-class": o.priority } : {}),
    },
  };
  Object.assign(job.spec, {
    model: "base",
    trainingFile: o.paced ? "train-long.jsonl" : "train.jsonl",
    validationFile: "valid.jsonl",
    replicas: o.replicas ?? 1,
    storage: { modelClaim: "data", checkpointClaim: "ckpt" },
    trainer: {
      backend: "wasm",
      resources: { requests: { cpu: o.cpu ?? "1" } },
      // Paced (>= 500 ms a step): still running when the test acts, however fast the machine is.
      ...(o.paced ? { env: [{ name: "RFT_MIN_STEP_MS", value: "500" }] } : {}),
    },
  });
  Object.assign(job.spec.method.reinforcement.hyperparameters, {
    nEpochs: 1,
    batchSize: 2,
    samplesPerPrompt: 2,
    maxCompletionTokens: o.paced ? 12 : 4,
    evalInterval: o.paced ? 4 : 1,
    evalSamples: 1,
  });
  return job;
}

const cond = (o: KObject, type: string) => (o.status?.conditions ?? []).find((c: KObject) => c.type === type);
const getFtj = (name: string) => cluster.getJson("ftj", "-n", NS, name);

async function waitStatus(what: string, name: string, ok: (o: KObject) => boolean, timeoutMs = 240_000) {
  return waitFor(
    what,
    async () => {
      const o = await getFtj(name);
      assert.notEqual(cond(o, "Failed")?.status, "True", `${name} failed: ${JSON.stringify(o.status)}`);
      return ok(o) ? o : undefined;
    },
    timeoutMs,
    500,
  );
}

/** The Kueue Workloads of a Job or JobSet (owner name). */
async function workloadsOf(owner: string): Promise<KObject[]> {
  const wls = await cluster.getJson("workloads.kueue.x-k8s.io", "-n", NS);
  return wls.items.filter((w: KObject) => (w.metadata.ownerReferences ?? []).some((r: KObject) => r.name === owner));
}

const podsOf = async (selector: string) => (await cluster.getJson("pods", "-n", NS, "-l", selector)).items as KObject[];

async function setQuota(cpu: string): Promise<void> {
  await cluster.apply(
    {
      apiVersion: "kueue.x-k8s.io/v1beta2",
      kind: "ClusterQueue",
      metadata: { name: CQ },
      spec: {
        namespaceSelector: {},
        preemption: { withinClusterQueue: "LowerPriority" },
        resourceGroups: [
          {
            coveredResources: ["cpu"],
            flavors: [{ name: "default-flavor", resources: [{ name: "cpu", nominalQuota: cpu }] }],
          },
        ],
      },
    },
    "--server-side",
    "--force-conflicts",
  );
}

before(async () => {
  nats = await NatsServer.start();
  cluster = await startCluster({ kubelet: { hostPorts: [nats.port] } });
  gang = await startGang(cluster);
  await cluster.kubectl("apply", "--server-side", "-f", "crds/finetunejobs.rft.dev.yaml");
  await waitFor("the FineTuneJob CRD Established", async () => {
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
  const dataDir = join(cluster.dir, "kubelet", "pvc", NS, "data");
  mkdirSync(dataDir, { recursive: true });
  await tinyModel(join(dataDir, "base"));
  const rows = readFileSync(join(EXAMPLE, "train.jsonl"), "utf8").trim().split("\n");
  writeFileSync(join(dataDir, "train.jsonl"), `${rows.slice(0, 4).join("\n")}\n`);
  writeFileSync(join(dataDir, "train-long.jsonl"), `${rows.slice(0, 24).join("\n")}\n`);
  const valid = readFileSync(join(EXAMPLE, "valid.jsonl"), "utf8").trim().split("\n");
  writeFileSync(join(dataDir, "valid.jsonl"), `${valid.slice(0, 2).join("\n")}\n`);
  await cluster.apply([
    { apiVersion: "kueue.x-k8s.io/v1beta2", kind: "ResourceFlavor", metadata: { name: "default-flavor" } },
    ...[
      ["low", 10],
      ["high", 1000],
    ].map(([name, value]) => ({
      apiVersion: "kueue.x-k8s.io/v1beta2",
      kind: "WorkloadPriorityClass",
      metadata: { name },
      value,
    })),
  ]);
  await setQuota("1");
  await cluster.apply({
    apiVersion: "kueue.x-k8s.io/v1beta2",
    kind: "LocalQueue",
    metadata: { name: LQ, namespace: NS },
    spec: { clusterQueue: CQ },
  });
  await waitFor("the ClusterQueue Active", async () => {
    const cq = await cluster.getJson("clusterqueue", CQ);
    return cond(cq, "Active")?.status === "True";
  });
  op = new Operator({
    kubeconfig: cluster.kubeconfig,
    settings: { image: "rft:dev", natsUrl: nats.url },
    port: 0,
    leaderElection: false,
    log: createLogger("operator-gang-test"),
  });
  await op.start();
});

after(async () => {
  await op?.stop();
  await gang?.close();
  await cluster?.close();
  await nats?.stop();
});

describe("gang scheduling with Kueue and JobSet", () => {
  test("over quota the gang stays suspended with no pods; raising the quota admits all its ranks at once", async () => {
    const name = "gang";
    await cluster.apply(queuedJob(name, { replicas: 2, cpu: "1" })); // 2 CPU, quota 1
    // Kueue has looked at the gang and found no room: one workload for both ranks, pending on quota.
    const pending = await waitFor(
      "the workload pending on quota",
      async () => {
        const [wl] = await workloadsOf(`${name}-a0`);
        const qr = wl && cond(wl, "QuotaReserved");
        return qr?.status === "False" && qr.reason === "Pending" ? wl : undefined;
      },
      120_000,
      500,
    );
    assert.equal(pending.spec.podSets.length, 1);
    assert.equal(pending.spec.podSets[0].count, 2, "one workload holds both ranks");
    assert.match(cond(pending, "QuotaReserved").message, /insufficient quota|couldn't assign flavors/i);
    const queued = await waitStatus("Queued", name, (o) => cond(o, "Admitted")?.reason === "Queued");
    assert.equal(queued.status.state, "Queued");
    assert.equal(cond(queued, "Running")?.status, "False");
    // The operator has reconciled since (it wrote the status) and has not unsuspended the Job.
    const job = await cluster.getJson("job", "-n", NS, `${name}-a0`);
    assert.equal(job.spec.suspend, true);
    assert.deepEqual(await podsOf(`batch.kubernetes.io/job-name=${name}-a0`), []);

    await setQuota("2");
    const admitted = await waitStatus("Admitted", name, (o) => cond(o, "Admitted")?.status === "True");
    assert.equal(cond(admitted, "Admitted").reason, "Admitted");
    const [wl] = await workloadsOf(`${name}-a0`);
    assert.equal(wl!.status.admission.podSetAssignments[0].count, 2, "both ranks admitted together");
    assert.equal(cond(wl!, "Admitted")?.status, "True");
    const pods = await waitFor(
      "both rank pods",
      async () => {
        const p = await podsOf(`batch.kubernetes.io/job-name=${name}-a0`);
        return p.length === 2 ? p : undefined;
      },
      60_000,
      300,
    );
    assert.deepEqual(pods.map((p) => p.metadata.annotations["batch.kubernetes.io/job-completion-index"]).sort(), [
      "0",
      "1",
    ]);
    const done = await waitStatus("Succeeded", name, (o) => cond(o, "Succeeded")?.status === "True");
    assert.equal(done.status.attempt ?? 0, 0);
    assert.equal(done.status.restartCount ?? 0, 0);
  });

  test("a higher-priority job preempts a running one, which checkpoints and resumes from there when readmitted", async () => {
    await setQuota("2");
    const low = "low";
    await cluster.apply(queuedJob(low, { cpu: "2", priority: "low", paced: true }));
    const running = await waitStatus("low at step >= 1", low, (o) => (o.status?.trainerStatus?.step ?? 0) >= 1);
    assert.equal(cond(running, "Admitted")?.reason, "Admitted");

    await cluster.apply(queuedJob("high", { cpu: "2", priority: "high" }));
    const preempted = await waitStatus("low Preempted", low, (o) => cond(o, "Admitted")?.reason === "Preempted");
    assert.equal(preempted.status.state, "Queued");
    assert.equal(cond(preempted, "Running")?.reason, "Preempted");
    const [evicted] = await workloadsOf(`${low}-a0`);
    assert.equal(cond(evicted!, "Evicted")?.reason, "Preempted", JSON.stringify(evicted?.status?.conditions));

    // The trainer checkpointed when Kueue suspended it (SIGTERM: finish the step, checkpoint, exit 0).
    const paused = await waitStatus("low's pause recorded", low, (o) => o.status?.trainerStatus?.status === "paused");
    const pausedAt = paused.status.trainerStatus.step;
    const ckptRoot = join(cluster.dir, "kubelet", "pvc", NS, "ckpt");
    const [dir] = readdirSync(ckptRoot).filter((d) => d.startsWith(`${low}-`));
    const atPause = `step-${String(pausedAt).padStart(6, "0")}`;
    const ckpts = readdirSync(join(ckptRoot, dir!, "checkpoints"));
    assert.ok(ckpts.includes(atPause) || ckpts.includes(`${atPause}-pause`), `${atPause} in ${ckpts.join(",")}`);
    // The high-priority job runs while the low one waits.
    await waitStatus("high Succeeded", "high", (o) => cond(o, "Succeeded")?.status === "True");

    // Readmitted once the quota is free again, it continues past the checkpoint, to Succeeded.
    const again = await waitStatus("low Readmitted", low, (o) => cond(o, "Admitted")?.reason === "Readmitted");
    assert.ok(Date.parse(again.status.lastResumeTime) >= Date.parse(cond(preempted, "Admitted").lastTransitionTime));
    const resumed = await waitStatus("low past the pause", low, (o) => o.status?.trainerStatus?.step > pausedAt);
    assert.ok(resumed.status.trainerStatus.step > pausedAt);
    const done = await waitStatus("low Succeeded", low, (o) => cond(o, "Succeeded")?.status === "True");
    assert.equal(done.status.restartCount ?? 0, 0, "a preemption spends no retry budget");
  });

  test("workloadKind JobSet: Kueue admits the JobSet as one gang and its 2 ranks run to Succeeded", async () => {
    await setQuota("2");
    const name = "js";
    const job = queuedJob(name, { replicas: 2, cpu: "1" });
    job.spec.workloadKind = "JobSet";
    await cluster.apply(job);
    const done = await waitStatus("JobSet job Succeeded", name, (o) => cond(o, "Succeeded")?.status === "True");
    assert.equal(done.status.trainerJob, `${name}-a0`);
    assert.equal(cond(done, "Admitted")?.reason, "Admitted");
    const js = await cluster.getJson("jobset", "-n", NS, `${name}-a0`);
    assert.equal(cond(js, "Completed")?.status, "True");
    assert.equal(js.metadata.ownerReferences[0].kind, "FineTuneJob");
    const [wl] = await workloadsOf(`${name}-a0`);
    assert.equal(wl!.metadata.ownerReferences[0].kind, "JobSet");
    assert.equal(wl!.status.admission.podSetAssignments[0].count, 2);
    const rankJob = await cluster.getJson("job", "-n", NS, `${name}-a0-trainer-0`);
    assert.equal(rankJob.metadata.ownerReferences[0].kind, "JobSet");
    assert.equal(cond(rankJob, "Complete")?.status, "True");
  });
});
