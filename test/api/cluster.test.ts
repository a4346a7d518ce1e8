/**
 * `rft api --cluster` on the harness (test/k8s: real kube-apiserver, controller-manager, the process kubelet
 * running trainer pods) with the operator and a real nats-server: the RFT guide's flow with the official node
 * `openai` client. Files are uploaded; the job becomes a FineTuneJob in the project's namespace, created with
 * the chart's own Role for the API (a ServiceAccount token, not admin); the operator's trainer pod fetches the
 * training files from the API with the job's token; events, checkpoints and the fine-tuned model come back
 * from the FineTuneJob's status. A second job is cancelled through spec.cancel.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { stringify } from "yaml";
import type { ClusterJobs } from "../../api/cluster-jobs.js";
import { ClusterServe } from "../../api/cluster-serve.js";
import type { ApiError } from "../../api/errors.js";
import { ApiKeys } from "../../api/http.js";
import { ModelCatalog } from "../../api/models.js";
import { type RunningApi, startApiServer } from "../../api/server.js";
import { KubeClient } from "../../operator/client.js";
import { Operator } from "../../operator/manager.js";
import { createLogger } from "../../proto/log.js";
import { tinyModel } from "../helpers/rft-job.js";
import { find, template } from "../helm/helm.js";
import type { KObject } from "../k8s/api.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";
import { ServiceRelay } from "../k8s/service-relay.js";
import { freePort, NatsServer } from "../ledger/nats-server.js";
import { BASE, jobRequest, TRAIN, VALID } from "./guide.js";
import { KEY } from "./helpers.js";

const NS = "team-a";
const SYSTEM = "rft-system";
const OTHER_KEY = "sk-test-other-project-0123";
let cluster: Cluster;
let nats: NatsServer;
let op: Operator;
let api: RunningApi;
let client: OpenAI;
let apiPort: number;
let kube: KubeClient;
let relay: ServiceRelay;
/** The first test's succeeded job (the serving tests use its model). */
let succeeded: { id: string; model: string } | undefined;

const cond = (o: KObject, type: string) => (o.status?.conditions ?? []).find((c: KObject) => c.type === type);

before(async () => {
  nats = await NatsServer.start();
  apiPort = await freePort();
  mkdirSync("/var/tmp", { recursive: true });
  cluster = await startCluster({
    dir: mkdtempSync("/var/tmp/rft-api-cluster-"),
    keep: false,
    kubelet: { hostPorts: [nats.port, apiPort] },
  });
  await cluster.kubectl("apply", "--server-side", "-f", "crds/finetunejobs.rft.dev.yaml");
  await waitFor("CRD established", async () => {
    const crd = await cluster.getJson("crd", "finetunejobs.rft.dev");
    return cond(crd, "Established")?.status === "True";
  });
  const pvc = (name: string) => ({
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name, namespace: NS },
    spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
  });
  await cluster.apply([
    { apiVersion: "v1", kind: "Namespace", metadata: { name: NS } },
    { apiVersion: "v1", kind: "Namespace", metadata: { name: SYSTEM } },
  ]);
  await cluster.apply([pvc("models"), pvc("checkpoints")]);
  await tinyModel(join(cluster.kubelet!.pvcPath(NS, "models"), "tiny"));

  // The API's identity: the chart's ServiceAccount, Role and RoleBinding (helm template), and a token of it.
  const { objects } = await template([
    "--set",
    "api.enabled=true",
    "--set-json",
    `api.projects={"default":{"namespace":"${NS}","modelClaim":"models","checkpointClaim":"checkpoints"}}`,
    "--set-json",
    `api.models={"${BASE}":"tiny"}`,
  ]);
  const name = "rft-rft-operator-api";
  await cluster.apply([
    ...find(objects, "ServiceAccount", name),
    ...find(objects, "Role", name),
    ...find(objects, "RoleBinding", name),
  ]);
  const token = (await cluster.kubectl("create", "token", name, "-n", SYSTEM)).trim();
  const kubeconfig = join(cluster.dir, "api.kubeconfig");
  writeFileSync(
    kubeconfig,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        {
          name: "harness",
          cluster: {
            server: cluster.server,
            "certificate-authority-data": Buffer.from(cluster.credentials.ca).toString("base64"),
          },
        },
      ],
      users: [{ name: "api", user: { token } }],
      contexts: [{ name: "api", context: { cluster: "harness", user: "api" } }],
      "current-context": "api",
    }),
  );

  op = new Operator({
    kubeconfig: cluster.kubeconfig,
    settings: { image: "rft:dev", natsUrl: nats.url },
    port: 0,
    log: createLogger("operator-test", "silent"),
    onLeaseLost: () => {},
  });
  await op.start();
  await waitFor("operator leads", () => op.isLeader);

  kube = await KubeClient.fromKubeconfig(kubeconfig);
  relay = new ServiceRelay(cluster);
  api = await startApiServer({
    dataDir: mkdtempSync(join(cluster.dir, "api-data-")),
    keys: new ApiKeys([`${KEY} default`, `${OTHER_KEY} elsewhere`]),
    models: new ModelCatalog(),
    organization: "acme",
    port: apiPort,
    logger: createLogger("api-test", "silent"),
    cluster: {
      client: kube,
      config: {
        projects: { default: { namespace: NS, modelClaim: "models", checkpointClaim: "checkpoints" } },
        models: { [BASE]: "tiny" },
        // Pods reach this host port at 127.0.0.1 (the harness relays it).
        datasetBaseUrl: `http://127.0.0.1:${apiPort}`,
        trainer: { backend: "wasm" },
      },
      datasetKey: randomBytes(32),
      pollMs: 500,
      // No kube-proxy on the process kubelet: the relay stands in for the Service's DNS name (test/k8s/README.md).
      serviceUrl: (ns, svc) => relay.url(ns, svc),
      serveIdleMs: 0,
    },
  });
  client = new OpenAI({ baseURL: api.url, apiKey: KEY, maxRetries: 0 });
});

