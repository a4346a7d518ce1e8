/**
 * A de-duplicating work queue modelled on client-go's: a key is queued at most once, never processed by two
 * workers at once (a key added while processing is re-queued when it finishes), N workers, per-item
 * exponential backoff on failure combined with a global token bucket, and requeue-after.
 */

export interface QueueMetrics {
  adds(): void;
  depth(n: number): void;
  queueDuration(s: number): void;
  workDuration(s: number): void;
  retries(): void;
  unfinished(n: number): void;
}

export interface WorkQueueOptions {
  workers: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Global token bucket: sustained rate and burst. */
  qps?: number;
  burst?: number;
  metrics?: QueueMetrics;
}

/** What a handler answers: done, or look again after a delay. */
export type Result = { requeueAfterMs?: number } | void;

export class WorkQueue {
  private queue: string[] = [];
  private queued = new Set<string>();
  private processing = new Set<string>();
  private dirtyWhileProcessing = new Set<string>();
  private failures = new Map<string, number>();
  private delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private addedAt = new Map<string, number>();
  private wake: (() => void)[] = [];
  private tokens: number;
  private lastRefill = Date.now();
  private stopped = false;
  private running: Promise<void>[] = [];
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly handler: (key: string) => Promise<Result>,
    private readonly o: WorkQueueOptions,
  ) {
    this.tokens = o.burst ?? 100;
  }

  get length(): number {
    return this.queue.length;
  }

  add(key: string): void {
    if (this.stopped) return;
    this.o.metrics?.adds();
    if (this.processing.has(key)) {
      this.dirtyWhileProcessing.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.addedAt.set(key, Date.now());
    this.o.metrics?.depth(this.queue.length);
    this.wake.shift()?.();
  }

  /** Adds after `ms`; an earlier pending add-after for the key wins. */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) return this.add(key);
    const at = Date.now() + ms;
    const prev = this.delayed.get(key);
    if (prev && prev.at <= at) return;
    if (prev) clearTimeout(prev.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.delayed.set(key, { at, timer });
  }

  private backoff(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const perItem = Math.min((this.o.baseDelayMs ?? 5) * 2 ** n, this.o.maxDelayMs ?? 60_000);
    return perItem;
  }

  /** Token bucket: answers how long to wait before the next item may start. */
  private takeToken(): number {
    const qps = this.o.qps ?? 50;
    const burst = this.o.burst ?? 100;
    const now = Date.now();
    this.tokens = Math.min(burst, this.tokens + ((now - this.lastRefill) / 1000) * qps);
    this.lastRefill = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    const wait = ((1 - this.tokens) / qps) * 1000;
    this.tokens -= 1;
    return wait;
  }

  start(): void {
    for (let i = 0; i < this.o.workers; i++) this.running.push(this.worker());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const d of this.delayed.values()) clearTimeout(d.timer);
    this.delayed.clear();
    for (const w of this.wake.splice(0)) w();
    await Promise.all(this.running);
  }

  /** Resolves when nothing is queued or processing (tests, shutdown). */
  idle(): Promise<void> {
    if (this.queue.length === 0 && this.processing.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private async worker(): Promise<void> {
    while (!this.stopped) {
      const key = this.queue.shift();
      if (key === undefined) {
        await new Promise<void>((r) => this.wake.push(r));
        continue;
      }
      this.queued.delete(key);
      this.processing.add(key);
      this.o.metrics?.depth(this.queue.length);
      this.o.metrics?.unfinished(this.processing.size);
      const wait = this.takeToken();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const added = this.addedAt.get(key) ?? Date.now();
      this.addedAt.delete(key);
      this.o.metrics?.queueDuration((Date.now() - added) / 1000);
      const t0 = Date.now();
      let result: Result = undefined;
      let failed = false;
      try {
        result = await this.handler(key);
      } catch {
        failed = true;
      }
      this.o.metrics?.workDuration((Date.now() - t0) / 1000);
      this.processing.delete(key);
      this.o.metrics?.unfinished(this.processing.size);
      if (failed) {
        this.o.metrics?.retries();
        this.addAfter(key, this.backoff(key));
      } else {
        this.failures.delete(key);
        if (result?.requeueAfterMs !== undefined) this.addAfter(key, result.requeueAfterMs);
      }
      if (this.dirtyWhileProcessing.delete(key)) this.add(key);
      if (this.queue.length === 0 && this.processing.size === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }
}
