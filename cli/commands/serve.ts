/** `rft serve DIR`: serve a Hugging Face model directory through an OpenAI-compatible chat-completions API. */
import { basename, resolve } from "node:path";
import type { Command } from "commander";
import { createLogger } from "../../proto/log.js";
import { parseBackendName, useBackend } from "../../trainer/model/backend.js";
import { loadModelOrAdapter } from "../../trainer/model/load-adapted.js";
import { startServer } from "../../trainer/serve/server.js";

function int(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`rft serve: ${flag}: want a non-negative integer, got "${v}"\n`);
    process.exit(2);
  }
  return n;
}

export function register(program: Command) {
  program
    .command("serve")
    .description(
      "serve a model directory: POST /v1/chat/completions (streaming too), GET /v1/models, GET /healthz; with env RFT_SERVE_API_KEY every endpoint but /healthz requires Authorization: Bearer <key>",
    )
    .argument(
      "<dir>",
      "Hugging Face model directory (config.json, model.safetensors, tokenizer.json), or a PEFT LoRA adapter directory (served on its base)",
    )
    .option(
      "--base <dir>",
      "with an adapter directory: its base model (default: the adapter's base_model_name_or_path)",
    )
    .option("--port <n>", "TCP port (0 = any free port)", "8000")
    .option("--host <addr>", "address to listen on", "127.0.0.1")
    .option("--model-id <id>", "model name clients use (default: the directory name)")
    .option("--max-batch <n>", "most samples generated together", "64")
    .option("--max-tokens <n>", "default and ceiling for completion tokens", "512")
    .option(
      "--backend <name>",
      "tfjs backend: auto (tensorflow if installed, else wasm) | wasm | cpu | tensorflow | webgpu",
      "auto",
    )
    .action(async (dir: string, o) => {
      const log = createLogger("serve");
      // The bearer token clients must send (the operator's serving Deployment sets it from a Secret).
      const apiKey = process.env.RFT_SERVE_API_KEY || undefined;
      const backend = await useBackend(parseBackendName(o.backend));
      const model = await loadModelOrAdapter(dir, { base: o.base });
      const modelId = o.modelId ?? basename(resolve(dir));
      const s = await startServer(model, {
        modelId,
        port: int("--port", o.port),
        host: o.host,
        maxBatch: int("--max-batch", o.maxBatch),
        maxTokens: int("--max-tokens", o.maxTokens),
        logger: log,
        ...(apiKey ? { apiKey } : {}),
      });
      log.info(
        {
          url: s.url,
          model: modelId,
          backend,
          auth: apiKey ? "bearer (RFT_SERVE_API_KEY)" : "none",
          ...(model.adapterOf ? { base: model.adapterOf } : {}),
        },
        "serving",
      );
      process.stdout.write(`serving ${modelId} at ${s.url}\n`);
      const stop = () => void s.close().then(() => process.exit(0));
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
}
