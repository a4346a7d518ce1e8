/**
 * `rft audit export` (a provenance bundle from a local run's event file or from the ledger service) and
 * `rft audit verify` (the auditor's check; non-zero exit naming the failing check).
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import type { Command } from "commander";
import { exportBundle } from "../../ledger/bundle.js";
import {
  BundleFileError,
  bundleJsonlLines,
  bundleJsonParts,
  verifyBundleFile,
  writeLines,
} from "../../ledger/bundle-file.js";
import type { DatasetRow } from "../../ledger/dataset.js";
import { readEventsFile } from "../../ledger/publisher.js";
import { loadPrivateKey } from "../../ledger/sign.js";
import { annexXi, annexXiMarkdown, safetensorsParameters, tokensFromRunEvents } from "../../ledger/annex-xi.js";
import { stepsApplied, summarize, SummaryBuilder, type AuditSummary } from "../../ledger/audit-summary.js";
import { BundleReadError, readBundleFile, readBundleHead } from "../../ledger/bundle-read.js";
import { reportHtml, reportMarkdown } from "../../ledger/report-html.js";
import {
  compareBinding,
  compareManifest,
  compareProvenance,
  DEFAULT_IGNORE_PATHS,
  fileManifest,
  loadSigningKey,
  loadVerifyKey,
  ModelSigningError,
  modelStatement,
  openSigstoreBundle,
  provenanceStatement,
  signStatement,
  type Statement,
} from "../../ledger/model-signing.js";
import { formatReport, type Failure, type VerifyReport } from "../../ledger/verify.js";
import { parseJobRef, type SignedTreeHead } from "../../proto/ledger-events.js";

class UsageError extends Error {}

/** The event file of a local run: a .jsonl path, or DIR/ledger/events.jsonl (what `rft run` writes), DIR/events.jsonl, or DIR's one *.events.jsonl. */
export function findEventsFile(path: string): string {
  if (!existsSync(path)) throw new UsageError(`no such file or directory: ${path}`);
  if (statSync(path).isFile()) return path;
  for (const c of [join(path, "ledger", "events.jsonl"), join(path, "events.jsonl")]) if (existsSync(c)) return c;
  const found = readdirSync(path).filter((f) => f.endsWith(".events.jsonl"));
  if (found.length === 1) return join(path, found[0]!);
  throw new UsageError(
    found.length > 1
      ? `${path} holds several event files (${found.join(", ")}): name one`
      : `${path} holds no events.jsonl (a local run writes its ledger events there)`,
  );
}

/** A key file read and parsed; a missing file or a bad key is a usage error naming the flag and the file. */
function withFlag<T>(flag: string, path: string, parse: (text: string) => T): T {
  if (!existsSync(path)) throw new UsageError(`${flag}: no such file ${path}`);
  try {
    return parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UsageError(`${flag}: ${path}: ${(e as Error).message}`);
  }
}

function readJson(path: string, flag: string): unknown {
  if (!existsSync(path)) throw new UsageError(`${flag}: no such file ${path}`);
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UsageError(`${flag}: ${path} is not JSON (${(e as Error).message})`);
  }
}

function readJsonl(path: string, flag: string): DatasetRow[] {
  if (!existsSync(path)) throw new UsageError(`${flag}: no such file ${path}`);
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l, i) => {
      try {
        return JSON.parse(l) as DatasetRow;
      } catch {
        throw new UsageError(`${flag}: ${path}:${i + 1} is not JSON`);
      }
    });
}

/**
 * The parameter-group digests of a model directory, computed as the trainer computes them. A PEFT adapter
 * directory (LoRA jobs) is digested with its base model (`base`, else the adapter's base_model_name_or_path):
 * each group covers the base's tensors and the adapters', so both must be the ones the ledger recorded.
 */
