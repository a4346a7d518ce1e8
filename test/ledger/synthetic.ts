/**
 * A synthetic governed training job, as the trainer will emit it: two authorities with different envelopes,
 * signed rows (plus a forged and an unknown-authority row, which are rejected), steps whose contributions
 * respect the envelopes and whose weight digests change only in contributed groups, checkpoints, job.finished.
 * Used by the ledger tests and bench/ledger.ts.
 */
import type { KeyObject } from "node:crypto";
import { type ChainHead, eventHash, nextEvent } from "../../ledger/chain.js";
import {
  type DatasetRow,
  manifestRoot,
  rowContentHash,
  rowId,
  signRow,
  verifyRowCredential,
} from "../../ledger/dataset.js";
import { digestOf, generateKeyPair, type KeyPair, keyId, publicKeyB64 } from "../../ledger/sign.js";
import { type EventSink, EventWriter } from "../../ledger/writer.js";
import { expandEnvelope, parameterGroups, sortGroups } from "../../proto/envelope.js";
import type { LedgerEvent } from "../../proto/ledger-events.js";

export interface SyntheticJob {
  job: string;
  events: LedgerEvent[];
  jobKey: KeyPair;
  authorityKeys: Record<string, KeyPair>;
  dataset: DatasetRow[];
  finalModel: Record<string, string>;
  numLayers: number;
}

export interface SyntheticOptions {
  job?: string;
  numLayers?: number;
  rowsPerAuthority?: number;
  steps?: number;
  rowsPerStep?: number;
  checkpointEvery?: number;
  /** Also forward every event to this sink. */
  sink?: EventSink;
  jobKey?: KeyPair;
  /** Stop before job.finished. */
  unfinished?: boolean;
  /** The first attempt stops after this step; the job resumes (job.resumed) from the last checkpoint before it,
   * abandoning the steps after that checkpoint (their digests differ from the second attempt's). */
  crashAfterStep?: number;
}

export const AUTHORITIES = [
  { name: "clinic-a", lawfulBasis: "GDPR Art. 9(2)(j) research", envelope: ["layers[2:4]"] },
  { name: "publisher-b", lawfulBasis: "licence 2026-17", envelope: ["layers[0:2].mlp", "lm_head"] },
];

