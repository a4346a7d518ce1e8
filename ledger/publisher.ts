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
 *   The spool is fsynced once per step (sync(), as the file sink): a step's events survive a power loss.
 *   With NATS credentials (`auth`), the publisher touches no JetStream API beyond reading its own subject's
 *   last message: the ledger service owns the stream.
 */
import {
  appendFileSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { dirname } from "node:path";
import {
  type ConnectionOptions,
  connect,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
} from "nats";
import pino from "pino";
import { LEDGER_STREAM, type LedgerEvent, ledgerSubject } from "../proto/ledger-events.js";
import { checkSignature, encodeEvent, schemaErrors } from "./chain.js";
import { ensureLedgerStream } from "./nats.js";
import type { EventSink } from "./writer.js";

const log = pino({ name: "ledger-publisher", level: process.env.RFT_LOG_LEVEL ?? "info" });

/** A write to a ledger file failed (a full disk, an I/O error): the message names the file. */
export class LedgerWriteError extends Error {}

/** The one-line reason of a failed write of `path` ("no space left on device (ENOSPC)" for a full disk). */
export function writeFailure(path: string, err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === "ENOSPC") return `${path}: no space left on device (ENOSPC)`;
  if (e?.code === "EDQUOT") return `${path}: disk quota exceeded (EDQUOT)`;
  return `${path}: ${e?.code ? `${e.code}: ` : ""}${(e?.message ?? String(err)).replace(/^[A-Z]+: /, "")}`;
}

/**
 * Appends events to a JSONL file. `write` hands the line to the kernel at once (a crash of the process loses
 * nothing written); `sync` fsyncs the file, so that what was written survives a crash of the machine too. The
 * trainer syncs once per step (the step's events) and before every checkpoint, so a checkpoint never refers to
 * an event that is not on disk.
 */
export class FileSink implements EventSink {
  private fd: number | null = null;
  private unsynced = false;
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }
  write(event: LedgerEvent): void {
    try {
      this.fd ??= openSync(this.path, "a");
      writeFileSync(this.fd, `${encodeEvent(event).bytes.toString("utf8")}\n`);
    } catch (e) {
      throw new LedgerWriteError(`cannot append to the ledger ${writeFailure(this.path, e)}`, { cause: e });
    }
    this.unsynced = true;
  }

  /** Makes every event written so far durable (fsync). */
  sync(): void {
    if (!this.unsynced || this.fd === null) return;
    try {
      fsyncSync(this.fd);
    } catch (e) {
      throw new LedgerWriteError(`cannot sync the ledger ${writeFailure(this.path, e)}`, { cause: e });
    }
    this.unsynced = false;
  }

  close(): void {
    if (this.fd === null) return;
    try {
      this.sync();
    } finally {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  /** The event at `seq` (the file holds one job's chain, in order), or null when the file is shorter. */
  async eventAt(job: string, seq: number): Promise<LedgerEvent | null> {
    const ev = readEventsFile(this.path)[seq];
    return ev && ev.seq === seq && ev.job === job ? ev : null;
  }

  /**
   * The file's last event. A torn last line (a crash in the middle of a write: never durably written) is cut
   * off first, so that the next write starts on a line of its own. Throws when the last event is not one of
   * `job` signed with `signer` (another job's ledger, or a damaged file).
   */
  async lastEvent(job: string, signer: string): Promise<LedgerEvent | null> {
    if (!existsSync(this.path)) return null;
    const text = readFileSync(this.path);
    let end = text.length;
    if (end > 0 && text[end - 1] !== 0x0a) {
      end = text.lastIndexOf(0x0a) + 1;
      log.warn({ path: this.path, bytes: text.length - end }, "cutting off a torn last line");
      truncateSync(this.path, end);
    }
    const lines = text.subarray(0, end).toString("utf8").split("\n");
    let line = "";
    for (let i = lines.length - 1; i >= 0 && line === ""; i--) line = lines[i]!.trim();
    if (line === "") return null;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new Error(`${this.path}: the last line is not JSON (${(e as Error).message})`, { cause: e });
    }
    const why = eventOfJobError(value, job, signer);
    if (why) throw new Error(`${this.path}: the last event is not the ledger of ${job}: ${why}`);
    return value as LedgerEvent;
  }
}