async function modelGroupDigests(dir: string, base?: string): Promise<Record<string, string>> {
  // Loaded here, not at startup: they pull in tfjs, which `rft audit verify` without --model does not need.
  const { groupDigests, groupsOf } = await import("../../trainer/governance/digests.js");
  const { useBackend } = await import("../../trainer/model/backend.js");
  const { loadHfModel, ModelDirError } = await import("../../trainer/model/hf-io.js");
  const { disposeModel } = await import("../../trainer/model/model.js");
  const lora = await import("../../trainer/model/lora.js");
  await useBackend("cpu");
  const adapter = lora.isAdapterDir(dir);
  let baseDir = dir;
  if (adapter) {
    const cfg = await lora.readAdapterConfig(dir).catch((e: Error) => {
      throw new UsageError(`--model: ${e.message}`);
    });
    const b = base ?? cfg.baseModel;
    if (!b) throw new UsageError(`--model: ${dir} is a LoRA adapter without base_model_name_or_path: pass --base DIR`);
    baseDir = b;
  }
  let model: Awaited<ReturnType<typeof loadHfModel>>;
  try {
    model = await loadHfModel(baseDir, { tokenizer: false });
  } catch (e) {
    if (e instanceof ModelDirError) throw new UsageError(`${adapter ? "--base" : "--model"}: ${e.message}`);
    throw e;
  }
  try {
    if (adapter) {
      try {
        await lora.loadAdapter(model, dir);
      } catch (e) {
        if (e instanceof lora.AdapterDirError) throw new UsageError(`--model: ${e.message}`);
        throw e;
      }
    }
    return groupDigests(model.params, groupsOf(model.config, model.lora?.settings));
  } finally {
    disposeModel(model);
  }
}

function fail(cmd: string, e: unknown): void {
  if (e instanceof ModelSigningError) e = new UsageError(e.message);
  if (e instanceof UsageError) {
    process.stderr.write(`rft audit ${cmd}: ${e.message}\n`);
    process.exitCode = 2;
  } else throw e;
}

