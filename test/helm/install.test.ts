/**
 * `helm install` of the chart into the harness cluster on the **real node** (real kube-apiserver,
 * controller-manager, kubelet + containerd, kube-scheduler and kube-proxy; test/k8s/README.md "The real node"):
 * the operator (leader-elected, with its admission webhook, which the API server reaches through the webhook
 * Service), the ledger (with the key the chart generates) and NATS (the chart's StatefulSet and config, in the
 * NATS image made from Debian's nats-server) come up as containers of the project's images, reach the API server
 * through the `kubernetes` Service, and pass their probes (`helm install --wait`); a FineTuneJob applied
 * afterwards reaches Succeeded through them; `helm uninstall` removes the release but keeps the CRD.
 * RFT_TEST_NODE=process runs it on the process kubelet instead (host processes; webhook off there: its Services
 * route nowhere).
 *
 * The cluster's folder is under /var/tmp, not /tmp: the chart mounts an emptyDir at /tmp in its pods, and the
 * process kubelet's bind mounts of a pod's other volumes come from its folder, which /tmp would hide.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { spawnSync } from "node:child_process";
import { parse } from "yaml";
import { EXAMPLE, tinyModel } from "../helpers/rft-job.js";
import type { KObject } from "../k8s/api.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";
import { natsServerBinary } from "../ledger/nats-server.js";
import { CHART, helm } from "./helm.js";

const NS = "rft-system";
const REAL = process.env.RFT_TEST_NODE !== "process";
let cluster: Cluster;

before(async () => {
  mkdirSync("/var/tmp", { recursive: true });
  cluster = await startCluster({
    dir: mkdtempSync("/var/tmp/rft-helm-install-"),
    keep: false,
    ...(REAL ? { realNode: true } : { kubelet: { images: { "nats:*": { entrypoint: [natsServerBinary()] } } } }),
  });
  await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
});
after(async () => cluster?.close());

const cond = (o: KObject, type: string) => (o.status?.conditions ?? []).find((c: KObject) => c.type === type);
/** "repo:tag" → the chart's `<key>.repository` and `<key>.tag` values. */
const imageValues = (key: string, image: string) => {
  const i = image.lastIndexOf(":");
  return ["--set", `${key}.repository=${image.slice(0, i)}`, "--set", `${key}.tag=${image.slice(i + 1)}`];
};
const podLog = (pod: string, container: string) =>
  cluster.realNode
    ? cluster.realNode.readLog(NS, pod, container)
    : (cluster.kubelet!.readLog(NS, pod, container) ?? "");
const claimDir = (claim: string) =>
  cluster.realNode ? cluster.realNode.pvcPath(NS, claim) : cluster.kubelet!.pvcPath(NS, claim);

