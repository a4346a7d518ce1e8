/**
 * The operator's NATS side against the real harness (kube-apiserver + etcd, no kubelet) and a real nats-server:
 *  - `Operator.start()` with NATS not up: one clear log line (no stack trace), the FineTuneJob is still
 *    reconciled (children created), and the operator connects once NATS comes up;
 *  - forged progress messages (a huge attempt, no `checkpoints`, a model path outside the job's directory, a
 *    step past the total, an unknown job, not JSON, too large) are dropped and counted in
 *    `rft_operator_messages_dropped_total{subject,reason}`, reconcile never fails, and the trainer's genuine
 *    message afterwards is the one the status shows;
 *  - `rft operator` itself (the CLI) with NATS down: it keeps running with one clear line and no stack trace,
 *    and its /metrics /healthz port binds 127.0.0.1 by default (127.0.0.2 is refused).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { connect, type NatsConnection } from "nats";
import { pino } from "pino";
import { parse } from "yaml";
import { checkpointDir, type FineTuneJobObject } from "../../operator/desired.js";
import { Operator } from "../../operator/manager.js";
import { progressSubject } from "../../proto/finetunejob-status.js";
import { EXAMPLE } from "../helpers/rft-job.js";
import type { KObject } from "../k8s/api.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";
import { freePort, NatsServer } from "../ledger/nats-server.js";

const NS = "rft-progress";
let cluster: Cluster;
let op: Operator;
let nats: NatsServer | undefined;
let nc: NatsConnection | undefined;
let natsPort: number;
const lines: Record<string, any>[] = [];

const cond = (o: KObject, type: string) => (o.status?.conditions ?? []).find((c: KObject) => c.type === type);

function exampleJob(name: string): KObject {
  const job = parse(readFileSync(`${EXAMPLE}/rft.yaml`, "utf8"));
  job.metadata = { name, namespace: NS };
  Object.assign(job.spec, { model: "base", storage: { modelClaim: "data" } });
  return job;
}

async function metric(name: string, labels: string): Promise<number> {
  const text = await op.metrics.registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

before(async () => {
  cluster = await startCluster({ kubelet: false });
  await cluster.kubectl("apply", "--server-side", "-f", "crds/finetunejobs.rft.dev.yaml");
  await waitFor("CRD established", async () => {
    const crd = await cluster.getJson("crd", "finetunejobs.rft.dev");
    return (crd.status?.conditions ?? []).some((c: KObject) => c.type === "Established" && c.status === "True");
  });
  await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
  natsPort = await freePort(); // nothing listens here yet
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  op = new Operator({
    kubeconfig: cluster.kubeconfig,
    settings: { image: "rft:dev", natsUrl: `nats://127.0.0.1:${natsPort}` },
    port: 0,
    leaderElection: false,
    natsRetryInitialMs: 100,
    natsRetryMaxMs: 400,
    log: pino({ level: "info", base: { component: "operator-progress-test" } }, sink),
  });
});

after(async () => {
  await nc?.close();
  await op?.stop();
  await nats?.stop();
  await cluster?.close();
});

describe("operator and NATS on the harness", () => {
  test("NATS down: start() resolves, one clear log line, the job is reconciled; NATS up later: connected", async () => {
    await op.start(); // today's main rejects here with NatsError: CONNECTION_REFUSED
    await cluster.apply(exampleJob("sorter"));
    const created = await waitFor("Created=True without NATS", async () => {
      const o = await cluster.getJson("ftj", "-n", NS, "sorter");
      return cond(o, "Created")?.status === "True" ? o : undefined;
    });
    assert.equal(cond(created, "Created").reason, "ChildrenCreated");
    const natsLines = lines.filter((l) => /NATS/.test(String(l.msg)));
    assert.equal(natsLines.length, 1, JSON.stringify(natsLines));
    assert.equal(natsLines[0]!.level, 40); // warn
    assert.match(natsLines[0]!.msg, /not reachable \(CONNECTION_REFUSED\).*retrying/);
    assert.ok(!JSON.stringify(natsLines[0]).includes("    at "), "no stack trace");
    assert.equal(op.progress.connected, false);

    nats = await NatsServer.start(natsPort);
    await waitFor("operator connected to NATS", () => op.progress.connected, 30_000, 100);
    assert.ok(lines.some((l) => l.msg === "connected to NATS: progress and control enabled"));
  });

  test("forged progress messages are dropped and counted; the genuine one lands in status", async () => {
    nc = await connect({ servers: nats!.url });
    const job = (await cluster.getJson("ftj", "-n", NS, "sorter")) as unknown as FineTuneJobObject;
    const dir = checkpointDir(job);
    const subject = progressSubject(NS, "sorter");
    const good = {
      step: 3,
      totalSteps: 10,
      trainRewardMean: 0.25,
      validRewardMean: null,
      checkpoints: [{ name: "step-000003", step: 3, validRewardMean: 0.5, path: `${dir}/checkpoints/step-000003` }],
      status: "running",
      rank: 0,
      attempt: 0,
      time: "2026-01-01T00:00:00Z",
    };
    const pub = (s: string, body: unknown) =>
      nc!.publish(
        s,
        typeof body === "string" ? new TextEncoder().encode(body) : new TextEncoder().encode(JSON.stringify(body)),
      );
    const { checkpoints: _, ...noCheckpoints } = good;
    pub(subject, { ...good, step: 9, attempt: 1e15 }); // would pin the operator's view of the job
    pub(subject, { ...good, step: 9, attempt: 7 }); // not the current attempt
    pub(subject, { ...noCheckpoints, step: 9 }); // made every reconcile throw
    pub(subject, { ...good, step: 9, status: "succeeded", fineTunedModel: "/etc/shadow" });
    pub(subject, { ...good, step: 9, status: "succeeded", fineTunedModel: `${dir}/../other-job/model` });
    pub(subject, { ...good, step: 11 }); // past totalSteps
    pub(subject, { ...good, step: 9, rank: 5 }); // one replica: rank 0 only
    pub(subject, { ...good, step: 9, extra: "x".repeat(100) });
    pub(subject, "{not json");
    pub(subject, { ...good, step: 9, error: "x".repeat(70_000) }); // > 64 KiB
    pub(progressSubject(NS, "nobody"), { ...good, step: 9 }); // no such FineTuneJob
    pub(subject, good);
    await nc.flush();

    const o = await waitFor("the genuine message in status", async () => {
      const x = await cluster.getJson("ftj", "-n", NS, "sorter");
      return x.status?.trainerStatus?.step === 3 ? x : undefined;
    });
    assert.equal(o.status.trainerStatus.totalSteps, 10);
    assert.equal(o.status.fineTunedModel, undefined);
    assert.deepEqual(
      o.status.checkpoints.map((c: KObject) => c.path),
      [`${dir}/checkpoints/step-000003`],
    );
    const dropped = (reason: string) =>
      metric("rft_operator_messages_dropped_total", `subject="progress",reason="${reason}"`);
    assert.equal(await dropped("wrong_attempt"), 1);
    assert.equal(await dropped("schema"), 3); // attempt past bounds, no checkpoints, an unknown field
    assert.equal(await dropped("path_outside_output"), 2);
    assert.equal(await dropped("step_past_total"), 1);
    assert.equal(await dropped("bad_rank"), 1);
    assert.equal(await dropped("not_json"), 1);
    assert.equal(await dropped("too_large"), 1);
    assert.equal(await dropped("unknown_job"), 1);
    assert.equal(await metric("controller_runtime_reconcile_errors_total", 'controller="finetunejob"'), 0);

    // "succeeded" ends the attempt: what claims to follow it (here a "failed") is dropped.
    pub(subject, { ...good, step: 10, status: "succeeded", fineTunedModel: `${dir}/model` });
    pub(subject, { ...good, step: 10, status: "failed", error: "forged" });
    await nc.flush();
    await waitFor("after_final counted", async () => ((await dropped("after_final")) === 1 ? true : undefined));
    assert.equal(op.progress.get(`${NS}/sorter`)?.status, "succeeded");
  });
});

const reachable = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const s = tcpConnect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });

test("rft operator: NATS down is one clear line, no stack trace; /metrics binds 127.0.0.1 by default", async () => {
  await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "rft-progress-cli" } });
  const deadPort = await freePort();
  const p = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "cli/rft.ts",
      "operator",
      "--kubeconfig",
      cluster.kubeconfig,
      "--namespace",
      "rft-progress-cli",
      "--no-leader-elect",
      "--port",
      "0",
      "--nats-url",
      `nats://127.0.0.1:${deadPort}`,
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RFT_LOG_LEVEL: "info" } },
  );
  let out = "";
  p.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  p.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  try {
    const port = await waitFor(
      "rft operator serving",
      () => {
        if (p.exitCode !== null) throw new Error(`rft operator exited ${p.exitCode}:\n${out}`);
        const line = out.split("\n").find((l) => l.includes("operator serving"));
        return line ? (JSON.parse(line).port as number) : undefined;
      },
      60_000,
      100,
    );
    await waitFor("controller started", () => out.includes("controller started"), 30_000, 100);
    assert.equal(p.exitCode, null, out);
    assert.doesNotMatch(out, /NatsError|\n\s+at /, "no raw error or stack trace");
    const natsLines = out.split("\n").filter((l) => /not reachable/.test(l));
    assert.equal(natsLines.length, 1, out);
    assert.match(
      JSON.parse(natsLines[0]!).msg,
      /NATS at nats:\/\/127\.0\.0\.1:\d+ is not reachable \(CONNECTION_REFUSED\)/,
    );
    assert.equal(await reachable("127.0.0.1", port), true);
    assert.equal(await reachable("127.0.0.2", port), false);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  } finally {
    if (p.exitCode === null) {
      await new Promise<void>((r) => {
        p.once("exit", () => r());
        p.kill("SIGTERM");
      });
    }
  }
});
