/**
 * The validating admission webhook: what the CRD cannot express (a calculate_output that does not parse, a
 * template naming nothing, a python grader that does not compile, the "auto"-or-number multipliers) is
 * rejected at `kubectl apply` with the grader engine's own message. The operator serves it over TLS from a
 * kubernetes.io/tls Secret this test creates; a ValidatingWebhookConfiguration registers it by URL (the
 * harness's Services route nowhere).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { webhookGraderEngine } from "../../cli/commands/operator.js";
import type { GraderEngine } from "../../grader-sidecar/src/engine.js";
import { Operator } from "../../operator/manager.js";
import { review, validateFineTuneJob, webhookConfiguration } from "../../operator/webhook.js";
import { createLogger } from "../../proto/log.js";
import { EXAMPLE } from "../helpers/rft-job.js";
import type { KObject } from "../k8s/api.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";

const NS = "rft-webhook";
let cluster: Cluster;
let op: Operator;
let engine: GraderEngine;
let certDir: string;

/** A CA and a serving certificate for 127.0.0.1 (openssl: node:crypto makes no X.509 certificates). */
function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=rft-webhook-test-ca");
  run("req", "-new", ...ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=rft-operator-webhook");
  writeFileSync(
    join(dir, "tls.ext"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
  );
  run(
    "x509",
    "-req",
    "-in",
    "tls.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "tls.crt",
    "-days",
    "2",
    "-extfile",
    "tls.ext",
  );
  const read = (f: string) => readFileSync(join(dir, f), "utf8");
  return { ca: read("ca.crt"), cert: read("tls.crt"), key: read("tls.key") };
}

function exampleJob(name: string): KObject {
  const job = parse(readFileSync(join(EXAMPLE, "rft.yaml"), "utf8"));
  job.metadata = { name, namespace: NS };
  // Suspended: the operator creates the children but nothing runs (this cluster has no kubelet).
  Object.assign(job.spec, { model: "base", storage: { modelClaim: "data" }, suspend: true });
  return job;
}

const validateGrader = async (g: unknown) => void (await engine.compile(g));

before(async () => {
  engine = webhookGraderEngine(); // what `rft operator --webhook-port` serves with
  certDir = mkdtempSync(join(tmpdir(), "rft-webhook-"));
  const tls = makeCerts(certDir);
  cluster = await startCluster({ kubelet: false });
  await cluster.kubectl("apply", "--server-side", "-f", "crds/finetunejobs.rft.dev.yaml");
  await waitFor("CRD established", async () => {
    const crd = await cluster.getJson("crd", "finetunejobs.rft.dev");
    return (crd.status?.conditions ?? []).some((c: KObject) => c.type === "Established" && c.status === "True");
  });
  await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
  await cluster.apply({
    apiVersion: "v1",
    kind: "Secret",
    type: "kubernetes.io/tls",
    metadata: { name: "rft-operator-webhook-tls", namespace: NS },
    data: { "tls.crt": Buffer.from(tls.cert).toString("base64"), "tls.key": Buffer.from(tls.key).toString("base64") },
  });
  op = new Operator({
    kubeconfig: cluster.kubeconfig,
    settings: { image: "rft:dev", natsUrl: "" },
    port: 0,
    leaderElection: false,
    log: createLogger("operator-webhook-test"),
    webhook: {
      port: 0,
      host: "127.0.0.1",
      secretNamespace: NS,
      secretName: "rft-operator-webhook-tls",
      validateGrader,
    },
  });
  await op.start();
  assert.ok(op.webhook && op.webhook.port > 0);
  await cluster.apply(webhookConfiguration({ caBundle: tls.ca, url: `https://127.0.0.1:${op.webhook.port}` }));
  // Registration takes effect when the apiserver's webhook informer sees it: wait for a rejection.
  await waitFor(
    "webhook active",
    async () => {
      const bad = exampleJob("probe");
      bad.spec.method.reinforcement.hyperparameters.learningRateMultiplier = 1000;
      try {
        await cluster.apply(bad, "--dry-run=server");
        return undefined;
      } catch (e) {
        return /learningRateMultiplier/.test(String(e)) ? true : undefined;
      }
    },
    60_000,
    500,
  );
});

after(async () => {
  await op?.stop();
  await cluster?.close();
  await engine?.close();
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});

describe("admission webhook on the harness", () => {
  test("apply of a bad grader or multiplier is rejected with the grader engine's message; a good job is admitted", async () => {
    const reject = async (mutate: (g: KObject, spec: KObject) => void, pattern: RegExp) => {
      const job = exampleJob("bad");
      mutate(job.spec.method.reinforcement.grader, job.spec);
      await assert.rejects(cluster.apply(job), (e: Error) => {
        assert.match(e.message, /admission webhook "validate.finetunejobs.rft.dev" denied the request/);
        assert.match(e.message, pattern);
        return true;
      });
    };
    await reject(
      (g) => (g.calculate_output = "0.1 * format + * correct"),
      /spec\.method\.reinforcement\.grader\.calculate_output: /,
    );
    await reject(
      (g) => (g.calculate_output = "0.5 * format + 0.5 * nobody"),
      /spec\.method\.reinforcement\.grader\.calculate_output: .*nobody/,
    );
    await reject(
      (g) => (g.graders.format.input = "{{ sample.nothing }}"),
      /grader\.graders\.format\.input: bad template: .*sample has no "nothing"/,
    );
    await reject(
      (g) => (g.graders.correct.source = "def grade(sample, item)\n    return 1.0\n"),
      /spec\.method\.reinforcement\.grader\.graders\.correct\.source: python source does not compile/,
    );
    await reject(
      (_g, spec) => (spec.method.reinforcement.hyperparameters.learningRateMultiplier = 1000),
      /learningRateMultiplier: Invalid value: 1000: must be "auto" or a number > 0 and <= 100/,
    );
    await reject(
      (_g, spec) => (spec.method.reinforcement.hyperparameters.computeMultiplier = "lots"),
      /computeMultiplier: Invalid value: "lots": must be "auto" or a number > 0.00001 and <= 10/,
    );

    const good = exampleJob("good");
    good.spec.method.reinforcement.hyperparameters.computeMultiplier = "auto";
    await cluster.apply(good);
    // Updates are admitted too (only changed fields are checked again).
    await cluster.kubectl("patch", "ftj", "-n", NS, "good", "--type=merge", "-p", '{"spec":{"cancel":true}}');
    const got = await cluster.getJson("ftj", "-n", NS, "good");
    assert.equal(got.spec.cancel, true);
  });
});

describe("validateFineTuneJob", () => {
  const job = () => ({ spec: exampleJob("x").spec });

  test("accepts the example, 'auto' and in-range numbers", async () => {
    const j = job();
    j.spec.method.reinforcement.hyperparameters.learningRateMultiplier = "auto";
    j.spec.method.reinforcement.hyperparameters.computeMultiplier = 0.5;
    assert.deepEqual(await validateFineTuneJob(j, undefined, validateGrader), []);
  });

  test("a python grader is parsed, never run, in the operator's pod (it holds the operator's credentials)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rft-webhook-probe-"));
    chmodSync(dir, 0o777); // sandbox workers may run as another uid
    try {
      const marker = join(dir, "ran");
      const j = job();
      j.spec.method.reinforcement.grader.graders.correct.source =
        `open(${JSON.stringify(marker)}, "w").write("x")\n` +
        `raise Exception(open("/var/run/secrets/kubernetes.io/serviceaccount/token").read())\n\n` +
        "def grade(sample, item):\n    return 1.0\n";
      assert.deepEqual(await validateFineTuneJob(j, undefined, validateGrader), []);
      assert.equal(existsSync(marker), false, "the grader's module body did not run");
      // What parsing can see is still rejected, with the line.
      j.spec.method.reinforcement.grader.graders.correct.source = "def grade(sample):\n    return 1.0\n";
      const errs = await validateFineTuneJob(j, undefined, validateGrader);
      assert.equal(errs.length, 1);
      assert.match(errs[0]!, /graders\.correct\.source: python source does not compile \(line 1\): grade must take/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("hostile graders are denied with the field and position, without stalling the operator (issue 13)", async () => {
    const j = job();
    const g = j.spec.method.reinforcement.grader;
    const first = Object.keys(g.graders).find((k) => g.graders[k].type === "string_check")!;
    g.graders[first].reference = "{{".repeat(499_000); // under the schema's 1,000,000; minutes on the old regex parser
    let errs = await validateFineTuneJob(j, undefined, validateGrader);
    assert.equal(errs.length, 1);
    assert.match(errs[0]!, new RegExp(`graders\\.${first}\\.reference: bad template: unclosed "\\{\\{" at offset 0`));
    const k = job();
    k.spec.method.reinforcement.grader.calculate_output = `${"(".repeat(2000)}${first}${")".repeat(2000)}`;
    errs = await validateFineTuneJob(k, undefined, validateGrader);
    assert.equal(errs.length, 1);
    assert.match(errs[0]!, /calculate_output: the formula nests deeper than 100 levels .* at position 100/);
  });

  test("bounds of the supervised multiplier too; unchanged fields on UPDATE are not checked again", async () => {
    const j: KObject = { spec: { method: { type: "supervised", supervised: { hyperparameters: {} } } } };
    j.spec.method.supervised.hyperparameters.learningRateMultiplier = 0;
    const errs = await validateFineTuneJob(j, undefined);
    assert.equal(errs.length, 1);
    assert.match(errs[0]!, /^spec\.method\.supervised\.hyperparameters\.learningRateMultiplier: Invalid value: 0/);
    assert.deepEqual(await validateFineTuneJob(j, structuredClone(j)), []);
  });

  test("review answers an AdmissionReview with the request's uid; DELETE is always allowed", async () => {
    const bad = job();
    bad.spec.method.reinforcement.grader.calculate_output = "(";
    const r = await review(
      { request: { uid: "u1", operation: "CREATE", object: { metadata: { name: "b" }, ...bad } } },
      validateGrader,
    );
    assert.equal(r.response.uid, "u1");
    assert.equal(r.response.allowed, false);
    assert.equal(r.response.status.code, 422);
    assert.match(
      r.response.status.message,
      /^FineTuneJob\.rft\.dev "b" is invalid: spec\.method\.reinforcement\.grader\.calculate_output/,
    );
    const d = await review({ request: { uid: "u2", operation: "DELETE", oldObject: bad } });
    assert.deepEqual(d.response, { uid: "u2", allowed: true });
  });
});
