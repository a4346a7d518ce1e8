/**
 * EU AI Act Annex XI (technical documentation of a general-purpose AI model, Section 1) and the
 * Commission's public summary of training content, filled with what the ledger and the run recorded, as JSON
 * and Markdown. Everything the ledger cannot know (intended tasks, acceptable-use policy, licence, the base
 * model's own documentation, how the authorities collected their data) is marked `PROVIDER_TO_COMPLETE`, never
 * guessed.
 *
 * Compute is an estimate with its formula stated: training ≈ 6 × N × trained tokens (forward + backward,
 * Kaplan et al. 2020), sampling ≈ 2 × N × sampled completion tokens (forward only), N = the parameters stored
 * in the model's safetensors files. Prompt tokens' forward passes are not recorded by the trainer and are not
 * counted (so the figure is a lower bound of the order of magnitude, which is what the thresholds need).
 * Energy = wall time × assumed average power × PUE, each stated.
 *
 * Pure: the caller reads the files.
 */
import { stepsApplied, type AuditSummary } from "./audit-summary.js";

export const PROVIDER_TO_COMPLETE = "PROVIDER_TO_COMPLETE";

/** Recorded per step in the run's events.jsonl (metrics events). */
export interface RunTokens {
  steps: number;
  trainedTokens: number;
  sampledCompletionTokens: number;
  validCompletionTokens: number;
  /** Sum of the steps' full_iteration times (s). */
  stepSeconds: number;
}

export interface AnnexInputs {
  summary: AuditSummary;
  /** The bundle's verification verdict. */
  verified: { ok: boolean; failures: string[] };
  /** Parameters stored in the model's safetensors files (null: no --model). */
  parameters: number | null;
  tokens: RunTokens | null;
  device: string | null;
  powerWatts: number;
  pue: number;
  /** The base model's own training compute, when the provider knows it (for the one-third test). */
  baseComputeFlops: number | null;
  modelSignature: { file: string; sha256: string; files: number } | null;
  generatedAt: string;
}

/** The fields of a run's metrics events that Annex XI needs (other lines are ignored). */
export function tokensFromRunEvents(lines: Iterable<string>): RunTokens {
  const t: RunTokens = {
    steps: 0,
    trainedTokens: 0,
    sampledCompletionTokens: 0,
    validCompletionTokens: 0,
    stepSeconds: 0,
  };
  for (const line of lines) {
    if (!line.trim()) continue;
    let ev: { type?: string; data?: Record<string, any> };
    try {
      ev = JSON.parse(line);
    } catch {
      continue;
    }
    if (ev.type !== "metrics" || !ev.data) continue;
    const d = ev.data;
    t.steps++;
    t.trainedTokens += Number(d.trained_tokens ?? 0);
    t.sampledCompletionTokens += Number(d.usage?.samples?.train_completion_tokens_count ?? 0);
    t.validCompletionTokens += Number(d.usage?.samples?.valid_completion_tokens_count ?? 0);
    t.stepSeconds += Number(d.timing?.step?.full_iteration ?? 0);
  }
  return t;
}

/** Parameters in a safetensors file, from its header (shapes only). */
export function safetensorsParameters(headerJson: string): number {
  const h = JSON.parse(headerJson) as Record<string, { shape?: number[] }>;
  let n = 0;
  for (const [k, v] of Object.entries(h)) if (k !== "__metadata__") n += (v.shape ?? []).reduce((a, b) => a * b, 1);
  return n;
}

const sci = (x: number) => x.toExponential(2).replace("e+", "e");

