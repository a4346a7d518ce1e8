/**
 * `rft audit export` (a provenance bundle from a local run's event file or from the ledger service) and
 * `rft audit verify` (the auditor's check; non-zero exit naming the failing check).
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
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
import { formatReport } from "../../ledger/verify.js";
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
    .option("--json", "print the report as JSON")
    .action(
      async (
        path: string,
        o: {
          model?: string;
          base?: string;
          modelDigests?: string;
          dataset?: string;
          jobKey?: string;
          ledgerKey?: string;
          knownHead?: string;
          json?: boolean;
        },
      ) => {
        try {
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
          let report: Awaited<ReturnType<typeof verifyBundleFile>>;
          try {
            // Either form, told apart by content: a JSON document, or JSONL (header, one event per line, trailer).
            report = await verifyBundleFile(path, options);
          } catch (e) {
            if (e instanceof BundleFileError) throw new UsageError(`bundle: ${e.message}`);
            throw e;
          }
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
      },
    );
}

function* withNewline(parts: Iterable<string | Buffer>): Generator<string | Buffer> {
  yield* parts;
  yield "\n";
}
