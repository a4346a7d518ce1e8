/**
 * Cluster mode's pure parts: OpenAI job ⇄ FineTuneJob (status from the operator's conditions, events,
 * checkpoints, fine_tuned_model, action patches), the cluster config's errors, and the trainer's dataset
 * download (a real HTTP server: token, digest, size bound, reuse of the copy).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { checkClusterConfig } from "../../api/cluster-config.js";
import { checkValidationFile } from "../../api/cluster-jobs.js";
import {
  actionPatch,
  checkpointsOf,
  clusterFineTuneJob,
  eventsOf,
  type FineTuneJobObject,
  jobOf,
  openAiFields,
  type OpenAiFields,
  servedModelOf,
  servePatch,
  statusOf,
} from "../../api/cluster-map.js";
import { checkFineTuneJob, toFineTuneJob } from "../../api/convert.js";
import { resolvedConfig } from "../../operator/desired.js";
import { DatasetConfigError, fetchDataset } from "../../trainer/job/remote-dataset.js";
import { ValidationUploader } from "../../trainer/job/validation-upload.js";
import { jobRequest } from "./guide.js";

const ID = "ftjob-AbCdEfGh0123456789xyzXYZ";
const fields: OpenAiFields = {
  id: ID,
  model: "o4-mini-2025-04-16",
  training_file: "file-train",
  validation_file: "file-valid",
  created_at: 1_700_000_000,
  suffix: "security-qa",
  metadata: { team: "ml" },
  seed: 42,
  hyperparameters: {},
  method: { type: "reinforcement", reinforcement: { hyperparameters: { n_epochs: 1 } } },
};
const target = { namespace: "team-a", modelClaim: "models", checkpointClaim: "ckpt" };

function created(): FineTuneJobObject {
  const converted = toFineTuneJob(jobRequest("file-train", "file-valid") as unknown as Record<string, unknown>, {
    name: ID.toLowerCase(),
    modelDir: "base",
    trainingFile: "train.jsonl",
    validationFile: "valid.jsonl",
  });
  const ftj = clusterFineTuneJob(converted, {
    id: ID,
    project: "research",
    target,
    modelPath: "models/o4",
    trainingUrl: `http://api:8080/internal/datasets/${ID}/train.jsonl#sha256=${"a".repeat(64)}`,
    validationUrl: `http://api:8080/internal/datasets/${ID}/valid.jsonl#sha256=${"b".repeat(64)}`,
    fields,
  });
  return { ...ftj, metadata: { ...ftj.metadata, creationTimestamp: "2023-11-14T22:13:20Z" } } as FineTuneJobObject;
}

const c = (type: string, status: "True" | "False", at: string, reason = type, message = "") => ({
  type,
  status,
  lastTransitionTime: at,
  reason,
  message,
});

test("the FineTuneJob the API creates: namespace, labels, the OpenAI fields, the claim, dataset URLs, the token env", () => {
  const o = created();
  assert.equal(o.metadata.name, ID.toLowerCase());
  assert.equal(o.metadata.namespace, "team-a");
  assert.deepEqual(o.metadata.labels, { "app.kubernetes.io/created-by": "rft-api", "rft.dev/api-project": "research" });
  assert.deepEqual(openAiFields(o), fields);
  assert.equal(o.spec.model, "models/o4");
  assert.match(o.spec.trainingFile, /^http:\/\/api:8080\/internal\/datasets\/ftjob-.*\/train\.jsonl#sha256=a{64}$/);
  assert.deepEqual(o.spec.storage, { modelClaim: "models", checkpointClaim: "ckpt" });
  assert.deepEqual(o.spec.trainer?.env, [
    {
      name: "RFT_DATASET_TOKEN",
      valueFrom: { secretKeyRef: { name: `${ID.toLowerCase()}-dataset`, key: "token" } },
    },
  ]);
  // The grader stays OpenAI's JSON, in the spec only (not duplicated into the annotation).
  assert.equal((o.spec.method.reinforcement!.grader as { type: string }).type, "multi");
  assert.ok(!o.metadata.annotations!["rft.dev/openai-job"]!.includes("string_check"));
  // It is a valid FineTuneJob for the manifest validator (the same check the operator's trainers make).
  checkFineTuneJob(o as never);
  // The operator hands the trainer the URLs unchanged, and the model under its data mount.
  const resolved = resolvedConfig({
    ...o,
    metadata: { ...o.metadata, namespace: "team-a", uid: "0123456789abcdef" },
  } as never) as { spec: { trainingFile: string; validationFile: string; model: string } };
  assert.equal(resolved.spec.trainingFile, o.spec.trainingFile);
  assert.equal(resolved.spec.validationFile, o.spec.validationFile);
  assert.equal(resolved.spec.model, "/var/rft/data/models/o4");
  // Objects the API did not create, or whose annotation does not match the name, are not OpenAI jobs.
  assert.equal(openAiFields({ ...o, metadata: { ...o.metadata, labels: {} } }), undefined);
  assert.equal(openAiFields({ ...o, metadata: { ...o.metadata, name: "other" } }), undefined);
});

test("OpenAI's status from the operator's conditions and the spec the API patched", () => {
  const o = created();
  const at = (conds: ReturnType<typeof c>[], spec: Partial<FineTuneJobObject["spec"]> = {}, extra = {}) =>
    statusOf({ ...o, spec: { ...o.spec, ...spec }, status: { conditions: conds, ...extra } });
  const t = "2023-11-14T22:20:00Z";
  assert.equal(statusOf(o), "queued");
  assert.equal(at([c("Created", "True", t)]), "queued");
  assert.equal(at([c("Running", "True", t)], {}, { startTime: t }), "running");
  assert.equal(at([c("Running", "True", t)], { suspend: true }, { startTime: t }), "pausing");
  assert.equal(at([c("Suspended", "True", t)], { suspend: true }, { startTime: t }), "paused");
  assert.equal(at([], { suspend: true }), "paused"); // never started: paused at once
  assert.equal(at([c("Running", "True", t)], { cancel: true }, { startTime: t }), "cancelled");
  assert.equal(at([c("Succeeded", "True", t)]), "succeeded");
  assert.equal(at([c("Failed", "True", t, "BackoffLimitExceeded", "3 restarts")]), "failed");
  assert.equal(at([c("Cancelled", "True", t), c("Failed", "True", t)]), "cancelled");
});

test("a succeeded job: fine_tuned_model, finished_at, events in order with stable ids, checkpoints", () => {
  const o = created();
  o.status = {
    startTime: "2023-11-14T22:14:00Z",
    completionTime: "2023-11-14T22:16:40Z",
    conditions: [
      c("Running", "False", "2023-11-14T22:16:40Z", "Completed"),
      c("CheckpointSaved", "True", "2023-11-14T22:16:00Z", "Saved", "checkpoint step-2 saved at step 2"),
      c("Succeeded", "True", "2023-11-14T22:16:40Z"),
    ],
    trainerStatus: {
      step: 2,
      totalSteps: 2,
      trainRewardMean: 0.5,
      validRewardMean: 0.25,
      progress: 100,
      lastUpdated: "2023-11-14T22:16:30Z",
    },
    checkpoints: [
      { name: "step-1", step: 1, validRewardMean: 0.1, path: "/var/rft/checkpoints/x/checkpoints/step-1" },
      { name: "step-2", step: 2, validRewardMean: 0.25, path: "/var/rft/checkpoints/x/checkpoints/step-2" },
    ],
  };
  const job = jobOf(o, fields, "acme");
  assert.equal(job.status, "succeeded");
  assert.equal(job.fine_tuned_model, `ft:o4-mini-2025-04-16:acme:security-qa:${ID.slice(6, 14)}`);
  assert.equal(job.finished_at, Date.parse("2023-11-14T22:16:40Z") / 1000);
  assert.equal(job.training_file, "file-train");
  assert.deepEqual(job.metadata, { team: "ml" });
  assert.equal(job.error, null);

  const step1 = { step: 1, total_steps: 2, train_reward_mean: 0.2, valid_reward_mean: 0.1, at: 1_700_000_050 };
  const events = eventsOf(o, fields, "acme", [step1]);
  assert.deepEqual(
    events.map((e) => e.message),
    [
      "The job has successfully completed",
      `New fine-tuned model created: ${job.fine_tuned_model}`,
      "Step 2/2: training reward=0.5000, validation reward=0.2500",
      "checkpoint step-2 saved at step 2",
      "Step 1/2: training reward=0.2000, validation reward=0.1000",
      "Fine-tuning job started",
      "Files validated, moving job to queued state",
      `Created fine-tuning job: ${ID}`,
    ],
    "newest first",
  );
  assert.deepEqual(
    events.filter((e) => e.type === "metrics").map((e) => (e.data as { step: number }).step),
    [2, 1],
  );
  // OpenAI's metrics data: `scores`, and the flat legacy names (clients read either).
  assert.deepEqual(events.find((e) => e.type === "metrics" && (e.data as { step: number }).step === 1)!.data, {
    step: 1,
    total_steps: 2,
    scores: { train_reward_mean: 0.2, valid_reward_mean: 0.1 },
    train_mean_reward: 0.2,
    full_valid_mean_reward: 0.1,
  });
  assert.deepEqual(
    eventsOf(o, fields, "acme", [step1]).map((e) => e.id),
    events.map((e) => e.id),
    "the same ids on every read",
  );
  assert.ok(events.every((e) => /^ftevent-[0-9a-f]{24}$/.test(e.id)));
  assert.equal(new Set(events.map((e) => e.id)).size, events.length);

  const ck = checkpointsOf(o, fields, "acme");
  assert.deepEqual(
    ck.map((x) => [x.step_number, x.fine_tuned_model_checkpoint, x.metrics]),
    [
      [2, `${job.fine_tuned_model}:ckpt-step-2`, { step: 2, valid_reward_mean: 0.25 }],
      [1, `${job.fine_tuned_model}:ckpt-step-1`, { step: 1, valid_reward_mean: 0.1 }],
    ],
  );
  assert.ok(ck.every((x) => /^ftckpt_[0-9a-f]{24}$/.test(x.id) && x.fine_tuning_job_id === ID));
  // No usage or checkpoint times from the trainers (an older operator): zero, null, the last update.
  assert.deepEqual(job.usage_metrics, { training_seconds: 0 });
  assert.equal(job.trained_tokens, null);
  assert.ok(ck.every((x) => x.created_at === Date.parse("2023-11-14T22:16:30Z") / 1000));
});

test("chat in cluster mode: which model spec.serve names for an OpenAI model id, and the patch that serves it", () => {
  const o = created();
  const name = `ft:o4-mini-2025-04-16:acme:security-qa:${ID.slice(6, 14)}`;
  o.status = {
    conditions: [c("Running", "True", "2023-11-14T22:15:00Z")],
    checkpoints: [
      { name: "step-000002", step: 2, path: "/c/step-000002" },
      { name: "step-000003-pause", step: 3, path: "/c/step-000003-pause" },
    ],
  };
  assert.equal(servedModelOf(o, fields, "acme", name), undefined, "no final model before succeeded");
  assert.equal(servedModelOf(o, fields, "acme", `${name}:ckpt-step-2`), "step-000002");
  assert.equal(servedModelOf(o, fields, "acme", `${name}:ckpt-step-3-pause`), "step-000003-pause");
  assert.equal(servedModelOf(o, fields, "acme", `${name}:ckpt-step-9`), undefined);
  assert.equal(servedModelOf(o, fields, "acme", "o4-mini-2025-04-16"), undefined);
  o.status.conditions = [c("Succeeded", "True", "2023-11-14T22:16:40Z")];
  assert.equal(servedModelOf(o, fields, "acme", name), "final");
  assert.deepEqual(servePatch(ID, "final", name), {
    spec: {
      serve: {
        model: "final",
        replicas: 1,
        modelId: name,
        tokenSecretRef: { name: `${ID.toLowerCase()}-dataset`, key: "serve-token" },
      },
    },
  });
});

test("usage and checkpoint times from the trainers: training_seconds, trained_tokens, judge tokens, created_at", () => {
  const o = created();
  o.status = {
    conditions: [c("Succeeded", "True", "2023-11-14T22:16:40Z")],
    checkpoints: [
      { name: "step-1", step: 1, path: "/c/step-1", createdAt: "2023-11-14T22:15:00Z" },
      { name: "step-2", step: 2, path: "/c/step-2", createdAt: "2023-11-14T22:16:00Z" },
    ],
    usage: {
      trainingSeconds: 95.4,
      trainedTokens: 1234,
      judgeTokens: {
        "gpt-4o-mini": {
          trainPrompt: 10,
          trainCompletion: 2,
          trainCached: 1,
          evalPrompt: 5,
          evalCompletion: 3,
          evalCached: 0,
        },
      },
    },
  };
  const job = jobOf(o, fields, "acme");
  assert.equal(job.trained_tokens, 1234);
  assert.deepEqual(job.usage_metrics, {
    training_seconds: 95,
    model_graders_token_usage: {
      "gpt-4o-mini": {
        train_prompt_tokens: 10,
        train_completion_tokens: 2,
        train_cached_tokens: 1,
        eval_prompt_tokens: 5,
        eval_completion_tokens: 3,
        eval_cached_tokens: 0,
      },
    },
  });
  assert.deepEqual(
    checkpointsOf(o, fields, "acme").map((x) => [x.step_number, x.created_at]),
    [
      [2, Date.parse("2023-11-14T22:16:00Z") / 1000],
      [1, Date.parse("2023-11-14T22:15:00Z") / 1000],
    ],
  );
  o.status.usage!.judgeTokens = {};
  assert.deepEqual(jobOf(o, fields, "acme").usage_metrics, { training_seconds: 95 }, "no judge models: no key");
});

test("a failed job carries the operator's message; cancel / pause / resume are spec patches or OpenAI's 400", () => {
  const o = created();
  o.status = { conditions: [c("Failed", "True", "2023-11-14T22:20:00Z", "TrainerConfigError", "bad grader")] };
  const job = jobOf(o, fields, "acme");
  assert.deepEqual(job.error, { code: "training_failed", message: "bad grader", param: null });
  assert.equal(job.fine_tuned_model, null);
  assert.equal(eventsOf(o, fields, "acme", [])[0]!.level, "error");
  const refused = actionPatch(o, ID, "cancel");
  assert.ok(!refused.decision.ok && refused.patch === undefined);

  const running = created();
  running.status = { startTime: "2023-11-14T22:14:00Z", conditions: [c("Running", "True", "2023-11-14T22:14:00Z")] };
  assert.deepEqual(actionPatch(running, ID, "cancel").patch, { spec: { cancel: true } });
  assert.deepEqual(actionPatch(running, ID, "pause").patch, { spec: { suspend: true } });
  assert.ok(!actionPatch(running, ID, "resume").decision.ok);
  const paused = { ...running, spec: { ...running.spec, suspend: true } };
  paused.status = { ...running.status, conditions: [c("Suspended", "True", "2023-11-14T22:15:00Z")] };
  assert.deepEqual(actionPatch(paused, ID, "resume").patch, { spec: { suspend: false } });
});

test("the cluster config: every problem named with its file and field", () => {
  const ok = checkClusterConfig(
    {
      projects: { default: { namespace: "team-a", modelClaim: "models" } },
      models: { "o4-mini-2025-04-16": "base" },
      datasetBaseUrl: "http://rft-api.rft-system.svc:8080/",
    },
    "cfg.yaml",
  );
  assert.equal(ok.datasetBaseUrl, "http://rft-api.rft-system.svc:8080");
  assert.throws(
    () =>
      checkClusterConfig(
        {
          projects: { "bad project": { namespace: "Team_A", modelClaim: "m", extra: 1 } },
          models: { x: "../etc" },
          datasetBaseUrl: "ftp://x",
          other: true,
        },
        "cfg.yaml",
      ),
    (e: Error) => {
      for (const want of [
        "cfg.yaml: other: unknown field",
        "cfg.yaml: projects.bad project: a project is",
        "cfg.yaml: projects.bad project.extra: unknown field",
        "cfg.yaml: projects.bad project.namespace: want a Kubernetes name",
        "cfg.yaml: models.x: want a relative directory",
        "cfg.yaml: datasetBaseUrl: want the http(s) URL",
      ])
        assert.ok(e.message.includes(want), `${want}\n---\n${e.message}`);
      return true;
    },
  );
});

test("the trainer's dataset download: token, digest, size bound, the copy reused", async () => {
  const body = '{"messages":[{"role":"user","content":"hi"}]}\n';
  const digest = createHash("sha256").update(body).digest("hex");
  let served = 0;
  const server = createServer((req, res) => {
    if (req.headers.authorization !== "Bearer tok") return void res.writeHead(401).end();
    served++;
    res.writeHead(200, { "content-length": Buffer.byteLength(body) }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/internal/datasets/ftjob-x/train.jsonl`;
  const dir = mkdtempSync(join(tmpdir(), "rft-dataset-"));
  try {
    const path = await fetchDataset(`${url}#sha256=${digest}`, dir, "train.jsonl", { token: "tok" });
    assert.equal(readFileSync(path, "utf8"), body);
    await fetchDataset(`${url}#sha256=${digest}`, dir, "train.jsonl", { token: "tok" });
    assert.equal(served, 1, "a resumed attempt reuses the checked copy");
    await assert.rejects(
      fetchDataset(`${url}#sha256=${digest}`, dir, "other.jsonl", { token: "wrong" }),
      (e: Error) =>
        e instanceof DatasetConfigError && /401 \(the job's dataset token or URL is wrong\)/.test(e.message),
    );
    await assert.rejects(
      fetchDataset(`${url}#sha256=${"0".repeat(64)}`, dir, "other.jsonl", { token: "tok" }),
      (e: Error) => e instanceof DatasetConfigError && /sha256 [0-9a-f]{64}, the job names 0{64}/.test(e.message),
    );
    await assert.rejects(
      fetchDataset(`${url}#sha256=${digest}`, dir, "other.jsonl", { token: "tok", maxBytes: 10 }),
      (e: Error) => e instanceof DatasetConfigError && /more than the 10 allowed/.test(e.message),
    );
    await assert.rejects(fetchDataset(url, dir, "x.jsonl"), /needs a '#sha256=<hex>' fragment/);
    writeFileSync(join(dir, "stale.jsonl"), "old bytes\n");
    await fetchDataset(`${url}#sha256=${digest}`, dir, "stale.jsonl", { token: "tok" });
    assert.equal(readFileSync(join(dir, "stale.jsonl"), "utf8"), body, "a copy with another digest is replaced");
  } finally {
    server.close();
  }
});

test("rft api --cluster: a bad config or a missing dataset key stops it with the file, field and fix", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rft-cluster-cli-"));
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", "api", "--port", "0", ...args], {
      encoding: "utf8",
      env: { ...process.env, RFT_API_KEYS: "sk-test-0123456789abcdef", ...env },
    });
  writeFileSync(join(dir, "bad.yaml"), "projects: {default: {namespace: team-a}}\nmodels: {}\n");
  const bad = run(["--cluster", join(dir, "bad.yaml")]);
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /bad\.yaml: projects\.default\.modelClaim: want a Kubernetes name/);
  assert.match(bad.stderr, /bad\.yaml: models: want a mapping of at least one model name/);
  assert.match(bad.stderr, /bad\.yaml: datasetBaseUrl: want the http\(s\) URL/);
  writeFileSync(
    join(dir, "ok.yaml"),
    "projects: {default: {namespace: team-a, modelClaim: models}}\nmodels: {m: base}\ndatasetBaseUrl: http://api:8080\n",
  );
  const nokey = run(["--cluster", join(dir, "ok.yaml")], { RFT_API_DATASET_KEY: "short" });
  assert.equal(nokey.status, 2, nokey.stderr);
  assert.match(
    nokey.stderr,
    /needs a dataset token key of at least 32 bytes \(--dataset-key-file or RFT_API_DATASET_KEY\); got 5/,
  );
  const both = run(["--cluster", join(dir, "ok.yaml"), "--local"]);
  assert.match(both.stderr, /--local and --cluster are exclusive/);
});

test("validation results from a trainer: the step's samples pass; anything else is refused naming its line", () => {
  const sample = {
    step: 3,
    line: 1,
    sample_index: 0,
    messages: [{ role: "user", content: "q" }],
    item: { answer: "a" },
    output_text: "a",
    output_tools: [],
    finish_reason: "stop",
    completion_tokens: 1,
    seed: 7,
    sampling: { temperature: 1, top_p: 1, max_completion_tokens: 8 },
    grader: { reward: 1, metadata: { name: "g", type: "string_check", errors: {} }, sub_rewards: {} },
  };
  const file = (...rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
  assert.equal(checkValidationFile(file(sample, { omitted: 4, limit_bytes: 16 }), 3), undefined);
  assert.equal(checkValidationFile(file(sample), 2), 'line 1: "step" must be 2');
  assert.equal(checkValidationFile(`${file(sample)}{oops\n`, 3), "line 2: not JSON");
  assert.equal(checkValidationFile(file(sample, [1]), 3), "line 2: not a JSON object");
  assert.match(checkValidationFile(file({ ...sample, grader: { reward: "1" } }), 3)!, /^line 1: "grader"/);
  assert.match(checkValidationFile(file({ ...sample, output_tools: null }), 3)!, /^line 1: "messages" and/);
});

test("the trainer sends each validation file once, resends after a failure, and remembers across restarts", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rft-vupload-"));
  const got: string[] = [];
  let failNext = true;
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      if (req.headers.authorization !== "Bearer tok") return void res.writeHead(401).end();
      if (failNext) {
        failNext = false;
        return void res.writeHead(503).end();
      }
      got.push(`${req.url} ${body}`);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/internal/validations/${ID}`;
  const log = { warn: () => {}, error: () => {}, info: () => {}, debug: () => {} } as never;
  try {
    writeFileSync(join(dir, "step-0.jsonl"), "zero\n");
    writeFileSync(join(dir, "step-1.jsonl"), "one\n");
    const up = new ValidationUploader({ url, token: "tok", dir, log });
    await up.flush(5_000); // the first PUT fails (503): flush ends with it pending
    assert.deepEqual(up.pending(), [0, 1]);
    await up.flush(5_000);
    assert.deepEqual(got, [
      `/internal/validations/${ID}/step-0.jsonl zero\n`,
      `/internal/validations/${ID}/step-1.jsonl one\n`,
    ]);
    writeFileSync(join(dir, "step-2.jsonl"), "two\n");
    const again = new ValidationUploader({ url, token: "tok", dir, log }); // a restarted pod
    assert.deepEqual(again.pending(), [2]);
    await again.flush(5_000);
    assert.equal(got.length, 3);
    // A refusal (401 here) is not retried by that trainer, and not marked sent: a restarted one tries again.
    writeFileSync(join(dir, "step-3.jsonl"), "three\n");
    const refused = new ValidationUploader({ url, token: "wrong", dir, log });
    await refused.flush(5_000);
    assert.deepEqual(refused.pending(), []);
    assert.equal(got.length, 3);
    assert.deepEqual(new ValidationUploader({ url, token: "tok", dir, log }).pending(), [3]);
  } finally {
    server.close();
  }
});
