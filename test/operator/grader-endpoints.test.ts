/**
 * spec.graderEndpoints in a cluster: the operator gives the grader sidecar RFT_GRADER_ENDPOINTS (no key in it)
 * and each Secret key as its own env var from a secretKeyRef; no key value appears in the Job or the ConfigMap.
 * Then the real `rft grader` process, started with that env as the kubelet would resolve it, grades a
 * score_model through the judge with the Secret's key, and counts the judge's tokens on /metrics.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { after, before, test } from "node:test";
import { desiredConfigMap, desiredTrainerJob, type FineTuneJobObject } from "../../operator/desired.js";
import { type FakeChatServer, startFakeChatServer } from "../helpers/fake-chat-server.js";

let fake: FakeChatServer;
let child: ChildProcess | undefined;
before(async () => {
  fake = await startFakeChatServer();
});
after(async () => {
  child?.kill("SIGTERM");
  await fake.close();
});

const job = (baseUrl: string): FineTuneJobObject => ({
  apiVersion: "rft.dev/v1alpha1",
  kind: "FineTuneJob",
  metadata: { name: "judged", namespace: "ml", uid: "0123456789abcdef" },
  spec: {
    model: "base",
    trainingFile: "train.jsonl",
    method: { type: "reinforcement", reinforcement: { grader: { type: "string_check" } } },
    graderEndpoints: [
      {
        models: ["gpt-4o-2024-08-06"],
        baseUrl,
        apiKey: { secretRef: { name: "openai", key: "api-key" }, env: "OPENAI_API_KEY" },
        maxConcurrency: 4,
      },
      { baseUrl: "http://no-key.invalid/v1" },
    ],
  } as FineTuneJobObject["spec"],
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

test("the grader sidecar gets the endpoints as JSON and the key from the Secret, nowhere else", () => {
  const j = desiredTrainerJob(job("http://judge:8000/v1"), 0, { image: "rft:dev", natsUrl: "nats://n:4222" });
  const sidecar = j.spec.template.spec.initContainers[0];
  const env = Object.fromEntries(sidecar.env.map((e: any) => [e.name, e]));
  assert.deepEqual(JSON.parse(env.RFT_GRADER_ENDPOINTS.value), [
    {
      models: ["gpt-4o-2024-08-06"],
      baseUrl: "http://judge:8000/v1",
      apiKey: { env: "RFT_GRADER_ENDPOINT_0_API_KEY" },
      maxConcurrency: 4,
    },
    { baseUrl: "http://no-key.invalid/v1" },
  ]);
  assert.deepEqual(env.RFT_GRADER_ENDPOINT_0_API_KEY.valueFrom, {
    secretKeyRef: { name: "openai", key: "api-key" },
  });
  assert.equal(Object.keys(env).length, 2);
  // The trainer container has none of it (it grades through the sidecar).
  const trainer = j.spec.template.spec.containers[0];
  assert.ok(!trainer.env.some((e: any) => e.name.startsWith("RFT_GRADER_ENDPOINT")));
  // The ConfigMap carries the spec (the Secret's name and key, never a value).
  const cm = JSON.stringify(desiredConfigMap(job("http://judge:8000/v1")));
  assert.match(cm, /secretRef/);
});

test("rft grader started with the operator's env reaches the judge with the Secret's key", async () => {
  const j = desiredTrainerJob(job(fake.baseUrl), 0, { image: "rft:dev", natsUrl: "nats://n:4222" });
  const sidecar = j.spec.template.spec.initContainers[0];
  // What the kubelet does: values as given, secretKeyRefs resolved from the Secret.
  const secret = { openai: { "api-key": "sk-from-secret" } } as Record<string, Record<string, string>>;
  const env: Record<string, string> = {};
  for (const e of sidecar.env)
    env[e.name] = e.value ?? secret[e.valueFrom.secretKeyRef.name]![e.valueFrom.secretKeyRef.key]!;
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "cli/rft.ts",
      "grader",
      "--grpc-port",
      String(grpcPort),
      "--http-port",
      String(httpPort),
      "--python-workers",
      "0",
    ],
    { env: { ...process.env, ...env, RFT_LOG_LEVEL: "silent" }, stdio: "ignore" },
  );
  const url = `http://127.0.0.1:${httpPort}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    assert.ok(i < 300, "rft grader did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
  const r = await fetch(`${url}/v1/fine_tuning/alpha/graders/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      grader: {
        type: "score_model",
        name: "judge",
        model: "gpt-4o-2024-08-06",
        input: [{ role: "user", content: "{{ sample.output_text }} SCORE=0.6" }],
      },
      model_sample: "an answer",
    }),
  });
  const res = (await r.json()) as any;
  assert.equal(res.reward, 0.6, JSON.stringify(res.metadata?.errors));
  assert.equal(fake.requests.at(-1)!.auth, "Bearer sk-from-secret");
  // Judge tokens on the sidecar's /metrics, by judge model.
  const metrics = await (await fetch(`${url}/metrics`)).text();
  assert.match(metrics, /^rft_grader_model_tokens_total\{model="gpt-4o-2024-08-06-fake-2025",kind="prompt"\} 100$/m);
  assert.match(metrics, /^rft_grader_model_tokens_total\{model="gpt-4o-2024-08-06-fake-2025",kind="completion"\} 20$/m);
});
