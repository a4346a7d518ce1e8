/**
 * Supervised fine-tuning on OpenAI's chat JSONL (`{"messages": [...]}` per line): loss on assistant tokens
 * only (an assistant message with `"weight": 0` is context, not a target), OpenAI's hyperparameters (resolved
 * by trainer/job/hyperparameters.ts), validation loss, Adam. Rows come validated from trainer/data/dataset.ts.
 */
import type { SftRow } from "../data/dataset.js";
import type { Model } from "../model/model.js";
import type { ChatTokenizer } from "../model/tokenizer.js";
import { Adam, evalLoss, lossAndGrads, makeBatch } from "../model/train-step.js";
import { Rng } from "../sampling/pick.js";
import {
  type ConversationMessage,
  parseToolCallList,
  parseTools,
  renderChat,
  type ToolDef,
} from "../sampling/tools.js";

export class SftDataError extends Error {
  override name = "SftDataError";
}

export interface SftMessage extends ConversationMessage {
  /** 0 excludes an assistant message from the loss (OpenAI's per-message weight). */
  weight?: 0 | 1;
}

export interface SftExample {
  messages: SftMessage[];
  /** Function definitions the conversation may call (rendered by the chat template). */
  tools?: ToolDef[];
}

function contentText(v: unknown, where: string): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v
      .map((p, i) => {
        if ((p as { type?: unknown })?.type === "text") return (p as { text: string }).text;
        throw new SftDataError(`${where}.content[${i}]: only text parts are supported in SFT`);
      })
      .join("");
  }
  throw new SftDataError(`${where}.content: must be a string or an array of text parts`);
}

/**
 * A validated dataset row (trainer/data/dataset.ts) as an SFT example: developer turns render as system
 * turns; assistant tool calls and tool results go through the chat template (trainer/sampling/tools.ts), so
 * function calling is trained like any other assistant output.
 */
export function toSftExample(row: SftRow, file = "dataset"): SftExample {
  const tools = parseTools(row.tools, `${file}:${row.line}: tools`);
  return {
    messages: row.messages.map((m, j) => {
      const where = `${file}:${row.line}: messages[${j}]`;
      const calls = m.tool_calls !== undefined ? parseToolCallList(m.tool_calls, `${where}.tool_calls`) : [];
      return {
        role: m.role === "developer" ? "system" : m.role,
        content: m.content === null && calls.length ? null : contentText(m.content, where),
        ...(calls.length ? { tool_calls: calls } : {}),
        ...(m.tool_call_id !== undefined ? { tool_call_id: m.tool_call_id } : {}),
        ...(m.name !== undefined ? { name: m.name } : {}),
        ...(m.weight !== undefined ? { weight: m.weight } : {}),
      };
    }),
    ...(tools.length ? { tools } : {}),
  };
}

export interface TokenizedExample {
  ids: number[];
  /** 1 where the token is part of a trained assistant message (its content and end-of-turn tokens). */
  mask: number[];
}

const same = (a: number[], b: number[]) => a.length <= b.length && a.every((x, i) => x === b[i]);

/**
 * Tokenizes a conversation through the chat template. An assistant message's tokens are those the template
 * adds for it after the generation prompt: render(messages[..i], generation prompt) is a prefix of
 * render(messages[..i+1]).
 */
export function tokenizeExample(tok: ChatTokenizer, ex: SftExample, maxLength: number): TokenizedExample {
  const msgs = ex.messages.map(({ weight: _, ...m }) => m);
  const tools = ex.tools ?? [];
  const render = (upto: number, generationPrompt: boolean) =>
    tok.encode(renderChat(tok, msgs.slice(0, upto), tools, generationPrompt));
  const ids = render(msgs.length, false);
  const mask = new Array<number>(ids.length).fill(0);
  ex.messages.forEach((m, i) => {
    if (m.role !== "assistant" || m.weight === 0) return;
    const before = render(i, true);
    const upto = render(i + 1, false);
    if (!same(before, upto) || !same(upto, ids)) {
      throw new SftDataError(
        "the chat template does not render conversations as prefixes of each other; cannot find assistant tokens",
      );
    }
    for (let t = before.length; t < upto.length; t++) mask[t] = 1;
  });
  return { ids: ids.slice(0, maxLength), mask: mask.slice(0, maxLength) };
}

