/**
 * The ledger service (`rft ledger`): a durable JetStream consumer of RFT_LEDGER that verifies every event
 * (schema, subject, signature under the job's registered key, hash chain), appends accepted events to the job's
 * RFC 6962 Merkle log, signs tree heads into the RFT_LEDGER_HEADS KV bucket, counts what it rejects, and serves
 * the audit HTTP API. Decisions live in ledger/state.ts; this file is the I/O shell.
 *
 * Restart: the state is rebuilt by replaying the stream up to the durable consumer's ack floor through the same
 * decisions, then the durable consumer continues; anything delivered twice is recognized as a duplicate.
 */
import { createHash, type KeyObject, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  AckPolicy,
  type ConnectionOptions,
  type Consumer,
  type ConsumerMessages,
  connect,
  DeliverPolicy,
  type JsMsg,
  type KV,
  type NatsConnection,
  nanos,
} from "nats";
import pino from "pino";
import { Counter, Gauge, Registry } from "prom-client";
import { headKey, jobOfSubject, LEDGER_STREAM, parseJobRef, type SignedTreeHead } from "../proto/ledger-events.js";
import { type JobKeyRecord, jobKeyName } from "../proto/nats-auth.js";
import { SummaryBuilder } from "./audit-summary.js";
import { assembleBundle } from "./bundle.js";
import { bundleJsonlLines, bundleJsonParts, writeLines } from "./bundle-file.js";
import { ensureLedgerStream, headsBucket, jobKeysBucket } from "./nats.js";
import { reportHtml, reportMarkdown } from "./report-html.js";
import { publicKeyB64 } from "./sign.js";
import { type IngestOutcome, type JobLog, LedgerState, prepareBatch } from "./state.js";
import { headProgressionError, signTreeHead } from "./tree-head.js";
import { verifyBundleAsync } from "./verify.js";

/** Most messages decided (and acknowledged) together. */
const INGEST_BATCH = 2000;

export interface LedgerServiceOptions {
  servers: string | string[];
  /** The ledger's Ed25519 signing key (tree heads). */
  key: KeyObject;
  /** HTTP port (0: any free port). */
  port?: number;
  /** HTTP listen address (default 127.0.0.1). */
  host?: string;
  /**
   * Bearer token the audit API requires (`Authorization: Bearer <token>`) on every /v1 endpoint; /healthz and
   * /metrics stay open. Undefined: no authentication (only for a loopback-bound API; the CLI refuses otherwise).
   */
  apiToken?: string;
  /** How often tree heads are signed for jobs whose log grew (default 1000 ms). */
  headIntervalMs?: number;
  durable?: string;
  /**
   * Where job keys are registered: "kv" — the RFT_JOB_KEYS bucket the operator writes before a job's pods
   * exist (the chart's setting; a job with no entry cannot start); a static map "ns/name" or "ns/*" → raw base64
   * public key (only those jobs may start); undefined — none: a job's first event names its key (local use).
   */
  keyRegistry?: "kv" | Record<string, string>;
  /** NATS credentials (proto/nats-auth.ts natsAuthOptions). */
  auth?: Partial<ConnectionOptions>;
  logLevel?: string;
}

export class LedgerService {
  readonly state: LedgerState;
  readonly metrics = new Registry();
  private readonly ingested: Counter;
  private readonly failures: Counter;
  private readonly duplicates: Counter;
  private readonly log: pino.Logger;
  private nc!: NatsConnection;
  private kv!: KV;
  private jobKeys?: KV;
  /** Job keys read from RFT_JOB_KEYS (write-once entries: a job's key never changes once registered). */
  private readonly registered = new Map<string, string>();
  private http!: Server;
  private timer?: NodeJS.Timeout;
  private fetching?: ConsumerMessages;
  /** The last message acknowledged (ack-all): stop() waits until the consumer's ack floor reaches it. */
  private lastAcked?: JsMsg;
  private loop?: Promise<void>;
  private stopped = false;
  private readonly ledgerKeyB64: string;