/** Why `value` is not a well-formed event of `job` signed with `signer` (raw base64 key); null when it is. */
export function eventOfJobError(value: unknown, job: string, signer: string): string | null {
  const bad = schemaErrors(value);
  if (bad.length > 0) return `schema: ${bad.map((b) => `${b.field}: ${b.reason}`).join("; ")}`;
  const ev = value as LedgerEvent;
  if (ev.job !== job) return `it is an event of job ${ev.job}`;
  const sig = checkSignature(encodeEvent(ev), signer);
  return sig ? `${sig.field}: ${sig.reason}` : null;
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
  /**
   * NATS credentials (proto/nats-auth.ts natsAuthOptions): the publisher then never creates the stream (a
   * trainer's user may not; the ledger service does).
   */
  auth?: Partial<ConnectionOptions>;
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
  private spoolFd?: number;
  private dirty = false;

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
      ...opts.auth,
    });
    if (!opts.auth)
      await nc
        .jetstreamManager()
        .then((jsm) => ensureLedgerStream(jsm))
        .catch((e) => log.warn({ err: String(e) }, "cannot ensure stream yet"));
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
    this.spoolFd ??= openSync(this.opts.spoolPath, "a");
    appendFileSync(this.spoolFd, `${enc.bytes.toString("utf8")}\n`);
    this.dirty = true;
    this.queue.push({ subject: ledgerSubject(event.job), data: enc.bytes, id: enc.hash });
    this.kick();
  }

  private enqueue(event: LedgerEvent): void {
    const enc = encodeEvent(event);
    this.queue.push({ subject: ledgerSubject(event.job), data: enc.bytes, id: enc.hash });
  }

  /** Makes every event spooled so far durable (fsync; the trainer calls it once per step). */
  sync(): void {
    if (this.spoolFd === undefined || !this.dirty) return;
    fsyncSync(this.spoolFd);
    this.dirty = false;
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

  /**
   * The last event of `job` written: the last one still spooled (this process's, or replayed from a previous
   * one's spool), else the stream's last message on the job's subject (JetStream "last by subject"). A last
   * message that is not an event of `job` signed with `signer` (someone else published on the subject) is
   * skipped by scanning the subject for the highest-seq event that is.
   */
  async lastEvent(job: string, signer: string): Promise<LedgerEvent | null> {
    const subject = ledgerSubject(job);
    const parse = (data: Uint8Array): LedgerEvent | null => {
      try {
        const v = JSON.parse(Buffer.from(data).toString("utf8")) as unknown;
        return eventOfJobError(v, job, signer) === null ? (v as LedgerEvent) : null;
      } catch {
        return null;
      }
    };
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const m = this.queue[i]!;
      if (m.subject !== subject) continue;
      const ev = parse(m.data);
      if (ev) return ev;
    }
    // Direct get by subject: `$JS.API.DIRECT.GET.RFT_LEDGER.<subject>`, which a trainer's user may call for
    // its own subject only (no API check: that needs $JS.API.INFO, which it may not call).
    const jsm = (await this.nc.jetstreamManager({ checkAPI: false })) as JetStreamManager & {
      direct: { getMessage(stream: string, q: { last_by_subj: string }): Promise<{ seq: number; data: Uint8Array }> };
    };
    let last;
    try {
      last = await jsm.direct.getMessage(LEDGER_STREAM, { last_by_subj: subject });
    } catch (e) {
      if ((e as { code?: string }).code === "404" || /no message found/i.test(String(e))) return null;
      throw e;
    }
    const ev = parse(last.data);
    if (ev) return ev;
    log.warn({ subject, streamSeq: last.seq }, "the subject's last message is not the job's; scanning the subject");
    let best: LedgerEvent | null = null;
    const oc = await this.js.consumers.get(LEDGER_STREAM, { filterSubjects: subject });
    const msgs = await oc.consume();
    for await (const m of msgs) {
      const e = parse(m.data);
      if (e && (!best || e.seq > best.seq)) best = e;
      if (m.info.pending === 0) break;
    }
    await oc.delete().catch(() => {});
    return best;
  }

  /** Stops publishing; unacknowledged events stay in the spool for the next publisher. */
  async close(): Promise<void> {
    this.closed = true;
    this.sync();
    if (this.spoolFd !== undefined) closeSync(this.spoolFd);
    this.spoolFd = undefined;
    await this.nc.close();
  }
}
