/** `rft operator`: run the FineTuneJob controller (logic in operator/). */
import type { Command } from "commander";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import { Operator } from "../../operator/manager.js";
import { parseNatsAuthRef } from "../../operator/nats-bootstrap.js";
import { natsTlsOptions } from "../../proto/nats-auth.js";
import { createLogger } from "../../proto/log.js";

export function register(program: Command) {
  program
    .command("operator")
    .description("run the FineTuneJob operator (controller, leader election, /metrics /healthz /readyz)")
    .option("--kubeconfig <file>", "kubeconfig (default: KUBECONFIG, ~/.kube/config or in-cluster)")
    .option("--namespace <ns>", "watch one namespace only (default: all)")
    .option("--image <image>", "default trainer and grader image", process.env.RFT_IMAGE ?? "rft:dev")
    .option("--nats-url <url>", "NATS URL as the operator reaches it", process.env.RFT_NATS_URL)
    .option("--pod-nats-url <url>", "NATS URL as trainer pods reach it (default: --nats-url)")
    .option(
      "--ledger-nats",
      "trainers publish their signed ledger events to JetStream (the ledger service's input) instead of a file on the checkpoint volume",
    )
    .option(
      "--nats-auth <ns/prefix>",
      "NATS runs with authentication: make (once) or read the installation's NATS trust in Secrets NS/PREFIX-nats-{trust,server} and the ledger's user in NS/PREFIX-ledger-nats, connect as the operator's user, and mint each job its own user (env RFT_NATS_AUTH; the chart sets it)",
      process.env.RFT_NATS_AUTH,
    )
    .option(
      "--nats-ca <file>",
      "PEM CA that signed the NATS server's certificate: the operator and every trainer connect with TLS (env RFT_NATS_CA_FILE)",
      process.env.RFT_NATS_CA_FILE,
    )
    .option(
      "--job-network-policy",
      "give each job a NetworkPolicy: its ranks' collective ports accept only pods of the same job (the chart sets it with networkPolicy.enabled)",
    )
    .option("--workers <n>", "concurrent reconciles", "4")
    .option("--port <port>", "port of /metrics, /healthz, /readyz", "8080")
    .option(
      "--host <host>",
      "address of that port and the webhook's (default 127.0.0.1; in a pod, 0.0.0.0 for its Services: the chart sets it)",
      process.env.RFT_OPERATOR_HOST ?? "127.0.0.1",
    )
    .option("--no-leader-elect", "run without leader election (one replica only)")
    .option("--lease-namespace <ns>", "namespace of the leader Lease", process.env.POD_NAMESPACE ?? "default")
    .option("--identity <id>", "leader election identity (default: host_pid)")
    .option("--webhook-port <port>", "serve the validating admission webhook over HTTPS on this port (0: off)", "0")
    .option(
      "--webhook-secret <ns/name>",
      "kubernetes.io/tls Secret with the webhook's serving certificate",
      process.env.RFT_WEBHOOK_SECRET ?? `${process.env.POD_NAMESPACE ?? "default"}/rft-operator-webhook-tls`,
    )
    .action(async (o) => {
      const log = createLogger("operator");
      const webhookPort = Number(o.webhookPort);
      const [secretNamespace, secretName] = String(o.webhookSecret).split("/");
      if (!secretNamespace || !secretName)
        throw new Error(`--webhook-secret must be NAMESPACE/NAME, got "${o.webhookSecret}"`);
      const engine = webhookPort > 0 ? webhookGraderEngine() : undefined;
      const natsUrl: string = o.natsUrl ?? "nats://127.0.0.1:4222";
      const op = new Operator({
        kubeconfig: o.kubeconfig,
        namespace: o.namespace,
        settings: {
          image: o.image,
          natsUrl: o.podNatsUrl ?? natsUrl,
          ledgerNats: o.ledgerNats === true,
          jobNetworkPolicy: o.jobNetworkPolicy === true,
          ...(o.natsCa ? { natsCaPem: readNatsCa(o.natsCa) } : {}),
        },
        natsUrl,
        ...(o.natsAuth ? { natsAuth: parseNatsAuthRef(o.natsAuth) } : {}),
        workers: Number(o.workers),
        port: Number(o.port),
        host: o.host,
        leaderElection: o.leaderElect !== false,
        leaseNamespace: o.leaseNamespace,
        identity: o.identity,
        log,
        ...(engine
          ? {
              webhook: {
                port: webhookPort,
                host: o.host,
                secretNamespace,
                secretName,
                validateGrader: async (g: unknown) => void (await engine.compile(g)),
              },
            }
          : {}),
      });
      const stop = async (sig: string) => {
        log.info({ signal: sig }, "shutting down");
        await op.stop();
        await engine?.close();
        process.exit(0);
      };
      process.once("SIGTERM", () => void stop("SIGTERM"));
      process.once("SIGINT", () => void stop("SIGINT"));
      await op.start();
      log.info({ port: op.port, webhookPort: op.webhook?.port }, "operator serving /metrics /healthz /readyz");
    });
}

/** The CA file's PEM, checked (a bad path or file is a clear error at start, not a trainer's crash). */
function readNatsCa(file: string): string {
  const tls = natsTlsOptions(file).tls as { ca: string };
  return tls.ca;
}

/**
 * The grader engine behind the admission webhook: the engine's own validation (templates, calculate_output,
 * python graders). Python graders are only parsed, never run, here: this pod holds the operator's credentials
 * (its ServiceAccount token), and the sandbox may lack namespaces under a restricted profile. A grader's module
 * body first runs in the trainer pod, which has no token.
 */
export function webhookGraderEngine(): GraderEngine {
  return new GraderEngine({ python: { size: 1 }, pythonCheck: "parse" });
}