test("helm install brings up operator, ledger and NATS; a FineTuneJob succeeds; uninstall keeps the CRD", async () => {
  // Trainer pods use the rft image (the GPU image, deploy/Dockerfile.trainer-gpu, is for real clusters).
  const node = cluster.realNode;
  const images = node
    ? [...imageValues("image", node.image), ...imageValues("trainerImage", node.image)]
    : ["--set", "trainerImage.repository=rft"];
  const t0 = Date.now();
  const install = await helm(
    "install",
    "rft",
    CHART,
    "--namespace",
    NS,
    "--kubeconfig",
    cluster.kubeconfig,
    ...images,
    ...(node ? imageValues("nats.image", node.natsImage) : []),
    // On the process kubelet Services route nowhere, so the API server could not reach the webhook and
    // (failurePolicy Fail) would refuse the FineTuneJob below; on the real node kube-proxy routes it.
    "--set",
    `webhook.enabled=${node ? "true" : "false"}`,
    "--wait",
    "--timeout",
    "4m",
  );
  assert.equal(install.code, 0, install.stdout + install.stderr);
  assert.match(install.stdout, /STATUS: deployed/);
  console.log(`helm install --wait: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const pods = (await cluster.getJson("pods", "-n", NS)).items as KObject[];
  const byComponent = Object.fromEntries(
    pods.map((p) => [p.metadata.labels["app.kubernetes.io/component"], p.status.containerStatuses[0]]),
  );
  for (const c of ["operator", "ledger", "nats"]) assert.equal(byComponent[c]?.ready, true, `${c} ready`);
  const lease = await waitFor("the operator's leader Lease", async () => {
    const leases = (await cluster.getJson("leases", "-n", NS)).items as KObject[];
    return leases.find((l) => l.spec?.holderIdentity?.startsWith("rft-rft-operator-operator-"));
  });
  assert.ok(lease);
  const ledgerPod = pods.find((p) => p.metadata.labels["app.kubernetes.io/component"] === "ledger")!;
  assert.match(
    podLog(ledgerPod.metadata.name, "ledger"),
    /rft ledger: audit API on 0\.0\.0\.0:8090 \(bearer token required\)/,
  );
  if (node) {
    // Containers of the images given, on the real node (their own root filesystem, uid 65532).
    const natsPod = pods.find((p) => p.metadata.labels["app.kubernetes.io/component"] === "nats")!;
    assert.equal(natsPod.spec.nodeName, node.nodeName);
    assert.equal(natsPod.spec.containers[0].image, node.natsImage);
    assert.equal(ledgerPod.spec.containers[0].image, node.image);
  }

  // A small FineTuneJob of the sort-digits example, with its model and data on a claim.
  const pvc = (name: string) => ({
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name, namespace: NS },
    spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
  });
  await cluster.apply([pvc("data"), pvc("ckpt")]);
  const dataDir = claimDir("data");
  mkdirSync(dataDir, { recursive: true });
  await tinyModel(join(dataDir, "base"));
  const rows = (f: string, n: number) =>
    `${readFileSync(join(EXAMPLE, f), "utf8").trim().split("\n").slice(0, n).join("\n")}\n`;
  writeFileSync(join(dataDir, "train.jsonl"), rows("train.jsonl", 4));
  writeFileSync(join(dataDir, "valid.jsonl"), rows("valid.jsonl", 2));
  const job = parse(readFileSync(join(EXAMPLE, "rft.yaml"), "utf8"));
  job.metadata = { name: "helm-sorter", namespace: NS };
  Object.assign(job.spec, {
    model: "base",
    trainingFile: "train.jsonl",
    validationFile: "valid.jsonl",
    storage: { modelClaim: "data", checkpointClaim: "ckpt" },
    trainer: { backend: "wasm" },
  });
  Object.assign(job.spec.method.reinforcement.hyperparameters, {
    nEpochs: 1,
    batchSize: 2,
    samplesPerPrompt: 2,
    maxCompletionTokens: 4,
    evalInterval: 1,
    evalSamples: 1,
  });
  if (node) {
    // The webhook answers through its Service (the API server on the host → kube-proxy → the operator pod):
    // a multiplier out of bounds is denied by it.
    const bad = structuredClone(job);
    bad.metadata.name = "helm-bad";
    bad.spec.method.reinforcement.hyperparameters.learningRateMultiplier = 1000;
    await assert.rejects(cluster.apply(bad, "--dry-run=server"), (e: Error) => {
      assert.match(e.message, /admission webhook "validate\.finetunejobs\.rft\.dev" denied the request/);
      assert.match(e.message, /learningRateMultiplier/);
      return true;
    });
  }
  await cluster.apply(job);
  const done = await waitFor(
    "FineTuneJob Succeeded",
    async () => {
      const o = await cluster.getJson("ftj", "-n", NS, "helm-sorter");
      assert.notEqual(cond(o, "Failed")?.status, "True", JSON.stringify(o.status));
      return cond(o, "Succeeded")?.status === "True" ? o : undefined;
    },
    300_000,
    1000,
  );
  assert.equal(done.status.state, "Succeeded");
  assert.equal(typeof done.status.trainerStatus.validRewardMean, "number");
  const trainerJob = (await cluster.getJson("jobs", "-n", NS, "-l", "rft.dev/finetunejob=helm-sorter")).items[0];

  // NATS runs with users (nats.auth.enabled, the default): an anonymous client is refused; the job had its own
  // user in its Secret, and its signed events reached the ledger under the key the operator registered.
  const podOf = async (component: string) => {
    const all = (await cluster.getJson("pods", "-n", NS)).items as KObject[];
    return all.find((p) => p.metadata.labels["app.kubernetes.io/component"] === component)!.metadata.name as string;
  };
  /** Runs a Node script inside a pod's network namespace (the pod's loopback is where its ports are). */
  const inPod = async (component: string, script: string) => {
    const pod = await podOf(component);
    let cmd: string[];
    if (node) {
      const pid = await waitFor(`${component}'s pid`, () => node.containerPid(NS, pod, component));
      cmd = ["nsenter", "-t", String(pid), "-n", process.execPath];
    } else {
      const netns = cluster.kubelet!.podNetns(NS, pod);
      cmd = netns ? ["ip", "netns", "exec", netns, process.execPath] : [process.execPath];
    }
    const r = spawnSync(cmd[0]!, [...cmd.slice(1), "--input-type=module", "-e", script], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  // What the NATS server says to a client that presents nothing: authentication required.
  const info = await inPod(
    "nats",
    `import { createConnection } from "node:net";
     const s = createConnection({ host: "127.0.0.1", port: 4222 });
     s.on("data", (d) => { process.stdout.write(d.toString().split("\\r\\n")[0]); s.destroy(); });`,
  );
  assert.equal(JSON.parse(info.replace(/^INFO /, "")).auth_required, true, info);
  assert.equal(JSON.parse(info.replace(/^INFO /, "")).tls_required, true, "TLS on the client port");
  const jobSecret = await cluster.getJson("secret", "-n", NS, "helm-sorter-signing");
  assert.match(Buffer.from(jobSecret.data["nats.creds"], "base64").toString(), /BEGIN NATS USER JWT/);
  const token = Buffer.from(
    (await cluster.getJson("secret", "-n", NS, "rft-rft-operator-ledger-token")).data.token,
    "base64",
  ).toString();
  const head = await waitFor("the job's ledger head", async () => {
    const out = await inPod(
      "ledger",
      `const r = await fetch("http://127.0.0.1:8090/v1/jobs/${NS}/helm-sorter/head", { headers: { authorization: "Bearer ${token}" } });
       process.stdout.write(r.status === 200 ? await r.text() : "");`,
    );
    return out ? (JSON.parse(out) as { size: number }) : undefined;
  });
  assert.ok(head.size > 2, `ledger head size ${head.size}`);
  // The job's own NetworkPolicy (the operator's child): its ranks accept only each other.
  const ranks = await cluster.getJson("networkpolicy", "-n", NS, "helm-sorter-ranks");
  assert.equal(ranks.spec.podSelector.matchLabels["rft.dev/finetunejob"], "helm-sorter");
  assert.equal(trainerJob.spec.template.spec.containers[0].image, node ? node.image : "rft:0.1.0");

  const uninstall = await helm("uninstall", "rft", "--namespace", NS, "--kubeconfig", cluster.kubeconfig, "--wait");
  assert.equal(uninstall.code, 0, uninstall.stderr);
  await waitFor("release objects gone", async () => {
    const deps = (await cluster.getJson("deployments", "-n", NS)).items as KObject[];
    return deps.length === 0;
  });
  const crd = await cluster.getJson("crd", "finetunejobs.rft.dev");
  assert.equal(crd.metadata.annotations["helm.sh/resource-policy"], "keep");
});