after(async () => {
  await api?.close();
  await relay?.close();
  kube?.close();
  await op?.stop();
  await cluster?.close();
  await nats?.stop();
});

test("the RFT guide's flow through the operator: files, FineTuneJob, events to succeeded, checkpoints", async () => {
  const up = async (rows: string[], name: string) =>
    client.files.create({ file: await toFile(Buffer.from(`${rows.join("\n")}\n`), name), purpose: "fine-tune" });
  const train = await up(TRAIN, "train.jsonl");
  const valid = await up(VALID, "valid.jsonl");
  // `as any`: the SDK's types lack response_format (OpenAI's guide sends it).
  const job = await client.fineTuning.jobs.create(jobRequest(train.id, valid.id, { samples_per_prompt: 2 }) as any);
  assert.equal(job.status, "queued");
  assert.equal(job.training_file, train.id);

  // The FineTuneJob: in the project's namespace, data by URL with a digest, its dataset Secret owned by it.
  const ftj = await cluster.getJson("ftj", "-n", NS, job.id.toLowerCase());
  assert.match(
    ftj.spec.trainingFile,
    new RegExp(`^http://127.0.0.1:${apiPort}/internal/datasets/${job.id}/train\\.jsonl#sha256=[0-9a-f]{64}$`),
  );
  assert.equal(ftj.spec.model, "tiny");
  assert.deepEqual(ftj.spec.storage, { modelClaim: "models", checkpointClaim: "checkpoints" });
  const secret = await cluster.getJson("secret", "-n", NS, `${job.id.toLowerCase()}-dataset`);
  assert.equal(secret.metadata.ownerReferences[0].uid, ftj.metadata.uid);
  // The dataset URL answers only with the job's token.
  const plain = ftj.spec.trainingFile.replace(/#.*/, "");
  assert.equal((await fetch(plain)).status, 401);
  assert.equal((await fetch(plain, { headers: { authorization: "Bearer nope" } })).status, 401);

  // Poll as the guide does, until the job is final.
  let done = job;
  for (let i = 0; i < 1200 && !["succeeded", "failed", "cancelled"].includes(done.status); i++) {
    await new Promise((r) => setTimeout(r, 500));
    done = await client.fineTuning.jobs.retrieve(job.id);
  }
  const why = async () => JSON.stringify((await cluster.getJson("ftj", "-n", NS, job.id.toLowerCase())).status);
  assert.equal(done.status, "succeeded", await why());
  assert.equal(done.fine_tuned_model, `ft:${BASE}:acme:security-qa:${job.id.slice(6, 14)}`);
  assert.ok(done.finished_at! >= done.created_at);

  const events = [];
  for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 5 })) events.push(e);
  const messages = events.map((e) => e.message);
  assert.equal(messages[0], "The job has successfully completed");
  assert.ok(messages.includes(`New fine-tuned model created: ${done.fine_tuned_model}`), messages.join("\n"));
  assert.ok(messages.includes("Fine-tuning job started"), messages.join("\n"));
  const steps = events.filter((e) => e.type === "metrics").map((e) => (e.data as { step: number }).step);
  assert.ok(steps.includes(2), `metrics events for the last step: ${steps}`);
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, "each event once across pages");

  const ckpts = (await client.fineTuning.jobs.checkpoints.list(job.id)).data;
  assert.ok(ckpts.length >= 1);
  assert.equal(ckpts[0]!.fine_tuned_model_checkpoint, `${done.fine_tuned_model}:ckpt-step-2`);
  assert.equal(ckpts[0]!.step_number, 2);
  assert.equal(typeof (ckpts[0]!.metrics as Record<string, number>).valid_reward_mean, "number");
  // Usage and checkpoint times come from the trainer (captured forward progress), not placeholders.
  const usage = (done as unknown as { usage_metrics: { training_seconds: number } }).usage_metrics; // not in the SDK's types
  assert.ok(usage.training_seconds > 0, JSON.stringify(usage));
  assert.ok(done.trained_tokens! > 0, `trained_tokens ${done.trained_tokens}`);
  const ftjDone = await cluster.getJson("ftj", "-n", NS, job.id.toLowerCase());
  assert.ok(usage.training_seconds <= done.finished_at! - done.created_at + 1, await why());
  assert.equal(done.trained_tokens, ftjDone.status.usage.trainedTokens);
  for (const c of ckpts) {
    assert.ok(c.created_at >= done.created_at && c.created_at <= done.finished_at!, JSON.stringify(c));
    const saved = ftjDone.status.checkpoints.find((x: KObject) => x.step === c.step_number);
    assert.equal(c.created_at, Math.floor(Date.parse(saved.createdAt) / 1000), "the trainer's save time");
  }
  const times = ckpts.map((c) => c.created_at); // newest first
  assert.deepEqual(
    times,
    [...times].sort((a, b) => b - a),
    "later steps were saved later",
  );

  // The eval link: each validation (the baseline, steps 1 and 2) the trainer pod sent back is a run of the job's
  // eval, its items the graded samples.
  const evalId = (done as unknown as { eval_id: string }).eval_id;
  assert.match(evalId, /^eval_[A-Za-z0-9]{24}$/);
  assert.equal((job as unknown as { eval_id: string }).eval_id, evalId);
  const runs = [];
  for await (const r of client.evals.runs.list(evalId)) runs.push(r);
  assert.deepEqual(
    runs.map((r) => [r.name, r.status, r.model]).sort(),
    [0, 1, 2].map((n) => [
      `${job.id} step ${n}`,
      "completed",
      n === 0 ? BASE : `${done.fine_tuned_model}:ckpt-step-${n}`,
    ]),
  );
  for (const run of runs) {
    const items = [];
    for await (const it of client.evals.runs.outputItems.list(run.id, { eval_id: evalId })) items.push(it);
    assert.equal(items.length, VALID.length, run.name); // eval_samples: 1
    assert.equal(run.result_counts.total, items.length);
    assert.deepEqual(items.find((i) => i.datasource_item_id === 0)!.sample.input, JSON.parse(VALID[0]!).messages);
  }
  const metricsSteps = events
    .filter((e) => e.type === "metrics")
    .map((e) => e.data as { step: number; scores: { train_reward_mean: number; valid_reward_mean?: number } });
  assert.ok(metricsSteps.every((d) => typeof d.scores.train_reward_mean === "number")); // OpenAI's shape
  const last = metricsSteps.find((d) => d.step === 2)?.scores;
  const run2 = runs.find((r) => r.name.endsWith("step 2"))!;
  const items2 = [];
  for await (const it of client.evals.runs.outputItems.list(run2.id, { eval_id: evalId })) items2.push(it);
  const mean2 = items2.reduce((a, i) => a + i.results[0]!.score, 0) / items2.length;
  if (typeof last?.valid_reward_mean === "number") assert.ok(Math.abs(mean2 - last.valid_reward_mean) < 1e-6);

  // Only the job's own token may send results, and a malformed file is refused naming its line.
  const upload = `http://127.0.0.1:${apiPort}/internal/validations/${job.id}/step-9.jsonl`;
  const token = Buffer.from(secret.data.token, "base64").toString("utf8");
  assert.equal((await fetch(upload, { method: "PUT", body: "{}\n" })).status, 401);
  const malformed = await fetch(upload, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}` },
    body: '{"step": 9}\nnot json\n',
  });
  assert.equal(malformed.status, 400);
  assert.match(((await malformed.json()) as { error: { message: string } }).error.message, /^line 1: "line"/);

  assert.deepEqual(
    (await client.fineTuning.jobs.list()).data.map((j) => j.id),
    [job.id],
  );
  assert.ok((await client.models.list()).data.some((m) => m.id === done.fine_tuned_model));
  succeeded = { id: job.id, model: done.fine_tuned_model! };
});

/** Runs a Node script inside a pod's network namespace (where its ports are: no kube-proxy here). */
function inPod(pod: string, script: string): string {
  const netns = cluster.kubelet!.podNetns(NS, pod);
  assert.ok(netns, `pod ${pod} runs on the process kubelet`);
  const r = spawnSync("ip", ["netns", "exec", netns, process.execPath, "--input-type=module", "-e", script], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test("spec.serve: after Succeeded the operator runs rft serve on the final model; the pod is Ready and wants the token", async () => {
  assert.ok(succeeded, "needs the first test's job");
  const name = succeeded.id.toLowerCase();
  const token = "serve-token-for-the-operator-test";
  await cluster.apply([
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "operator-test-serve", namespace: NS },
      stringData: { token },
    },
  ]);
  await cluster.kubectl(
    "patch",
    "ftj",
    "-n",
    NS,
    name,
    "--type=merge",
    "-p",
    JSON.stringify({
      spec: { serve: { model: "final", tokenSecretRef: { name: "operator-test-serve", key: "token" }, modelId: "m" } },
    }),
  );
  const dep = await waitFor(
    "the serving Deployment",
    async () => (await cluster.kubectl("get", "deploy", "-n", NS, "-o", "name")).includes(`${name}-serve`),
    60_000,
    500,
  ).then(() => cluster.getJson("deploy", "-n", NS, `${name}-serve`));
  const ftj = await cluster.getJson("ftj", "-n", NS, name);
  assert.equal(dep.metadata.ownerReferences[0].uid, ftj.metadata.uid);
  assert.equal(dep.spec.template.spec.containers[0].args[1], ftj.status.fineTunedModel);
  const ready = await waitFor(
    "Serving=True",
    async () => {
      const o = await cluster.getJson("ftj", "-n", NS, name);
      return cond(o, "Serving")?.status === "True" ? o : undefined;
    },
    300_000,
    1000,
  );
  assert.equal(cond(ready, "Serving")?.reason, "Ready");
  assert.deepEqual(
    { service: ready.status.serve.service, model: ready.status.serve.model, ready: ready.status.serve.readyReplicas },
    { service: `${name}-serve`, model: "final", ready: 1 },
  );
  const svc = await cluster.getJson("svc", "-n", NS, `${name}-serve`);
  assert.equal(svc.spec.ports[0].port, 8000);
  const pods = (await cluster.getJson("pods", "-n", NS, "-l", "rft.dev/role=serve")).items as KObject[];
  assert.equal(pods.length, 1);
  const pod = pods[0]!.metadata.name as string;
  const out = inPod(
    pod,
    `const u = "http://127.0.0.1:8000";
     const h = await fetch(u + "/healthz");
     const bare = await fetch(u + "/v1/models");
     const ok = await fetch(u + "/v1/models", { headers: { authorization: "Bearer ${token}" } });
     process.stdout.write(JSON.stringify([h.status, bare.status, ok.status, (await ok.json()).data[0].id]));`,
  );
  assert.deepEqual(JSON.parse(out), [200, 401, 200, "m"]);
  // spec.serve removed: the server goes, Serving says NotRequested.
  await cluster.kubectl("patch", "ftj", "-n", NS, name, "--type=json", "-p", '[{"op":"remove","path":"/spec/serve"}]');
  await waitFor(
    "the serving Deployment deleted",
    async () => !(await cluster.kubectl("get", "deploy", "-n", NS, "-o", "name")).includes(`${name}-serve`),
    60_000,
    500,
  );
  assert.equal(cond(await cluster.getJson("ftj", "-n", NS, name), "Serving")?.reason, "NotRequested");
});

/** A ClusterServe of the test's own (as a second or restarted API would be), idle after 1.5 s. */
const shortIdleServe = () =>
  new ClusterServe({
    jobs: api.jobs as ClusterJobs,
    organization: "acme",
    log: createLogger("serve-test", "silent"),
    serviceUrl: (ns, svc) => relay.url(ns, svc),
    idleMs: 1500,
    pollMs: 250,
  });

test("the guide's last step: chat on the fine-tuned model through rft api --cluster (spec.serve on first use), streaming too", async () => {
  assert.ok(succeeded, "needs the first test's job");
  const name = succeeded.id.toLowerCase();
  const messages = [{ role: "user" as const, content: "Is data encrypted at rest?" }];
  const r = await client.chat.completions.create({ model: succeeded.model, messages, max_tokens: 3 });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, succeeded.model);
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0]!.message.content, "string");
  // The API set spec.serve (the final model, 1 replica, the job's token in its dataset Secret).
  const ftj = await cluster.getJson("ftj", "-n", NS, name);
  assert.deepEqual(ftj.spec.serve, {
    model: "final",
    replicas: 1,
    modelId: succeeded.model,
    tokenSecretRef: { name: `${name}-dataset`, key: "serve-token" },
  });
  assert.equal(cond(ftj, "Serving")?.status, "True");
  const secret = await cluster.getJson("secret", "-n", NS, `${name}-dataset`);
  assert.ok(secret.data["serve-token"], "the token is in the job's dataset Secret");
  // Streaming passes through.
  const stream = await client.chat.completions.create({
    model: succeeded.model,
    messages,
    max_tokens: 3,
    stream: true,
  });
  let chunks = 0;
  for await (const c of stream) {
    assert.equal(c.object, "chat.completion.chunk");
    chunks++;
  }
  assert.ok(chunks >= 2, `chunks: ${chunks}`);
  // Idle for the idle time: scaled to zero (a ClusterServe of its own, with a short idle time, on a real HTTP
  // server); the next request, on a checkpoint id, scales it up again with that checkpoint.
  const serve = shortIdleServe();
  const front = createServer((req, res) => {
    const body: Buffer[] = [];
    req.on("data", (d: Buffer) => body.push(d));
    req.on("end", () => {
      serve.proxyChat(res, Buffer.concat(body), "default", [BASE]).catch((e: ApiError) => {
        res.writeHead(e.status ?? 500, { "content-type": "application/json" });
        res.end(JSON.stringify(e.body?.() ?? { error: { message: String(e) } }));
      });
    });
  });
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", () => r()));
  try {
    const viaFront = new OpenAI({
      baseURL: `http://127.0.0.1:${(front.address() as AddressInfo).port}/v1`,
      apiKey: "unused",
      maxRetries: 0,
      timeout: 240_000,
    });
    await viaFront.chat.completions.create({ model: succeeded.model, messages, max_tokens: 2 });
    const zero = await waitFor(
      "scaled to zero after the idle time",
      async () => {
        const o = await cluster.getJson("ftj", "-n", NS, name);
        return o.spec.serve.replicas === 0 && cond(o, "Serving")?.reason === "ScaledToZero" ? o : undefined;
      },
      30_000,
      500,
    );
    assert.equal(zero.spec.serve.model, "final");
    const ckpt = `${succeeded.model}:ckpt-step-2`;
    const c = await viaFront.chat.completions
      .create({ model: ckpt, messages, max_tokens: 2 })
      .catch(async (e: unknown) => {
        const o = await cluster.getJson("ftj", "-n", NS, name);
        throw new Error(`${String(e)}: spec.serve ${JSON.stringify(o.spec.serve)}, status ${JSON.stringify(o.status)}`);
      });
    assert.equal(c.model, ckpt);
    const again = await cluster.getJson("ftj", "-n", NS, name);
    assert.deepEqual([again.spec.serve.model, again.spec.serve.replicas], ["step-000002", 1]);
    assert.match(again.status.serve.modelPath, /\/checkpoints\/step-000002\/model$/);
    // A restarted API (a ClusterServe that served nothing yet) scales down the server an earlier one started.
    serve.close();
    const restarted = shortIdleServe();
    try {
      await waitFor(
        "the restarted API scales the earlier server to zero",
        async () => ((await cluster.getJson("ftj", "-n", NS, name)).spec.serve.replicas === 0 ? true : undefined),
        30_000,
        500,
      );
    } finally {
      restarted.close();
    }
  } finally {
    serve.close();
    front.close();
  }

  // Unknown ids are OpenAI's 404; another project may not use this job's model.
  await assert.rejects(
    client.chat.completions.create({ model: `${succeeded.model}x`, messages }),
    (e: InstanceType<typeof OpenAI.APIError>) => e.status === 404 && e.code === "model_not_found",
  );
  const other = new OpenAI({ baseURL: api.url, apiKey: OTHER_KEY, maxRetries: 0 });
  await assert.rejects(other.chat.completions.create({ model: succeeded.model, messages }), OpenAI.NotFoundError);
});

