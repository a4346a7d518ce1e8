/**
 * Supervised fine-tuning on OpenAI's chat JSONL (`{"messages": [...]}` per line): loss on assistant tokens
 * only (an assistant message with `"weight": 0` is context, not a target), OpenAI's hyperparameters
 * (`n_epochs`, `batch_size`, `learning_rate_multiplier`, each a number or "auto"), validation loss, Adam.
 */
import type { Model } from "../model/model.js";
import type { ChatMessage, ChatTokenizer } from "../model/tokenizer.js";
import { Adam, evalLoss, lossAndGrads, makeBatch } from "../model/train-step.js";
import { Rng } from "../sampling/pick.js";

export class SftDataError extends Error {
  override name = "SftDataError";
}

export interface SftMessage extends ChatMessage {
  /** 0 excludes an assistant message from the loss (OpenAI's per-message weight). */
  weight?: 0 | 1;
}

export interface SftExample {
  messages: SftMessage[];
}

const ROLES = new Set(["system", "developer", "user", "assistant"]);

function contentText(v: unknown, where: string): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v
      .map((p, i) => {
        if (
          p &&
          typeof p === "object" &&
          (p as { type?: unknown }).type === "text" &&
          typeof (p as { text?: unknown }).text === "string"
        ) {
          return (p as { text: string }).text;
        }
        throw new SftDataError(`${where}.content[${i}]: only text parts are supported in SFT`);
      })
      .join("");
  }
  throw new SftDataError(`${where}.content: must be a string or an array of text parts`);
}

/** Parses chat JSONL; errors name the file, line and field. */
export function parseChatJsonl(text: string, file = "dataset"): SftExample[] {
  const out: SftExample[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const where = `${file}:${i + 1}`;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new SftDataError(`${where}: not valid JSON (${(e as Error).message})`);
    }
    const msgs = (row as { messages?: unknown })?.messages;
    if (!Array.isArray(msgs) || msgs.length === 0)
      throw new SftDataError(`${where}: "messages" must be a non-empty array`);
    const messages = msgs.map((m, j): SftMessage => {
      const f = `${where}: messages[${j}]`;
      const r = m as Record<string, unknown>;
      if (!r || typeof r !== "object") throw new SftDataError(`${f}: must be an object`);
      if (!ROLES.has(r["role"] as string))
        throw new SftDataError(`${f}.role: must be one of system, developer, user, assistant`);
      if (r["tool_calls"] !== undefined || r["function_call"] !== undefined)
        throw new SftDataError(`${f}: tool calls are not supported in SFT`);
      const msg: SftMessage = {
        role: r["role"] === "developer" ? "system" : (r["role"] as string),
        content: contentText(r["content"], f),
      };
      if (r["weight"] !== undefined) {
        if (r["weight"] !== 0 && r["weight"] !== 1) throw new SftDataError(`${f}.weight: must be 0 or 1`);
        msg.weight = r["weight"];
      }
      return msg;
    });
    if (!messages.some((m) => m.role === "assistant" && m.weight !== 0))
      throw new SftDataError(`${where}: no assistant message to train on`);
    out.push({ messages });
  });
  if (out.length === 0) throw new SftDataError(`${file}: no examples`);
  return out;
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
  const msgs = ex.messages.map(({ role, content }) => ({ role, content }));
  const ids = tok.encode(tok.applyChatTemplate(msgs, false));
  const mask = new Array<number>(ids.length).fill(0);
  ex.messages.forEach((m, i) => {
    if (m.role !== "assistant" || m.weight === 0) return;
    const before = tok.encode(tok.applyChatTemplate(msgs.slice(0, i), true));
    const upto = tok.encode(tok.applyChatTemplate(msgs.slice(0, i + 1), false));
    if (!same(before, upto) || !same(upto, ids)) {
      throw new SftDataError(
        "the chat template does not render conversations as prefixes of each other; cannot find assistant tokens",
      );
    }
    for (let t = before.length; t < upto.length; t++) mask[t] = 1;
  });
  return { ids: ids.slice(0, maxLength), mask: mask.slice(0, maxLength) };
}

export type Auto<T> = T | "auto";

export interface SftHyperparameters {
  n_epochs?: Auto<number>;
  batch_size?: Auto<number>;
  learning_rate_multiplier?: Auto<number>;
}

/** "auto" resolved the way OpenAI describes it: ~0.2% of the examples per batch (1..32), 3 epochs, ×1. */
export function resolveHyperparameters(
  h: SftHyperparameters,
  nTrain: number,
): { nEpochs: number; batchSize: number; lrMultiplier: number } {
  const pick = (v: Auto<number> | undefined, auto: number, name: string, int: boolean) => {
    if (v === undefined || v === "auto") return auto;
    if (typeof v !== "number" || !(v > 0) || (int && !Number.isInteger(v)))
      throw new SftDataError(`hyperparameters.${name}: must be "auto" or a positive ${int ? "integer" : "number"}`);
    return v;
  };
  return {
    nEpochs: pick(h.n_epochs, 3, "n_epochs", true),
    batchSize: pick(h.batch_size, Math.min(32, Math.max(1, Math.round(nTrain * 0.002))), "batch_size", true),
    lrMultiplier: pick(h.learning_rate_multiplier, 1, "learning_rate_multiplier", false),
  };
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
  hyperparameters?: SftHyperparameters;
  /** Learning rate at multiplier 1 (default 1e-4). */
  baseLearningRate?: number;
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
  const hp = resolveHyperparameters(opts.hyperparameters ?? {}, train.length);
  const adam = new Adam({ lr: (opts.baseLearningRate ?? 1e-4) * hp.lrMultiplier, clipNorm: 1 });
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
