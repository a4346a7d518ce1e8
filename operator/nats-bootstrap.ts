/**
 * The NATS trust of an installation, made once by the operator (`rft operator --nats-auth NS/PREFIX`) as three
 * Secrets in the release namespace, each read by one party:
 *
 * - PREFIX-nats-trust   (`trust.json`: every seed)  — the operator only; it mints users from it;
 * - PREFIX-nats-server  (`auth.conf`)                — the NATS StatefulSet (nats.conf includes it);
 * - PREFIX-ledger-nats  (`ledger.creds`)             — the ledger service.
 *
 * Created, never replaced: a 409 means another replica made it first, and its content is used. The NATS and
 * ledger pods wait (their Secret volumes are not optional) until these exist.
 */
import type { Logger } from "../proto/log.js";
import { ledgerPermissions, operatorPermissions } from "../proto/nats-auth.js";
import { type KubeClient, paths } from "./client.js";
import {
  type MintedUser,
  mintUser,
  type NatsTrust,
  newTrust,
  parseTrust,
  serverAuthConfig,
  trustPublic,
} from "./nats-credentials.js";

export interface NatsAuthRef {
  namespace: string;
  /** The Secrets' name prefix (the chart's fullname). */
  prefix: string;
}

export const natsAuthSecretNames = (prefix: string) => ({
  trust: `${prefix}-nats-trust`,
  server: `${prefix}-nats-server`,
  ledger: `${prefix}-ledger-nats`,
});

/** Parses "NAMESPACE/PREFIX" (the --nats-auth flag). */
export function parseNatsAuthRef(v: string): NatsAuthRef {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)$/.exec(v);
  if (!m || v.length > 200) throw new Error(`--nats-auth must be NAMESPACE/PREFIX (Kubernetes names), got "${v}"`);
  return { namespace: m[1]!, prefix: m[3]! };
}

const secret = (ns: string, name: string, component: string, data: Record<string, string>) => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: {
    name,
    namespace: ns,
    labels: { "app.kubernetes.io/managed-by": "rft-operator", "app.kubernetes.io/component": component },
  },
  type: "Opaque",
  stringData: data,
});

/** Creates the Secret unless it exists; answers its data (decoded). */
async function ensureSecret(
  client: KubeClient,
  ns: string,
  name: string,
  make: () => ReturnType<typeof secret>,
): Promise<{ data: Record<string, string>; created: boolean }> {
  const path = paths.core("secrets", ns, name);
  const decode = (d: Record<string, string> | undefined) =>
    Object.fromEntries(Object.entries(d ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]));
  const existing = await client.getOptional(path);
  if (existing) return { data: decode(existing.data as Record<string, string>), created: false };
  const obj = make();
  const created = await client.create(paths.core("secrets", ns), obj);
  if (created) return { data: obj.stringData, created: true };
  return { data: decode((await client.get(path)).data as Record<string, string>), created: false };
}

/**
 * Makes (or reads) the installation's NATS trust and the server's and ledger's Secrets; answers the trust and
 * a freshly minted user for this operator process.
 */
export async function ensureNatsAuth(
  client: KubeClient,
  ref: NatsAuthRef,
  log: Logger,
): Promise<{ trust: NatsTrust; operatorUser: MintedUser }> {
  const n = natsAuthSecretNames(ref.prefix);
  const t = await ensureSecret(client, ref.namespace, n.trust, () =>
    secret(ref.namespace, n.trust, "operator", { "trust.json": JSON.stringify(newTrust()) }),
  );
  const trust = parseTrust(t.data["trust.json"] ?? "", `Secret ${ref.namespace}/${n.trust} key trust.json`);
  const pub = trustPublic(trust);
  const s = await ensureSecret(client, ref.namespace, n.server, () =>
    secret(ref.namespace, n.server, "nats", { "auth.conf": serverAuthConfig(trust), operator: pub.operator }),
  );
  if (s.data.operator !== pub.operator)
    log.error(
      { secret: `${ref.namespace}/${n.server}` },
      "the NATS server's auth.conf trusts another operator key than the trust Secret holds: delete both Secrets and restart the operator and NATS",
    );
  await ensureSecret(client, ref.namespace, n.ledger, () =>
    secret(ref.namespace, n.ledger, "ledger", {
      "ledger.creds": mintUser(trust, "rft-ledger", ledgerPermissions).creds,
    }),
  );
  if (t.created) log.info({ namespace: ref.namespace, account: pub.account }, "NATS trust created");
  return { trust, operatorUser: mintUser(trust, "rft-operator", operatorPermissions) };
}