test("an eval run samples the fine-tuned model on its own server (spec.serve), as chat does", async () => {
  assert.ok(succeeded, "needs the first test's job");
  const ev = await client.evals.create({
    data_source_config: { type: "custom", item_schema: { type: "object" }, include_sample_schema: true },
    testing_criteria: [
      { type: "string_check", name: "any", input: "{{ sample.output_text }}", reference: "", operation: "ne" },
    ] as any,
  });
  const file = await client.files.create({
    file: await toFile(
      Buffer.from('{"item":{"q":"Is data encrypted at rest?"}}\n{"item":{"q":"Who may read logs?"}}\n'),
      "q.jsonl",
    ),
    purpose: "evals",
  });
  const runOn = async (model: string) => {
    const run = await client.evals.runs.create(ev.id, {
      data_source: {
        type: "completions",
        model,
        source: { type: "file_id", id: file.id },
        input_messages: { type: "template", template: [{ role: "user", content: "{{ item.q }}" }] },
        sampling_params: { max_completion_tokens: 3, temperature: 0, seed: 1 },
      },
    });
    for (let i = 0; i < 1200; i++) {
      const r = await client.evals.runs.retrieve(run.id, { eval_id: ev.id });
      if (r.status === "completed" || r.status === "failed") {
        const items = (await client.evals.runs.outputItems.list(run.id, { eval_id: ev.id })).data;
        return { r, items };
      }
      await new Promise((res) => setTimeout(res, 250));
    }
    throw new Error("the run did not finish");
  };
  const { r, items } = await runOn(succeeded.model);
  assert.equal(r.status, "completed", JSON.stringify(r.error));
  assert.equal(r.result_counts.total, 2);
  assert.equal(r.result_counts.errored, 0, JSON.stringify(items.map((i) => i.sample.error)));
  assert.equal(r.per_model_usage[0]!.invocation_count, 2);
  assert.equal(typeof items[0]!.sample.output[0]!.content, "string");
  // A fine-tuned id no job of the project has: each datapoint is OpenAI's model_not_found error.
  const none = await runOn(`${succeeded.model}x`);
  assert.equal(none.r.result_counts.errored, 2);
  assert.equal((none.items[0]!.sample.error as { code: string }).code, "model_not_found");
});

