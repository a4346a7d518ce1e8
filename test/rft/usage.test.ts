/**
 * The trainer's usage (trainer/job/usage.ts), pure: what a step adds, the judge models' bound, the totals
 * recorded with checkpoints and where a resumed attempt starts counting (captured forward progress).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Ajv } from "ajv";
import { Usage as UsageSchema } from "../../proto/finetunejob-status.js";
import {
  addSeconds,
  addStep,
  addTokens,
  emptyUsage,
  MAX_JUDGE_MODELS,
  OTHER_MODELS,
  parseRecords,
  recordCheckpoint,
  resumeBase,
  type Usage,
} from "../../trainer/job/usage.js";

const tokens = (n: number) => ({ usage: { samples: { train_completion_tokens_count: n } } });
const judge = (p: number, c: number, cached = 0, ep = 0, ec = 0) => ({
  train_prompt_tokens: p,
  train_completion_tokens: c,
  train_cached_tokens: cached,
  eval_prompt_tokens: ep,
  eval_completion_tokens: ec,
  eval_cached_tokens: 0,
});
const valid = new Ajv({ strict: false }).compile(UsageSchema);

test("a step adds its training samples' completion tokens (not only those that moved the weights) and each judge model's tokens; junk adds nothing", () => {
  let u = emptyUsage();
  u = addStep(u, {
    ...tokens(120),
    trained_tokens: 3,
    model_graders_token_usage: { "gpt-4o": judge(100, 10, 5, 40, 4) },
  });
  u = addStep(u, { ...tokens(80), model_graders_token_usage: { "gpt-4o": judge(50, 5), small: judge(1, 1) } });
  u = addStep(u, { ...tokens(-3), model_graders_token_usage: { "gpt-4o": { train_prompt_tokens: "9" } } });
  u = addStep(u, null);
  u = addTokens(u, 7);
  assert.equal(u.trainedTokens, 207);
  assert.deepEqual(u.judgeTokens["gpt-4o"], {
    trainPrompt: 150,
    trainCompletion: 15,
    trainCached: 5,
    evalPrompt: 40,
    evalCompletion: 4,
    evalCached: 0,
  });
  assert.equal(u.judgeTokens.small?.trainPrompt, 1);
  assert.ok(valid(u), JSON.stringify(valid.errors));
});

test("seconds: positive finite spans only, millisecond precision", () => {
  let u = addSeconds(emptyUsage(), 1.23456);
  u = addSeconds(u, -5);
  u = addSeconds(u, Number.NaN);
  assert.equal(u.trainingSeconds, 1.235);
});

test("at most 16 judge models by name: the rest are summed under one key, and the message stays valid", () => {
  const per = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`judge-${i}`, judge(1, 2)]));
  let u = addStep(emptyUsage(), { model_graders_token_usage: per });
  u = addStep(u, { model_graders_token_usage: { "judge-3": judge(1, 0), [`x${"y".repeat(300)}`]: judge(1, 0) } });
  const keys = Object.keys(u.judgeTokens);
  assert.equal(keys.length, MAX_JUDGE_MODELS + 1);
  assert.equal(u.judgeTokens[OTHER_MODELS]?.trainPrompt, 5, "models 17-20 and the over-long name");
  assert.equal(u.judgeTokens[OTHER_MODELS]?.trainCompletion, 8);
  assert.equal(u.judgeTokens["judge-3"]?.trainPrompt, 2, "a named model keeps its key");
  assert.ok(valid(u), JSON.stringify(valid.errors));
});

test("captured forward progress: a resumed attempt starts from the totals of the checkpoint it resumes from", () => {
  // Attempt 0: steps 1-4 (10 s each, 100 tokens each), checkpoints at steps 2 and 4, then 15 s lost to a crash.
  let records = {};
  let live: Usage = emptyUsage();
  for (let step = 1; step <= 4; step++) {
    live = addStep(addSeconds(live, 10), tokens(100));
    if (step % 2 === 0) records = recordCheckpoint(records, `step-00000${step}`, step, live);
  }
  const lost = addStep(addSeconds(live, 15), tokens(100)); // step 5: never checkpointed
  assert.equal(lost.trainingSeconds, 55);
  // Attempt 1 resumes from step-000004: 40 s and 400 tokens captured; step 5's work is not billed.
  const base = resumeBase(records, 4);
  assert.deepEqual(base, { trainingSeconds: 40, trainedTokens: 400, judgeTokens: {} });
  // A resume from the base model (no checkpoint kept) counts from zero; a missing record falls back.
  assert.deepEqual(resumeBase(records, 0), emptyUsage());
  assert.equal(resumeBase(records, 3).trainingSeconds, 20);
  // The records survive a round trip through usage.json; malformed entries are dropped.
  const back = parseRecords(JSON.parse(JSON.stringify({ ...records, junk: { step: "x" }, bad: null })));
  assert.deepEqual(back, records);
  assert.deepEqual(parseRecords("nonsense"), {});
});

test("records: replaced by name, the newest 64 kept", () => {
  let r = {};
  for (let s = 1; s <= 70; s++) r = recordCheckpoint(r, `step-${s}`, s, addSeconds(emptyUsage(), s));
  r = recordCheckpoint(r, "step-70", 70, addSeconds(emptyUsage(), 1));
  assert.equal(Object.keys(r).length, 64);
  assert.equal(resumeBase(r, 70).trainingSeconds, 1);
  assert.deepEqual(resumeBase(r, 6), emptyUsage(), "steps 1-6 fell out");
});