  private constructor(private readonly opts: LedgerServiceOptions) {
    this.log = pino({ name: "ledger", level: opts.logLevel ?? process.env.RFT_LOG_LEVEL ?? "info" });
    const reg = opts.keyRegistry;
    this.state =
      reg === "kv"
        ? new LedgerState({ keyRegistry: (job) => this.registered.get(job), requireRegisteredKey: true })
        : new LedgerState({
            keyRegistry: (job) => reg?.[job] ?? reg?.[`${job.split("/")[0]}/*`],
            requireRegisteredKey: reg !== undefined,
          });
    this.ledgerKeyB64 = publicKeyB64(opts.key);
    this.ingested = new Counter({
      name: "rft_ledger_events_ingested_total",
      help: "Ledger events verified and appended to a job's log",
      labelNames: ["type"],
      registers: [this.metrics],
    });
    this.failures = new Counter({
      name: "rft_ledger_verification_failures_total",
      help: "Ledger messages rejected because they did not verify",
      labelNames: ["reason"],
      registers: [this.metrics],
    });
    this.duplicates = new Counter({
      name: "rft_ledger_duplicates_total",
      help: "Ledger events delivered again and ignored",
      registers: [this.metrics],
    });
    const state = this.state;
    new Gauge({
      name: "rft_ledger_jobs",
      help: "Jobs with a log in the ledger",
      registers: [this.metrics],
      collect() {
        this.set(state.jobs.size);
      },
    });
  }

  static async start(opts: LedgerServiceOptions): Promise<LedgerService> {
    const s = new LedgerService(opts);
    await s.startNats();
    await s.startHttp();
    return s;
  }

  get port(): number {
    return (this.http.address() as AddressInfo).port;
  }
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private async startNats(): Promise<void> {
    const o = this.opts;
    this.nc = await connect({
      servers: o.servers,
      name: "rft-ledger",
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      ...o.auth,
    });
    const jsm = await this.nc.jetstreamManager();
    await ensureLedgerStream(jsm);
    if (o.keyRegistry === "kv") this.jobKeys = await jobKeysBucket(this.nc);
    const durable = o.durable ?? "rft-ledger";
    let floor = 0;
    try {
      floor = (await jsm.consumers.info(LEDGER_STREAM, durable)).ack_floor.stream_seq;
    } catch {
      await jsm.consumers.add(LEDGER_STREAM, {
        durable_name: durable,
        ack_policy: AckPolicy.All,
        deliver_policy: DeliverPolicy.All,
        max_ack_pending: 20_000,
        ack_wait: nanos(30_000),
      });
    }
    this.kv = await headsBucket(this.nc);
    if (floor > 0) await this.rebuild(floor);
    await this.loadHeads();
    const consumer = await this.nc.jetstream().consumers.get(LEDGER_STREAM, durable);
    this.loop = this.consumeLoop(consumer);
    this.timer = setInterval(
      () => void this.signHeads().catch((e) => this.log.error({ err: String(e) }, "signing tree heads failed")),
      o.headIntervalMs ?? 1000,
    );
  }

  /** Replays stream messages 1..floor (already processed by an earlier run) through the same decisions. */
  private async rebuild(floor: number): Promise<void> {
    const t0 = Date.now();
    const ordered = await this.nc.jetstream().consumers.get(LEDGER_STREAM, { opt_start_seq: 1 });
    let last = 0;
    while (last < floor) {
      const iter = await ordered.fetch({ max_messages: Math.min(1000, floor - last), expires: 2000 });
      const batch: JsMsg[] = [];
      for await (const m of iter) batch.push(m);
      if (batch.length === 0) throw new Error(`the stream ends before the consumer's ack floor ${floor} (at ${last})`);
      last = batch[batch.length - 1]!.seq;
      await this.process(batch, true);
    }
    this.log.info({ messages: last, jobs: this.state.jobs.size, ms: Date.now() - t0 }, "state rebuilt from the stream");
  }

  /** Restores the last signed head of each job, checking the rebuilt log still matches it. */
  private async loadHeads(): Promise<void> {
    for (const j of this.state.jobs.values()) {
      const e = await this.kv.get(headKey(j.job));
      if (!e || e.value.length === 0) continue;
      const head = JSON.parse(Buffer.from(e.value).toString("utf8")) as SignedTreeHead;
      if (head.size > j.log.size || j.log.root(head.size).toString("hex") !== head.root) {
        this.failures.inc({ reason: "head-mismatch" });
        this.log.error(
          { job: j.job, headSize: head.size, logSize: j.log.size },
          "stored tree head does not match the rebuilt log",
        );
        continue;
      }
      j.head = head;
    }
  }

