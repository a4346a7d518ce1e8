/** `rft dataset sign`: add an authority's credential to every row of a JSONL dataset. */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { signRow } from "../../ledger/dataset.js";
import { loadPrivateKey } from "../../ledger/sign.js";
import { DatasetError, readDatasetText } from "../../trainer/data/dataset.js";

export function register(program: Command) {
  const dataset = program.command("dataset").description("dataset tools");
  dataset
    .command("sign")
    .description(
      "sign every row as AUTHORITY: adds provenance {authority, credential} (Ed25519 over the row's SHA-256)",
    )
    .requiredOption("--key <file>", "the authority's private key (PEM or raw base64), e.g. from `rft keys generate`")
    .requiredOption("--authority <name>", "the authority's name, as declared in the job's governance.authorities")
    .argument("<in.jsonl>", "dataset to sign (rows' existing provenance is replaced)")
    .action((file: string, o: { key: string; authority: string }) => {
      let key;
      try {
        key = loadPrivateKey(readFileSync(o.key, "utf8"));
      } catch (e) {
        process.stderr.write(`rft dataset sign: --key ${o.key}: ${(e as Error).message}\n`);
        process.exitCode = 2;
        return;
      }
      let text: string;
      try {
        text = readDatasetText(file); // invalid UTF-8 is an error, never signed as U+FFFD
      } catch (e) {
        if (!(e instanceof DatasetError)) throw e;
        process.stderr.write(`rft dataset sign: ${e.message}\n`);
        process.exitCode = 2;
        return;
      }
      const lines = text.split("\n");
      const out: string[] = [];
      for (const [i, line] of lines.entries()) {
        if (line.trim() === "") continue;
        let row: unknown;
        try {
          row = JSON.parse(line);
        } catch (e) {
          process.stderr.write(`rft dataset sign: ${file}:${i + 1}: not valid JSON (${(e as Error).message})\n`);
          process.exitCode = 2;
          return;
        }
        if (row === null || typeof row !== "object" || Array.isArray(row)) {
          process.stderr.write(`rft dataset sign: ${file}:${i + 1}: each line must be a JSON object\n`);
          process.exitCode = 2;
          return;
        }
        out.push(JSON.stringify(signRow(row as Record<string, unknown>, o.authority, key)));
      }
      process.stdout.write(out.map((l) => `${l}\n`).join(""));
    });
}
