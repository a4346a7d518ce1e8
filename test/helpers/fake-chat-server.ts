/**
 * A FAKE OpenAI-compatible chat-completions + embeddings server, named as such: no LLM can run on these
 * machines, so model graders are tested against this fixed-answer server speaking the real HTTP protocol.
 * The answer is chosen by markers in the last user message:
 *   SCORE=<x>   → {"result": x, "steps": [...]}        LABEL=<l> → {"result": "l", "steps": [...]}
 *   REFUSE      → a refusal                             GARBAGE   → content that is not JSON
 *   FAIL500     → HTTP 500 every time                   FLAKY     → HTTP 503 once, then SCORE
 *   SLOW        → answers after 20 ms (maxConcurrent records the most chat requests in flight at once)
 *   LIMIT429    → HTTP 429 with Retry-After once, then SCORE    HANG → answers after 2 s (past a short timeout)
 *   HUGE        → a 5 MiB answer
 * /v1/embeddings returns a vector derived from the text's letter counts (same text ⇒ cosine 1).
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeChatServer {
  baseUrl: string;
  requests: { path: string; auth: string | undefined; body: any }[];
  maxConcurrent: number;
  close(): Promise<void>;
}

async function body(req: IncomingMessage): Promise<any> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p: any) => p.text ?? "").join(" ");
  return "";
}

export function letterVector(text: string): number[] {
  const v = new Array(26).fill(0);
  for (const ch of text.toLowerCase()) {
    const i = ch.charCodeAt(0) - 97;
    if (i >= 0 && i < 26) v[i]++;
  }
  return v;
}

export async function startFakeChatServer(): Promise<FakeChatServer> {
  const requests: FakeChatServer["requests"] = [];
  const flaky = new Set<string>();
  let inFlight = 0;
  const state = { maxConcurrent: 0 };
  const server: Server = createServer(async (req, res) => {
    inFlight++;
    state.maxConcurrent = Math.max(state.maxConcurrent, inFlight);
    res.on("finish", () => inFlight--);
    const b = await body(req);
    requests.push({ path: req.url ?? "", auth: req.headers.authorization, body: b });
    const json = (status: number, obj: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(obj));
    };
    if (req.url === "/v1/embeddings") {
      return json(200, {
        object: "list",
        data: (b.input as string[]).map((t, index) => ({ object: "embedding", index, embedding: letterVector(t) })),
        model: b.model,
        usage: { prompt_tokens: 4, total_tokens: 4 },
      });
    }
    if (req.url !== "/v1/chat/completions") return json(404, { error: { message: "not found" } });
    const last = textOf(b.messages.at(-1)?.content);
    if (last.includes("SLOW")) await new Promise((r) => setTimeout(r, 20));
    if (last.includes("FAIL500")) return json(500, { error: { message: "the fake judge is down" } });
    if (last.includes("HANG")) await new Promise((r) => setTimeout(r, 2000));
    if (last.includes("HUGE")) return json(200, { padding: "x".repeat(5 * 1024 * 1024) });
    if (last.includes("LIMIT429") && !flaky.has(last)) {
      flaky.add(last);
      res.setHeader("retry-after", "0.05");
      return json(429, { error: { message: "rate limited" } });
    }
    if (last.includes("FLAKY") && !flaky.has(last)) {
      flaky.add(last);
      return json(503, { error: { message: "try again" } });
    }
    let message: Record<string, unknown>;
    if (last.includes("REFUSE")) message = { role: "assistant", content: null, refusal: "I can't help with that." };
    else if (last.includes("GARBAGE"))
      message = { role: "assistant", content: "I think it deserves a 7", refusal: null };
    else {
      const score = /SCORE=(-?[\d.]+)/.exec(last);
      const label = /LABEL=(\w+)/.exec(last);
      const result = score ? Number(score[1]) : label ? label[1] : 0;
      message = {
        role: "assistant",
        content: JSON.stringify({ steps: [{ description: "read the answer", conclusion: "graded" }], result }),
        refusal: null,
      };
    }
    json(200, {
      id: "chatcmpl-fake",
      object: "chat.completion",
      created: 0,
      model: `${b.model}-fake-2025`,
      choices: [{ index: 0, message, finish_reason: "stop" }],
      usage: {
        prompt_tokens: 100,
        completion_tokens: 20,
        total_tokens: 120,
        prompt_tokens_details: { cached_tokens: 10 },
      },
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    get maxConcurrent() {
      return state.maxConcurrent;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}
