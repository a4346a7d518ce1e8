/**
 * The local ledger is durable and a lost tail resumes: a ledger that ends before the latest checkpoint's
 * checkpoint.saved (its unsynced tail lost with the machine) falls back to the last checkpoint it fully records
 * instead of failing every rerun with "events were lost"; a full disk (a real tmpfs of a few hundred KiB) while
 * writing a checkpoint or the ledger stops `rft run` with one line naming the file (exit 1), and the last
 * durable state resumes to a ledger `rft audit verify` accepts and the model of an uninterrupted run.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse, stringify } from "yaml";
import { verifyChain } from "../../ledger/chain.js";
import { readEventsFile } from "../../ledger/publisher.js";
import type { LedgerEvent } from "../../proto/ledger-events.js";
import { groupDigests, groupsOf } from "../../trainer/governance/digests.js";
import { loadHfModel } from "../../trainer/model/hf-io.js";
import { disposeModel } from "../../trainer/model/model.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";

/** A 6-step job (24 rows, batch 4) on a 2-layer model, checkpoints every 2 steps; the manifest file. */
async function sixStepJob(prefix: string) {
  const dir = tempJobDir(prefix);
  await tinyModel(join(dir, "model"), { layers: 2 });
  const file = rftManifest(
    dir,
    { model: "model" },
    { nEpochs: 1, batchSize: 4, samplesPerPrompt: 4, maxCompletionTokens: 6, evalInterval: 2, evalSamples: 1 },
  );
  const job = parse(readFileSync(file, "utf8"));
  job.spec.method.reinforcement.grader.graders.correct.source = VARIED;
  writeFileSync(file, stringify(job));
  const train = join(dir, "train.jsonl");
  writeFileSync(train, `${readFileSync(train, "utf8").split("\n").slice(0, 24).join("\n")}\n`);
  return { dir, file };
}

const rft = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    encoding: "utf8",
    timeout: 300_000,
    killSignal: "SIGKILL",
  });
const run = (file: string, out: string, ...more: string[]) =>
  rft("run", file, "--out", out, "--no-progress", "--backend", "wasm", ...more);

async function modelDigests(dir: string): Promise<Record<string, string>> {
  const m = await loadHfModel(dir, { tokenizer: false });
  try {
    return groupDigests(m.params, groupsOf(m.config));
  } finally {
    disposeModel(m);
  }
}

const stepsOf = (evs: LedgerEvent[]) => evs.flatMap((e) => (e.type === "update.applied" ? [e.body.step] : []));

/** Export with a fresh ledger key and verify against the delivered model; returns the report. */
function auditVerify(dir: string, out: string): string {
  const keys = join(dir, `keys-${Math.random().toString(36).slice(2)}`);
  mkdirSync(keys);
  assert.equal(rft("keys", "generate", "--out", join(keys, "ledger")).status, 0);
  const exp = rft("audit", "export", out, "--key", join(keys, "ledger.key"));
  assert.equal(exp.status, 0, exp.stderr);
  writeFileSync(join(keys, "bundle.json"), exp.stdout);
  const ok = rft("audit", "verify", join(keys, "bundle.json"), "--model", join(out, "model"));
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /VERIFIED/);
  return ok.stdout;
}

test("a ledger that lost its tail after --stop-after resumes from the last checkpoint it records, and verifies", async () => {
  const { dir, file } = await sixStepJob("ledger-tail");
  const whole = run(file, join(dir, "whole"));
  assert.equal(whole.status, 0, whole.stderr);

  const out = join(dir, "out");
  const first = run(file, out, "--stop-after", "5"); // checkpoints step-000002, step-000004, step-000005-pause
  assert.equal(first.status, 0, first.stderr);
  const ledger = join(out, "ledger", "events.jsonl");
  const before = readEventsFile(ledger);
  const ck4 = before.find((e) => e.type === "checkpoint.saved" && e.body.step === 4)!;
  // The tail from step 4's checkpoint.saved on never reached the disk (a power loss before the fsync).
  const lines = readFileSync(ledger, "utf8").split("\n");
  writeFileSync(ledger, `${lines.slice(0, ck4.seq).join("\n")}\n`);
  const kept = readEventsFile(ledger);
  assert.equal(kept.length, ck4.seq);

  const again = run(file, out);
  assert.equal(again.status, 0, again.stderr);
  assert.doesNotMatch(again.stderr, /events were lost/);
  const said = again.stderr.split("\n").filter((l) => /its tail was lost/.test(l));
  assert.equal(said.length, 1, again.stderr);
  assert.match(
    said[0]!,
    /The ledger ends at seq \d+, short of checkpoint step-000005-pause's checkpoint.saved \(seq \d+\): its tail was lost; resuming from checkpoint step-000002 \(step 2\)/,
  );

  const events = readEventsFile(ledger);
  assert.equal(verifyChain(events).failures.length, 0, "one unbroken chain");
  assert.deepEqual(events.slice(0, kept.length), kept, "nothing the ledger kept was rewritten");
  const resumed = events[kept.length]!;
  assert.equal(resumed.type, "job.resumed");
  assert.equal(resumed.type === "job.resumed" && resumed.body.checkpoint?.name, "step-000002");
  assert.deepEqual(resumed.type === "job.resumed" && resumed.body.abandonedSteps, [3, 4]);
  assert.deepEqual(stepsOf(events), [1, 2, 3, 4, 3, 4, 5, 6]);
  assert.deepEqual(await modelDigests(join(out, "model")), await modelDigests(join(dir, "whole", "model")));
  assert.match(auditVerify(dir, out), /back to step-000002 \(step 2\), abandoned steps: 3-4/);
});

