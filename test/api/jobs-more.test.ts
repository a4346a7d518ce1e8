/** More job paths through the openai client: an SFT job (OpenAI's default method, top-level hyperparameters) and a job whose trainer fails. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { toFile } from "openai";
import { tinyModel } from "../helpers/rft-job.js";
import { TRAIN, VALID } from "./guide.js";
import { startApi, tempDir, until } from "./helpers.js";

test("an SFT job with the deprecated top-level hyperparameters trains and names its model", async () => {
  const dir = tempDir("sft");
  await tinyModel(join(dir, "base"));
  const api = await startApi({ models: { "gpt-4o-mini-2024-07-18": join(dir, "base") } });
  try {
    const c = api.client;
    const rows = readFileSync("examples/sort-digits/sft.jsonl", "utf8").split("\n").slice(0, 8).join("\n");
    const train = await c.files.create({ file: await toFile(Buffer.from(rows), "sft.jsonl"), purpose: "fine-tune" });
    const job = await c.fineTuning.jobs.create({
      model: "gpt-4o-mini-2024-07-18",
      training_file: train.id,
      hyperparameters: { n_epochs: 1, batch_size: 4 },
    });
    assert.equal(job.method?.type, "supervised");
    assert.deepEqual(job.hyperparameters, { batch_size: 4, learning_rate_multiplier: "auto", n_epochs: 1 });
    const done = await until(
      () => c.fineTuning.jobs.retrieve(job.id),
      (j) => ["succeeded", "failed", "cancelled"].includes(j.status),
      "the SFT job",
    );
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.match(done.fine_tuned_model!, /^ft:gpt-4o-mini-2024-07-18:rft::[A-Za-z0-9]{8}$/);
    const metrics = (await c.fineTuning.jobs.listEvents(job.id, { limit: 50 })).data.filter(
      (e) => e.type === "metrics",
    );
    assert.deepEqual(
      metrics.map((e) => (e.data as { step: number }).step),
      [2, 1],
    );
    assert.equal(typeof (metrics[0]!.data as { train_loss: number }).train_loss, "number");
    assert.deepEqual((await c.fineTuning.jobs.checkpoints.list(job.id)).data, []);
    // A fine-tuned model is a base for the next job.
    const next = await c.fineTuning.jobs.create({ model: done.fine_tuned_model!, training_file: train.id });
    assert.equal(next.model, done.fine_tuned_model);
    await c.fineTuning.jobs.cancel(next.id);
  } finally {
    await api.close();
  }
});

test("a trainer that fails ends the job failed, with the reason in error and events", async () => {
  const dir = tempDir("fail");
  await tinyModel(join(dir, "base"));
  const api = await startApi({ models: { base: join(dir, "base") } });
  try {
    const c = api.client;
    const up = async (l: string[], n: string) =>
      c.files.create({ file: await toFile(Buffer.from(`${l.join("\n")}\n`), n), purpose: "fine-tune" });
    const train = await up(TRAIN, "train.jsonl");
    const valid = await up(VALID, "valid.jsonl");
    const job = await c.fineTuning.jobs.create({
      model: "base",
      training_file: train.id,
      validation_file: valid.id,
      method: {
        type: "reinforcement",
        reinforcement: {
          // Statically fine; the trainer's grader engine runs the module and finds it cannot import.
          grader: {
            type: "python",
            name: "broken",
            source: "import no_such_module_anywhere\n\ndef grade(sample, item):\n    return 1.0\n",
          },
          hyperparameters: { n_epochs: 1, batch_size: 2 },
        },
      },
    });
    const failed = await until(
      () => c.fineTuning.jobs.retrieve(job.id),
      (j) => ["succeeded", "failed", "cancelled"].includes(j.status),
      "the job to end",
    );
    assert.equal(failed.status, "failed");
    assert.equal(failed.error?.code, "training_failed");
    assert.match(failed.error!.message, /no_such_module_anywhere/);
    const events = (await c.fineTuning.jobs.listEvents(job.id)).data;
    assert.equal(events[0]!.level, "error");
    assert.match(events[0]!.message, /^Fine-tuning job failed: /);
  } finally {
    await api.close();
  }
});