export function register(program: Command) {
  const audit = program.command("audit").description("provenance bundles: export and verify");

  audit
    .command("export [dir]")
    .description(
      "write a job's provenance bundle to stdout: from a local run's event file (DIR) or from the ledger (--ledger)",
    )
    .option("--ledger <url>", "the ledger service's audit API, e.g. http://rft-ledger:8090")
    .option("--job <ns/name>", "the job (with --ledger)")
    .option(
      "--ledger-token-file <file>",
      "file holding the audit API's bearer token (env RFT_LEDGER_TOKEN_FILE; with --ledger)",
      process.env.RFT_LEDGER_TOKEN_FILE,
    )
    .option("--key <file>", "local export: the Ed25519 key that signs the bundle's tree head (PEM or raw base64)")
    .option(
      "--format <json|jsonl>",
      "json: one JSON document (default); jsonl: a header line, one event per line, a trailer line (for line-oriented tools); both are streamed, of any size",
    )
    .action(
      async (
        dir: string | undefined,
        o: { ledger?: string; job?: string; key?: string; format?: string; ledgerTokenFile?: string },
      ) => {
        try {
          if (o.format !== undefined && o.format !== "json" && o.format !== "jsonl")
            throw new UsageError(`--format must be json or jsonl, not ${o.format}`);
          if (o.ledger) {
            if (!o.job) throw new UsageError("--ledger needs --job NS/NAME");
            const { namespace, name } = parseJobRef(o.job);
            const url = `${o.ledger.replace(/\/$/, "")}/v1/jobs/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/bundle`;
            const token = o.ledgerTokenFile ? readFileSync(o.ledgerTokenFile, "utf8").trim() : undefined;
            const res = await fetch(o.format === "jsonl" ? `${url}?format=jsonl` : url, {
              ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
            });
            if (!res.ok) throw new UsageError(`${url}: HTTP ${res.status} ${await res.text()}`);
            // The service writes either form itself, streamed: pass it through as it arrives.
            for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>)
              await writeLines(process.stdout, [Buffer.from(chunk)]);
            if (o.format !== "jsonl") await writeLines(process.stdout, ["\n"]);
            return;
          }
          if (!dir) throw new UsageError("give a run directory (or event file), or --ledger URL --job NS/NAME");
          if (!o.key)
            throw new UsageError("a local export signs its tree head: pass --key FILE (the run's ledger or job key)");
          const events = readEventsFile(findEventsFile(dir));
          if (events.length === 0) throw new UsageError(`${dir}: no events`);
          const bundle = exportBundle(events, loadPrivateKey(readFileSync(o.key, "utf8")));
          if (o.format === "jsonl") await writeLines(process.stdout, bundleJsonlLines(bundle));
          else await writeLines(process.stdout, withNewline(bundleJsonParts(bundle)));
        } catch (e) {
          fail("export", e);
        }
      },
    );

  withVerifyFlags(
    audit
      .command("report <bundle>")
      .description(
        "the auditor's report of a provenance bundle: contributors, where in the model and when, rejections, rewards, checkpoints and every check's verdict (HTML: one self-contained page; or Markdown, JSON)",
      ),
  )
    .option("--format <html|md|json>", "html (default), md or json (the summary and the verifier's report)", "html")
    .action(async (path: string, o: VerifyFlags & { format: string }) => {
      try {
        if (!["html", "md", "json"].includes(o.format))
          throw new UsageError(`--format must be html, md or json, not ${o.format}`);
        const report = await verifyWith(path, o);
        const summary = await summaryOf(path);
        const ctx = { generatedAt: new Date().toISOString(), ran: ranOf(o) };
        const text =
          o.format === "html"
            ? reportHtml(summary, report, ctx)
            : o.format === "md"
              ? reportMarkdown(summary, report, ctx)
              : `${JSON.stringify({ summary, report }, null, 2)}\n`;
        await writeLines(process.stdout, [text]);
        if (!report.ok) process.exitCode = 1;
      } catch (e) {
        fail("report", e);
      }
    });

  withVerifyFlags(
    audit
      .command("annex-xi <bundle>")
      .description(
        "EU AI Act Annex XI technical documentation (Section 1) and the public training-content summary, filled from the ledger and the run (JSON + Markdown); what the ledger cannot know is marked PROVIDER_TO_COMPLETE",
      ),
  )
    .option("--run <dir>", "the run directory (its events.jsonl holds the tokens processed per step)")
    .option("--device <text>", "the training hardware, e.g. '1x NVIDIA H200'")
    .option("--power-watts <w>", "assumed average power draw for the energy estimate", "300")
    .option("--pue <x>", "assumed power usage effectiveness", "1")
    .option("--base-compute-flops <flops>", "the base model's own training compute (for the one-third test)")
    .option("--out <prefix>", "write PREFIX.json and PREFIX.md (default: JSON to stdout)")
    .action(
      async (
        path: string,
        o: VerifyFlags & {
          run?: string;
          device?: string;
          powerWatts: string;
          pue: string;
          baseComputeFlops?: string;
          out?: string;
        },
      ) => {
        try {
          const num = (v: string, flag: string) => {
            const x = Number(v);
            if (!Number.isFinite(x) || x < 0) throw new UsageError(`${flag}: want a non-negative number, got ${v}`);
            return x;
          };
          const report = await verifyWith(path, o);
          const summary = await summaryOf(path);
          let tokens = null;
          if (o.run) {
            const f = join(o.run, "events.jsonl");
            if (!existsSync(f)) throw new UsageError(`--run: ${f} is missing (the run's metrics events)`);
            tokens = tokensFromRunEvents(readFileSync(f, "utf8").split("\n"));
          }
          let modelSignature = null;
          if (o.modelSignature) {
            const b = readJson(o.modelSignature, "--model-signature") as { dsseEnvelope?: { payload?: string } };
            const st = JSON.parse(Buffer.from(b.dsseEnvelope?.payload ?? "", "base64").toString() || "{}") as Statement;
            modelSignature = {
              file: basename(o.modelSignature),
              sha256: st.subject?.[0]?.digest.sha256 ?? "",
              files: (st.predicate?.resources as unknown[] | undefined)?.length ?? 0,
            };
          }
          const doc = annexXi({
            summary,
            verified: {
              ok: report.ok,
              failures: report.failures.map(
                (f) => `[${f.check}] ${f.seq === null ? "bundle" : `event seq ${f.seq}`} ${f.field}: ${f.reason}`,
              ),
            },
            parameters: o.model ? parametersOf(o.model) : null,
            tokens,
            device: o.device ?? null,
            powerWatts: num(o.powerWatts, "--power-watts"),
            pue: num(o.pue, "--pue"),
            baseComputeFlops: o.baseComputeFlops ? num(o.baseComputeFlops, "--base-compute-flops") : null,
            modelSignature,
            generatedAt: new Date().toISOString(),
          });
          if (o.out) {
            writeFileSync(`${o.out}.json`, `${JSON.stringify(doc, null, 2)}\n`);
            writeFileSync(`${o.out}.md`, annexXiMarkdown(doc));
            process.stdout.write(`wrote ${o.out}.json and ${o.out}.md\n`);
          } else process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
          if (!report.ok) {
            process.stderr.write("rft audit annex-xi: the bundle does not verify (the document says so)\n");
            process.exitCode = 1;
          }
        } catch (e) {
          fail("annex-xi", e);
        }
      },
    );

  audit
    .command("sign-model <run>")
    .description(
      "sign a finished run's model directory (OpenSSF model signing v1.0: file manifest, in-toto statement, DSSE, Sigstore bundle) with a local ECDSA P-256 key, bound to the ledger's final digests; plus a signed in-toto SLSA provenance statement of the run",
    )
    .requiredOption(
      "--key <file>",
      "the model-signing private key (ECDSA P-256 PEM: rft keys generate --algorithm ecdsa-p256)",
    )
    .option("--model <dir>", "the model directory (default RUN/model); its weights must be the ledger's final ones")
    .option("--out <file>", "the model signature (default: model.sig next to the model directory)")
    .option("--provenance-out <file>", "the provenance statement (default: provenance.sig next to the model directory)")
    .option("--name <name>", "the model's name in the statements (default: the directory's name)")
    .action(
      async (run: string, o: { key: string; model?: string; out?: string; provenanceOut?: string; name?: string }) => {
        try {
          await signModel(run, o);
        } catch (e) {
          fail("sign-model", e);
        }
      },
    );

  audit
    .command("verify <bundle>")
    .description(
      "verify a provenance bundle (JSON document or JSONL, detected by content); prints a report, exits 1 naming the failing check",
    )
    .option(
      "--model <dir>",
      "the delivered model (Hugging Face directory, or a LoRA job's PEFT adapter directory with its base): its group digests must match the ledger's final ones",
    )
    .option(
      "--base <dir>",
      "with a PEFT adapter as --model: its base model (default: the adapter's base_model_name_or_path)",
    )
    .option("--model-digests <file>", "JSON {group: sha256 digest} of the final model's parameter groups")
    .option("--dataset <file>", "the training dataset (JSONL) to check against the manifest")
    .option("--job-key <key>", "pin the job signing key (raw base64 public key or key id)")
    .option("--ledger-key <key>", "pin the ledger key (raw base64 public key or key id)")
    .option("--known-head <file>", "a signed tree head of this job seen before: the bundle must not roll back from it")
    .option(
      "--model-signature <file>",
      "an OpenSSF model signature (rft audit sign-model): check it and its binding to the ledger",
    )
    .option(
      "--provenance <file>",
      "the signed provenance statement of the run (rft audit sign-model): check it against the bundle",
    )
    .option(
      "--signing-key <file>",
      "the model-signing public key (ECDSA P-256 PEM) for --model-signature / --provenance",
    )
    .option("--json", "print the report as JSON")
    .action(async (path: string, o: VerifyFlags & { json?: boolean }) => {
      try {
        const report = await verifyWith(path, o);
        process.stdout.write(`${o.json ? JSON.stringify(report, null, 2) : formatReport(report)}\n`);
        if (!report.ok) {
          const f = report.failures[0]!;
          process.stderr.write(
            `rft audit verify: FAILED check ${f.check} at ${f.seq === null ? "bundle" : `event seq ${f.seq}`} ${f.field}: ${f.reason}\n`,
          );
          process.exitCode = 1;
        }
      } catch (e) {
        fail("verify", e);
      }
    });
}

