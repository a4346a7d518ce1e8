/** `rft keys generate`: an Ed25519 key pair for a job, an authority, or the ledger. */
import { generateKeyPairSync } from "node:crypto";
import { chmodSync, existsSync, writeFileSync } from "node:fs";
import type { Command } from "commander";
import { exportPrivateKeyPem, exportPublicKeyPem, generateKeyPair, keyId, publicKeyB64 } from "../../ledger/sign.js";

export function register(program: Command) {
  const keys = program.command("keys").description("Ed25519 signing keys (jobs, dataset authorities, the ledger)");
  keys
    .command("generate")
    .description(
      "generate a key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM); without --out, print the private key",
    )
    .option("--out <prefix>", "write PREFIX.key and PREFIX.pub")
    .option("--force", "overwrite existing files")
    .option(
      "--algorithm <ed25519|ecdsa-p256>",
      "ed25519 (default: jobs, authorities, the ledger) or ecdsa-p256 (model signing: what model_signing's key method verifies)",
      "ed25519",
    )
    .action((o: { out?: string; force?: boolean; algorithm: string }) => {
      if (o.algorithm !== "ed25519" && o.algorithm !== "ecdsa-p256") {
        process.stderr.write(`rft keys generate: --algorithm must be ed25519 or ecdsa-p256, not ${o.algorithm}\n`);
        process.exitCode = 2;
        return;
      }
      const { privateKey, publicKey } =
        o.algorithm === "ed25519" ? generateKeyPair() : generateKeyPairSync("ec", { namedCurve: "P-256" });
      const info =
        o.algorithm === "ed25519"
          ? `key id ${keyId(publicKey)}\npublic key (raw base64) ${publicKeyB64(publicKey)}\n`
          : "ECDSA P-256 key (model signing)\n";
      if (!o.out) {
        process.stdout.write(exportPrivateKeyPem(privateKey));
        process.stderr.write(info);
        return;
      }
      for (const f of [`${o.out}.key`, `${o.out}.pub`]) {
        if (existsSync(f) && !o.force) {
          process.stderr.write(`rft keys generate: ${f} exists (use --force to overwrite)\n`);
          process.exitCode = 2;
          return;
        }
      }
      writeFileSync(`${o.out}.key`, exportPrivateKeyPem(privateKey), { mode: 0o600 });
      chmodSync(`${o.out}.key`, 0o600);
      writeFileSync(`${o.out}.pub`, exportPublicKeyPem(publicKey));
      process.stdout.write(`wrote ${o.out}.key and ${o.out}.pub\n${info}`);
    });
}