export function annexXi(x: AnnexInputs) {
  const s = x.summary;
  const N = x.parameters;
  const t = x.tokens;
  const training = N !== null && t ? 6 * N * t.trainedTokens : null;
  const sampling = N !== null && t ? 2 * N * (t.sampledCompletionTokens + t.validCompletionTokens) : null;
  const total = training !== null && sampling !== null ? training + sampling : null;
  const wall =
    s.startedOn && s.finishedOn
      ? (Date.parse(s.finishedOn) - Date.parse(s.startedOn)) / 1000
      : t
        ? t.stepSeconds
        : null;
  const kWh = wall !== null ? (wall * x.powerWatts * x.pue) / 3.6e6 : null;
  const share = total !== null && x.baseComputeFlops ? total / x.baseComputeFlops : null;
  const sources = s.authorities.map((a) => ({
    authority: a.name,
    keyId: a.keyId,
    lawfulBasis: a.lawfulBasis,
    category: PROVIDER_TO_COMPLETE, // public / licensed third-party / scraped / user / synthetic (summary template §2)
    howCollected: PROVIDER_TO_COMPLETE,
    rowsAdmitted: a.admitted,
    rowsRejected: a.rejected,
    rowsMerkleRoot: a.manifestRoot,
    envelope: a.envelope,
    groupsReached: a.groupsTouched.length,
    stepsContributed: a.steps.length,
  }));
  return {
    format: "rft-annex-xi/1",
    generatedAt: x.generatedAt,
    notice:
      "Filled from the signed training ledger of one fine-tuning run. Fields marked PROVIDER_TO_COMPLETE are not known to the ledger and must be completed by the provider; the base model's own documentation must be referenced.",
    job: s.job,
    ledger: {
      verified: x.verified.ok,
      failures: x.verified.failures,
      events: s.events,
      merkleRoot: s.ledgerMerkleRoot,
      specDigest: s.specDigest,
    },
    section1: {
      "1(a) tasks and integration": PROVIDER_TO_COMPLETE,
      "1(b) acceptable use policies": PROVIDER_TO_COMPLETE,
      "1(c) release date and distribution": PROVIDER_TO_COMPLETE,
      "1(d) architecture and parameters": {
        architecture: `decoder-only transformer, ${s.numLayers ?? "?"} layers (${s.groups.length} parameter groups)`,
        parameters: N,
        parametersNote: "parameters stored in the model's safetensors files",
      },
      "1(e) input and output modality": "text in, text out",
      "1(f) licence": PROVIDER_TO_COMPLETE,
      "2(b) training process": {
        method: "reinforcement fine-tuning (policy gradient on grader rewards) of a pretrained base model",
        governance:
          "rows admitted per authority credential (Ed25519) and routed to the authority's admissibility envelope of parameter groups; every update signed into a hash-chained, Merkle-logged ledger",
        steps: stepsApplied(s),
        checkpoints: s.checkpoints.map((c) => c.name),
        restarts: s.resumes.length,
        baseModel: { groupDigests: s.groups.length, documentation: PROVIDER_TO_COMPLETE },
      },
      "2(c) data": {
        dataPoints: s.dataset.rows,
        admitted: s.authorities.reduce((a, x) => a + x.admitted, 0) + s.unattributed,
        rejected: s.rejections.length,
        rejectionsByCode: countBy(s.rejections.map((r) => r.code)),
        datasetMerkleRoot: s.dataset.manifestRoot,
        sources,
        curation:
          "rows without a valid credential of a declared authority are rejected before training (each rejection is a signed ledger event); the provider must add any cleaning or filtering done before signing",
        biasDetection: PROVIDER_TO_COMPLETE,
      },
      "2(d) computational resources": {
        trainingFlops: training,
        samplingFlops: sampling,
        totalFlops: total,
        formula:
          "training = 6 × N × trained tokens; sampling = 2 × N × sampled completion tokens (train + validation); prompt-token forward passes are not recorded and not counted",
        tokens: t,
        trainingTimeSeconds: wall,
        trainingTimeNote: "ledger job.started → job.finished (wall clock), else the sum of step times",
        device: x.device ?? PROVIDER_TO_COMPLETE,
        baseModelComputeFlops: x.baseComputeFlops ?? PROVIDER_TO_COMPLETE,
        shareOfBaseCompute: share,
        oneThirdThresholdExceeded: share === null ? PROVIDER_TO_COMPLETE : share > 1 / 3,
      },
      "2(e) energy": {
        estimatedKWh: kWh,
        assumptions: `wall time × ${x.powerWatts} W average draw × PUE ${x.pue} (replace with measured figures where known)`,
      },
    },
    model: {
      finalGroupDigests: s.final,
      signature: x.modelSignature ?? PROVIDER_TO_COMPLETE,
    },
    publicSummary: {
      "1 general information": {
        provider: PROVIDER_TO_COMPLETE,
        modelName: PROVIDER_TO_COMPLETE,
        modality: "text",
        trainingDataSize: `${s.dataset.rows} rows (fine-tuning); the base model's data per its own summary`,
      },
      "2 data sources": sources.map((x) => ({
        name: x.authority,
        category: x.category,
        lawfulBasis: x.lawfulBasis,
        rows: x.rowsAdmitted,
      })),
      "3 data processing": {
        rightsReservations: PROVIDER_TO_COMPLETE,
        illegalContentRemoval: PROVIDER_TO_COMPLETE,
      },
    },
  };
}

export type AnnexXi = ReturnType<typeof annexXi>;

function countBy(xs: string[]): Record<string, number> {
  const o: Record<string, number> = {};
  for (const x of xs) o[x] = (o[x] ?? 0) + 1;
  return o;
}

const md = (v: unknown) => String(v ?? "—").replace(/\|/g, "\\|");
const todo = (v: unknown) => (v === PROVIDER_TO_COMPLETE ? "**PROVIDER TO COMPLETE**" : md(v));