/** Fills the file system of `dir` up to `leave` bytes free; returns the filler's path. */
function fill(dir: string, leave: number): string {
  const path = join(dir, "filler");
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) {
      const s = statfsSync(dir);
      const free = s.bavail * s.bsize - leave;
      if (free <= 0) break;
      try {
        writeSync(fd, chunk, 0, Math.min(chunk.length, free));
      } catch {
        break; // full
      }
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

function mountTmpfs(path: string, size: string): boolean {
  mkdirSync(path, { recursive: true });
  return spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", path]).status === 0;
}

test("a full disk (a real tmpfs) while writing a checkpoint or the ledger: one line naming the file, exit 1; the durable state resumes", async (t) => {
  const { dir, file } = await sixStepJob("ledger-enospc");
  const disk = join(dir, "disk");
  if (!mountTmpfs(disk, "16m")) {
    // CI runs as root and mounts it; elsewhere this fails unless skipping is asked for by name.
    if (process.env["RFT_TEST_SKIP_TMPFS"] !== "1")
      assert.fail("cannot mount a tmpfs here (needs root); RFT_TEST_SKIP_TMPFS=1 skips the full-disk case");
    t.skip("RFT_TEST_SKIP_TMPFS=1: the full-disk case is not exercised");
    return;
  }
  try {
    const out = join(disk, "out");
    // (this job's validation history is float noise apart here: on main `rft run` then hung in its summary chart)
    const first = run(file, out, "--stop-after", "3");
    assert.equal(first.status, 0, first.stderr);

    // Room for steps 3 and 4's events and step 4's validation samples (`validation/step-N.jsonl`, written
    // first), not for step 4's checkpoint.
    const validation = join(out, "validation");
    const samples = Math.max(...readdirSync(validation).map((f) => statSync(join(validation, f)).size));
    let filler = fill(disk, 48 * 1024 + 2 * samples);
    const ckFull = run(file, out);
    assert.equal(ckFull.status, 1, ckFull.stderr);
    const errLines = ckFull.stderr.trim().split("\n");
    assert.match(
      errLines.at(-1)!,
      /^rft run: cannot write checkpoint step-000004: \S+: no space left on device \(ENOSPC\)$/,
      ckFull.stderr,
    );
    assert.doesNotMatch(ckFull.stderr, /\n\s+at /, "no stack trace");

    // No room at all: the ledger (or the events file beside it) cannot be written.
    rmSync(filler);
    filler = fill(disk, 0);
    const full = run(file, out);
    assert.equal(full.status, 1, full.stderr);
    assert.match(
      full.stderr.trim().split("\n").at(-1)!,
      new RegExp(`^rft run: cannot (write|append to the ledger) ${out}/\\S+: no space left on device \\(ENOSPC\\)$`),
      full.stderr,
    );
    assert.doesNotMatch(full.stderr, /\n\s+at /, "no stack trace");

    // Space again: the last durable state resumes and the result verifies.
    rmSync(filler);
    const ok = run(file, out);
    assert.equal(ok.status, 0, ok.stderr);
    const events = readEventsFile(join(out, "ledger", "events.jsonl"));
    assert.equal(verifyChain(events).failures.length, 0);
    auditVerify(dir, out);
  } finally {
    spawnSync("umount", [disk]);
  }
});
