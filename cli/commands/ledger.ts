/** `rft ledger`: the ledger service (JetStream consumer, verification, Merkle logs, signed heads, audit API). */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { LedgerService } from "../../ledger/service.js";
import { natsAuthOptions, natsTlsOptions } from "../../proto/nats-auth.js";
import { keyId, loadPrivateKey, publicKeyB64 } from "../../ledger/sign.js";

export function register(program: Command) {
  program
    .command("ledger")
    .description(
      "run the ledger service: verify every event from NATS JetStream, keep Merkle logs, sign tree heads, serve the audit API",
    )
    .option("--nats <url>", "NATS server URL(s), comma-separated", process.env.NATS_URL ?? "nats://127.0.0.1:4222")
    .option("--port <n>", "HTTP port of the audit API", "8090")
    .option(
      "--host <addr>",
      "HTTP listen address (default 127.0.0.1; another address needs --token-file, or --insecure-no-auth)",
      process.env.RFT_LEDGER_HOST ?? "127.0.0.1",
    )
    .option(
      "--token-file <file>",
      "file holding the bearer token the audit API requires on /v1/* (env RFT_LEDGER_TOKEN_FILE; /healthz and /metrics stay open)",
      process.env.RFT_LEDGER_TOKEN_FILE,
    )
    .option("--insecure-no-auth", "serve the audit API on a non-loopback --host without a token")
    .requiredOption("--key <file>", "the ledger's Ed25519 private key (PEM or raw base64) that signs tree heads")
    .option("--head-interval <ms>", "how often tree heads are signed", "1000")
    .option(
      "--nats-creds <file>",
      "NATS credentials (.creds) of the ledger's user (env RFT_NATS_CREDS; the operator mints it, see `rft nats`)",
      process.env.RFT_NATS_CREDS,
    )
    .option(
      "--nats-ca <file>",
      "PEM CA that signed the NATS server's certificate: connect with TLS (env RFT_NATS_CA_FILE)",
      process.env.RFT_NATS_CA_FILE,
    )
    .option(
      "--job-keys <source>",
      'where job keys are registered: "kv" (the RFT_JOB_KEYS bucket the operator writes; default), "file:PATH" (JSON {"ns/name" | "ns/*": raw base64 public key}), or "none" (a job\'s first event names its key: only where nobody else can publish to NATS)',
      "kv",
    )
    .option("--registry <file>", "same as --job-keys file:FILE")
    .action(
      async (o: {
        nats: string;
        port: string;
        host: string;
        key: string;
        headInterval: string;
        registry?: string;
        jobKeys: string;
        natsCreds?: string;
        natsCa?: string;
        tokenFile?: string;
        insecureNoAuth?: boolean;
      }) => {
        const apiToken = o.tokenFile ? readFileSync(o.tokenFile, "utf8").trim() : undefined;
        if (o.tokenFile && !apiToken) throw new Error(`--token-file ${o.tokenFile} is empty`);
        if (!apiToken && !isLoopback(o.host) && !o.insecureNoAuth)
          throw new Error(
            `refusing to serve the audit API on ${o.host} without authentication: pass --token-file FILE (or --insecure-no-auth)`,
          );
        const key = loadPrivateKey(readFileSync(o.key, "utf8"));
        const svc = await LedgerService.start({
          servers: o.nats.split(","),
          key,
          port: Number(o.port),
          host: o.host,
          ...(apiToken ? { apiToken } : {}),
          headIntervalMs: Number(o.headInterval),
          keyRegistry: jobKeySource(o.registry ? `file:${o.registry}` : o.jobKeys),
          auth: { ...natsAuthOptions(o.natsCreds), ...natsTlsOptions(o.natsCa) },
        });
        process.stderr.write(
          `rft ledger: audit API on ${o.host}:${svc.port} (${apiToken ? "bearer token required" : "no authentication"}), ledger key ${keyId(key)} (${publicKeyB64(key)})\n`,
        );
        const stop = () => {
          void svc.stop().then(() => process.exit(0));
        };
        process.once("SIGTERM", stop);
        process.once("SIGINT", stop);
      },
    );
}

/** The --job-keys value as LedgerService's keyRegistry. */
export function jobKeySource(v: string): "kv" | Record<string, string> | undefined {
  if (v === "kv") return "kv";
  if (v === "none") return undefined;
  if (v.startsWith("file:")) {
    const file = v.slice(5);
    let reg: unknown;
    try {
      reg = JSON.parse(readFileSync(file, "utf8"));
    } catch (e) {
      throw new Error(`--job-keys ${v}: ${(e as Error).message}`, { cause: e });
    }
    if (typeof reg !== "object" || reg === null || Array.isArray(reg))
      throw new Error(`--job-keys ${v}: must be a JSON object {"ns/name" | "ns/*": public key}`);
    for (const [k, key] of Object.entries(reg))
      if (typeof key !== "string" || !/^[A-Za-z0-9+/]{43}=$/.test(key))
        throw new Error(`--job-keys ${v}: "${k}" is not a raw base64 Ed25519 public key`);
    return reg as Record<string, string>;
  }
  throw new Error(`--job-keys must be kv, file:PATH or none, got "${v}"`);
}

/** 127.0.0.0/8, ::1 and localhost: addresses only this machine (or pod) reaches. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
