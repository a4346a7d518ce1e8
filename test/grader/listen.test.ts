/**
 * Where the grader sidecar listens, as the operator configures it in a trainer pod (the grader container's
 * args from desiredTrainerJob), against the real gRPC and HTTP servers: gRPC and the grading API answer on
 * 127.0.0.1 only — another address of the machine (127.0.0.2 stands in for the pod IP) is refused — and the
 * monitoring port, the one bound to every address, serves /healthz and /metrics and nothing that grades.
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, test } from "node:test";
import { desiredTrainerJob, type FineTuneJobObject } from "../../operator/desired.js";
import { type GraderService, startGraderService } from "../../grader-sidecar/src/server.js";

const job: FineTuneJobObject = {
  apiVersion: "rft.dev/v1alpha1",
  kind: "FineTuneJob",
  metadata: { name: "sorter", namespace: "ml", uid: "0123456789abcdef" },
  spec: {
    model: "base",
    trainingFile: "train.jsonl",
    method: { type: "reinforcement", reinforcement: { grader: { type: "string_check" } } },
  } as FineTuneJobObject["spec"],
};
const grader = desiredTrainerJob(job, 0, { image: "rft:dev", natsUrl: "nats://nats:4222" }).spec.template.spec
  .initContainers[0];
const arg = (flag: string) => {
  const i = grader.args.indexOf(flag);
  return i >= 0 ? String(grader.args[i + 1]) : undefined;
};

let svc: GraderService;
before(async () => {
  svc = await startGraderService({
    host: arg("--host"),
    grpcPort: 0,
    httpPort: 0,
    monitorPort: 0,
    monitorHost: arg("--monitor-host"),
    engine: { python: { size: 0 } },
  });
});
after(async () => svc?.close());

const reachable = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });

test("the pod spec binds gRPC and HTTP to loopback and only the monitoring port to the pod IP", () => {
  assert.equal(arg("--host"), "127.0.0.1");
  assert.equal(arg("--monitor-host"), "0.0.0.0");
  assert.deepEqual(
    grader.ports.map((p: { name: string }) => p.name),
    ["grader-metrics"],
  );
  assert.deepEqual(grader.startupProbe.httpGet, { path: "/healthz", port: "grader-metrics" });
});

test("gRPC and the grading API are refused on another address; the monitoring port answers there", async () => {
  assert.equal(await reachable("127.0.0.1", svc.grpcPort), true);
  assert.equal(await reachable("127.0.0.1", svc.httpPort), true);
  assert.equal(await reachable("127.0.0.2", svc.grpcPort), false);
  assert.equal(await reachable("127.0.0.2", svc.httpPort), false);
  const base = `http://127.0.0.2:${svc.monitorPort}`;
  const health = await fetch(`${base}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: "ok" });
  const metrics = await fetch(`${base}/metrics`);
  assert.equal(metrics.status, 200);
  assert.match(await metrics.text(), /rft_grader_python_workers/);
  const run = await fetch(`${base}/v1/fine_tuning/alpha/graders/run`, { method: "POST", body: "{}" });
  assert.equal(run.status, 404);
});
