/**
 * The NATS side of the operator: keeps the latest progress message per job from
 * `rft.jobs.<ns>.<name>.progress` and publishes control messages on `rft.jobs.<ns>.<name>.control`.
 * Progress wakes the job's reconcile at most once per `minIntervalMs` (status writes are rate-limited);
 * a final status (succeeded, paused, failed, cancelled) wakes it at once.
 *
 * No message is trusted (core NATS does not say who published it): each one is size-capped, parsed, checked
 * against proto/'s ProgressMessage schema and against the job as the operator knows it (the job exists, the
 * attempt is its current attempt, the rank is one of its ranks, step ≤ totalSteps, every path is under the
 * job's checkpoint directory, nothing after the attempt's "succeeded"). A message that fails any check is
 * dropped and counted (`onDrop(reason)`), so reconcile only ever sees well-formed progress.
 *
 * NATS being down never stops the operator: start() returns at once and connects in the background, logging
 * one line when NATS is unreachable and retrying with backoff until it connects (the Kubernetes side of the
 * controller does not need NATS; control messages are not sent meanwhile).
 *
 * It also registers each job's signing key in the RFT_JOB_KEYS bucket (write-once), which the ledger service
 * trusts: with NATS authentication only the operator's user may write there, so no trainer and no outsider
 * can claim a job by publishing its first event.
 */
import { posix } from "node:path";
import { Ajv } from "ajv";
import { type ConnectionOptions, connect, type KV, type NatsConnection, type Subscription } from "nats";
import {
  CONTROL_MAX_BYTES,
  type ControlMessage,
  controlSubject,
  PROGRESS_LIMITS,
  ProgressMessage,
} from "../proto/finetunejob-status.js";
import type { Logger } from "../proto/log.js";
import { JOB_KEYS_BUCKET, type JobKeyRecord, jobKeyName } from "../proto/nats-auth.js";

/** What the operator knows of a job when one of its progress messages arrives. */
export interface ProgressExpectation {
  /** The job's current attempt (status.attempt): messages of any other attempt are dropped. */
  attempt: number;
  /** The job's ranks (spec.replicas). */
  replicas: number;
  /** The job's checkpoint directory: fineTunedModel and checkpoint paths must lie under it. */
  outputDir: string;
}