export function annexXiMarkdown(d: AnnexXi): string {
  const s1 = d.section1;
  const c = s1["2(d) computational resources"];
  const data = s1["2(c) data"];
  const L: string[] = [];
  L.push(`# Technical documentation (EU AI Act, Annex XI, Section 1): ${d.job}`, "");
  L.push(`_${d.notice}_`, "");
  L.push(
    `Generated ${d.generatedAt}. Ledger: ${d.ledger.events} events, Merkle root \`${d.ledger.merkleRoot}\`, spec digest \`${d.ledger.specDigest}\`, **${d.ledger.verified ? "verified" : "NOT verified"}**.`,
    "",
  );
  for (const f of d.ledger.failures) L.push(`- failure: ${f}`);
  L.push("## 1. General description", "");
  L.push(`- (a) tasks and integration: ${todo(s1["1(a) tasks and integration"])}`);
  L.push(`- (b) acceptable use policies: ${todo(s1["1(b) acceptable use policies"])}`);
  L.push(`- (c) release date and distribution: ${todo(s1["1(c) release date and distribution"])}`);
  const arch = s1["1(d) architecture and parameters"];
  L.push(`- (d) architecture: ${arch.architecture}; parameters: ${arch.parameters ?? "—"} (${arch.parametersNote})`);
  L.push(`- (e) modality: ${s1["1(e) input and output modality"]}`);
  L.push(`- (f) licence: ${todo(s1["1(f) licence"])}`, "");
  const tp = s1["2(b) training process"];
  L.push("## 2. Development process", "");
  L.push(
    `- (b) ${tp.method}. ${tp.governance}. Steps: ${tp.steps}; checkpoints: ${tp.checkpoints.join(", ") || "none"}; restarts: ${tp.restarts}. Base model documentation: ${todo(tp.baseModel.documentation)}.`,
    "",
  );
  L.push(`### (c) Data: ${data.dataPoints} data points, ${data.admitted} admitted, ${data.rejected} rejected`, "");
  L.push(
    `Dataset Merkle root: \`${data.datasetMerkleRoot}\`. Rejections by code: ${
      Object.entries(data.rejectionsByCode)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "none"
    }.`,
    "",
  );
  L.push(
    "| authority | lawful basis | category | how collected | admitted | rejected | envelope | steps | rows' Merkle root |",
  );
  L.push("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const x of data.sources)
    L.push(
      `| ${md(x.authority)} | ${md(x.lawfulBasis)} | ${todo(x.category)} | ${todo(x.howCollected)} | ${x.rowsAdmitted} | ${x.rowsRejected} | ${md(x.envelope.join(", "))} | ${x.stepsContributed} | \`${x.rowsMerkleRoot.slice(0, 16)}…\` |`,
    );
  L.push("", `Curation: ${data.curation}. Bias detection: ${todo(data.biasDetection)}.`, "");
  L.push("### (d) Compute", "");
  L.push(
    `- total: ${c.totalFlops === null ? "— (needs --model and --run)" : `${sci(c.totalFlops)} FLOPs`} (training ${c.trainingFlops === null ? "—" : sci(c.trainingFlops)}, sampling ${c.samplingFlops === null ? "—" : sci(c.samplingFlops)})`,
  );
  L.push(`- formula: ${c.formula}`);
  if (c.tokens)
    L.push(
      `- tokens recorded: ${c.tokens.trainedTokens} trained, ${c.tokens.sampledCompletionTokens} sampled (train), ${c.tokens.validCompletionTokens} sampled (validation), over ${c.tokens.steps} steps`,
    );
  L.push(
    `- training time: ${c.trainingTimeSeconds === null ? "—" : `${c.trainingTimeSeconds.toFixed(1)} s`} (${c.trainingTimeNote}); device: ${todo(c.device)}`,
  );
  L.push(
    `- base model's training compute: ${c.baseModelComputeFlops === PROVIDER_TO_COMPLETE ? todo(c.baseModelComputeFlops) : sci(Number(c.baseModelComputeFlops))}; share: ${c.shareOfBaseCompute === null ? "—" : `${(c.shareOfBaseCompute * 100).toPrecision(3)} %`}; above one third (provider obligations): ${todo(c.oneThirdThresholdExceeded)}`,
    "",
  );
  const e = s1["2(e) energy"];
  L.push(
    `### (e) Energy`,
    "",
    `${e.estimatedKWh === null ? "—" : `${e.estimatedKWh.toPrecision(3)} kWh`}: ${e.assumptions}.`,
    "",
  );
  L.push("## Model", "");
  const sig = d.model.signature;
  L.push(
    `Signature: ${typeof sig === "string" ? todo(sig) : `${sig.file} (OpenSSF model signing, ${sig.files} files, sha256 \`${sig.sha256}\`)`}.`,
    "",
  );
  L.push("## Public summary of training content (Commission template)", "");
  const p = d.publicSummary;
  L.push(
    `- provider: ${todo(p["1 general information"].provider)}; model: ${todo(p["1 general information"].modelName)}; modality: ${p["1 general information"].modality}; size: ${p["1 general information"].trainingDataSize}`,
  );
  for (const x of p["2 data sources"])
    L.push(`- source ${md(x.name)}: ${todo(x.category)}, ${md(x.lawfulBasis)}, ${x.rows} rows`);
  L.push(`- rights reservations (TDM opt-outs) respected: ${todo(p["3 data processing"].rightsReservations)}`);
  L.push(`- illegal content removal: ${todo(p["3 data processing"].illegalContentRemoval)}`, "");
  return L.join("\n");
}
