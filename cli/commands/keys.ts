/** `rft keys generate`: an Ed25519 key pair for a job, an authority, or the ledger. */
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
    .action((o: { out?: string; force?: boolean }) => {
      const { privateKey, publicKey } = generateKeyPair();
      const info = `key id ${keyId(publicKey)}\npublic key (raw base64) ${publicKeyB64(publicKey)}\n`;
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