  /**
   * Consume the durable consumer until stopped. The client keeps pull requests outstanding (consume) while a
   * separate loop decides what has arrived, in batches of up to INGEST_BATCH, so receiving overlaps verifying.
   * A batch is acknowledged (ack-all: its last message) only once every message in it is decided.
   */
  private async consumeLoop(consumer: Consumer): Promise<void> {
    while (!this.stopped) {
      let messages: ConsumerMessages | undefined;
      try {
        messages = await consumer.consume({ max_messages: INGEST_BATCH * 2, expires: 5000 });
        this.fetching = messages;
        const queue: JsMsg[] = [];
        const state = { ended: false, wake: null as (() => void) | null };
        const receiving = (async () => {
          try {
            for await (const m of messages) {
              queue.push(m);
              state.wake?.();
            }
          } finally {
            state.ended = true;
            state.wake?.();
          }
        })();
        while (!this.stopped) {
          if (queue.length === 0) {
            if (state.ended) break;
            await new Promise<void>((r) => {
              state.wake = r;
            });
            state.wake = null;
            continue;
          }
          await this.process(queue.splice(0, INGEST_BATCH), false);
        }
        await receiving;
      } catch (e) {
        messages?.stop();
        if (this.stopped) break;
        this.log.warn({ err: String(e) }, "consuming failed; retrying");
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** Reads the registered key of every job in the batch that the ledger does not know yet. */
  private async resolveKeys(batch: JsMsg[]): Promise<void> {
    if (!this.jobKeys) return;
    const jobs = new Set<string>();
    for (const m of batch) {
      const job = jobOfSubject(m.subject);
      if (job && !this.state.jobs.has(job) && !this.registered.has(job)) jobs.add(job);
    }
    for (const job of jobs) {
      const { namespace, name } = parseJobRef(job);
      const e = await this.jobKeys.get(jobKeyName(namespace, name));
      if (!e || e.operation !== "PUT") continue;
      try {
        const rec = JSON.parse(Buffer.from(e.value).toString("utf8")) as JobKeyRecord;
        if (typeof rec.publicKey === "string") this.registered.set(job, rec.publicKey);
      } catch {
        this.log.warn({ job }, "RFT_JOB_KEYS entry is not JSON; the job stays unregistered");
      }
    }
  }

  private async process(batch: JsMsg[], replay: boolean): Promise<void> {
    await this.resolveKeys(batch);
    const prepared = await prepareBatch(
      this.state,
      batch.map((m) => ({ subject: m.subject, data: m.data })),
    );
    for (const p of prepared) for (const o of this.state.ingest(p)) this.count(o, replay);
    // AckPolicy.All: acknowledging the batch's last message acknowledges the whole batch, once it is decided.
    if (replay || batch.length === 0) return;
    this.lastAcked = batch[batch.length - 1]!;
    this.lastAcked.ack();
  }

  private count(o: IngestOutcome, replay: boolean): void {
    if (o.status === "accepted") {
      if (!replay) {
        const j = this.state.jobs.get(o.job)!;
        this.ingested.inc({ type: j.events[o.seq]!.type });
      }
    } else if (o.status === "duplicate") {
      if (!replay) this.duplicates.inc();
    } else if (o.status === "rejected") {
      if (!replay) this.failures.inc({ reason: o.code });
      this.log.warn({ job: o.job, seq: o.seq, code: o.code, reason: o.reason, replay }, "event rejected");
    }
  }

  /** Signs a head for every job whose log grew since its last head, and stores it in the KV bucket. */
  async signHeads(): Promise<void> {
    for (const j of this.state.jobs.values()) {
      if (j.head && j.head.size === j.log.size) continue;
      await this.signHead(j);
    }
  }

  private async signHead(j: JobLog): Promise<SignedTreeHead> {
    const head = signTreeHead(
      { log: j.job, size: j.log.size, root: j.log.root(), timestamp: Math.max(Date.now(), j.head?.timestamp ?? 0) },
      this.opts.key,
    );
    if (j.head) {
      const err = headProgressionError(j.head, head, j.log.consistencyProof(j.head.size, head.size));
      if (err) throw new Error(`refusing to sign an inconsistent head for ${j.job}: ${err}`);
    }
    await this.kv.put(headKey(j.job), JSON.stringify(head));
    j.head = head;
    return head;
  }

  // ---------------------------------------------------------------- HTTP audit API
  private async startHttp(): Promise<void> {
    this.http = createServer((req, res) => {
      this.route(req, res).catch((e) => send(res, 500, { error: String((e as Error).message ?? e) }));
    });
    await new Promise<void>((resolve) => this.http.listen(this.opts.port ?? 0, this.opts.host ?? "127.0.0.1", resolve));
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const p = url.pathname;
    if (req.method !== "GET") return send(res, 405, { error: "GET only" });
    if (p === "/healthz") return send(res, 200, { ok: true });
    if (p === "/metrics") {
      res.writeHead(200, { "content-type": this.metrics.contentType });
      res.end(await this.metrics.metrics());
      return;
    }
    if (this.opts.apiToken !== undefined && !bearerMatches(req.headers.authorization, this.opts.apiToken)) {
      res.setHeader("www-authenticate", 'Bearer realm="rft-ledger"');
      return send(res, 401, {
        error:
          req.headers.authorization === undefined
            ? "authentication required: send Authorization: Bearer <token> (the ledger's --token-file; in the chart, the Secret <release>-rft-operator-ledger-token)"
            : "wrong bearer token",
      });
    }
    if (p === "/v1/key") return send(res, 200, { publicKey: this.ledgerKeyB64 });
    if (p === "/v1/jobs") {
      return send(res, 200, {
        jobs: [...this.state.jobs.values()].map((j) => ({ job: j.job, size: j.log.size, head: j.head })),
      });
    }
    const m = /^\/v1\/jobs\/([^/]+)\/([^/]+)\/(events|inclusion|consistency|head|bundle|report)$/.exec(p);
    if (!m) return send(res, 404, { error: "no such endpoint" });
    const job = `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`;
    const j = this.state.jobs.get(job);
    if (!j) return send(res, 404, { error: `no job ${job}` });
    try {
      await this.jobEndpoint(m[3] as JobEndpoint, j, url, res);
    } catch (e) {
      if (e instanceof HttpError) return send(res, e.status, { error: e.message });
      throw e;
    }
  }

  /**
   * Acks are fire-and-forget: waits (up to 5 s) until the durable consumer's ack floor covers the last message
   * acknowledged, so once stop() returns the next start rebuilds exactly what was decided and nothing decided is
   * delivered again.
   */
  private async ackFloorReached(): Promise<void> {
    const last = this.lastAcked?.seq;
    if (last === undefined || this.nc.isClosed()) return;
    const jsm = await this.nc.jetstreamManager();
    const durable = this.opts.durable ?? "rft-ledger";
    const end = Date.now() + 5000;
    while ((await jsm.consumers.info(LEDGER_STREAM, durable)).ack_floor.stream_seq < last && Date.now() < end)
      await new Promise((r) => setTimeout(r, 20));
  }

  /** `/v1/jobs/<ns>/<name>/<endpoint>`: the job's events, proofs, head, bundle or report. */
  private async jobEndpoint(endpoint: JobEndpoint, j: JobLog, url: URL, res: ServerResponse): Promise<void> {
    const job = j.job;
    const int = (name: string, dflt?: number) => queryInt(url, name, dflt);
    switch (endpoint) {
      case "events": {
        const from = int("from", 0);
        const limit = Math.min(int("limit", 1000), 10_000);
        const events = j.events.slice(from, from + limit);
        return send(res, 200, {
          job,
          from,
          events,
          next: from + events.length < j.events.length ? from + events.length : null,
        });
      }
      case "inclusion": {
        const seq = int("seq");
        const size = int("size", j.head?.size ?? j.log.size);
        if (size > j.log.size || seq >= size)
          throw new HttpError(400, `seq ${seq} is not in a tree of size ${size} (log size ${j.log.size})`);
        return send(res, 200, {
          job,
          seq,
          size,
          leafHash: j.log.leaves[seq]!.toString("hex"),
          root: j.log.root(size).toString("hex"),
          proof: j.log.inclusionProof(seq, size).map((b) => b.toString("hex")),
        });
      }
      case "consistency": {
        const from = int("from");
        const to = int("to", j.head?.size ?? j.log.size);
        if (to > j.log.size || from > to) throw new HttpError(400, `need 0 ≤ from ≤ to ≤ ${j.log.size}`);
        return send(res, 200, {
          job,
          from,
          to,
          root1: j.log.root(from).toString("hex"),
          root2: j.log.root(to).toString("hex"),
          proof: j.log.consistencyProof(from, to).map((b) => b.toString("hex")),
        });
      }
      case "head":
        return send(res, 200, j.head ?? (await this.signHead(j)));
      case "bundle":
        return this.sendBundle(j, url, res);
      case "report":
        return this.sendReport(j, url, res);
    }
  }

  /** The head covering the whole log: the last signed one, or a fresh one when the log grew since. */
  private async currentHead(j: JobLog): Promise<SignedTreeHead> {
    return j.head && j.head.size === j.log.size ? j.head : await this.signHead(j);
  }

  private async sendBundle(j: JobLog, url: URL, res: ServerResponse): Promise<void> {
    const head = await this.currentHead(j);
    const bundle = assembleBundle(j.events.slice(0, head.size), head, this.ledgerKeyB64, head.root);
    const format = url.searchParams.get("format") ?? "json";
    if (format !== "json" && format !== "jsonl") throw new HttpError(400, "format must be json or jsonl");
    // Either form is streamed (ledger/bundle-file.ts): no single string of the whole bundle is ever built.
    res.writeHead(200, { "content-type": format === "jsonl" ? "application/x-ndjson" : "application/json" });
    try {
      await writeLines(res, format === "jsonl" ? bundleJsonlLines(bundle) : bundleJsonParts(bundle));
      res.end();
    } catch {
      res.destroy(); // the client went away mid-stream
    }
  }

  /** The auditor's report of the bundle the service would export now: every check re-run, then the page. */
  private async sendReport(j: JobLog, url: URL, res: ServerResponse): Promise<void> {
    const format = url.searchParams.get("format") ?? "html";
    if (format !== "html" && format !== "md") throw new HttpError(400, "format must be html or md");
    const head = await this.currentHead(j);
    const events = j.events.slice(0, head.size);
    const report = await verifyBundleAsync(assembleBundle(events, head, this.ledgerKeyB64, head.root));
    const b = new SummaryBuilder({ merkle: false });
    for (const ev of events) b.add(ev);
    const ctx = {
      generatedAt: new Date().toISOString(),
      ran: { model: false, dataset: false, modelSignature: false, provenance: false },
    };
    const summary = b.finish(head.root);
    res.writeHead(200, {
      "content-type": format === "html" ? "text/html; charset=utf-8" : "text/markdown; charset=utf-8",
      "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    });
    res.end(format === "html" ? reportHtml(summary, report, ctx) : reportMarkdown(summary, report, ctx));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.fetching?.stop();
    await this.loop?.catch(() => {});
    await this.ackFloorReached().catch(() => {});
    await new Promise<void>((r) => this.http.close(() => r()));
    this.http.closeAllConnections?.();
    if (!this.nc.isClosed()) await this.nc.drain().catch(() => this.nc.close());
  }
}

type JobEndpoint = "events" | "inclusion" | "consistency" | "head" | "bundle" | "report";

/** A non-negative integer query parameter (`dflt` when absent; required when there is none). */
function queryInt(url: URL, name: string, dflt?: number): number {
  const v = url.searchParams.get(name);
  if (v === null) {
    if (dflt === undefined) throw new HttpError(400, `query parameter ${name} is required`);
    return dflt;
  }
  if (!/^\d+$/.test(v)) throw new HttpError(400, `query parameter ${name} must be a non-negative integer`);
  return Number(v);
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** `Authorization: Bearer <token>` against the configured token, in constant time (digests of equal length). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? "");
  const digest = (v: string) => createHash("sha256").update(v).digest();
  // Always compare, so a missing header takes as long as a wrong one.
  const ok = timingSafeEqual(digest(m?.[1] ?? ""), digest(token));
  return ok && m !== null && token.length > 0;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
