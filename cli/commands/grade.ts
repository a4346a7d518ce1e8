/** `rft grade`: run one grader on one sample, in process, and print OpenAI's RunGraderResponse. */
import { existsSync, readFileSync } from "node:fs";
import type { Command } from "commander";
import { dirname, resolve } from "node:path";
import { GraderEngine, GraderValidationError } from "../../grader-sidecar/src/engine.js";
import {
  EndpointConfigError,
  endpointFromEnv,
  judgeEndpoints,
  type ModelEndpoint,
} from "../../grader-sidecar/src/model-client.js";
import { parseToolCallList, type ToolCall, ToolsError } from "../../trainer/sampling/tools.js";

class UsageError extends Error {}

/** Inline JSON (starts with { or [) or a path to a JSON file. */
function jsonArg(value: string, flag: string): unknown {
  const inline = /^\s*[[{]/.test(value);
  if (!inline && !existsSync(value)) throw new UsageError(`${flag}: no such file "${value}" (and not inline JSON)`);
  const text = inline ? value : readFileSync(value, "utf8");
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${flag}: ${inline ? "inline JSON" : value} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Sample text, or @FILE for a file's contents. */
function sampleArg(value: string): string {
  if (!value.startsWith("@")) return value;
  const path = value.slice(1);
  if (!existsSync(path)) throw new UsageError(`--sample: no such file "${path}"`);
  return readFileSync(path, "utf8");
}

/** `--tool-calls`: a tool_calls array or an assistant message carrying one, validated as OpenAI's shape. */
function toolCallsArg(value: string): ToolCall[] {
  const v = jsonArg(value, "--tool-calls");
  const list = Array.isArray(v) ? v : (v as { tool_calls?: unknown } | null)?.tool_calls;
  try {
    return parseToolCallList(list, "--tool-calls");
  } catch (e) {
    if (e instanceof ToolsError) throw new UsageError(e.message);
    throw e;
  }
}

export function register(program: Command) {
  program
    .command("grade")
    .description("grade one sample with a grader (prints RunGraderResponse JSON; exit 2 if the grader is invalid)")
    .requiredOption("--grader <file|json>", "grader config: a JSON file or inline JSON")
    .requiredOption("--sample <text|@file>", "the model output to grade (text, or @file)")
    .option("--item <file|json>", "the dataset row the grader's {{ item.* }} templates read", "{}")
    .option("--json-required", "the sample was produced under a response_format: it must parse as JSON")
    .option(
      "--tool-calls <file|json>",
      "the sample's tool calls (sample.output_tools): OpenAI's tool_calls array, or an assistant message with tool_calls",
    )
    .option(
      "--model-base-url <url>",
      "OpenAI-compatible endpoint for score_model/label_model (env RFT_GRADER_BASE_URL)",
    )
    .option("--model-api-key-file <file>", "file holding that endpoint's API key (env RFT_GRADER_API_KEY_FILE)")
    .option(
      "--endpoints <file|json>",
      "judge endpoints by model, as spec.graderEndpoints (a JSON array; env RFT_GRADER_ENDPOINTS)",
    )
    .action(async (o) => {
      let engine: GraderEngine;
      try {
        engine = new GraderEngine({ models: judgesArg(o), python: { size: 1 } });
      } catch (err) {
        if (!(err instanceof UsageError || err instanceof EndpointConfigError)) throw err;
        process.stderr.write(`rft grade: ${err.message}\n`);
        process.exitCode = 2;
        return;
      }
      try {
        const grader = jsonArg(o.grader, "--grader");
        const item = jsonArg(o.item, "--item");
        const res = await engine.run(grader, item, {
          output_text: sampleArg(o.sample),
          json_required: Boolean(o.jsonRequired),
          ...(o.toolCalls ? { output_tools: toolCallsArg(o.toolCalls as string) } : {}),
        });
        process.stdout.write(`${JSON.stringify(res, null, 2)}\n`);
      } catch (err) {
        if (err instanceof GraderValidationError || err instanceof UsageError) {
          process.stderr.write(`rft grade: ${err.message}\n`);
          process.exitCode = 2;
        } else throw err;
      } finally {
        await engine.close();
      }
    });
}

/** The judge endpoints: --endpoints (a file's relative key files resolve beside it), else RFT_GRADER_ENDPOINTS, then
 * the single --model-base-url / RFT_GRADER_BASE_URL endpoint as the default. */
function judgesArg(o: { endpoints?: string; modelBaseUrl?: string; modelApiKeyFile?: string }): ModelEndpoint[] {
  const fallback = endpointFromEnv("RFT_GRADER", { baseUrl: o.modelBaseUrl, apiKeyFile: o.modelApiKeyFile });
  if (o.endpoints === undefined) return judgeEndpoints({ fallback });
  const inline = /^\s*[[{]/.test(o.endpoints);
  return judgeEndpoints({
    specs: jsonArg(o.endpoints, "--endpoints"),
    where: "--endpoints",
    ...(inline ? {} : { baseDir: dirname(resolve(o.endpoints)) }),
    fallback,
  });
}
