/**
 * `rft serve`: an OpenAI-compatible HTTP server for one model — `POST /v1/chat/completions` (with SSE
 * streaming), `GET /v1/models` and `GET /healthz` — over node:http, with requests batched through a Batcher.
 * With an API key (`RFT_SERVE_API_KEY`) every endpoint but /healthz requires `Authorization: Bearer <key>`.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Model } from "../model/model.js";
import { bytesToUnicode } from "../model/tokenizer.js";
import type { Completion, SampleRequest } from "../sampling/generate.js";
import { type ConstraintFactory, formatConstraint, toolCallConstraint } from "../sampling/structured.js";
import { parseToolCalls, renderChat, type ToolCall } from "../sampling/tools.js";
import { Batcher } from "./batcher.js";
import { ApiError, type ChatRequest, parseChatRequest } from "./chat-request.js";

export interface ServeOptions {
  /** The model id clients name (default: the directory's base name). */
  modelId: string;
  port?: number;
  host?: string;
  maxBatch?: number;
  /** Default and ceiling for completion length (default 512). */
  maxTokens?: number;
  logger?: Logger;
  maxBodyBytes?: number;
  /** When set, every endpoint but GET /healthz answers 401 without `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/** The request's bearer token is the key (compared in constant time). */
export function authorized(header: string | undefined, apiKey: string): boolean {
  const m = /^Bearer (.+)$/i.exec(header ?? "");
  return m !== null && timingSafeEqual(digest(m[1]!), digest(apiKey));
}

export interface RunningServer {
  server: Server;
  url: string;
  batcher: Batcher;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new ApiError(413, `Request body exceeds ${limit} bytes.`, null, "request_too_large");
    chunks.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new ApiError(
      400,
      "We could not parse the JSON body of your request. (The body must be valid JSON.)",
      null,
      "invalid_json",
    );
  }
}

/**
 * The longest token of a tokenizer.json, in UTF-16 code units of its vocabulary form (byte-level vocabularies
 * spell one byte per character, so no token covers more of a prompt than this many code units).
 */
export function longestTokenLength(tokenizerJson: unknown): number {
  const tj = tokenizerJson as {
    model?: { vocab?: Record<string, number> | [string, number][] };
    added_tokens?: { content: string }[];
  };
  let n = 1;
  const vocab = tj.model?.vocab;
  const keys = Array.isArray(vocab) ? vocab.map((e) => e[0]) : Object.keys(vocab ?? {});
  for (const k of keys) if (k.length > n) n = k.length;
  for (const t of tj.added_tokens ?? []) if (t.content.length > n) n = t.content.length;
  return n;
}

/** Token text and bytes for logprobs (byte-level tokenizers map their symbols back to raw bytes). */
function tokenInfo(model: Model) {
  const tok = model.tokenizer!;
  const tj = tok.files.tokenizerJson as { decoder?: { type?: string } };
  const byteLevel = tj.decoder?.type === "ByteLevel";
  const inv = new Map(bytesToUnicode().map((ch, b) => [ch, b]));
  const cache = new Map<number, { token: string; bytes: number[] }>();
  return (id: number) => {
    let v = cache.get(id);
    if (!v) {
      const token = tok.decode([id], false);
      const sym = byteLevel ? tok.tokenToSymbol(id) : undefined;
      const bytes =
        sym !== undefined && [...sym].every((c) => inv.has(c))
          ? [...sym].map((c) => inv.get(c)!)
          : [...Buffer.from(token, "utf8")];
      v = { token, bytes };
      cache.set(id, v);
    }
    return v;
  };
}

type Tokenizer = NonNullable<Model["tokenizer"]>;
type Tool = ChatRequest["tools"][number];

/** A completion as a choice's message: tool calls parsed out when the request has tools. */
function choiceMessage(c: Completion, tools: Tool[]) {
  const { content, toolCalls } = tools.length
    ? parseToolCalls(c.text, tools, () => `call_${randomBytes(12).toString("hex")}`)
    : { content: c.text, toolCalls: [] as ToolCall[] };
  return {
    message: {
      role: "assistant" as const,
      content,
      refusal: null,
      ...(toolCalls.length ? { tool_calls: toolCalls } : {}),
    },
    finish_reason: toolCalls.length && c.finishReason === "stop" ? "tool_calls" : c.finishReason,
  };
}

/** Usage as OpenAI's: the prompt is counted once however many choices (n) share it. */
function usageOf(promptTokens: number, cs: Completion[]) {
  const completion = cs.reduce((a, c) => a + c.tokens.length, 0);
  return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion };
}