interface VerifyFlags {
  model?: string;
  base?: string;
  modelDigests?: string;
  dataset?: string;
  jobKey?: string;
  ledgerKey?: string;
  knownHead?: string;
  modelSignature?: string;
  provenance?: string;
  signingKey?: string;
}

/** Every check `rft audit verify` runs with these flags (shared by verify, report and annex-xi). */
async function verifyWith(path: string, o: VerifyFlags): Promise<VerifyReport> {
  const options = {
    modelDigests: o.model
      ? await modelGroupDigests(o.model, o.base)
      : o.modelDigests
        ? (readJson(o.modelDigests, "--model-digests") as Record<string, string>)
        : undefined,
    datasetRows: o.dataset ? readJsonl(o.dataset, "--dataset") : undefined,
    jobKey: o.jobKey,
    ledgerKey: o.ledgerKey,
    knownHead: o.knownHead ? (readJson(o.knownHead, "--known-head") as SignedTreeHead) : undefined,
  };
  let report: VerifyReport;
  try {
    // Either form, told apart by content: a JSON document, or JSONL (header, one event per line, trailer).
    report = await verifyBundleFile(path, options);
  } catch (e) {
    if (e instanceof BundleFileError) throw new UsageError(`bundle: ${e.message}`);
    throw e;
  }
  if (o.modelSignature || o.provenance) await checkSignatures(path, o, report);
  return report;
}

