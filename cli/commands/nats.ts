/**
 * `rft nats`: NATS identities outside Kubernetes (in a cluster the operator makes them: `rft operator
 * --nats-auth`). `init` writes a trust (keep trust.json secret), the server's auth.conf and the operator's
 * and ledger's users; `creds` mints one job's trainer user.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { mintUser, newTrust, parseTrust, serverAuthConfig, trustPublic } from "../../operator/nats-credentials.js";
import { parseJobRef } from "../../proto/ledger-events.js";
import { ledgerPermissions, operatorPermissions, trainerPermissions } from "../../proto/nats-auth.js";

export function register(program: Command) {
  const nats = program.command("nats").description("NATS identities (operator JWT mode) for a NATS outside Kubernetes");
  nats
    .command("init")
    .description(
      "write DIR/trust.json (every seed, mode 0600), DIR/auth.conf (include it from nats.conf), DIR/operator.creds and DIR/ledger.creds",
    )
    .requiredOption("--dir <dir>", "output directory")
    .option("--force", "overwrite an existing trust")
    .action((o: { dir: string; force?: boolean }) => {
      const trustFile = join(o.dir, "trust.json");
      if (existsSync(trustFile) && !o.force) {
        process.stderr.write(`rft nats init: ${trustFile} exists (use --force to replace the trust)\n`);
        process.exitCode = 2;
        return;
      }
      mkdirSync(o.dir, { recursive: true });
      const trust = newTrust();
      writeFileSync(trustFile, JSON.stringify(trust, null, 2), { mode: 0o600 });
      writeFileSync(join(o.dir, "auth.conf"), serverAuthConfig(trust));
      writeFileSync(join(o.dir, "operator.creds"), mintUser(trust, "rft-operator", operatorPermissions).creds, {
        mode: 0o600,
      });
      writeFileSync(join(o.dir, "ledger.creds"), mintUser(trust, "rft-ledger", ledgerPermissions).creds, {
        mode: 0o600,
      });
      process.stderr.write(
        `rft nats init: account ${trustPublic(trust).account}; add \`include ./auth.conf\` to the server's nats.conf (auth.conf beside it)\n`,
      );
    });
  nats
    .command("creds")
    .description("print the .creds of a job's trainer user (its own progress, control and ledger subjects only)")
    .requiredOption("--trust <file>", "trust.json written by `rft nats init`")
    .requiredOption("--job <ns/name>", "the FineTuneJob")
    .action((o: { trust: string; job: string }) => {
      const trust = parseTrust(readFileSync(o.trust, "utf8"), o.trust);
      const { namespace, name } = parseJobRef(o.job);
      process.stdout.write(
        mintUser(trust, `trainer-${namespace}-${name}`, (k) => trainerPermissions(namespace, name, k)).creds,
      );
    });
}
