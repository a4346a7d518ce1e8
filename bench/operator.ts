/**
 * Operator figures on the test harness (run: npx tsx bench/operator.ts [--jobs N] [--workers N] [--concurrency N]):
 *  1. time from the first create of N FineTuneJobs (default 500, created at once: --concurrency parallel POSTs)
 *     until every one has all four children (Secret, ConfigMap, Service, Job) and Created=True — target < 60 s;
 *  2. reconcile duration p50 / p99 and the API requests each reconcile made (counted per reconcile);
 *  3. the operator's memory (it runs in this process: heap used after a GC, and the process RSS).
 * The harness runs no kubelet here: Jobs get their pods from kube-controller-manager, which stay Pending; no
 * trainer runs. The operator runs in process with 4 workers (as `rft operator` defaults) and no NATS.
 */
import { readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { parse } from "yaml";
import { KubeClient, paths } from "../operator/client.js";
import { Operator } from "../operator/manager.js";
import { names } from "../operator/names.js";
import { createLogger } from "../proto/log.js";
import { startCluster, waitFor } from "../test/k8s/cluster.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const N = arg("--jobs", 500);
const WORKERS = arg("--workers", 4);
const CONCURRENCY = arg("--concurrency", 50);
const NS = "bench";

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};
const ms = (s: number) => `${(s * 1000).toFixed(1)} ms`;
const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

const template = parse(readFileSync("examples/sort-digits/rft.yaml", "utf8"));

async function main() {
  console.log(
    `machine: ${cpus().length} cores, load ${loadavg()
      .map((x) => x.toFixed(1))
      .join(" ")}; node ${process.version}`,
  );
  const t0 = Date.now();
  const cluster = await startCluster({ kubelet: false });
  console.log(`cluster up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const reconciles: { seconds: number; requests: number }[] = [];
  let op: Operator | undefined;
  try {
    await cluster.kubectl("apply", "--server-side", "-f", "crds/finetunejobs.rft.dev.yaml");
    await waitFor("CRD established", async () => {
      const crd = await cluster.getJson("crd", "finetunejobs.rft.dev");
      return (crd.status?.conditions ?? []).some(
        (c: { type: string; status: string }) => c.type === "Established" && c.status === "True",
      );
    });
    await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
    op = new Operator({
      kubeconfig: cluster.kubeconfig,
      settings: { image: "rft:dev", natsUrl: "" },
      port: 0,
      workers: WORKERS,
      leaderElection: false,
      log: createLogger("operator-bench"),
      onReconcile: (_k, seconds, requests) => reconciles.push({ seconds, requests }),
    });
    await op.start();
    await waitFor("operator caches synced", () => op!.isLeader, 60_000);
    global.gc?.();
    const heapBefore = process.memoryUsage().heapUsed;

    const client = await KubeClient.fromKubeconfig(cluster.kubeconfig);
    const objs = Array.from({ length: N }, (_, i) => ({
      ...template,
      metadata: { name: `job-${String(i).padStart(4, "0")}`, namespace: NS },
      spec: { ...template.spec, model: "base" },
    }));
    const start = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < objs.length) {
          const o = objs[next++]!;
          await client.request("POST", paths.ftj(NS), o);
        }
      }),
    );
    const created = Date.now() - start;
    const c = op.caches;
    const done = (name: string) => {
      const ftj = c.ftj.get(NS, name);
      return (
        (ftj?.status?.conditions ?? []).some(
          (x: { type: string; status: string }) => x.type === "Created" && x.status === "True",
        ) &&
        c.secrets.get(NS, names.secret(name)) &&
        c.configMaps.get(NS, names.configMap(name)) &&
        c.services.get(NS, names.service(name)) &&
        c.jobs.get(NS, names.trainerJob(name, 0))
      );
    };
    await waitFor(
      `${N} FineTuneJobs with children and Created=True`,
      () => (objs.every((o) => done(o.metadata.name)) ? true : undefined),
      600_000,
      100,
    );
    const all = (Date.now() - start) / 1000;
    await op.queue.idle();
    const reconcileCount = reconciles.length;
    global.gc?.();
    const mem = process.memoryUsage();
    client.close();

    const secs = reconciles.map((r) => r.seconds);
    const reqs = reconciles.map((r) => r.requests);
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    console.log(`\n${N} FineTuneJobs created (${CONCURRENCY} parallel POSTs) in ${(created / 1000).toFixed(1)} s`);
    console.log(
      `all with Secret, ConfigMap, Service, Job and Created=True: ${all.toFixed(1)} s after the first create (target < 60 s: ${all < 60 ? "met" : "NOT met"})`,
    );
    console.log(
      `reconciles: ${reconcileCount} (${(reconcileCount / N).toFixed(2)} per job); duration p50 ${ms(pct(secs, 50))}, p99 ${ms(pct(secs, 99))}, max ${ms(Math.max(...secs))}`,
    );
    console.log(
      `API requests per reconcile: mean ${(sum(reqs) / reqs.length).toFixed(2)}, p50 ${pct(reqs, 50)}, max ${Math.max(...reqs)}; ${(sum(reqs) / N).toFixed(2)} per job`,
    );
    console.log(
      `operator memory (in this process${global.gc ? ", after GC" : "; run with --expose-gc for after-GC figures"}): heap ${mib(mem.heapUsed)} (${mib(mem.heapUsed - heapBefore)} more than before the jobs), RSS ${mib(mem.rss)}`,
    );
  } finally {
    await op?.stop();
    await cluster.close();
  }
}

await main();
