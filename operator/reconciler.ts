/**
 * The reconcile I/O shell: reads the caches, asks decide() (pure) what to do, writes status (only when
 * changed, with the cached resourceVersion so a stale cache can never overwrite newer status, e.g. spend
 * the retry budget twice), then performs the actions and emits Events.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import type { Logger } from "../proto/log.js";
import { isConflict, isNotFound, type KObj, type KubeClient, paths } from "./client.js";
import { type Action, decide, type KEvent, statusChanged } from "./decide.js";
import {
  desiredConfigMap,
  desiredNetworkPolicy,
  desiredSecret,
  desiredService,
  desiredTrainerWorkload,
  type FineTuneJobObject,
  type OperatorSettings,
  rankJobName,
  workloadKind,
  workloadPlan,
} from "./desired.js";
import type { Informer } from "./informer.js";
import { serveName, serving } from "./serving.js";
import { names } from "./names.js";
import { jobSigningPublicKey } from "./signing-key.js";
import type { ProgressBridge } from "./progress.js";
import type { Result } from "./workqueue.js";

export interface Caches {
  ftj: Informer;
  jobs: Informer;
  secrets: Informer;
  configMaps: Informer;
  services: Informer;
}

export function newSigningKey(): { privatePem: string; publicRaw: string; collectiveSecret: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const der = publicKey.export({ format: "der", type: "spki" });
  return {
    privatePem: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    publicRaw: der.subarray(der.length - 32).toString("base64"),
    // The ranks' shared secret (trainer/collective/auth.ts), generated with the key, once per job.
    collectiveSecret: randomBytes(32).toString("base64url"),
  };
}

const b64 = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, "base64").toString("utf8"));

export class Reconciler {
  /** Jobs (ns/name/uid) whose key is in RFT_JOB_KEYS already. */
  private readonly registered = new Set<string>();
  /** Jobs (ns/name/uid) whose NetworkPolicy this process applied (server-side apply: again after a restart). */
  private readonly policies = new Set<string>();

  constructor(
    private readonly client: KubeClient,
    private readonly caches: Caches,
    private readonly progress: ProgressBridge,
    private readonly settings: OperatorSettings,
    private readonly log: Logger,
    /** Mints a job's NATS user (.creds text) when NATS runs with authentication. */
    private readonly mintJobCreds?: (ns: string, name: string) => string,
  ) {}

  async reconcile(key: string): Promise<Result> {
    const [ns, name] = key.split("/") as [string, string];
    const obj = this.caches.ftj.get(ns, name);
    if (!obj) {
      this.progress.forget(key);
      return;
    }
    if (obj.metadata.deletionTimestamp) return;
    const job = obj as FineTuneJobObject;
    const secret = this.caches.secrets.get(ns, names.secret(name));
    const attempt = job.status?.attempt ?? job.status?.restartCount ?? 0;
    const d = decide(job, {
      now: new Date(),
      trainerJob: this.caches.jobs.get(ns, rankJobName(job, attempt)),
      progress: this.progress.get(key),
      publicKey: b64(secret?.data?.["public-key"]),
    });
    // Children first for a new job (so the public key lands in the same status write), except the gang
    // restart, whose budget is written before anything else happens.
    const restart = d.actions.some((a) => a.type === "deleteTrainerJob") && d.status.attempt !== job.status?.attempt;
    const pre: Action[] = restart ? [] : d.actions.filter((a) => a.type === "ensureChildren");
    for (const a of pre) {
      const pk = await this.act(job, a);
      if (pk) d.status.ledger = { ...(d.status.ledger ?? {}), publicKey: pk };
    }
    // spec.serve (serving.ts): read the Deployment only for a job that serves or served.
    const serves = job.spec.serve !== undefined || d.status.conditions?.some((c) => c.type === "Serving");
    const deployment = serves ? await this.client.getOptional(paths.deployment(ns, serveName(name))) : undefined;
    const sd = serves
      ? serving(job, d.status, deployment, this.settings, new Date().toISOString().replace(/\.\d{3}Z$/, "Z"))
      : undefined;
    if (sd) d.status = sd.status;
    if (statusChanged(job.status, d.status)) {
      try {
        await this.client.mergePatch(`${paths.ftj(ns, name)}/status`, {
          metadata: { resourceVersion: job.metadata.resourceVersion },
          status: d.status,
        });
      } catch (e) {
        if (isConflict(e)) return { requeueAfterMs: 100 }; // the cache is behind: look again when it catches up
        throw e;
      }
    }
    for (const a of d.actions) if (!pre.includes(a)) await this.act(job, a);
    if (sd && !d.actions.some((a) => a.type === "deleteSelf")) await this.serve(job, sd, deployment);
    for (const ev of d.events) await this.event(job, ev);
    const waits = [d.requeueAfterMs, sd?.requeueAfterMs].filter((x) => x !== undefined);
    return waits.length ? { requeueAfterMs: Math.min(...waits) + 50 } : undefined;
  }

  /** spec.serve's Deployment and Service: applied when they differ from what is there, or deleted. */
  private async serve(
    job: FineTuneJobObject,
    sd: NonNullable<ReturnType<typeof serving>>,
    deployment: Record<string, any> | undefined,
  ): Promise<void> {
    const ns = job.metadata.namespace;
    const name = serveName(job.metadata.name);
    if (sd.remove) {
      await this.client.delete(paths.deployment(ns, name), "Background");
      await this.client.delete(paths.core("services", ns, name), "Background");
      return;
    }
    const [dep, svc] = sd.apply;
    if (!dep || !svc) return;
    const same =
      deployment &&
      deployment.spec?.replicas === dep.spec.replicas &&
      JSON.stringify(deployment.spec?.template?.spec?.containers?.[0]?.args) ===
        JSON.stringify(dep.spec.template.spec.containers[0].args);
    if (same) return;
    await this.client.apply(paths.core("services", ns, name), svc);
    await this.client.apply(paths.deployment(ns, name), dep);
  }

  /** Performs one action; ensureChildren answers the public key when it created the Secret. */
  private async act(job: FineTuneJobObject, a: Action): Promise<string | undefined> {
    const { namespace: ns, name } = job.metadata;
    switch (a.type) {
      case "ensureChildren":
        return this.ensureChildren(job, a.attempt);
      case "deleteTrainerJob":
        await this.client.delete(this.workloadPath(job, a.name), "Background");
        return;
      case "control":
        this.progress.control(ns, name, a.action);
        return;
      case "deleteSelf":
        await this.client.delete(paths.ftj(ns, name), "Background");
        return;
    }
  }

  private async ensureChildren(job: FineTuneJobObject, attempt: number): Promise<string | undefined> {
    const { namespace: ns, name } = job.metadata;
    let publicKey: string | undefined;
    const cachedSecret = this.caches.secrets.get(ns, names.secret(name));
    if (!cachedSecret) {
      // Generated once: create (never apply), and a 409 means it already exists with its own key.
      const key = { ...newSigningKey(), natsCreds: this.mintJobCreds?.(ns, name) };
      const created = await this.client.create(paths.core("secrets", ns), desiredSecret(job, key));
      if (created) publicKey = key.publicRaw;
      else {
        const existing = await this.client.get(paths.core("secrets", ns, names.secret(name)));
        publicKey = b64(existing.data?.["public-key"]);
      }
    }
    const cm = desiredConfigMap(job, this.settings);
    const cachedCm = this.caches.configMaps.get(ns, cm.metadata.name);
    if (!cachedCm || JSON.stringify(cachedCm.data) !== JSON.stringify(cm.data)) {
      await this.client.apply(paths.core("configmaps", ns, cm.metadata.name), cm);
    }
    const id = `${ns}/${name}/${job.metadata.uid}`;
    if (this.settings.jobNetworkPolicy && !this.policies.has(id)) {
      const np = desiredNetworkPolicy(job);
      await this.client.apply(paths.networkPolicy(ns, np.metadata.name), np);
      this.policies.add(id);
    }
    const svc = desiredService(job);
    if (!this.caches.services.get(ns, svc.metadata.name)) {
      await this.client.apply(paths.core("services", ns, svc.metadata.name), svc);
    }
    if (this.settings.ledgerNats) await this.registerKey(job, publicKey ?? b64(cachedSecret?.data?.["public-key"]));
    const plan = workloadPlan(job, this.caches.jobs.get(ns, rankJobName(job, attempt)));
    if (plan !== "none") {
      const tj = desiredTrainerWorkload(job, attempt, this.settings);
      try {
        if (plan === "create") await this.client.create(this.workloadPath(job), tj);
        else await this.client.apply(this.workloadPath(job, tj.metadata.name), tj);
      } catch (e) {
        if (!(isNotFound(e) && workloadKind(job) === "JobSet")) throw e;
        throw new Error(
          `spec.workloadKind is JobSet but the cluster has no jobsets.jobset.x-k8s.io API: install JobSet or remove spec.workloadKind`,
          { cause: e },
        );
      }
    }
    return publicKey;
  }

  /** The API path of the job's trainer workloads (Jobs or JobSets), or of one of them. */
  private workloadPath(job: FineTuneJobObject, name?: string): string {
    const ns = job.metadata.namespace;
    return workloadKind(job) === "JobSet" ? paths.jobSet(ns, name) : paths.job(ns, name);
  }

  /**
   * Registers the job's signing key in RFT_JOB_KEYS before any of its pods exist: the ledger accepts a job's
   * events only under its registered key. Throws (the reconcile is retried with backoff) while NATS or the
   * bucket is not there yet, so no trainer starts unregistered.
   */
  private async registerKey(job: FineTuneJobObject, secretPublicKey: string | undefined): Promise<void> {
    const { namespace: ns, name, uid } = job.metadata;
    const id = `${ns}/${name}/${uid}`;
    if (this.registered.has(id)) return;
    const publicKey = await jobSigningPublicKey(job, secretPublicKey, async (secretName, key) => {
      const s = await this.client.getOptional(paths.core("secrets", ns, secretName));
      return b64(s?.data?.[key]);
    });
    if (!publicKey) throw new Error(`the job's Secret ${names.secret(name)} has no public-key yet`);
    let r: Awaited<ReturnType<ProgressBridge["registerJobKey"]>>;
    try {
      r = await this.progress.registerJobKey({
        namespace: ns,
        name,
        uid,
        publicKey,
        registeredAt: new Date().toISOString(),
      });
    } catch (e) {
      throw new Error(`cannot register the job's signing key with the ledger yet (${(e as Error).message})`, {
        cause: e,
      });
    }
    if (r === "conflict")
      await this.event(job, {
        type: "Warning",
        reason: "LedgerKeyConflict",
        message: `the ledger already holds a job ${ns}/${name} signed with another key (an earlier job of this name): this job's ledger events will be rejected; use a new name`,
      });
    else if (r === "registered") this.log.info({ job: `${ns}/${name}` }, "job key registered with the ledger");
    this.registered.add(id);
  }

  private async event(job: FineTuneJobObject, ev: KEvent): Promise<void> {
    const { namespace: ns, name, uid } = job.metadata;
    const now = new Date().toISOString();
    try {
      await this.client.request("POST", paths.core("events", ns), {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: `${name}.${Date.now().toString(16)}${randomBytes(3).toString("hex")}`, namespace: ns },
        involvedObject: { apiVersion: job.apiVersion, kind: job.kind, name, namespace: ns, uid },
        type: ev.type,
        reason: ev.reason,
        message: ev.message.slice(0, 1000),
        source: { component: "rft-operator" },
        reportingComponent: "rft.dev/operator",
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      });
    } catch (e) {
      this.log.warn({ err: String(e), job: `${ns}/${name}` }, "could not record an event");
    }
  }

  /** Counts of FineTuneJobs per display state (for rft_finetunejobs). */
  static countStates(objs: KObj[]): Record<string, number> {
    const out: Record<string, number> = {};
    for (const o of objs) {
      const s = (o.status?.state as string | undefined) ?? "Pending";
      out[s] = (out[s] ?? 0) + 1;
    }
    return out;
  }
}