export function syntheticJob(o: SyntheticOptions = {}): SyntheticJob {
  const job = o.job ?? "team-a/governed-1";
  const L = o.numLayers ?? 4;
  const groups = parameterGroups(L);
  const jobKey = o.jobKey ?? generateKeyPair();
  const authorityKeys: Record<string, KeyPair> = {};
  for (const a of AUTHORITIES) authorityKeys[a.name] = generateKeyPair();
  const outsider = generateKeyPair();

  // the dataset: rows per authority, then one forged row and one from an undeclared authority
  const dataset: DatasetRow[] = [];
  const perAuth = o.rowsPerAuthority ?? 6;
  for (let i = 0; i < perAuth; i++) {
    for (const a of AUTHORITIES) {
      const row = { messages: [{ role: "user", content: `${a.name} question ${i}` }], reference: `answer ${i}` };
      dataset.push(signRow(row, a.name, authorityKeys[a.name]!.privateKey));
    }
  }
  dataset.push(signRow({ messages: [{ role: "user", content: "forged" }] }, "clinic-a", outsider.privateKey));
  dataset.push(signRow({ messages: [{ role: "user", content: "stranger" }] }, "stranger-c", outsider.privateKey));

  const events: LedgerEvent[] = [];
  let t = Date.parse("2026-03-01T00:00:00.000Z");
  const w = new EventWriter({
    job,
    privateKey: jobKey.privateKey,
    now: () => {
      t += 7;
      return new Date(t);
    },
    sink: {
      write: (ev) => {
        events.push(ev);
        o.sink?.write(ev);
      },
    },
  });
  const base: Record<string, string> = {};
  for (const g of groups) base[g] = digestOf(`base:${g}`);
  const manifest = dataset.map((r, i) => ({ id: rowId(r, i), hash: rowContentHash(r) }));
  w.append("job.started", {
    specDigest: digestOf("spec"),
    signer: { publicKey: publicKeyB64(jobKey.publicKey) },
    model: { numLayers: L, groups: base },
    dataset: { rows: dataset.length, manifestRoot: manifestRoot(manifest) },
    authorities: AUTHORITIES.map((a) => ({
      ...a,
      publicKey: publicKeyB64(authorityKeys[a.name]!.publicKey),
      keyId: keyId(authorityKeys[a.name]!.publicKey),
    })),
    requireCredentials: true,
    worldSize: 1,
  });

  // admission, as the trainer does it
  const admitted: { id: string; groups: Set<string> }[] = [];
  dataset.forEach((row, i) => {
    const id = manifest[i]!.id;
    const hash = manifest[i]!.hash;
    const prov = row.provenance as { authority: string; credential: string };
    const a = AUTHORITIES.find((x) => x.name === prov.authority);
    if (!a) {
      w.append("row.rejected", {
        row: id,
        hash,
        authority: prov.authority,
        code: "unknown_authority",
        reason: `authority ${prov.authority} is not declared`,
      });
      return;
    }
    const pub = publicKeyB64(authorityKeys[a.name]!.publicKey);
    if (!verifyRowCredential(hash, prov.credential, pub)) {
      w.append("row.rejected", {
        row: id,
        hash,
        authority: a.name,
        code: "bad_credential",
        reason: "credential does not verify",
      });
      return;
    }
    const g = expandEnvelope(a.envelope, L);
    admitted.push({ id, groups: g });
    w.append("row.admitted", {
      row: id,
      hash,
      authority: a.name,
      credential: prov.credential,
      groups: sortGroups(g, L),
    });
  });

  // steps
  let cur = { ...base };
  const steps = o.steps ?? 5;
  const per = o.rowsPerStep ?? 3;
  const saved: { last: { event: LedgerEvent; step: number; name: string; groups: Record<string, string> } | null } = {
    last: null,
  };
  const runSteps = (from: number, to: number, tagOf: (s: number) => string) => {
    for (let s = from; s <= to; s++) {
      const batch = Array.from({ length: per }, (_, k) => admitted[(s * per + k) % admitted.length]!);
      const contributions: Record<string, string[]> = {};
      for (const r of batch) {
        for (const g of r.groups) {
          contributions[g] ??= [];
          contributions[g].push(r.id);
        }
      }
      const gradients: Record<string, { l2: number; digest: string }> = {};
      const weights: Record<string, { before: string; after: string }> = {};
      for (const g of groups) {
        const after = contributions[g] ? digestOf(`${g}@${s}${tagOf(s)}`) : cur[g]!;
        weights[g] = { before: cur[g]!, after };
        if (contributions[g]) gradients[g] = { l2: 0.5 + (s % 7) / 10, digest: digestOf(`grad:${g}@${s}`) };
        cur[g] = after;
      }
      w.append("update.applied", {
        step: s,
        rank: 0,
        contributions,
        gradients,
        weights,
        reward: { count: per * 4, mean: 0.5, std: 0.25, min: 0, max: 1 },
      });
      const every = o.checkpointEvery ?? 2;
      if (every > 0 && (s + 1) % every === 0) {
        const name = `ckpt-step-${s}`;
        const event = w.append("checkpoint.saved", {
          step: s,
          name,
          groups: { ...cur },
          metrics: { valid_reward_mean: 0.5 },
        });
        saved.last = { event, step: s, name, groups: { ...cur } };
      }
    }
  };
  if (o.crashAfterStep === undefined) runSteps(0, steps - 1, () => "");
  else {
    runSteps(0, o.crashAfterStep, () => "");
    const c = saved.last;
    const abandonedSteps: number[] = [];
    for (let s = c ? c.step + 1 : 0; s <= o.crashAfterStep; s++) abandonedSteps.push(s);
    // The second attempt's digests differ from the abandoned ones (tagged), so the verifier must reset to the checkpoint.
    cur = c ? { ...c.groups } : { ...base };
    w.append("job.resumed", {
      checkpoint: c ? { name: c.name, step: c.step, seq: c.event.seq, event: eventHash(c.event) } : null,
      groups: { ...cur },
      abandonedSteps,
    });
    runSteps(c ? c.step + 1 : 0, steps - 1, () => "/second-attempt");
  }
  if (!o.unfinished) w.append("job.finished", { status: "succeeded", steps, model: { ...cur } });
  return { job, events, jobKey, authorityKeys, dataset, finalModel: cur, numLayers: L };
}

/** A dishonest trainer re-signs a rewritten history with its own (valid) job key, so only semantics can catch it. */
export function resign(events: LedgerEvent[], key: KeyObject): LedgerEvent[] {
  let head: ChainHead = { job: events[0]!.job, seq: 0, prev: null };
  return events.map((ev) => {
    const r = nextEvent(head, ev.type, ev.body as never, ev.time, key, keyId(key));
    head = r.head;
    return r.event;
  });
}
