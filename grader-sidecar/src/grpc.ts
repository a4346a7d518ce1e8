/**
 * gRPC GraderService (proto/grader.proto) plus the standard grpc.health.v1 service.
 * GradeBatch grades at most `concurrency` samples at once and pauses reading the request stream while that
 * many are in flight, so a fast client is slowed by HTTP/2 flow control instead of filling memory.
 */
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { GradeBatchRequest__Output } from "../../proto/gen/rft/grader/v1/GradeBatchRequest.js";
import type { GradeBatchResponse } from "../../proto/gen/rft/grader/v1/GradeBatchResponse.js";
import type { GradeRequest__Output } from "../../proto/gen/rft/grader/v1/GradeRequest.js";
import type { GradeResponse } from "../../proto/gen/rft/grader/v1/GradeResponse.js";
import type { GradeResult } from "../../proto/gen/rft/grader/v1/GradeResult.js";
import type { GraderServiceHandlers } from "../../proto/gen/rft/grader/v1/GraderService.js";
import type { SampleInput__Output } from "../../proto/gen/rft/grader/v1/SampleInput.js";
import type { ValidateRequest__Output } from "../../proto/gen/rft/grader/v1/ValidateRequest.js";
import type { ValidateResponse } from "../../proto/gen/rft/grader/v1/ValidateResponse.js";
import { loadGraderProto } from "../../proto/grpc.js";
import type { Logger } from "../../proto/log.js";
import { type Compiled, errorFlagsSet, type GraderEngine, GraderValidationError, type SampleInput } from "./engine.js";

export const GRADER_SERVICE_NAME = "rft.grader.v1.GraderService";

class BadRequest extends Error {}
/** A request past one of the service's size limits (gRPC RESOURCE_EXHAUSTED). */
class TooLarge extends Error {}

/** Default limits of the gRPC service (README "Limits"). */
export const GRPC_LIMITS = {
  /** Samples in one GradeBatch message (the trainer sends 256). */
  maxBatchItems: 4096,
  /** Largest request message, bytes (grpc-js answers RESOURCE_EXHAUSTED past it). */
  maxMessageBytes: 16 * 1024 * 1024,
};