/** One chat completion request, ready to sample: its prompt, tools and sampling requests. */
interface PreparedChat {
  r: ChatRequest;
  tools: Tool[];
  promptIds: number[];
  samples: SampleRequest[];
  id: string;
  now: number;
}

/** `/v1/chat/completions` of one served model: requests parsed, batched with others, answered whole or streamed. */
class ChatCompletions {
  private readonly batcher: Batcher;
  private readonly maxTokensCap: number;
  private readonly info: ReturnType<typeof tokenInfo>;
  private readonly longestToken: number;

  constructor(
    private readonly model: Model,
    private readonly tok: Tokenizer,
    private readonly opts: ServeOptions,
  ) {
    this.batcher = new Batcher(model, opts.maxBatch ?? 64);
    this.maxTokensCap = opts.maxTokens ?? 512;
    this.info = tokenInfo(model);
    this.longestToken = longestTokenLength(tok.files.tokenizerJson);
  }

  get queue(): Batcher {
    return this.batcher;
  }

  private logprobsOf(c: Completion, req: ChatRequest) {
    return req.logprobs
      ? {
          content: c.tokens.map((t, k) => ({
            ...this.info(t),
            logprob: c.logprobs[k]!,
            top_logprobs: (c.top?.[k] ?? []).map((p) => ({ ...this.info(p.token), logprob: p.logprob })),
          })),
          refusal: null,
        }
      : null;
  }