export interface SftStepEvent {
  step: number;
  epoch: number;
  trainLoss: number;
  validLoss?: number;
  tokens: number;
}

export interface SftOptions {
  train: SftExample[];
  validation?: SftExample[];
  /** Resolved hyperparameters (trainer/job/hyperparameters.ts resolves OpenAI's "auto"). */
  nEpochs: number;
  batchSize: number;
  learningRate: number;
  /** Sequences are cut to this many tokens (default: the model's context, at most 1024). */
  maxLength?: number;
  seed?: number;
  /** Validation loss every this many steps (default: end of each epoch only). */
  evalInterval?: number;
  onStep?: (e: SftStepEvent) => void;
}

export interface SftResult {
  steps: SftStepEvent[];
  finalTrainLoss: number;
  finalValidLoss?: number;
  trainedTokens: number;
}

function validationLoss(model: Model, data: TokenizedExample[], batchSize: number, padId: number): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < data.length; i += batchSize) {
    const batch = makeBatch(data.slice(i, i + batchSize), padId);
    const w = batch.weights.reduce((a, b) => a + b, 0);
    num += evalLoss(model, batch) * w;
    den += w;
  }
  return num / Math.max(den, 1e-8);
}

/** Fine-tunes `model` in place. */
export async function runSft(model: Model, opts: SftOptions): Promise<SftResult> {
  const tok = model.tokenizer;
  if (!tok) throw new SftDataError("the model has no tokenizer (tokenizer.json) to render chats with");
  const maxLength = opts.maxLength ?? Math.min(model.config.maxContext, 1024);
  const padId = tok.padId ?? model.config.padTokenId ?? tok.eosIds[0] ?? 0;
  const train = opts.train
    .map((ex) => tokenizeExample(tok, ex, maxLength))
    .filter((e) => e.mask.some((m, i) => m && i > 0));
  const valid = (opts.validation ?? []).map((ex) => tokenizeExample(tok, ex, maxLength));
  if (train.length === 0) throw new SftDataError("no training example has an assistant token within maxLength");
  const hp = { nEpochs: opts.nEpochs, batchSize: Math.min(opts.batchSize, train.length) };
  const adam = new Adam({ lr: opts.learningRate, clipNorm: 1 });
  const rng = new Rng(opts.seed ?? 0);
  const steps: SftStepEvent[] = [];
  let step = 0;
  let trainedTokens = 0;
  const stepsPerEpoch = Math.ceil(train.length / hp.batchSize);
  try {
    for (let epoch = 1; epoch <= hp.nEpochs; epoch++) {
      const order = train.map((_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(rng.next() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      for (let s = 0; s < stepsPerEpoch; s++) {
        const batch = makeBatch(
          order.slice(s * hp.batchSize, (s + 1) * hp.batchSize).map((i) => train[i]!),
          padId,
        );
        const { loss, grads } = lossAndGrads(model, batch);
        adam.step(model, grads);
        step++;
        const tokens = batch.weights.reduce((a, b) => a + b, 0);
        trainedTokens += tokens;
        const ev: SftStepEvent = { step, epoch, trainLoss: loss, tokens };
        const lastOfEpoch = s === stepsPerEpoch - 1;
        if (valid.length && ((opts.evalInterval && step % opts.evalInterval === 0) || lastOfEpoch)) {
          ev.validLoss = validationLoss(model, valid, hp.batchSize, padId);
        }
        steps.push(ev);
        opts.onStep?.(ev);
        // Let the event loop breathe between steps (progress reporting, cancellation).
        await new Promise((r) => setImmediate(r));
      }
    }
  } finally {
    adam.dispose();
  }
  const last = steps[steps.length - 1]!;
  const finalValid = [...steps].reverse().find((s) => s.validLoss !== undefined)?.validLoss;
  return {
    steps,
    finalTrainLoss: last.trainLoss,
    ...(finalValid !== undefined && { finalValidLoss: finalValid }),
    trainedTokens,
  };
}