/** The bundle's events summarized (streamed), for the documents. */
async function summaryOf(path: string): Promise<AuditSummary> {
  // The bundle's Merkle root is the one the documents show (the verifier checks it against the events).
  const b = new SummaryBuilder({ merkle: false });
  try {
    const { merkleRoot } = await readBundleFile(
      path,
      () => {},
      (ev) => b.add(ev),
    );
    return b.finish(merkleRoot ?? undefined);
  } catch (e) {
    if (e instanceof BundleReadError) throw new UsageError(`bundle: ${e.message}`);
    throw e;
  }
}

function withVerifyFlags(c: Command): Command {
  return c
    .option("--model <dir>", "the delivered model: check its weights against the ledger's final digests")
    .option("--base <dir>", "with --model of a LoRA adapter: the base model it applies to")
    .option("--dataset <file>", "the training dataset (JSONL) to check against the manifest")
    .option("--job-key <key>", "pin the job signing key (raw base64 public key or key id)")
    .option("--ledger-key <key>", "pin the ledger key (raw base64 public key or key id)")
    .option("--model-signature <file>", "the OpenSSF model signature (rft audit sign-model) to check")
    .option("--provenance <file>", "the signed provenance statement (rft audit sign-model) to check")
    .option("--signing-key <file>", "the model-signing public key (ECDSA P-256 PEM)");
}

const ranOf = (o: VerifyFlags) => ({
  model: Boolean(o.model || o.modelDigests),
  dataset: Boolean(o.dataset),
  modelSignature: Boolean(o.modelSignature),
  provenance: Boolean(o.provenance),
});

/** Parameters stored in a model directory's safetensors files (headers only). */
function parametersOf(dir: string): number {
  const files = readdirSync(dir).filter((f) => f.endsWith(".safetensors"));
  if (!files.length) throw new UsageError(`--model: ${dir} holds no .safetensors file`);
  let n = 0;
  for (const f of files) {
    const fd = openSync(join(dir, f), "r");
    try {
      const len = Buffer.alloc(8);
      readSync(fd, len, 0, 8, 0);
      const size = Number(len.readBigUInt64LE(0));
      if (size > 100 << 20) throw new UsageError(`--model: ${f}: header of ${size} bytes`);
      const header = Buffer.alloc(size);
      readSync(fd, header, 0, size, 8);
      n += safetensorsParameters(header.toString("utf8"));
    } finally {
      closeSync(fd);
    }
  }
  return n;
}

/** The model signature and provenance statement, checked against the bundle (and the model directory, with --model). */
async function checkSignatures(
  bundlePath: string,
  o: { model?: string; modelSignature?: string; provenance?: string; signingKey?: string },
  report: VerifyReport,
): Promise<void> {
  if (!o.signingKey)
    throw new UsageError("--model-signature / --provenance need --signing-key FILE (the ECDSA public key)");
  const key = withFlag("--signing-key", o.signingKey, loadVerifyKey);
  const head = await readBundleHead(bundlePath);
  const failures: Failure[] = [];
  const add = (check: Failure["check"], file: string, field: string, reason: string) =>
    failures.push({ check, seq: null, field: `${basename(file)}: ${field}`, reason });
  let modelSubject: string | undefined;
  if (o.modelSignature) {
    const opened = openSigstoreBundle(readJson(o.modelSignature, "--model-signature"), key);
    if (!opened.ok) add("model-signature", o.modelSignature, opened.field, opened.reason);
    else {
      const st = opened.statement;
      modelSubject = st.subject[0]?.digest.sha256;
      for (const m of compareBinding(st, { job: head.job, specDigest: head.specDigest, final: head.model.final }))
        add("model-signature", o.modelSignature, m.field, m.reason);
      if (o.model) {
        const ser = st.predicate.serialization as { ignore_paths?: string[] } | undefined;
        const disk = await fileManifest(o.model, ser?.ignore_paths ?? DEFAULT_IGNORE_PATHS);
        for (const m of compareManifest(st, disk)) add("model-signature", o.modelSignature, m.field, m.reason);
      } else report.notes.push("model signature: the files were not compared (no --model)");
      const n = (st.predicate.resources as unknown[] | undefined)?.length ?? 0;
      if (!failures.length)
        report.notes.push(
          `model signature: valid (${n} files, sha256 ${modelSubject?.slice(0, 16)}…), bound to the ledger's final digests${o.model ? ", files match the model directory" : ""}`,
        );
    }
  }
  if (o.provenance) {
    const before = failures.length;
    const opened = openSigstoreBundle(readJson(o.provenance, "--provenance"), key);
    if (!opened.ok) add("provenance", o.provenance, opened.field, opened.reason);
    else {
      const b = { job: head.job, specDigest: head.specDigest, base: head.model.base, manifestRoot: head.manifest.root };
      for (const m of compareProvenance(opened.statement, b, modelSubject))
        add("provenance", o.provenance, m.field, m.reason);
      if (failures.length === before)
        report.notes.push(
          "provenance statement: valid, its materials are the bundle's (spec, base model, dataset root)",
        );
    }
  }
  if (failures.length) {
    report.failures.push(...failures);
    report.ok = false;
  }
}

