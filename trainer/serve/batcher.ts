/**
 * Request batching: samples from concurrent requests are queued and generated together, so they share
 * forward passes. While one batch runs, new samples wait; the next batch takes everything queued (up to
 * `maxBatch`). One batch at a time: the model is a single compute resource.
 */
import type { Model } from "../model/model.js";
import { type Completion, generate, type SampleRequest } from "../sampling/generate.js";

interface Pending {
  req: SampleRequest;
  onText?: (text: string) => void;
  resolve: (c: Completion) => void;
  reject: (e: Error) => void;
}

export class Batcher {
  private queue: Pending[] = [];
  private running = false;
  /** Sizes of the batches run so far (observability and tests). */
  readonly batchSizes: number[] = [];
  /** Samples stopped early because their client hung up. */
  cancelled = 0;

  constructor(
    private readonly model: Model,
    private readonly maxBatch = 64,
    private readonly gatherMs = 2,
  ) {}

  /** Samples queued for the next batch (received, not yet generating). */
  get pending(): number {
    return this.queue.length;
  }

  /** A batch is being generated now. */
  get generating(): boolean {
    return this.inBatch;
  }

  private inBatch = false;

  submit(req: SampleRequest, onText?: (text: string) => void): Promise<Completion> {
    return new Promise((resolve, reject) => {
      this.queue.push({ req, ...(onText && { onText }), resolve, reject });
      if (!this.running) {
        this.running = true;
        // A short gathering window lets requests that arrive together share the first batch.
        setTimeout(() => void this.drain(), this.gatherMs);
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.batchSizes.push(batch.length);
      this.inBatch = true;
      try {
        const out = await generate(
          this.model,
          batch.map((p) => p.req),
          { onTokens: (i, text) => batch[i]!.onText?.(text) },
        );
        out.forEach((c, i) => {
          if (c.cancelled) this.cancelled++;
          batch[i]!.resolve(c);
        });
      } catch (e) {
        for (const p of batch) p.reject(e as Error);
      } finally {
        this.inBatch = false;
      }
    }
    this.running = false;
  }
}
