/**
 * Validation results back to `rft api --cluster` (its eval link): with `RFT_VALIDATION_URL` (the API sets it
 * on the FineTuneJobs it creates: `<api>/internal/validations/<job id>`) rank 0 PUTs each validation file the
 * loop wrote (`<out>/validation/step-N.jsonl`, proto/validation.ts) to `<url>/step-N.jsonl` with the job's
 * dataset token, once. Uploads run one at a time, off the training path: a step never waits for the API. A
 * failed upload is logged and tried again at the next step and at the end; a restarted pod sends what the API
 * has not acknowledged yet (the acknowledged steps are listed in `<out>/validation/.uploaded`; the API keeps the
 * first copy of a step, so a repeat does no harm). A refusal (4xx) is logged and not sent again.
 */
import { appendFileSync, existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../../proto/log.js";
import { validationFileName } from "../../proto/validation.js";

const STEP_FILE = /^step-(\d+)\.jsonl$/;

export class ValidationUploader {
  private readonly done = new Set<number>();
  private running: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly o: { url: string; token: string | undefined; dir: string; log: Logger; timeoutMs?: number },
  ) {
    const marks = join(o.dir, ".uploaded");
    if (existsSync(marks))
      for (const l of readFileSync(marks, "utf8").split("\n")) if (/^\d+$/.test(l)) this.done.add(Number(l));
  }

  /** The step files not acknowledged yet, in step order. */
  pending(): number[] {
    if (!existsSync(this.o.dir)) return [];
    return readdirSync(this.o.dir)
      .flatMap((n) => {
        const m = STEP_FILE.exec(n);
        return m ? [Number(m[1])] : [];
      })
      .filter((s) => !this.done.has(s))
      .sort((a, b) => a - b);
  }

  /** Starts sending what is pending (returns at once; a call during an upload makes it look again after). */
  sync(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.sendAll().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.sync();
      }
    });
  }

  /** Sends what is pending and waits for it (at most `ms`): the run's end. */
  async flush(ms = 60_000): Promise<void> {
    this.sync();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((r) => (timer = setTimeout(r, ms)));
    while (this.running) await Promise.race([this.running, deadline]).then(() => undefined);
    clearTimeout(timer);
    const left = this.pending();
    if (left.length)
      this.o.log.warn({ steps: left }, "validation results not accepted by the API; a restarted trainer sends them");
  }

  private async sendAll(): Promise<void> {
    for (const step of this.pending()) {
      try {
        await this.send(step);
      } catch (e) {
        this.o.log.warn({ step, err: e instanceof Error ? e.message : String(e) }, "cannot upload validation results");
        return; // next sync tries again
      }
    }
  }

  private async send(step: number): Promise<void> {
    const body = readFileSync(join(this.o.dir, validationFileName(step)));
    const res = await fetch(`${this.o.url}/${validationFileName(step)}`, {
      method: "PUT",
      headers: {
        "content-type": "application/jsonl",
        ...(this.o.token ? { authorization: `Bearer ${this.o.token}` } : {}),
      },
      body,
      signal: AbortSignal.timeout(this.o.timeoutMs ?? 60_000),
    });
    const text = await res.text().catch(() => "");
    if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
      // Refused (a wrong token, a file the API will not take): sending it again would not help.
      this.o.log.error({ step, status: res.status, answer: text.slice(0, 300) }, "the API refused validation results");
      this.done.add(step);
      return;
    }
    if (!res.ok) throw new Error(`${this.o.url}/${validationFileName(step)}: HTTP ${res.status} ${text.slice(0, 300)}`);
    this.done.add(step);
    appendFileSync(join(this.o.dir, ".uploaded"), `${step}\n`);
  }
}
