import assert from "node:assert/strict";
import { test } from "node:test";
import { exportBundle, type ProvenanceBundle } from "../../ledger/bundle.js";
import { encodeEvent, eventHash } from "../../ledger/chain.js";
import { MerkleLog } from "../../ledger/merkle.js";
import { digestOf, generateKeyPair, signBytes } from "../../ledger/sign.js";
import { signTreeHead } from "../../ledger/tree-head.js";
import { type Failure, formatReport, verifyBundle } from "../../ledger/verify.js";
import type { LedgerEvent } from "../../proto/ledger-events.js";
import { resign, syntheticJob } from "./synthetic.js";

const ledgerKey = generateKeyPair();
const job = syntheticJob({ steps: 6 });
const bundle = exportBundle(job.events, ledgerKey.privateKey, Date.parse("2026-03-02T00:00:00Z"));
const clone = (): ProvenanceBundle => structuredClone(bundle);
/** Rebuilds the derived fields and re-signs the tree head: an attacker holding both keys. */
const rebuild = (events: LedgerEvent[]) =>
  exportBundle(events, ledgerKey.privateKey, Date.parse("2026-03-02T00:00:00Z"));
const first = (fs: Failure[]) => fs[0]!;
const has = (fs: Failure[], check: string, seq: number | null, field: RegExp | string) =>
  fs.some(
    (f) => f.check === check && f.seq === seq && (typeof field === "string" ? f.field === field : field.test(f.field)),
  );

test("an untampered bundle verifies, with the per-authority report", () => {
  const r = verifyBundle(bundle, { modelDigests: job.finalModel, datasetRows: job.dataset });
  assert.deepEqual(r.failures, [], formatReport(r));
  assert.ok(r.ok);
  assert.equal(r.steps, 6);
  assert.deepEqual(r.rows, { admitted: 12, rejected: 2 });
  const [a, b] = r.authorities;
  assert.equal(a!.name, "clinic-a");
  assert.equal(a!.admitted, 6);
  assert.equal(a!.rejected, 1, "the forged row claims clinic-a");
  assert.deepEqual(a!.groupsTouched, [
    "layers.2.attention",
    "layers.2.mlp",
    "layers.2.norms",
    "layers.3.attention",
    "layers.3.mlp",
    "layers.3.norms",
  ]);
  assert.deepEqual(b!.groupsTouched, ["layers.0.mlp", "layers.1.mlp", "lm_head"]);
  assert.deepEqual(a!.steps, [0, 1, 2, 3, 4, 5]);
  const text = formatReport(r);
  assert.match(text, /VERIFIED/);
  assert.match(text, /authority publisher-b \(lawful basis: licence 2026-17\)/);
  // A bundle survives JSON serialization.
  assert.ok(verifyBundle(JSON.parse(JSON.stringify(bundle))).ok);
});

test("flipping one byte in any event is caught at that event's signature", () => {
  for (let i = 0; i < bundle.events.length; i++) {
    const b = clone();
    const text = JSON.stringify(b.events[i]);
    // flip one hex digit of a digest inside the body (keeps the JSON and the schema valid)
    const at = text.indexOf("sha256:", text.indexOf('"body"')) + 7 + 5;
    const ch = text[at]!;
    const flipped = text.slice(0, at) + (ch === "0" ? "1" : "0") + text.slice(at + 1);
    b.events[i] = JSON.parse(flipped);
    const r = verifyBundle(b);
    assert.ok(!r.ok);
    const f = first(r.failures);
    assert.equal(f.check, "signature", `event ${i}: ${formatReport(r)}`);
    assert.equal(f.seq, i);
    assert.equal(f.field, "sig");
    assert.ok(has(r.failures, "merkle", null, "merkleRoot"));
  }
});

