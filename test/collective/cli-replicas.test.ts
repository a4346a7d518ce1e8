/**
 * `rft run --replicas 2` as a user runs it: two rank processes train to the end; killing one rank mid-run
 * makes the other exit at once with a clear error, and the same command resumes from the last checkpoint,
 * completes, and leaves a ledger that verifies as a whole.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { exportBundle } from "../../ledger/bundle.js";
import { readEventsFile } from "../../ledger/publisher.js";
import { generateKeyPair } from "../../ledger/sign.js";
import { verifyBundle } from "../../ledger/verify.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

// An hour's collective timeout: a gang that stops after a rank is killed stopped because of the broken link.
const ENV = { ...process.env, RFT_LOG_LEVEL: "silent", RFT_COLLECTIVE_TIMEOUT: "3600" };

/** The pid of the child of `parent` whose environment says RFT_RANK=rank. */
function rankPid(parent: number, rank: number): number | null {
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== parent) continue;
      if (readFileSync(`/proc/${d}/environ`, "utf8").split("\0").includes(`RFT_RANK=${rank}`)) return Number(d);
    } catch {}
  }
  return null;
}

test("rft run --replicas 2: a killed rank stops the gang with a clear error; the same command resumes and completes", async () => {
  const dir = tempJobDir("cli-replicas");
  await tinyModel(join(dir, "model"));
  const file = rftManifest(
    dir,
    { model: "model" },
    { nEpochs: 2, batchSize: 4, samplesPerPrompt: 2, maxCompletionTokens: 8, evalInterval: 2, evalSamples: 1 },
  );
  const cut = (f: string, n: number) =>
    writeFileSync(join(dir, f), `${readFileSync(join(dir, f), "utf8").split("\n").slice(0, n).join("\n")}\n`);
  cut("train.jsonl", 40); // 10 steps per epoch, 20 in all
  cut("valid.jsonl", 4);
  const out = join(dir, "out");
  const args = ["--import", "tsx", "cli/rft.ts", "run", file, "--out", out, "--no-progress", "--replicas", "2"];

  const child = spawn(process.execPath, args, { env: ENV });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    child.stderr.on("data", (d: Buffer) => {
      stderr += d;
      if (/Checkpoint step-000002 saved/.test(stderr)) resolve();
    });
    void exited.then(() => reject(new Error(`rft run exited before its first checkpoint:\n${stderr}`)));
  });
  const victim = rankPid(child.pid!, 1);
  assert.ok(victim, "rank 1's process");
  process.kill(victim, "SIGKILL");
  const code = await exited;
  assert.notEqual(code, 0, stderr);
  assert.doesNotMatch(stderr, /timed out/);
  assert.match(stderr, /rft run: rank 0: the link (from|to) rank 1 \(127\.0\.0\.1:\d+\) .*(exited|crashed)/);
  assert.doesNotMatch(stdout, /RFT succeeded/);

  const again = spawnSync(process.execPath, args, { encoding: "utf8", env: ENV });
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /Resuming from checkpoint step-0+\d+ \(step \d+\)/);
  assert.match(again.stdout, /RFT succeeded at step 20\/20/);

  const events = readEventsFile(join(out, "ledger", "events.jsonl"));
  const report = verifyBundle(exportBundle(events, generateKeyPair().privateKey));
  assert.ok(report.ok, JSON.stringify(report.failures, null, 1));
  assert.equal(report.steps, 20);
  // The ledger was continued, not rewound: one job.resumed; the steps committed after its checkpoint by the
  // killed attempt stay in the chain, listed as abandoned.
  assert.equal(report.resumes.length, 1);
  const committed = events.filter((e) => e.type === "step.committed").length;
  assert.ok(committed >= 20 && committed <= 20 + report.resumes[0]!.abandonedSteps.length, `${committed} commits`);
});
