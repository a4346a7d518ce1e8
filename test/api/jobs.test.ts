/**
 * Fine-tuning jobs through the official openai client against `rft api` (the CLI, as users start it) on a tiny
 * random model named as OpenAI's RFT base model: the RFT guide's flow (upload both files, create the job with
 * its multi grader, poll events, list checkpoints, call the fine-tuned model), the status transitions, pause /
 * resume / cancel, and OpenAI's error bodies for bad input.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import OpenAI, { toFile } from "openai";
import { tinyModel } from "../helpers/rft-job.js";
import { BASE, jobRequest, TRAIN, VALID } from "./guide.js";
import { startApiCli, tempDir, until } from "./helpers.js";

async function setup(prefix: string) {
  const dir = tempDir(prefix);
  await tinyModel(join(dir, "base"));
  const api = await startApiCli(["--data", join(dir, "data"), "--model", `${BASE}=${join(dir, "base")}`]);
  const c = api.client;
  const upload = async (lines: string[], name: string) =>
    c.files.create({ file: await toFile(Buffer.from(`${lines.join("\n")}\n`), name), purpose: "fine-tune" });
  return { dir, api, c, upload };
}

test("the RFT guide's flow: files, job, events, checkpoints, the fine-tuned model", async () => {
  const { api, c, upload } = await setup("flow");
  try {
    const train = await upload(TRAIN, "train.jsonl");
    const valid = await upload(VALID, "valid.jsonl");
    // `as any`: the SDK's types lack response_format (OpenAI's guide sends it; see reference §6.2).
    const job = await c.fineTuning.jobs.create(jobRequest(train.id, valid.id) as any);
    assert.match(job.id, /^ftjob-[A-Za-z0-9]{24}$/);
    assert.equal(job.object, "fine_tuning.job");
    assert.equal(job.status, "validating_files");
    assert.equal(job.model, BASE);
    assert.equal(job.training_file, train.id);
    assert.equal(job.validation_file, valid.id);
    assert.equal(job.seed, 42);
    assert.equal(job.fine_tuned_model, null);
    assert.equal(job.error, null);
    assert.deepEqual(job.metadata, { team: "ml" });
    assert.equal(job.method?.type, "reinforcement");
    assert.equal(job.method?.reinforcement?.hyperparameters?.n_epochs, 1);
    assert.equal(job.method?.reinforcement?.hyperparameters?.learning_rate_multiplier, "auto");

    const seen = new Set<string>([job.status]);
    const done = await until(
      async () => {
        const j = await c.fineTuning.jobs.retrieve(job.id);
        seen.add(j.status);
        return j;
      },
      (j) => ["succeeded", "failed", "cancelled"].includes(j.status),
      "the job to finish",
    );
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.ok(seen.has("running") || seen.has("queued"), [...seen].join(","));
    assert.match(done.fine_tuned_model!, /^ft:o4-mini-2025-04-16:rft:security-qa:[A-Za-z0-9]{8}$/);
    assert.equal(typeof done.finished_at, "number");

    // Events, newest first, with one metrics event per step, paginated with after/limit.
    const events = [];
    for await (const e of c.fineTuning.jobs.listEvents(job.id, { limit: 3 })) events.push(e);
    assert.equal(events[0]!.message, "The job has successfully completed");
    assert.ok(events.every((e) => e.object === "fine_tuning.job.event" && /^ftevent-/.test(e.id)));
    const metrics = events.filter((e) => e.type === "metrics");
    assert.deepEqual(
      metrics.map((e) => (e.data as { step: number }).step),
      [2, 1],
    );
    const d = metrics[0]!.data as { total_steps: number; scores: { train_reward_mean: number } };
    assert.equal(d.total_steps, 2);
    assert.equal(typeof d.scores.train_reward_mean, "number");
    assert.equal(events.at(-1)!.message, `Validating training file: ${train.id} and validation file: ${valid.id}`);

    // Checkpoints (one per validation, top 3 kept), newest first, with their metrics.
    const ckpts = await c.fineTuning.jobs.checkpoints.list(job.id);
    assert.ok(ckpts.data.length >= 2);
    const top = ckpts.data[0]!;
    assert.match(top.id, /^ftckpt_[0-9a-f]{24}$/);
    assert.equal(top.object, "fine_tuning.job.checkpoint");
    assert.equal(top.fine_tuning_job_id, job.id);
    assert.equal(top.step_number, 2);
    assert.equal(top.fine_tuned_model_checkpoint, `${done.fine_tuned_model}:ckpt-step-2`);
    assert.equal(typeof (top.metrics as Record<string, number>).valid_reward_mean, "number");

    // The pure decision of a wrong transition, with OpenAI's body.
    await assert.rejects(c.fineTuning.jobs.pause(job.id), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.code, "invalid_job_status");
      assert.match(e.message, /already completed/);
      return true;
    });

    // Models: the base, the fine-tuned model and its checkpoints; chat completions on the fine-tuned one.
    const ids = (await c.models.list()).data.map((m) => m.id);
    assert.ok(ids.includes(BASE) && ids.includes(done.fine_tuned_model!), ids.join(","));
    assert.ok(ids.includes(top.fine_tuned_model_checkpoint));
    const chat = await c.chat.completions.create({
      model: done.fine_tuned_model!,
      messages: [{ role: "user", content: "Is data encrypted at rest?" }],
      max_tokens: 3,
    });
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.model, done.fine_tuned_model);
    assert.equal(typeof chat.choices[0]!.message.content, "string");

    // Lists: newest first, filtered by metadata.
    const listed = await c.fineTuning.jobs.list({ metadata: { team: "ml" } });
    assert.deepEqual(
      listed.data.map((j) => j.id),
      [job.id],
    );
    assert.equal((await c.fineTuning.jobs.list({ metadata: { team: "other" } })).data.length, 0);
  } finally {
    assert.equal(await api.stop(), 0, api.stderr());
  }
});

test("bad requests get OpenAI's error body with the param; a bad dataset fails the job naming the line", async () => {
  const { api, c, upload } = await setup("errors");
  try {
    const train = await upload(TRAIN, "train.jsonl");
    const valid = await upload(VALID, "valid.jsonl");
    const bad = async (body: unknown, param: string | null, re: RegExp) =>
      assert.rejects(c.fineTuning.jobs.create(body as any), (e: unknown) => {
        assert.ok(e instanceof OpenAI.APIError, String(e));
        assert.equal(e.status, 400, e.message);
        assert.equal(e.param, param, e.message);
        assert.equal((e.error as { type: string }).type, "invalid_request_error");
        assert.match(e.message, re);
        return true;
      });
    await bad(
      jobRequest(train.id, valid.id, { n_epochs: 0 }),
      "method.reinforcement.hyperparameters.n_epochs",
      /n_epochs/,
    );
    await bad(
      jobRequest(train.id, valid.id, { n_epoch: 2 }),
      "method.reinforcement.hyperparameters.n_epoch",
      /unknown field "n_epoch"/,
    );
    await bad({ ...jobRequest(train.id, valid.id), model: "gpt-4o" }, "model", /gpt-4o is not available/);
    await bad(jobRequest("file-doesnotexist000000000000", valid.id), "training_file", /file-doesnotexist/);
    await bad(
      { ...jobRequest(train.id, valid.id), learning_rate: 1 },
      "learning_rate",
      /Unrecognized request argument/,
    );
    const grader = jobRequest(train.id, valid.id);
    (grader.method.reinforcement.grader.graders.label as Record<string, unknown>).operation = "equals";
    await bad(grader, "method.reinforcement.grader.graders.label.operation", /operation/);
    await bad({ ...jobRequest(train.id, valid.id), method: { type: "dpo", dpo: {} } }, "method.type", /DPO/);
    await assert.rejects(c.fineTuning.jobs.retrieve("ftjob-nope"), OpenAI.NotFoundError);
    await assert.rejects(c.fineTuning.jobs.cancel("ftjob-nope"), OpenAI.NotFoundError);

    // An SFT-shaped file (ends with the assistant's answer) is a valid upload but not an RFT dataset.
    const sft = await upload(
      [
        JSON.stringify({
          messages: [
            { role: "user", content: "yo" },
            { role: "assistant", content: "hey" },
          ],
        }),
        JSON.stringify({
          messages: [
            { role: "user", content: "hi" },
            { role: "assistant", content: "hello" },
          ],
        }),
      ],
      "chat.jsonl",
    );
    const job = await c.fineTuning.jobs.create(jobRequest(sft.id, valid.id) as any);
    const failed = await until(
      () => c.fineTuning.jobs.retrieve(job.id),
      (j) => j.status === "failed",
      "the job to fail",
    );
    assert.equal(failed.error?.code, "invalid_training_file");
    assert.equal(failed.error?.param, "training_file");
    assert.match(
      failed.error!.message,
      /'chat\.jsonl': 2 problem.*\nline 1: messages\[1\]\.role: the last message must be a user turn/,
    );
  } finally {
    await api.stop();
  }
});

test("pause checkpoints and stops, resume continues, cancel ends; a restarted server resumes a running job", async () => {
  const { dir, api, c, upload } = await setup("control");
  let api2: Awaited<ReturnType<typeof startApiCli>> | undefined;
  try {
    const train = await upload([...TRAIN, ...TRAIN.map((l) => l.replace("?", "??"))], "train.jsonl");
    const valid = await upload(VALID, "valid.jsonl");
    const job = await c.fineTuning.jobs.create(
      jobRequest(train.id, valid.id, { n_epochs: 20, batch_size: 2, eval_interval: 100 }) as any,
    );
    const stepOf = async () => {
      const page = await c.fineTuning.jobs.listEvents(job.id, { limit: 100 });
      const m = page.data.find((e) => e.type === "metrics");
      return m ? (m.data as { step: number }).step : 0;
    };
    await until(stepOf, (s) => s >= 1, "a first training step");
    const pausing = await c.fineTuning.jobs.pause(job.id);
    assert.ok(["pausing", "paused"].includes(pausing.status), pausing.status);
    await until(
      () => c.fineTuning.jobs.retrieve(job.id),
      (j) => (j.status as string) === "paused",
      "paused",
    );
    const ck = await c.fineTuning.jobs.checkpoints.list(job.id);
    const pauseCk = ck.data.find((x) => x.fine_tuned_model_checkpoint.endsWith("-pause"));
    assert.ok(pauseCk, "a pause writes a checkpoint");
    const pausedAt = pauseCk.step_number;
    await assert.rejects(c.fineTuning.jobs.pause(job.id), /only a running or queued job can be paused/);

    const resumed = await c.fineTuning.jobs.resume(job.id);
    assert.equal(resumed.status, "queued");
    await until(stepOf, (s) => s > pausedAt, "a step after the pause");

    // The server stops (the job checkpoints) and a new one on the same data resumes it.
    assert.equal(await api.stop(), 0, api.stderr());
    const stepBefore = await (async () => {
      const ev = await import("node:fs").then((fs) =>
        fs.readFileSync(join(dir, "data", "jobs", job.id, "events.jsonl"), "utf8"),
      );
      return Math.max(
        ...ev
          .trim()
          .split("\n")
          .map((l) => (JSON.parse(l).data?.step as number | undefined) ?? 0),
      );
    })();
    api2 = await startApiCli(["--data", join(dir, "data"), "--model", `${BASE}=${join(dir, "base")}`]);
    const c2 = api2.client;
    const again = await until(
      () => c2.fineTuning.jobs.retrieve(job.id),
      (j) => j.status === "running",
      "running again",
    );
    assert.equal(again.status, "running");
    const events2 = await c2.fineTuning.jobs.listEvents(job.id, { limit: 100 });
    await until(
      async () => (await c2.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data.find((e) => e.type === "metrics"),
      (m) => ((m?.data as { step?: number })?.step ?? 0) > stepBefore,
      "a step after the restart",
    );
    assert.ok(events2.data.some((e) => e.message === "Fine-tuning job resumed from its last checkpoint"));

    const cancelled = await c2.fineTuning.jobs.cancel(job.id);
    assert.equal(cancelled.status, "cancelled");
    await assert.rejects(c2.fineTuning.jobs.resume(job.id), /already cancelled/);
    const final = await c2.fineTuning.jobs.retrieve(job.id);
    assert.equal(final.status, "cancelled");
    assert.equal(final.fine_tuned_model, null);
  } finally {
    await api.stop();
    await api2?.stop();
  }
});