test("dropping an event is caught as a chain gap and a tree-head mismatch", () => {
  const b = clone();
  b.events.splice(5, 1);
  const r = verifyBundle(b);
  assert.ok(has(r.failures, "chain", 6, "seq"));
  assert.match(r.failures.find((f) => f.check === "chain")!.reason, /gap: events 5\.\.5 missing/);
  assert.ok(has(r.failures, "tree-head", null, "treeHead.size"));
  // The last event dropped: the chain is intact, the signed head is not.
  const c = clone();
  c.events.pop();
  const rc = verifyBundle(c);
  assert.ok(has(rc.failures, "tree-head", null, "treeHead.size"));
  assert.match(rc.failures.find((f) => f.check === "tree-head")!.reason, /events missing/);
});

test("reordering two events is caught", () => {
  const b = clone();
  [b.events[8], b.events[9]] = [b.events[9]!, b.events[8]!];
  const r = verifyBundle(b);
  const f = first(r.failures);
  assert.equal(f.check, "chain");
  assert.equal(f.seq, 9);
  assert.match(f.reason, /seq 9 follows seq 7/);
});

test("a row swapped in from another authority is caught (even with every signature redone)", () => {
  // 1. The row event claims the row came from publisher-b (broader reach into lm_head): the credential is clinic-a's.
  const events = structuredClone(job.events);
  const i = events.findIndex((e) => e.type === "row.admitted" && e.body.authority === "clinic-a");
  const ev = events[i]! as Extract<LedgerEvent, { type: "row.admitted" }>;
  ev.body.authority = "publisher-b";
  ev.body.groups = ["layers.0.mlp", "layers.1.mlp", "lm_head"];
  const r = verifyBundle(rebuild(resign(events, job.jobKey.privateKey)));
  assert.ok(has(r.failures, "admission", i, "body.credential"), formatReport(r));
  assert.match(r.failures.find((f) => f.check === "admission")!.reason, /not authority publisher-b's signature/);

  // 2. The dataset handed to the auditor has a row from another authority in that place.
  const rows = structuredClone(job.dataset);
  [rows[0], rows[1]] = [rows[1]!, rows[0]!];
  const r2 = verifyBundle(bundle, { datasetRows: rows });
  assert.ok(has(r2.failures, "dataset", 1, "dataset[0]"), formatReport(r2));
  assert.ok(has(r2.failures, "dataset", 1, "dataset[0].provenance.authority"));
});

test("a gradient outside the row's envelope is caught, even re-signed", () => {
  const events = structuredClone(job.events);
  const i = events.findIndex((e) => e.type === "update.applied");
  const ev = events[i]! as Extract<LedgerEvent, { type: "update.applied" }>;
  const clinicRow = ev.body.contributions["layers.2.mlp"]![0]!;
  ev.body.contributions.lm_head = [...(ev.body.contributions.lm_head ?? []), clinicRow];
  const r = verifyBundle(rebuild(resign(events, job.jobKey.privateKey)));
  assert.ok(has(r.failures, "envelope", i, "body.contributions.lm_head"), formatReport(r));
  assert.match(
    r.failures.find((f) => f.check === "envelope")!.reason,
    new RegExp(
      `row ${clinicRow.replace("#", "#")} \\(authority clinic-a\\) reached group lm_head, outside its envelope`,
    ),
  );
});

test("a group that changes without contributions, or a broken before/after link, is caught", () => {
  const events = structuredClone(job.events);
  const i = events.findIndex((e) => e.type === "update.applied");
  const ev = events[i]! as Extract<LedgerEvent, { type: "update.applied" }>;
  ev.body.weights.embeddings!.after = digestOf("sneaky");
  const r = verifyBundle(rebuild(resign(events, job.jobKey.privateKey)));
  assert.ok(has(r.failures, "weights", i, "body.weights.embeddings.after"), formatReport(r));
  assert.match(r.failures[0]!.reason, /group embeddings changed in step 0 without any admitted contribution/);
  assert.ok(has(r.failures, "weights", i + 1, "body.weights.embeddings.before"));
});

test("an altered final-model digest is caught, against the ledger and against the model on disk", () => {
  const disk = { ...job.finalModel, "layers.3.mlp": digestOf("one weight changed") };
  const r = verifyBundle(bundle, { modelDigests: disk });
  const last = bundle.events.length - 1;
  assert.deepEqual(
    r.failures.map((f) => [f.check, f.seq, f.field]),
    [["final-model", last, "body.model.layers.3.mlp"]],
  );
  assert.match(r.failures[0]!.reason, /the model on disk differs from the ledger in group layers\.3\.mlp/);

  const events = structuredClone(job.events);
  const fin = events[last]! as Extract<LedgerEvent, { type: "job.finished" }>;
  fin.body.model["layers.3.mlp"] = digestOf("other");
  const r2 = verifyBundle(rebuild(resign(events, job.jobKey.privateKey)));
  assert.ok(has(r2.failures, "final-model", last, "body.model.layers.3.mlp"), formatReport(r2));
});

test("a replayed old tree head is caught; so is a rollback below a head seen before", () => {
  const log = new MerkleLog();
  for (const ev of bundle.events) log.appendData(encodeEvent(ev).bytes);
  const old = signTreeHead(
    { log: job.job, size: 10, root: log.root(10), timestamp: Date.parse("2026-03-01T00:00:01Z") },
    ledgerKey.privateKey,
  );
  const b = clone();
  b.treeHead = old;
  const r = verifyBundle(b);
  assert.deepEqual(
    r.failures.map((f) => [f.check, f.field]),
    [["tree-head", "treeHead.size"]],
  );
  assert.match(r.failures[0]!.reason, /covers 10 events but the bundle holds \d+ \(stale or replayed head\)/);

  // The auditor saw a newer head before: a bundle cut back to an older state is a rollback.
  const newer = bundle.treeHead;
  const short = exportBundle(job.events.slice(0, 10), ledgerKey.privateKey, Date.parse("2026-03-03T00:00:00Z"));
  const r2 = verifyBundle(short, { knownHead: newer });
  assert.ok(has(r2.failures, "tree-head", null, "treeHead"), formatReport(r2));
  assert.match(r2.failures.find((f) => f.check === "tree-head")!.reason, /^rollback/);
  // And an older head re-presented after a newer one: a replay.
  const r3 = verifyBundle(bundle, {
    knownHead: {
      ...signTreeHead({ ...newer, root: newer.root, timestamp: newer.timestamp + 1000 }, ledgerKey.privateKey),
    },
  });
  assert.match(r3.failures.find((f) => f.check === "tree-head")!.reason, /^replay/);
  // A head signed by another key.
  const c = clone();
  c.treeHead = { ...c.treeHead, sig: signBytes(generateKeyPair().privateKey, Buffer.from("x")) };
  assert.equal(verifyBundle(c).failures[0]!.reason, "tree head signature does not verify");
});

test("pinned keys: a bundle signed end to end by someone else's keys fails the pin", () => {
  const other = syntheticJob({ steps: 1 });
  const b = exportBundle(other.events, generateKeyPair().privateKey);
  assert.ok(verifyBundle(b).ok);
  const r = verifyBundle(b, { jobKey: bundle.keys.job!.keyId, ledgerKey: bundle.keys.ledger.publicKey });
  assert.ok(has(r.failures, "keys", null, "keys.job.publicKey"));
  assert.ok(has(r.failures, "keys", null, "keys.ledger.publicKey"));
});

test("a rejected row that contributes, and a manifest that lies, are caught", () => {
  const events = structuredClone(job.events);
  const rejected = events.find((e) => e.type === "row.rejected")! as Extract<LedgerEvent, { type: "row.rejected" }>;
  const i = events.findIndex((e) => e.type === "update.applied");
  const ev = events[i]! as Extract<LedgerEvent, { type: "update.applied" }>;
  ev.body.contributions["layers.2.mlp"]!.push(rejected.body.row);
  const r = verifyBundle(rebuild(resign(events, job.jobKey.privateKey)));
  assert.ok(has(r.failures, "admission", i, "body.contributions.layers.2.mlp"), formatReport(r));

  const b = clone();
  b.manifest.rows[0]!.authority = "publisher-b";
  const r2 = verifyBundle(b);
  assert.deepEqual(
    r2.failures.map((f) => [f.check, f.field]),
    [["manifest", "manifest.rows.0"]],
  );
});

// ---- resumed jobs (job.resumed): the chain keeps the abandoned steps; the weights return to a checkpoint
const resumedJob = syntheticJob({ steps: 8, checkpointEvery: 3, crashAfterStep: 4 });
const resumedBundle = exportBundle(resumedJob.events, ledgerKey.privateKey, Date.parse("2026-03-02T00:00:00Z"));
const resumeSeq = resumedJob.events.findIndex((e) => e.type === "job.resumed");
type Resumed = Extract<LedgerEvent, { type: "job.resumed" }>;
/** The resumed job with one edit, re-signed end to end (only the semantics can catch it). */
const tamperResume = (edit: (events: LedgerEvent[]) => LedgerEvent[] | void) => {
  const events = structuredClone(resumedJob.events);
  const out = edit(events) ?? events;
  return verifyBundle(rebuild(resign(out, resumedJob.jobKey.privateKey)));
};

test("a resumed job verifies: repeated step numbers after job.resumed, the resume and abandoned steps reported", () => {
  const r = verifyBundle(resumedBundle, { modelDigests: resumedJob.finalModel, datasetRows: resumedJob.dataset });
  assert.deepEqual(r.failures, [], formatReport(r));
  assert.equal(r.steps, 8, "steps in effect: 0-7 (the abandoned 3-4 are not counted twice)");
  const ckpt = resumedJob.events.find((e) => e.type === "checkpoint.saved" && e.body.step === 2)!;
  assert.deepEqual(r.resumes, [{ seq: resumeSeq, checkpoint: "ckpt-step-2", step: 2, abandonedSteps: [3, 4] }]);
  assert.equal((resumedJob.events[resumeSeq] as Resumed).body.checkpoint!.seq, ckpt.seq);
  const steps = resumedJob.events.flatMap((e) => (e.type === "update.applied" ? [e.body.step] : []));
  assert.deepEqual(steps, [0, 1, 2, 3, 4, 3, 4, 5, 6, 7], "the abandoned steps stay in the chain");
  assert.match(
    formatReport(r),
    /resumed 1 time \(2 abandoned steps\):\n\s+event seq \d+: back to ckpt-step-2 \(step 2\), abandoned steps: 3-4/,
  );
  // Without the reset the second attempt's before-digests would not link: the verifier really rewinds.
  const second = resumedJob.events[resumeSeq + 1] as Extract<LedgerEvent, { type: "update.applied" }>;
  const abandoned = resumedJob.events[resumeSeq - 1] as Extract<LedgerEvent, { type: "update.applied" }>;
  assert.notEqual(second.body.weights["layers.2.mlp"]!.before, abandoned.body.weights["layers.2.mlp"]!.after);
});

test("a job.resumed naming a checkpoint that never existed, or wrong digests or abandoned steps, is caught", () => {
  let r = tamperResume((evs) => {
    (evs[resumeSeq] as Resumed).body.checkpoint!.event = digestOf("no such checkpoint");
  });
  assert.ok(has(r.failures, "resume", resumeSeq, "body.checkpoint.event"), formatReport(r));
  assert.match(r.failures.find((f) => f.check === "resume")!.reason, /not in this chain/);

  r = tamperResume((evs) => {
    (evs[resumeSeq] as Resumed).body.checkpoint!.step = 5;
  });
  assert.ok(has(r.failures, "resume", resumeSeq, "body.checkpoint.step"), formatReport(r));

  r = tamperResume((evs) => {
    (evs[resumeSeq] as Resumed).body.groups["layers.3.attention"] = digestOf("other weights");
  });
  assert.deepEqual(
    r.failures.map((f) => [f.check, f.seq, f.field]),
    [["resume", resumeSeq, "body.groups.layers.3.attention"]],
    formatReport(r),
  );
  assert.match(r.failures[0]!.reason, /restored digest of layers\.3\.attention is not checkpoint ckpt-step-2's/);

  r = tamperResume((evs) => {
    (evs[resumeSeq] as Resumed).body.abandonedSteps = [];
  });
  assert.ok(has(r.failures, "resume", resumeSeq, "body.abandonedSteps"), formatReport(r));
  assert.match(r.failures[0]!.reason, /lists \[\], but the steps applied after checkpoint ckpt-step-2 are \[3, 4\]/);
});

test("a resume that silently skips back (no job.resumed, step numbers going backwards) is caught", () => {
  const r = tamperResume((evs) => evs.filter((e) => e.type !== "job.resumed"));
  // The first event after the removed job.resumed now sits at its seq.
  assert.ok(has(r.failures, "steps", resumeSeq, "body.step"), formatReport(r));
  assert.match(
    r.failures.find((f) => f.check === "steps")!.reason,
    /step 3 does not follow step 4 \(steps go back only after a job\.resumed\)/,
  );
});

test("after a resume, a group that changes without contributions is still caught", () => {
  const r = tamperResume((evs) => {
    (evs[resumeSeq + 1] as Extract<LedgerEvent, { type: "update.applied" }>).body.weights.embeddings!.after =
      digestOf("sneaky");
  });
  assert.ok(has(r.failures, "weights", resumeSeq + 1, "body.weights.embeddings.after"), formatReport(r));
});

test("resuming to a checkpoint of an abandoned attempt, or after a succeeded job.finished, is caught", () => {
  // The job resumes to ckpt-step-2 a second time (abandoning the second attempt's ckpt-step-5), then claims to
  // return to ckpt-step-5.
  const r = tamperResume((evs) => {
    const ck = evs.find((e) => e.seq > resumeSeq && e.type === "checkpoint.saved")!;
    const ref = { name: (ck as any).body.name, step: (ck as any).body.step, seq: ck.seq, event: eventHash(ck) };
    const back = structuredClone(evs[resumeSeq]!) as Resumed;
    const fin = evs.pop()!;
    const again = structuredClone(back);
    back.body.abandonedSteps = [3, 4, 5, 6, 7];
    again.body.checkpoint = ref;
    again.body.groups = structuredClone((ck as any).body.groups);
    again.body.abandonedSteps = [];
    evs.push(back, again, fin);
  });
  const last = resumedJob.events.length + 1;
  assert.ok(has(r.failures, "resume", last - 1, "body.checkpoint.event"), formatReport(r));
  assert.match(r.failures.find((f) => f.seq === last - 1)!.reason, /saved by an attempt abandoned at seq/);

  const r2 = tamperResume((evs) => {
    evs.push(structuredClone(evs[resumeSeq]!));
  });
  assert.ok(has(r2.failures, "job", resumedJob.events.length, "type"), formatReport(r2));
  assert.match(r2.failures[0]!.reason, /job\.resumed after job\.finished \(succeeded\)/);
});

test("a key spelled other than canonical base64 is a named failure, not a crash", () => {
  // Base64 decoders ignore trailing junk and the last character's two unused low bits: these spellings decode
  // to the right 32 bytes.
  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const lowBit = (k: string) => `${k.slice(0, 42)}${B64[B64.indexOf(k[42]!) ^ 1]}=`;
  const respell = (k: string) => [`${k}x`, lowBit(k)];
  for (const which of ["ledger", "job"] as const) {
    for (const spelling of respell(bundle.keys[which]!.publicKey)) {
      const b = clone();
      b.keys[which]!.publicKey = spelling;
      const r = verifyBundle(b);
      assert.equal(r.ok, false);
      assert.ok(has(r.failures, "keys", null, `keys.${which}.publicKey`), formatReport(r));
    }
  }
  // job.started declaring such a key (re-signed under it, so only the key's spelling is wrong).
  const evs = structuredClone(job.events);
  const started = evs[0] as Extract<LedgerEvent, { type: "job.started" }>;
  const k = started.body.signer.publicKey;
  started.body.signer.publicKey = lowBit(k);
  const r = verifyBundle(rebuild(resign(evs, job.jobKey.privateKey)));
  assert.equal(r.ok, false);
  assert.ok(
    r.failures.some((f) => f.check === "signature" && /canonical base64 of a 32-byte Ed25519/.test(f.reason)),
    formatReport(r),
  );
});
