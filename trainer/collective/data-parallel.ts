/**
 * Data parallelism for the RFT loop: which prompts a rank owns, the gradient layout all ranks agree on, the
 * gradient all-reduce, and the ledger's multi-rank step (each rank signs its own update.applied; rank 0
 * signs step.committed). Used by trainer/rl/loop.ts when it runs with a Collective.
 */
import * as tf from "@tensorflow/tfjs-core";
import type { KeyObject } from "node:crypto";
import type { EventBodies, LedgerEvent } from "../../proto/ledger-events.js";
import { type ChainHead, eventHash, type EventSink, EventWriter } from "../../ledger/client.js";
import type { TrainingLedger } from "../governance/ledger.js";
import { type Collective, CollectiveError, segment } from "./collective.js";

/** The rows [lo, hi) of a global list of n that a rank owns: contiguous, sizes differ by at most one. */
export function shardOf(n: number, worldSize: number, rank: number): { lo: number; hi: number } {
  const [lo, hi] = segment(n, worldSize, rank);
  return { lo, hi };
}

/** What every rank tells the others about its share of a step before the gradient all-reduce. */
export interface ShareSummary {
  /** Completion lengths of the kept samples, in order. */
  lengths: number[];
  /** The envelope parts (their group lists) in order of first appearance among the kept samples. */
  parts: string[][];
}

/**
 * The global view from every rank's share summary: lengths in global order (rank order = the single-rank
 * order), this rank's offset in them, and the parameter names with a gradient this step in the order a single
 * rank would first meet them (envelope parts by first appearance, each part's tensors in group order) — the
 * order the optimizer's gradient norm sums in, so 1 and N ranks add the same numbers in the same order.
 */
export function globalShare(shares: ShareSummary[], rank: number, groupTensors: Map<string, string[]>) {
  const lengths = shares.flatMap((s) => s.lengths);
  const offset = shares.slice(0, rank).reduce((a, s) => a + s.lengths.length, 0);
  const seenParts = new Set<string>();
  const names: string[] = [];
  const seenNames = new Set<string>();
  for (const s of shares) {
    for (const groups of s.parts) {
      const key = groups.join(",");
      if (seenParts.has(key)) continue;
      seenParts.add(key);
      for (const n of groups.flatMap((g) => groupTensors.get(g) ?? [])) {
        if (!seenNames.has(n)) {
          seenNames.add(n);
          names.push(n);
        }
      }
    }
  }
  return { lengths, offset, names };
}

/**
 * Sums per-parameter gradients over all ranks: packs `names` (zeros where this rank has none) into one
 * float32 vector, all-reduces it, and returns the summed tensors in `names` order. Disposes `local`.
 */
export async function allReduceGradients(
  c: Collective,
  names: string[],
  shapes: Map<string, number[]>,
  local: Map<string, tf.Tensor>,
): Promise<Map<string, tf.Tensor>> {
  const sizes = names.map((n) => shapes.get(n)!.reduce((a, b) => a * b, 1));
  const flat = new Float32Array(sizes.reduce((a, b) => a + b, 0));
  let off = 0;
  names.forEach((n, i) => {
    const g = local.get(n);
    if (g) flat.set(g.dataSync() as Float32Array, off);
    off += sizes[i]!;
  });
  for (const [n, g] of local) {
    if (!names.includes(n))
      throw new CollectiveError(`rank ${c.rank} has a gradient for ${n} outside the agreed layout`);
    g.dispose();
  }
  await c.allReduce(flat);
  const out = new Map<string, tf.Tensor>();
  off = 0;
  names.forEach((n, i) => {
    out.set(n, tf.tensor(flat.subarray(off, off + sizes[i]!), shapes.get(n)!, "float32"));
    off += sizes[i]!;
  });
  return out;
}

const decode = (b: Uint8Array) =>
  JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("utf8")) as LedgerEvent;

/**
 * The ledger's part of a multi-rank step. The chain has one writer position at a time: rank 0 announces the
 * chain head, then rank 0, 1, …, N−1 in turn sign their update.applied at the next position and broadcast it
 * (every rank learns the new head); rank 0 writes them all to the job's sink, then signs step.committed with
 * every rank's event hash and the post-update digests. Returns on every rank once the step is in the chain.
 */
export async function commitStep(o: {
  c: Collective;
  ledger: TrainingLedger;
  /** Rank 0 only: where events go (the same sink the TrainingLedger writes to), and the job's key and ref. */
  root?: { sink: EventSink; privateKey: KeyObject; job: string };
  body: EventBodies["update.applied"];
  after: EventBodies["step.committed"]["weights"];
}): Promise<void> {
  const { c, ledger } = o;
  let head = await c.broadcastJson<ChainHead>(c.rank === 0 ? ledger.head : null, 0);
  const ranks: { rank: number; event: `sha256:${string}` }[] = [];
  for (let r = 0; r < c.worldSize; r++) {
    let ev: LedgerEvent | null = null;
    if (c.rank === r) {
      ledger.continueAt(head);
      ev = ledger.updateApplied({ ...o.body, rank: r });
    }
    const bytes = await c.broadcast(ev ? Buffer.from(JSON.stringify(ev)) : null, r);
    const got = ev ?? decode(bytes);
    if (got.seq !== head.seq || got.prev !== head.prev || got.type !== "update.applied" || got.body.rank !== r)
      throw new CollectiveError(`rank ${r}'s update.applied does not continue the chain at seq ${head.seq}`);
    if (c.rank === 0 && r !== 0) o.root!.sink.write(got);
    const hash = eventHash(got);
    ranks.push({ rank: r, event: hash as `sha256:${string}` });
    head = { job: head.job, seq: head.seq + 1, prev: hash };
  }
  if (c.rank === 0) {
    const w = new EventWriter({ job: o.root!.job, privateKey: o.root!.privateKey, sink: o.root!.sink, resume: head });
    w.append("step.committed", { step: o.body.step, ranks, weights: o.after });
    ledger.continueAt(w.head);
  }
}
