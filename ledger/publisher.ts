/**
 * Event sinks for the trainer's EventWriter.
 *
 * - FileSink: a local append-only JSONL file (`rft run` without NATS). One canonical-JSON event per line: the
 *   same bytes a NATS message carries, so the file can be exported (`rft audit export DIR`) or replayed.
 * - NatsPublisher: JetStream publish with ack and retry. Every event is first appended to a local spool file
 *   (write-ahead), then published in order; the spool is truncated once everything in it is acknowledged.
 *   When NATS is down, events accumulate in the spool and are replayed on reconnect — also after a crash, since
 *   a new publisher starts by loading the spool. Duplicates from retries carry the same Nats-Msg-Id (the event
 *   hash), so JetStream drops them within its duplicate window and the ledger drops any later one.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, truncateSync } from "node:fs";
import { dirname } from "node:path";
import { connect, type JetStreamClient, type NatsConnection } from "nats";
import pino from "pino";
import { type LedgerEvent, ledgerSubject } from "../proto/ledger-events.js";
import { encodeEvent } from "./chain.js";
import { ensureLedgerStream } from "./nats.js";
import type { EventSink } from "./writer.js";

const log = pino({ name: "ledger-publisher", level: process.env.RFT_LOG_LEVEL ?? "info" });

/** Appends events to a JSONL file, synchronously (an event is on disk when write returns). */
export class FileSink implements EventSink {
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }
  write(event: LedgerEvent): void {
    appendFileSync(this.path, `${encodeEvent(event).bytes.toString("utf8")}\n`);
  }
}

/**
 * Reads a JSONL event file (a FileSink's output, or a spool); a torn last line from a crash is ignored. Read as
 * bytes and decoded line by line, so a long job's file may exceed V8's string limit (~512 MB).
 */
export function readEventsFile(path: string): LedgerEvent[] {
  if (!existsSync(path)) return [];
  const buf = readFileSync(path);
  const out: LedgerEvent[] = [];
  let start = 0;
  for (let lineNo = 1; start < buf.length; lineNo++) {
    let nl = buf.indexOf(10, start);
    if (nl < 0) nl = buf.length;
    const line = buf.toString("utf8", start, nl);
    start = nl + 1;
    if (line.trim() === "") continue;
    try {
      out.push(JSON.parse(line) as LedgerEvent);
    } catch (e) {
      if (start >= buf.length || buf.toString("utf8", start).trim() === "") break; // torn tail
      throw new Error(`${path}:${lineNo}: not JSON (${(e as Error).message})`, { cause: e });
    }
  }
  return out;
}

export interface NatsPublisherOptions {
  servers: string | string[];
  /** Write-ahead spool file (JSONL). */
  spoolPath: string;
  /** Events per publish round (default 256). */
  window?: number;
  /** PubAck timeout in ms (default 5000). */
  ackTimeoutMs?: number;
  /** Connection name shown by the server. */
  name?: string;
}

export class NatsPublisher implements EventSink {
  private queue: { subject: string; data: Uint8Array; id: string }[] = [];
  private pumping = false;
  private closed = false;
  private waiters: (() => void)[] = [];
  private backoffMs = 50;
  /** Events acknowledged by JetStream since start. */
  acked = 0;
  /** Publish rounds that failed and were retried. */
  retries = 0;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly opts: NatsPublisherOptions,
  ) {}

  static async connect(opts: NatsPublisherOptions): Promise<NatsPublisher> {
    const nc = await connect({
      servers: opts.servers,
      name: opts.name ?? "rft-ledger-publisher",
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      waitOnFirstConnect: true,
    });
    await ensureLedgerStream(await nc.jetstreamManager()).catch((e) =>
      log.warn({ err: String(e) }, "cannot ensure stream yet"),
    );
    const p = new NatsPublisher(nc, nc.jetstream(), opts);
    mkdirSync(dirname(opts.spoolPath), { recursive: true });
    // Events a previous process spooled but never got acknowledged go first.
    for (const ev of readEventsFile(opts.spoolPath)) p.enqueue(ev);
    if (p.queue.length > 0) log.info({ events: p.queue.length }, "replaying spooled events");
    void (async () => {
      for await (const s of nc.status()) if (s.type === "reconnect") p.kick();
    })();
    p.kick();
    return p;
  }

  /** Spools the event to disk and queues it for publishing (returns at once; see flush). */
  write(event: LedgerEvent): void {
    if (this.closed) throw new Error("publisher is closed");
    const enc = encodeEvent(event);
    appendFileSync(this.opts.spoolPath, `${enc.bytes.toString("utf8")}\n`);
    this.queue.push({ subject: ledgerSubject(event.job), data: enc.bytes, id: enc.hash });
    this.kick();
  }

  private enqueue(event: LedgerEvent): void {
    const enc = encodeEvent(event);
    this.queue.push({ subject: ledgerSubject(event.job), data: enc.bytes, id: enc.hash });
  }

  /** Events not yet acknowledged. */
  get backlog(): number {
    return this.queue.length;
  }

  /** Resolves when every event written so far is acknowledged by JetStream. */
  flush(): Promise<void> {
    if (this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private kick(): void {
    this.backoffMs = 50;
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const batch = this.queue.slice(0, this.opts.window ?? 256);
        try {
          // In order on one connection; a failure retries the whole round (duplicates are dropped by msgID).
          await Promise.all(
            batch.map((m) =>
              this.js.publish(m.subject, m.data, { msgID: m.id, timeout: this.opts.ackTimeoutMs ?? 5000 }),
            ),
          );
          this.queue.splice(0, batch.length);
          this.acked += batch.length;
          this.backoffMs = 50;
          if (this.queue.length === 0) {
            truncateSync(this.opts.spoolPath, 0);
            for (const w of this.waiters.splice(0)) w();
          }
        } catch (e) {
          this.retries++;
          log.warn({ err: String(e), backlog: this.queue.length }, "publish failed; events stay spooled, retrying");
          await new Promise((r) => setTimeout(r, this.backoffMs));
          this.backoffMs = Math.min(this.backoffMs * 2, 2000);
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Stops publishing; unacknowledged events stay in the spool for the next publisher. */
  async close(): Promise<void> {
    this.closed = true;
    await this.nc.close();
  }
}
