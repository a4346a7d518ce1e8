/**
 * How the trainer grades a step's samples: in process (the grader engine itself, for `rft run`), or through
 * the grader sidecar's gRPC GradeBatch stream (`--grader-addr`, what pods do). Both return OpenAI's
 * RunGraderResponse per sample, in input order.
 */
import * as grpc from "@grpc/grpc-js";
import { GraderEngine, type GraderEngineOptions, type SampleInput } from "../../grader-sidecar/src/client.js";
import type { GradeBatchResponse__Output } from "../../proto/gen/rft/grader/v1/GradeBatchResponse.js";
import type { RunGraderResponse } from "../../proto/graders.js";
import { loadGraderProto } from "../../proto/grpc.js";

export interface GradeInput {
  item: Record<string, unknown>;
  sample: SampleInput;
}

export interface StepGrader {
  grade(inputs: GradeInput[]): Promise<RunGraderResponse[]>;
  close(): Promise<void>;
}

export async function inProcessGrader(grader: unknown, opts: GraderEngineOptions = {}): Promise<StepGrader> {
  const engine = new GraderEngine(opts);
  const compiled = await engine.compile(grader);
  return {
    grade: (inputs) => Promise.all(inputs.map((x) => engine.grade(compiled, x.item, x.sample))),
    close: () => engine.close(),
  };
}

export async function grpcGrader(addr: string, grader: unknown, deadlineMs = 30_000): Promise<StepGrader> {
  const proto = loadGraderProto();
  const client = new proto.rft.grader.v1.GraderService(addr, grpc.credentials.createInsecure());
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + deadlineMs, (err) =>
      err ? reject(new Error(`grader sidecar at ${addr} is not reachable: ${err.message}`)) : resolve(),
    ),
  );
  const graderJson = JSON.stringify(grader);
  const check = await new Promise<{ valid: boolean; error: string }>((resolve, reject) =>
    client.Validate({ grader_json: graderJson }, (e, r) =>
      e ? reject(e) : resolve(r as { valid: boolean; error: string }),
    ),
  );
  if (!check.valid) throw new Error(`the grader sidecar rejects the grader: ${check.error}`);
  return {
    grade(inputs) {
      return new Promise((resolve, reject) => {
        const out: RunGraderResponse[] = new Array(inputs.length);
        let received = 0;
        const call = client.GradeBatch();
        call.on("data", (m: GradeBatchResponse__Output) => {
          for (const r of m.results) {
            out[Number(r.id)] = JSON.parse(r.response_json) as RunGraderResponse;
            received++;
          }
        });
        call.on("error", (e) => reject(new Error(`grading through ${addr} failed: ${e.message}`)));
        call.on("end", () =>
          received === inputs.length
            ? resolve(out)
            : reject(new Error(`grader sidecar returned ${received} of ${inputs.length} results`)),
        );
        const chunk = 256;
        for (let i = 0; i < inputs.length; i += chunk) {
          call.write({
            grader_json: i === 0 ? graderJson : "",
            items: inputs.slice(i, i + chunk).map((x, k) => ({
              id: i + k,
              item_json: JSON.stringify(x.item),
              sample: {
                output_text: x.sample.output_text,
                output_tools_json: x.sample.output_tools ? JSON.stringify(x.sample.output_tools) : "",
                choices_json: x.sample.choices ? JSON.stringify(x.sample.choices) : "",
                json_required: Boolean(x.sample.json_required),
              },
            })),
          });
        }
        call.end();
      });
    },
    async close() {
      client.close();
    },
  };
}