/** Paths inside `dir` that `files` name (so a signature written into the model directory is not signed). */
function insidePaths(dir: string, files: string[]): string[] {
  return files
    .map((f) => relative(resolve(dir), resolve(f)))
    .filter((r) => r !== "" && !r.startsWith("..") && !r.startsWith(sep))
    .map((r) => r.split(sep).join("/"));
}

async function signModel(
  run: string,
  o: { key: string; model?: string; out?: string; provenanceOut?: string; name?: string },
): Promise<void> {
  const key = withFlag("--key", o.key, loadSigningKey);
  const events = readEventsFile(findEventsFile(run));
  if (events.length === 0) throw new UsageError(`${run}: no events`);
  const s = summarize(events);
  if (!s.final || s.status !== "succeeded")
    throw new UsageError(
      `${run}: the ledger does not end with a succeeded job.finished (status ${s.status ?? "none"}): nothing to sign`,
    );
  const modelDir = o.model ?? join(statSync(run).isFile() ? dirname(dirname(run)) : run, "model");
  const out = o.out ?? join(dirname(resolve(modelDir)), "model.sig");
  const provOut = o.provenanceOut ?? join(dirname(resolve(modelDir)), "provenance.sig");
  // Refuse to sign weights that are not those the ledger says were produced.
  const onDisk = await modelGroupDigests(modelDir);
  const differ = Object.keys(s.final).filter((g) => onDisk[g] !== s.final![g]);
  if (differ.length)
    throw new UsageError(
      `${modelDir}: its weights are not the ledger's final model (groups ${differ.slice(0, 5).join(", ")} differ): not signing`,
    );
  const ignore = [...DEFAULT_IGNORE_PATHS, ...insidePaths(modelDir, [out, provOut])];
  const t0 = performance.now();
  const resources = await fileManifest(modelDir, ignore);
  const name = o.name ?? basename(resolve(modelDir));
  const statement: Statement = modelStatement(
    name,
    resources,
    { job: s.job, specDigest: s.specDigest, final: s.final },
    ignore,
  );
  writeFileSync(out, `${JSON.stringify(signStatement(statement, key))}\n`);
  const subject = statement.subject[0]!.digest.sha256!;
  const prov = provenanceStatement(name, subject, {
    job: s.job,
    specDigest: s.specDigest ?? "",
    baseGroups: s.base ?? {},
    dataset: { rows: s.dataset.rows, manifestRoot: s.dataset.manifestRoot ?? "" },
    authorities: s.authorities.map((a) => ({
      name: a.name,
      rows: a.admitted + a.rejected,
      manifestRoot: a.manifestRoot,
      lawfulBasis: a.lawfulBasis,
    })),
    ledgerMerkleRoot: s.ledgerMerkleRoot,
    events: s.events,
    steps: stepsApplied(s),
    startedOn: s.startedOn ?? "",
    finishedOn: s.finishedOn ?? "",
    worldSize: s.worldSize,
  });
  writeFileSync(provOut, `${JSON.stringify(signStatement(prov, key))}\n`);
  const secs = ((performance.now() - t0) / 1000).toFixed(2);
  process.stdout.write(
    `signed ${resources.length} files of ${modelDir} (sha256 ${subject}) in ${secs} s\nwrote ${out} (OpenSSF model signing v1.0, Sigstore bundle) and ${provOut} (in-toto SLSA provenance v1)\n`,
  );
}

function* withNewline(parts: Iterable<string | Buffer>): Generator<string | Buffer> {
  yield* parts;
  yield "\n";
}