function parseJsonObject(text: string, what: string): Record<string, unknown> {
  if (!text) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new BadRequest(`${what} is not valid JSON: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new BadRequest(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

function toSampleInput(s: SampleInput__Output | null, what: string): SampleInput {
  const parseArray = (text: string, field: string) => {
    if (!text) return undefined;
    try {
      const v = JSON.parse(text);
      if (Array.isArray(v)) return v;
    } catch {}
    throw new BadRequest(`${what}.${field} must be a JSON array`);
  };
  return {
    output_text: s?.output_text ?? "",
    output_tools: parseArray(s?.output_tools_json ?? "", "output_tools_json"),
    choices: parseArray(s?.choices_json ?? "", "choices_json"),
    json_required: s?.json_required ?? false,
  };
}

/**
 * Bounded cache of compiled graders keyed by their JSON text (the trainer sends the same grader every time):
 * at most `max` graders and `maxBytes` of key text (a caller sending many distinct 16 MiB graders would
 * otherwise pin gigabytes); least recently used first out.
 */
export class CompileCache {
  private map = new Map<string, Promise<Compiled>>();
  private bytes = 0;
  constructor(
    private engine: GraderEngine,
    private max = 256,
    private maxBytes = 64 * 1024 * 1024,
  ) {}
  get size(): number {
    return this.map.size;
  }
  get keyBytes(): number {
    return this.bytes;
  }
  private drop(json: string) {
    if (this.map.delete(json)) this.bytes -= json.length;
  }
  get(json: string): Promise<Compiled> {
    let p = this.map.get(json);
    if (p) {
      this.map.delete(json);
      this.map.set(json, p);
      return p;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(json);
    } catch (err) {
      return Promise.reject(new GraderValidationError(`not valid JSON: ${(err as Error).message}`, "grader"));
    }
    p = this.engine.compile(raw);
    const mine = p;
    p.catch(() => {
      if (this.map.get(json) === mine) this.drop(json);
    });
    if (json.length > this.maxBytes) return p; // compiled for this call, never kept
    this.map.set(json, p);
    this.bytes += json.length;
    while (this.map.size > this.max || this.bytes > this.maxBytes) this.drop(this.map.keys().next().value!);
    return p;
  }
}

function statusOf(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof TooLarge) return { code: grpc.status.RESOURCE_EXHAUSTED, details: err.message };
  if (err instanceof GraderValidationError || err instanceof BadRequest) {
    return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
  }
  return { code: grpc.status.INTERNAL, details: (err as Error).message ?? String(err) };
}

export interface GrpcOptions {
  engine: GraderEngine;
  logger: Logger;
  /** Samples graded at once per GradeBatch stream (default 64). */
  concurrency?: number;
  /** Samples accepted in one GradeBatch message (default GRPC_LIMITS.maxBatchItems). */
  maxBatchItems?: number;
  /** Largest request message in bytes (default GRPC_LIMITS.maxMessageBytes). */
  maxMessageBytes?: number;
}

export function createGrpcServer(opts: GrpcOptions): { server: grpc.Server; health: HealthImplementation } {
  const { engine, logger } = opts;
  const concurrency = opts.concurrency ?? 64;
  const maxBatchItems = opts.maxBatchItems ?? GRPC_LIMITS.maxBatchItems;
  const cache = new CompileCache(engine);

  const handlers: GraderServiceHandlers = {
    Grade(call: grpc.ServerUnaryCall<GradeRequest__Output, GradeResponse>, cb: grpc.sendUnaryData<GradeResponse>) {
      (async () => {
        const compiled = await cache.get(call.request.grader_json);
        const item = parseJsonObject(call.request.item_json, "item_json");
        const res = await engine.grade(compiled, item, toSampleInput(call.request.sample, "sample"));
        return { reward: res.reward, response_json: JSON.stringify(res) };
      })().then(
        (r) => cb(null, r),
        (err) => cb(statusOf(err)),
      );
    },

    Validate(
      call: grpc.ServerUnaryCall<ValidateRequest__Output, ValidateResponse>,
      cb: grpc.sendUnaryData<ValidateResponse>,
    ) {
      cache.get(call.request.grader_json).then(
        (c) => cb(null, { valid: true, grader_json: JSON.stringify(c.config) }),
        (err) => {
          if (err instanceof GraderValidationError) cb(null, { valid: false, error: err.message, param: err.param });
          else cb(statusOf(err));
        },
      );
    },

    GradeBatch(call: grpc.ServerDuplexStream<GradeBatchRequest__Output, GradeBatchResponse>) {
      let grader: Promise<Compiled> | undefined;
      const queue: { compiled: Compiled; id: number; item: Record<string, unknown>; sample: SampleInput }[] = [];
      let active = 0; // samples being graded now (≤ concurrency)
      let received = 0; // messages read but not yet queued (their grader may still be compiling)
      let ended = false;
      let failed = false;
      let closed = false;
      let chain = Promise.resolve();
      let pending: GradeResult[] = [];
      let flushScheduled = false;

      const flush = () => {
        flushScheduled = false;
        if (pending.length === 0 || failed) return;
        call.write({ results: pending });
        pending = [];
      };
      const fault = (err: unknown) => {
        if (failed) return;
        failed = true;
        queue.length = 0;
        logger.warn({ err: (err as Error).message }, "GradeBatch stream failed");
        call.emit("error", statusOf(err));
      };
      const pump = () => {
        while (active < concurrency && queue.length > 0 && !failed) {
          const job = queue.shift()!;
          active++;
          engine.grade(job.compiled, job.item, job.sample).then((res) => {
            active--;
            pending.push({
              id: job.id,
              reward: res.reward,
              sub_rewards: res.sub_rewards,
              error_flags: errorFlagsSet(res),
              response_json: JSON.stringify(res),
            });
            if (!flushScheduled) {
              flushScheduled = true;
              setImmediate(flush);
            }
            pump();
          }, fault);
        }
        // Back-pressure: read more only while less than one window of samples is waiting.
        if (queue.length < concurrency && call.isPaused() && !failed) call.resume();
        if (ended && received === 0 && active === 0 && queue.length === 0 && !failed && !closed) {
          closed = true;
          flush();
          call.end();
        }
      };

      call.on("data", (msg: GradeBatchRequest__Output) => {
        if (failed) return;
        if (msg.items.length > maxBatchItems) {
          fault(
            new TooLarge(
              `a GradeBatch message has ${msg.items.length} items; the limit is ${maxBatchItems} per message ` +
                `(send more messages; rft grader --max-batch-items)`,
            ),
          );
          return;
        }
        if (msg.grader_json) grader = cache.get(msg.grader_json);
        const g = grader;
        received++;
        if (queue.length + msg.items.length >= concurrency) call.pause();
        // Messages are queued in arrival order even while a new grader compiles.
        chain = chain
          .then(async () => {
            if (!g) throw new BadRequest("the first GradeBatch message must set grader_json");
            const compiled = await g;
            for (const it of msg.items) {
              const item = parseJsonObject(it.item_json, `items[id=${it.id}].item_json`);
              const sample = toSampleInput(it.sample, `items[id=${it.id}].sample`);
              queue.push({ compiled, id: it.id, item, sample });
            }
            received--;
            pump();
          })
          .catch(fault);
      });
      call.on("end", () => {
        ended = true;
        chain.then(pump);
      });
      call.on("error", (err) => logger.debug({ err: err.message }, "GradeBatch client error"));
    },
  };

  const proto = loadGraderProto();
  const server = new grpc.Server({
    "grpc.max_receive_message_length": opts.maxMessageBytes ?? GRPC_LIMITS.maxMessageBytes,
  });
  server.addService(proto.rft.grader.v1.GraderService.service, handlers);
  const health = new HealthImplementation({ "": "SERVING", [GRADER_SERVICE_NAME]: "SERVING" });
  health.addToServer(server);
  return { server, health };
}