test("cancel patches spec.cancel and the operator cancels; another project sees nothing and may not create", async () => {
  const train = await client.files.create({
    file: await toFile(Buffer.from(`${TRAIN.join("\n")}\n`), "train.jsonl"),
    purpose: "fine-tune",
  });
  const job = await client.fineTuning.jobs.create(jobRequest(train.id, train.id) as any);
  const cancelled = await client.fineTuning.jobs.cancel(job.id);
  assert.equal(cancelled.status, "cancelled");
  const ftj = await waitFor(
    "the operator's Cancelled condition",
    async () => {
      const o = await cluster.getJson("ftj", "-n", NS, job.id.toLowerCase());
      return cond(o, "Cancelled")?.status === "True" ? o : undefined;
    },
    120_000,
    500,
  );
  assert.equal(ftj.spec.cancel, true);
  await assert.rejects(
    client.fineTuning.jobs.resume(job.id),
    (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400,
  );

  const other = new OpenAI({ baseURL: api.url, apiKey: OTHER_KEY, maxRetries: 0 });
  await assert.rejects(other.fineTuning.jobs.retrieve(job.id), OpenAI.NotFoundError);
  const mine = await other.files.create({
    file: await toFile(Buffer.from(`${TRAIN.join("\n")}\n`), "t.jsonl"),
    purpose: "fine-tune",
  });
  await assert.rejects(
    other.fineTuning.jobs.create(jobRequest(mine.id, mine.id) as any),
    (e: InstanceType<typeof OpenAI.APIError>) =>
      e.status === 403 && /Project 'elsewhere' has no namespace/.test(e.message),
  );
  await assert.rejects(
    client.chat.completions.create({ model: BASE, messages: [{ role: "user", content: "hi" }] }),
    (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && /cluster mode/.test(e.message),
  );
});

test("the python openai client runs the guide's flow against the cluster API, calling the fine-tuned model too", async () => {
  const python = ".venv-openai/bin/python";
  assert.ok(existsSync(python), `${python} is missing: run bash scripts/setup.d/22-openai-python.sh`);
  const dir = mkdtempSync(join(cluster.dir, "python-"));
  writeFileSync(join(dir, "train.jsonl"), `${TRAIN.join("\n")}\n`);
  writeFileSync(join(dir, "valid.jsonl"), `${VALID.join("\n")}\n`);
  const py = spawn(python, ["test/api/rft_guide.py", join(dir, "train.jsonl"), join(dir, "valid.jsonl")], {
    env: { ...process.env, RFT_API_BASE_URL: api.url, RFT_API_KEY: KEY },
  });
  let out = "";
  let err = "";
  py.stdout.on("data", (d: Buffer) => (out += d.toString()));
  py.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const code = await new Promise((r) => py.once("exit", r));
  assert.equal(code, 0, err);
  const r = JSON.parse(out) as {
    id: string;
    status: string;
    statuses: string[];
    fine_tuned_model: string;
    metrics_steps: number[];
    checkpoints: string[];
    answer_is_text: boolean;
    error: unknown;
    eval_runs: { name: string; step: string; scores: number[] }[];
  };
  assert.equal(r.status, "succeeded", JSON.stringify(r.error));
  assert.equal(r.statuses[0], "queued");
  // The job's eval, as the guide reads it: one run per validation (the baseline, steps 1 and 2), with its samples.
  assert.deepEqual(r.eval_runs.map((x) => x.step).sort(), ["0", "1", "2"]);
  assert.ok(r.eval_runs.every((x) => x.scores.length === VALID.length));
  assert.equal(r.fine_tuned_model, `ft:${BASE}:acme:security-qa:${r.id.slice(6, 14)}`);
  assert.ok(r.metrics_steps.includes(2), String(r.metrics_steps));
  assert.ok(r.checkpoints.includes(`${r.fine_tuned_model}:ckpt-step-2`), r.checkpoints.join(","));
  assert.equal(r.answer_is_text, true, "the guide's chat call on the fine-tuned model answered");
  // It ran as a FineTuneJob of the project's namespace.
  const ftj = await cluster.getJson("ftj", "-n", NS, r.id.toLowerCase());
  assert.equal(cond(ftj, "Succeeded")?.status, "True");
});