export const DROP_REASONS = [
  "too_large",
  "bad_subject",
  "not_json",
  "schema",
  "unknown_job",
  "wrong_attempt",
  "bad_rank",
  "step_past_total",
  "path_outside_output",
  "after_final",
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export interface ProgressBridgeOptions {
  /** NATS URL (undefined: no NATS at all). */
  url: string | undefined;
  /** The operator's NATS credentials (authenticator and inbox prefix); none: an unauthenticated NATS. */
  auth?: Partial<ConnectionOptions>;
  /** Wakes the job's reconcile after delayMs. */
  wake: (key: string, delayMs: number) => void;
  /** The job behind a key ("ns/name"), from the operator's cache; undefined when there is none. */
  expect: (key: string) => ProgressExpectation | undefined;
  /** Counts a dropped message. */
  onDrop?: (reason: DropReason) => void;
  log: Logger;
  minIntervalMs?: number;
  /** First and longest wait between connection attempts while NATS is unreachable. */
  retryInitialMs?: number;
  retryMaxMs?: number;
}

const ajv = new Ajv({
  allErrors: false,
  strict: false,
  formats: { "date-time": (s: string) => !Number.isNaN(Date.parse(s)) },
});
const validProgress = ajv.compile<ProgressMessage>(ProgressMessage);
/** A NATS subject token as the trainers' subjects carry it (a Kubernetes namespace or object name). */
const NAME_TOKEN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

const under = (dir: string, p: string) => {
  if (!posix.isAbsolute(p) || p.includes("\0")) return false;
  const n = posix.normalize(p);
  return n === dir || n.startsWith(`${dir.replace(/\/+$/, "")}/`);
};

export class ProgressBridge {
  private nc?: NatsConnection;
  private sub?: Subscription;
  private readonly latest = new Map<string, ProgressMessage>();
  private readonly lastWake = new Map<string, number>();
  private closed = false;
  private retryTimer?: NodeJS.Timeout;
  private connecting?: Promise<void>;
  private jobKeys?: KV;
  private readonly decoder = new TextDecoder("utf-8", { fatal: true });

  constructor(private readonly o: ProgressBridgeOptions) {}

  /** True once connected to NATS (and while the client reconnects on its own). */
  get connected(): boolean {
    return this.nc !== undefined;
  }

  /** Starts connecting in the background; never throws, never waits for NATS. */
  start(): void {
    if (!this.o.url || this.connecting) return;
    this.connecting = this.connectLoop();
  }

  /** Resolves once connected (tests; the operator never waits for it). */
  async waitConnected(): Promise<void> {
    while (!this.nc && !this.closed) await new Promise((r) => setTimeout(r, 50));
  }

  private async connectLoop(): Promise<void> {
    const initial = this.o.retryInitialMs ?? 500;
    const max = this.o.retryMaxMs ?? 30_000;
    let wait = initial;
    let failures = 0;
    while (!this.closed) {
      try {
        const nc = await connect({
          servers: this.o.url!,
          name: "rft-operator",
          maxReconnectAttempts: -1,
          reconnectTimeWait: 500,
          ...this.o.auth,
        });
        if (this.closed) {
          await nc.close().catch(() => {});
          return;
        }
        this.nc = nc;
        this.subscribe(nc);
        this.o.log.info(
          { url: this.o.url, ...(failures ? { attempts: failures + 1 } : {}) },
          "connected to NATS: progress and control enabled",
        );
        return;
      } catch (e) {
        failures++;
        const why = (e as { code?: string }).code ?? (e instanceof Error ? e.message : String(e));
        if (failures === 1)
          this.o.log.warn(
            { url: this.o.url, err: why },
            `NATS at ${this.o.url} is not reachable (${why}): reconciling without progress or control messages; retrying with backoff until it connects`,
          );
        else this.o.log.debug({ url: this.o.url, err: why, attempt: failures }, "NATS still unreachable");
        await new Promise<void>((r) => {
          this.retryTimer = setTimeout(r, wait);
        });
        wait = Math.min(max, wait * 2);
      }
    }
  }

  private subscribe(nc: NatsConnection): void {
    this.sub = nc.subscribe("rft.jobs.*.*.progress");
    void (async () => {
      for await (const m of this.sub!) this.accept(m.subject, m.data);
    })().catch((e) => this.o.log.warn({ err: String(e) }, "progress subscription ended"));
  }

  private drop(reason: DropReason, subject: string): void {
    this.o.onDrop?.(reason);
    this.o.log.debug({ subject: subject.slice(0, 300), reason }, "progress message dropped");
  }

  /** Checks one progress message and keeps it, or drops and counts it. */
  private accept(subject: string, data: Uint8Array): void {
    if (data.byteLength > PROGRESS_LIMITS.maxBytes) return this.drop("too_large", subject);
    const parts = subject.split(".");
    const [, , ns, name] = parts;
    if (parts.length !== 5 || !ns || !name || !NAME_TOKEN.test(ns) || !NAME_TOKEN.test(name))
      return this.drop("bad_subject", subject);
    let raw: unknown;
    try {
      raw = JSON.parse(this.decoder.decode(data));
    } catch {
      return this.drop("not_json", subject);
    }
    if (!validProgress(raw)) return this.drop("schema", subject);
    const msg = raw;
    const key = `${ns}/${name}`;
    const job = this.o.expect(key);
    if (!job) return this.drop("unknown_job", subject);
    if (msg.attempt !== job.attempt) return this.drop("wrong_attempt", subject);
    if (msg.rank >= job.replicas) return this.drop("bad_rank", subject);
    if (msg.step > msg.totalSteps) return this.drop("step_past_total", subject);
    const paths = [
      ...(msg.fineTunedModel !== undefined ? [msg.fineTunedModel] : []),
      ...msg.checkpoints.map((c) => c.path),
    ];
    if (!paths.every((p) => under(job.outputDir, p))) return this.drop("path_outside_output", subject);
    const prev = this.latest.get(key);
    // A trainer publishes nothing after "succeeded": whatever claims to follow it in that attempt is not the
    // trainer's (a paused attempt may go on in the same Job once it is unsuspended, so "paused" does not end it).
    if (prev && prev.attempt === msg.attempt && prev.status === "succeeded") return this.drop("after_final", subject);
    this.latest.set(key, msg);
    const final = msg.status !== "running";
    const last = this.lastWake.get(key) ?? 0;
    const wait = final ? 0 : Math.max(0, last + (this.o.minIntervalMs ?? 2_000) - Date.now());
    this.lastWake.set(key, Date.now() + wait);
    this.o.wake(key, wait);
  }

  get(key: string): ProgressMessage | undefined {
    return this.latest.get(key);
  }

  forget(key: string): void {
    this.latest.delete(key);
    this.lastWake.delete(key);
  }

  control(ns: string, name: string, action: ControlMessage["action"]): void {
    if (!this.nc) {
      this.o.log.warn({ job: `${ns}/${name}`, action }, "NATS not connected: control message not sent");
      return;
    }
    const body = new TextEncoder().encode(JSON.stringify({ action } satisfies ControlMessage));
    if (body.byteLength <= CONTROL_MAX_BYTES) this.nc.publish(controlSubject(ns, name), body);
  }

  /**
   * Records a job's public key in RFT_JOB_KEYS, once: "registered" (written now), "exists" (already there with
   * this key), or "conflict" (there with another key: an earlier job of the same name; the ledger keeps that
   * one). Throws while NATS is not connected or the bucket does not exist yet (the ledger service creates it).
   */
  async registerJobKey(
    rec: JobKeyRecord & { namespace: string; name: string },
  ): Promise<"registered" | "exists" | "conflict"> {
    if (!this.nc) throw new Error("NATS is not connected");
    this.jobKeys ??= await this.nc.jetstream().views.kv(JOB_KEYS_BUCKET, { bindOnly: true });
    const key = jobKeyName(rec.namespace, rec.name);
    const value: JobKeyRecord = { publicKey: rec.publicKey, uid: rec.uid, registeredAt: rec.registeredAt };
    for (let i = 0; i < 2; i++) {
      const cur = await this.jobKeys.get(key);
      if (cur && cur.operation === "PUT") {
        const old = JSON.parse(Buffer.from(cur.value).toString("utf8")) as Partial<JobKeyRecord>;
        return old.publicKey === rec.publicKey ? "exists" : "conflict";
      }
      try {
        await this.jobKeys.create(key, JSON.stringify(value));
        return "registered";
      } catch (e) {
        // Another replica (or an earlier reconcile) wrote it between our get and create: read it again.
        if (!/wrong last sequence|key exists/i.test(String(e))) throw e;
      }
    }
    throw new Error(`could not register the key of ${rec.namespace}/${rec.name}`);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    await this.nc?.drain().catch(() => {});
  }
}