  async chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, this.opts.maxBodyBytes ?? 4 << 20);
    const p = await this.prepare(parseChatRequest(body, this.opts.modelId), res);
    this.opts.logger?.debug(
      { id: p.id, n: p.r.n, promptTokens: p.promptIds.length, maxTokens: p.samples[0]?.maxTokens, stream: p.r.stream },
      "chat completion",
    );
    if (p.r.stream) await this.stream(p, res);
    else await this.whole(p, res);
  }

  /** The prompt (refused when it cannot fit the context), the decoding constraint and the n sampling requests. */
  private async prepare(r: ChatRequest, res: ServerResponse): Promise<PreparedChat> {
    const { model } = this;
    const tools = r.toolChoice === "none" ? [] : r.tools;
    const prompt = renderChat(this.tok, r.messages, tools, true);
    // No token covers more of the prompt than the vocabulary's longest token: a prompt longer than the context
    // times that cannot fit, and is refused before the tokenizer spends time on it.
    if (prompt.length > model.config.maxContext * this.longestToken)
      throw new ApiError(
        400,
        `This model's maximum context length is ${model.config.maxContext} tokens; the messages are ${prompt.length} characters long, far more than fit.`,
        "messages",
        "context_length_exceeded",
      );
    const promptIds = this.tok.encode(prompt);
    const constraint = await this.constraintOf(r, tools);
    const room = model.config.maxContext - promptIds.length - 1;
    if (room < 1) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${model.config.maxContext} tokens; the messages use ${promptIds.length}.`,
        "messages",
        "context_length_exceeded",
      );
    }
    const maxTokens = Math.min(r.maxTokens ?? this.maxTokensCap, this.maxTokensCap, room);
    // A client that hangs up stops its samples at the next decode step (the batch goes on for the others).
    const hangup = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) hangup.abort();
    });
    const id = `chatcmpl-${randomBytes(12).toString("hex")}`;
    const now = Math.floor(Date.now() / 1000);
    const samples = Array.from({ length: r.n }, (_, i): SampleRequest => ({
      promptIds,
      maxTokens,
      stop: r.stop,
      sampling: { temperature: r.temperature, topP: r.topP, topK: r.topK },
      ...(r.seed !== null && { seed: (r.seed + i) >>> 0 }),
      topLogprobs: r.logprobs ? Math.max(r.topLogprobs, 0) : 0,
      signal: hangup.signal,
      ...(constraint ? { constraint } : {}),
    }));
    return { r, tools, promptIds, samples, id, now };
  }

  /** Structured outputs and forced tool calls: decoding is constrained to the format's grammar. */
  private async constraintOf(r: ChatRequest, tools: Tool[]): Promise<ConstraintFactory | undefined> {
    try {
      if (r.responseFormat) return await formatConstraint(this.model, r.responseFormat);
      if (r.toolChoice === "required" || typeof r.toolChoice === "object")
        return await toolCallConstraint(this.model, tools, r.toolChoice);
      return undefined;
    } catch (e) {
      throw new ApiError(400, (e as Error).message, r.responseFormat ? "response_format" : "tools", "invalid_value");
    }
  }

  private async whole(p: PreparedChat, res: ServerResponse): Promise<void> {
    const cs = await Promise.all(p.samples.map((s) => this.batcher.submit(s)));
    send(res, 200, {
      id: p.id,
      object: "chat.completion",
      created: p.now,
      model: this.opts.modelId,
      system_fingerprint: "rft-serve",
      choices: cs.map((c, index) => {
        const m = choiceMessage(c, p.tools);
        return { index, message: m.message, logprobs: this.logprobsOf(c, p.r), finish_reason: m.finish_reason };
      }),
      usage: usageOf(p.promptIds.length, cs),
    });
  }

  private async stream(p: PreparedChat, res: ServerResponse): Promise<void> {
    const { tools, r } = p;
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      res.write(
        `data: ${JSON.stringify({ id: p.id, object: "chat.completion.chunk", created: p.now, model: this.opts.modelId, system_fingerprint: "rft-serve", choices, ...extra })}\n\n`,
      );
    p.samples.forEach((_, index) => {
      chunk([{ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]);
    });
    const cs = await Promise.all(
      p.samples.map((s, index) =>
        this.batcher
          .submit(s, (text) => {
            // With tools, text is held until the end: it may turn out to be a tool call.
            if (text && !tools.length)
              chunk([{ index, delta: { content: text }, logprobs: null, finish_reason: null }]);
          })
          .then((c) => {
            const { message: m, finish_reason } = choiceMessage(c, tools);
            if (tools.length) {
              if (m.content) chunk([{ index, delta: { content: m.content }, logprobs: null, finish_reason: null }]);
              if (m.tool_calls) {
                const deltas = m.tool_calls.map((t, k) => ({ index: k, ...t }));
                chunk([{ index, delta: { tool_calls: deltas }, logprobs: null, finish_reason: null }]);
              }
            }
            chunk([{ index, delta: {}, logprobs: this.logprobsOf(c, r), finish_reason }]);
            return c;
          }),
      ),
    );
    if (r.includeUsage) chunk([], { usage: usageOf(p.promptIds.length, cs) });
    res.end("data: [DONE]\n\n");
  }
}

/** An error as the API's error body (a stream that has started ends with it as its last event). */
function failWith(res: ServerResponse, e: unknown, log: Logger | undefined) {
  const err =
    e instanceof ApiError ? e : new ApiError(500, "The server had an error while processing your request.", null, null);
  if (!(e instanceof ApiError)) log?.error({ err: e }, "chat completion failed");
  if (res.headersSent) {
    res.end(`data: ${JSON.stringify(err.body())}\n\n`);
  } else send(res, err.status, err.body());
}

export async function startServer(model: Model, opts: ServeOptions): Promise<RunningServer> {
  const tok = model.tokenizer;
  if (!tok) throw new Error("the model directory has no tokenizer.json: cannot serve chat completions");
  if (!tok.hasChatTemplate)
    throw new Error("tokenizer_config.json has no chat_template: cannot serve chat completions");
  const chat = new ChatCompletions(model, tok, opts);
  const created = Math.floor(Date.now() / 1000);
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = url.pathname.replace(/\/+$/, "");
    const fail = (e: unknown) => failWith(res, e, opts.logger);
    if (req.method === "GET" && path === "/healthz") return send(res, 200, { status: "ok" });
    if (opts.apiKey !== undefined && !authorized(req.headers.authorization, opts.apiKey)) {
      req.resume();
      return fail(
        new ApiError(
          401,
          "Incorrect API key provided: send Authorization: Bearer <key> (the key of this server).",
          null,
          "invalid_api_key",
        ),
      );
    }
    if (req.method === "POST" && path === "/v1/chat/completions") {
      chat.chat(req, res).catch(fail);
    } else if (req.method === "GET" && path === "/v1/models") {
      send(res, 200, { object: "list", data: [{ id: opts.modelId, object: "model", created, owned_by: "rft" }] });
    } else if (req.method === "GET" && path === `/v1/models/${opts.modelId}`) {
      send(res, 200, { id: opts.modelId, object: "model", created, owned_by: "rft" });
    } else if (req.method === "GET" && path.startsWith("/v1/models/")) {
      fail(
        new ApiError(
          404,
          `The model '${decodeURIComponent(path.slice(11))}' does not exist.`,
          "model",
          "model_not_found",
        ),
      );
    } else {
      fail(new ApiError(404, `Unknown request URL: ${req.method} ${url.pathname}.`, null, "unknown_url"));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 8000, opts.host ?? "127.0.0.1", () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    server,
    batcher: chat.queue,
    url: `http://${addr.address.includes(":") ? `[${addr.address}]` : addr.address}:${addr.port}/v1`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
