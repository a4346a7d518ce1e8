/**
 * The Helm chart (helm/rft-operator): `helm lint` and `helm template` with default and non-default values,
 * what the rendered manifests promise (restricted security, probes, resources, least-privilege RBAC, the CRD
 * and the alerts from their one source, NATS clustering, NetworkPolicies, PDBs, the admission webhook with its
 * generated certificate), and bad values rejected by values.schema.json (or the chart's checks) with a message
 * naming the field.
 */
import assert from "node:assert/strict";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { once } from "node:events";
import { lstatSync, readFileSync, readlinkSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import { connect, createServer } from "node:tls";
import { parse } from "yaml";
import { WEBHOOK_NAME, WEBHOOK_PATH, webhookConfiguration } from "../../operator/webhook.js";
import { REPO_ROOT } from "../k8s/binaries.js";
import { ALERTS_FILE } from "../observability/tools.js";
import { CHART, find, helm, type K, template, VALUES } from "./helm.js";

const VARIANTS: Record<string, string[]> = {
  default: [],
  ha: ["-f", join(VALUES, "ha.yaml")],
  "external-nats": ["-f", join(VALUES, "external-nats.yaml")],
};

const podSpecs = (objects: K[]) =>
  objects
    .filter((o) => ["Deployment", "StatefulSet"].includes(o.kind))
    .map((o) => ({ name: `${o.kind}/${o.metadata.name}`, spec: o.spec.template.spec as K }));

describe("helm lint", () => {
  for (const [name, args] of Object.entries(VARIANTS))
    test(`passes with ${name} values`, async () => {
      const r = await helm("lint", CHART, "--strict", ...args);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    });
});

describe("helm template", () => {
  for (const [name, args] of Object.entries(VARIANTS))
    test(`${name} values: restricted pods with probes and resources`, async () => {
      const { objects } = await template(args);
      const pods = podSpecs(objects);
      assert.ok(pods.length >= (name === "external-nats" ? 1 : 3), pods.map((p) => p.name).join());
      for (const { name: what, spec } of pods) {
        assert.equal(spec.securityContext.runAsNonRoot, true, what);
        assert.equal(spec.securityContext.seccompProfile.type, "RuntimeDefault", what);
        for (const c of spec.containers) {
          const sc = c.securityContext;
          assert.equal(sc.allowPrivilegeEscalation, false, what);
          assert.equal(sc.readOnlyRootFilesystem, true, what);
          assert.deepEqual(sc.capabilities.drop, ["ALL"], what);
          assert.ok(c.livenessProbe && c.readinessProbe && c.startupProbe, `${what}: probes`);
          assert.ok(c.resources.requests.cpu && c.resources.limits.memory, `${what}: resources`);
        }
      }
    });

  test("default: cluster-wide RBAC with exactly the verbs the operator uses, leader Lease in its namespace", async () => {
    const { objects } = await template();
    const [role] = find(objects, "ClusterRole");
    const verbs = Object.fromEntries(
      role!.rules.flatMap((r: K) => r.resources.map((res: string) => [`${r.apiGroups[0] || "core"}/${res}`, r.verbs])),
    );
    assert.deepEqual(verbs, {
      "rft.dev/finetunejobs": ["get", "list", "watch", "delete"],
      "rft.dev/finetunejobs/status": ["get", "patch", "update"],
      "rft.dev/finetunejobs/finalizers": ["update"],
      "batch/jobs": ["get", "list", "watch", "create", "patch", "delete"],
      "core/configmaps": ["get", "list", "watch", "create", "patch"],
      "core/services": ["get", "list", "watch", "create", "patch", "delete"],
      "apps/deployments": ["get", "create", "patch", "delete"],
      "core/secrets": ["get", "list", "watch", "create"],
      "core/events": ["create", "patch"],
      "networking.k8s.io/networkpolicies": ["create", "patch"],
    });
    assert.ok(!JSON.stringify(objects.filter((o) => /Role/.test(o.kind))).includes('"*"'), "no wildcards");
    // JobSets only when asked for (spec.workloadKind JobSet).
    const withJobSet = find((await template(["--set", "jobSet.enabled=true"])).objects, "ClusterRole")[0]!;
    assert.deepEqual(withJobSet.rules.at(-1), {
      apiGroups: ["jobset.x-k8s.io"],
      resources: ["jobsets"],
      verbs: ["get", "create", "patch", "delete"],
    });
    const lease = find(objects, "Role", "rft-rft-operator-operator-leader")[0]!;
    assert.equal(lease.metadata.namespace, "rft-system");
    assert.deepEqual(lease.rules, [
      { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] },
    ]);
    const op = find(objects, "Deployment", "rft-rft-operator-operator")[0]!;
    const c = op.spec.template.spec.containers[0];
    assert.equal(op.spec.replicas, 1);
    assert.equal(c.image, "rft:0.1.0");
    assert.ok(c.args.includes("--image=rft-trainer-gpu:0.1.0"));
    assert.ok(
      c.args.includes("--nats-url=nats://rft-rft-operator-nats-0.rft-rft-operator-nats-headless.rft-system.svc:4222"),
    );
    assert.ok(c.args.includes("--lease-namespace=$(POD_NAMESPACE)"));
    assert.ok(c.args.includes("--ledger-nats"), "with the ledger service, trainers publish their ledger to JetStream");
    assert.ok(!c.args.some((a: string) => a.startsWith("--namespace")));
    assert.equal(find(objects, "PodDisruptionBudget").length, 0, "no PDB for single replicas");
  });

  test("listeners: the operator's and ledger's addresses are explicit; the audit API gets a generated, kept bearer token", async () => {
    const { objects } = await template();
    const op = find(objects, "Deployment", "rft-rft-operator-operator")[0]!.spec.template.spec.containers[0];
    assert.ok(op.args.includes("--host=0.0.0.0"), "the operator's metrics/health/webhook ports for its Services");
    const ledgerPod = find(objects, "Deployment", "rft-rft-operator-ledger")[0]!.spec.template.spec;
    const ledger = ledgerPod.containers[0];
    assert.ok(ledger.args.includes("--host=0.0.0.0"), "inside the pod, for the ledger's Service");
    assert.ok(ledger.args.includes("--token-file=/var/run/rft/ledger-token/token"));
    const vol = ledgerPod.volumes.find((v: K) => v.name === "token");
    assert.deepEqual(vol.secret.secretName, "rft-rft-operator-ledger-token");
    assert.ok(ledger.volumeMounts.some((m: K) => m.name === "token" && m.mountPath === "/var/run/rft/ledger-token"));
    const secret = find(objects, "Secret", "rft-rft-operator-ledger-token")[0]!;
    assert.equal(secret.metadata.annotations["helm.sh/resource-policy"], "keep");
    assert.match(Buffer.from(secret.data.token, "base64").toString(), /^[A-Za-z0-9]{48}$/);
    // Given a Secret: no generated one, the given one mounted.
    const given = await template(["--set", "ledger.apiToken.existingSecret=audit-token"]);
    assert.equal(find(given.objects, "Secret", "rft-rft-operator-ledger-token").length, 0);
    const givenPod = find(given.objects, "Deployment", "rft-rft-operator-ledger")[0]!.spec.template.spec;
    assert.equal(givenPod.volumes.find((v: K) => v.name === "token").secret.secretName, "audit-token");
    // Trainer pods: the grader's gRPC/HTTP stay on loopback, so the policy admits the monitoring port only.
    const np = find((await template(VARIANTS.ha)).objects, "NetworkPolicy", "rft-rft-operator-trainers");
    assert.ok(np.length > 0);
    for (const p of np) {
      const ports = p.spec.ingress.flatMap((i: K) => (i.ports ?? []).map((x: K) => x.port));
      assert.ok(ports.includes(8082) && !ports.includes(8081) && !ports.includes(50051), JSON.stringify(ports));
    }
  });

  test("ha: 2 operators with a PDB, namespace-scoped RBAC, a 3-server JetStream cluster, trainer egress policy", async () => {
    const { objects } = await template(VARIANTS.ha);
    assert.equal(find(objects, "ClusterRole").length, 0);
    const roles = find(objects, "Role", "rft-rft-operator-operator");
    assert.deepEqual(
      roles.map((r) => r.metadata.namespace),
      ["ml-team"],
    );
    const op = find(objects, "Deployment", "rft-rft-operator-operator")[0]!;
    assert.equal(op.spec.replicas, 2);
    assert.ok(op.spec.template.spec.containers[0].args.includes("--namespace=ml-team"));
    assert.ok(op.spec.template.spec.affinity.podAntiAffinity);
    assert.equal(find(objects, "PodDisruptionBudget", "rft-rft-operator-operator")[0]!.spec.minAvailable, 1);
    assert.equal(find(objects, "PodDisruptionBudget", "rft-rft-operator-nats")[0]!.spec.maxUnavailable, 1);
    const sts = find(objects, "StatefulSet")[0]!;
    assert.equal(sts.spec.replicas, 3);
    assert.equal(sts.spec.volumeClaimTemplates[0].spec.storageClassName, "fast");
    const conf = find(objects, "ConfigMap", "rft-rft-operator-nats")[0]!.data["nats.conf"] as string;
    assert.match(conf, /max_file_store: 20G\b/);
    for (let i = 0; i < 3; i++)
      assert.ok(conf.includes(`nats://rft-rft-operator-nats-${i}.rft-rft-operator-nats-headless.rft-system.svc:6222`));
    assert.ok(
      op.spec.template.spec.containers[0].args.includes("--nats-url=nats://rft-rft-operator-nats.rft-system.svc:4222"),
    );
    // Ledger: the given key Secret, no generated key (the other Secrets are the audit API's generated token
    // and the webhook's certificate).
    assert.deepEqual(
      find(objects, "Secret")
        .map((x) => x.metadata.name)
        .sort(),
      ["rft-rft-operator-ledger-token", "rft-rft-operator-nats-tls", "rft-rft-operator-operator-webhook-tls"],
    );
    // NATS speaks TLS with a generated certificate whose names cover the URL every client uses, signed by the
    // CA the operator and the ledger are given.
    assert.match(conf, /tls \{\s*cert_file: "\/etc\/nats-tls\/tls.crt"/);
    const tls = find(objects, "Secret", "rft-rft-operator-nats-tls")[0]!.data;
    const cert = new X509Certificate(Buffer.from(tls["tls.crt"], "base64"));
    assert.ok(cert.checkHost("rft-rft-operator-nats.rft-system.svc"), cert.subjectAltName);
    assert.ok(cert.verify(new X509Certificate(Buffer.from(tls["ca.crt"], "base64")).publicKey));
    assert.ok(op.spec.template.spec.containers[0].args.includes("--nats-ca=/var/run/rft/nats-ca/ca.crt"));
    const ledger = find(objects, "Deployment", "rft-rft-operator-ledger")[0]!;
    assert.equal(ledger.spec.template.spec.volumes[0].secret.secretName, "my-ledger-key");
    // Trainer pods in ml-team: egress only to DNS, NATS, other ranks and the judge CIDR.
    const np = find(objects, "NetworkPolicy", "rft-rft-operator-trainers")[0]!;
    assert.equal(np.metadata.namespace, "ml-team");
    assert.deepEqual(np.spec.policyTypes, ["Ingress", "Egress"]);
    const egressPorts = np.spec.egress.map((e: K) => (e.ports ?? []).map((p: K) => p.port).join("+"));
    assert.deepEqual(egressPorts, ["29500+29501", "4222", "53+53", "443"]);
    assert.deepEqual(np.spec.egress[3].to, [{ ipBlock: { cidr: "10.20.0.0/16" } }]);
    // No trainer pod accepts another job's ranks here: the collective ports are opened per job by the operator
    // (its <job>-ranks policy), so this namespace-wide policy lets in only metrics.
    const ingressPorts = np.spec.ingress.flatMap((e: K) => (e.ports ?? []).map((p: K) => p.port));
    assert.ok(!ingressPorts.includes(29500) && !ingressPorts.includes(29501), JSON.stringify(np.spec.ingress));
    assert.ok(op.spec.template.spec.containers[0].args.includes("--job-network-policy"));
    assert.ok(op.spec.template.spec.containers[0].args.includes("--nats-auth=rft-system/rft-rft-operator"));
    // Monitoring toggles.
    assert.equal(find(objects, "ServiceMonitor").length, 2);
    const pm = find(objects, "PodMonitor")[0]!;
    assert.equal(pm.spec.podMetricsEndpoints.find((e: K) => e.port === "metrics").honorLabels, true);
    assert.deepEqual(pm.spec.namespaceSelector, { matchNames: ["ml-team"] });
  });

  test("external NATS: no NATS objects, the given URL everywhere, no CRD, no policies", async () => {
    const { objects } = await template(VARIANTS["external-nats"]);
    assert.equal(find(objects, "StatefulSet").length, 0);
    assert.equal(find(objects, "CustomResourceDefinition").length, 0);
    assert.equal(find(objects, "NetworkPolicy").length, 0);
    assert.equal(find(objects, "Deployment").length, 1);
    const args = find(objects, "Deployment")[0]!.spec.template.spec.containers[0].args as string[];
    assert.ok(args.includes("--nats-url=nats://nats.messaging.svc:4222,nats://nats-1.messaging.svc:4222"));
    assert.ok(!args.includes("--ledger-nats"), "no ledger service: trainers keep the ledger on the checkpoint volume");
  });

  test("the CRD is crds/finetunejobs.rft.dev.yaml (one source: the chart links to it), kept on uninstall", async () => {
    const link = join(CHART, "files/finetunejobs.rft.dev.yaml");
    assert.ok(lstatSync(link).isSymbolicLink());
    assert.equal(resolve(join(CHART, "files"), readlinkSync(link)), join(REPO_ROOT, "crds/finetunejobs.rft.dev.yaml"));
    const source = parse(readFileSync(join(REPO_ROOT, "crds/finetunejobs.rft.dev.yaml"), "utf8"));
    const { objects } = await template();
    const crd = find(objects, "CustomResourceDefinition")[0]!;
    assert.deepEqual(crd.spec, source.spec);
    assert.equal(crd.metadata.name, source.metadata.name);
    assert.equal(crd.metadata.annotations["helm.sh/resource-policy"], "keep");
  });

  test("the PrometheusRule is alerts/rft-alerts.yaml (the plain rules file), with the runbook base and exclusions applied", async () => {
    const source = parse(readFileSync(ALERTS_FILE, "utf8")) as { groups: { name: string; rules: K[] }[] };
    const { objects } = await template(VARIANTS.ha);
    const rule = find(objects, "PrometheusRule")[0]!;
    assert.equal(rule.metadata.labels.release, "kube-prometheus-stack");
    const expected = source.groups.map((g) => ({
      name: g.name,
      rules: g.rules
        .filter((r) => r.alert !== "RftTrainerRestarts")
        .map((r) => ({
          ...r,
          annotations: {
            ...r.annotations,
            runbook_url: r.annotations.runbook_url.replace(
              "https://github.com/rft-operator/rft-operator/blob/main/docs/operations.md",
              "https://wiki.example.com/rft/operations",
            ),
          },
        })),
    }));
    assert.deepEqual(rule.spec.groups, expected);
    const { objects: off } = await template();
    assert.equal(find(off, "PrometheusRule").length, 0);
    assert.equal(find(off, "ServiceMonitor").length, 0);
  });
});

describe("admission webhook", () => {
  const ON = ["--set", "webhook.enabled=true"];
  const SVC = "rft-rft-operator-operator-webhook";
  const SECRET = "rft-rft-operator-operator-webhook-tls";
  const pem = (b64: string) => Buffer.from(b64, "base64").toString("utf8");

  test("enabled: the Secret's certificate is signed by the caBundle's CA for the Service's DNS names and serves TLS under them", async () => {
    const { objects } = await template(ON);
    const secret = find(objects, "Secret", SECRET)[0]!;
    assert.equal(secret.type, "kubernetes.io/tls");
    const [vwc] = find(objects, "ValidatingWebhookConfiguration");
    const caPem = pem(vwc!.webhooks[0].clientConfig.caBundle);
    assert.equal(caPem, pem(secret.data["ca.crt"]), "caBundle is the Secret's ca.crt");
    const ca = new X509Certificate(caPem);
    const cert = new X509Certificate(pem(secret.data["tls.crt"]));
    assert.ok(ca.ca, "the caBundle is a CA certificate");
    assert.ok(cert.verify(ca.publicKey), "tls.crt is signed by the caBundle's CA");
    assert.ok(cert.checkPrivateKey(createPrivateKey(pem(secret.data["tls.key"]))), "tls.key is the certificate's key");
    for (const dns of [`${SVC}.rft-system.svc`, `${SVC}.rft-system.svc.cluster.local`]) {
      assert.ok(cert.subjectAltName?.split(", ").includes(`DNS:${dns}`), `${dns} in ${cert.subjectAltName}`);
      assert.equal(cert.checkHost(dns), dns);
    }
    assert.ok(
      Date.parse(cert.validTo) > Date.now() + 365 * 86400_000,
      "valid for years (webhook.certificate.validityDays)",
    );
    // A real TLS handshake: a server with tls.crt/tls.key, a client trusting only the caBundle and asking for
    // the Service's name (as the API server does), is authorized.
    const server = createServer({ cert: pem(secret.data["tls.crt"]), key: pem(secret.data["tls.key"]) }, (s) =>
      s.end("ok"),
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    try {
      const sock = connect({
        host: "127.0.0.1",
        port: (server.address() as AddressInfo).port,
        servername: `${SVC}.rft-system.svc`,
        ca: caPem,
      });
      await once(sock, "secureConnect");
      assert.equal(sock.authorized, true, String(sock.authorizationError));
      sock.destroy();
      const wrong = connect({
        host: "127.0.0.1",
        port: (server.address() as AddressInfo).port,
        servername: "other.rft-system.svc",
        ca: caPem,
      });
      const [err] = await once(wrong, "error");
      assert.match(String(err), /does not match certificate's altnames|ERR_TLS_CERT_ALTNAME_INVALID/);
    } finally {
      server.close();
    }
  });

  test("enabled: the configuration is what webhookConfiguration() builds, pointing at a Service on the operator's webhook port", async () => {
    const { objects } = await template(ON);
    const [vwc] = find(objects, "ValidatingWebhookConfiguration");
    const built = webhookConfiguration({
      name: "rft-rft-operator-operator",
      caBundle: pem(vwc!.webhooks[0].clientConfig.caBundle),
      service: { namespace: "rft-system", name: SVC, port: 443 },
    });
    assert.equal(vwc!.metadata.name, built.metadata.name);
    assert.deepEqual(vwc!.webhooks, built.webhooks);
    assert.equal(vwc!.webhooks[0].name, WEBHOOK_NAME);
    assert.equal(vwc!.webhooks[0].clientConfig.service.path, WEBHOOK_PATH);
    assert.equal(vwc!.webhooks[0].namespaceSelector, undefined, "all namespaces without watchNamespaces");

    const svc = find(objects, "Service", SVC)[0]!;
    assert.deepEqual(svc.spec.ports, [{ name: "webhook", port: 443, targetPort: "webhook", protocol: "TCP" }]);
    const op = find(objects, "Deployment", "rft-rft-operator-operator")[0]!;
    assert.deepEqual(svc.spec.selector, op.spec.selector.matchLabels);
    const c = op.spec.template.spec.containers[0];
    assert.ok(c.args.includes("--webhook-port=9443"), c.args.join(" "));
    assert.ok(c.args.includes(`--webhook-secret=rft-system/${SECRET}`), c.args.join(" "));
    assert.deepEqual(
      c.ports.find((p: K) => p.name === "webhook"),
      { name: "webhook", containerPort: 9443, protocol: "TCP" },
    );
    // The pod stays restricted (the python sandbox degrades to rlimits where namespaces are refused).
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
  });

  test("enabled: the operator may get its certificate's Secret and nothing more; the NetworkPolicy admits the webhook port", async () => {
    const { objects } = await template(ON);
    const role = find(objects, "Role", "rft-rft-operator-operator-webhook")[0]!;
    assert.equal(role.metadata.namespace, "rft-system");
    assert.deepEqual(role.rules, [
      { apiGroups: [""], resources: ["secrets"], resourceNames: [SECRET], verbs: ["get"] },
    ]);
    const binding = find(objects, "RoleBinding", "rft-rft-operator-operator-webhook")[0]!;
    assert.equal(binding.metadata.namespace, "rft-system");
    assert.deepEqual(binding.roleRef, {
      apiGroup: "rbac.authorization.k8s.io",
      kind: "Role",
      name: role.metadata.name,
    });
    assert.deepEqual(binding.subjects, [
      { kind: "ServiceAccount", name: "rft-rft-operator-operator", namespace: "rft-system" },
    ]);
    const np = find(objects, "NetworkPolicy", "rft-rft-operator-operator")[0]!;
    const rule = np.spec.ingress.find((r: K) => r.ports.some((p: K) => p.port === 9443));
    assert.ok(rule, "ingress on the webhook port");
    assert.equal(rule.from, undefined, "from anywhere: the API server has no pod selector");
    // Narrowed to the control plane's addresses when given.
    const { objects: narrowed } = await template([
      ...ON,
      "--set",
      "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/24",
    ]);
    const np2 = find(narrowed, "NetworkPolicy", "rft-rft-operator-operator")[0]!;
    assert.deepEqual(np2.spec.ingress.find((r: K) => r.ports.some((p: K) => p.port === 9443)).from, [
      { ipBlock: { cidr: "10.0.0.0/24" } },
    ]);
  });

  test("options: failure policy, timeout, port, the watched namespaces only", async () => {
    const { objects } = await template([
      ...ON,
      "--set",
      "webhook.failurePolicy=Ignore",
      "--set",
      "webhook.timeoutSeconds=5",
      "--set",
      "webhook.port=10250",
      "--set",
      "watchNamespaces={ml-team}",
    ]);
    const w = find(objects, "ValidatingWebhookConfiguration")[0]!.webhooks[0];
    assert.equal(w.failurePolicy, "Ignore");
    assert.equal(w.timeoutSeconds, 5);
    assert.deepEqual(w.namespaceSelector, {
      matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "In", values: ["ml-team"] }],
    });
    const c = find(objects, "Deployment", "rft-rft-operator-operator")[0]!.spec.template.spec.containers[0];
    assert.ok(c.args.includes("--webhook-port=10250"));
    assert.equal(c.ports.find((p: K) => p.name === "webhook").containerPort, 10250);
    // The certificate's Secret is in the release namespace (not a watched one), readable there.
    assert.equal(find(objects, "Role", "rft-rft-operator-operator-webhook")[0]!.metadata.namespace, "rft-system");
  });

  test("cert-manager: a Certificate into the Secret the operator reads, its CA injected, no generated Secret", async () => {
    const { objects } = await template([
      ...ON,
      "--set",
      "webhook.certManager.enabled=true",
      "--set",
      "webhook.certManager.issuerRef.name=cluster-ca",
      "--set",
      "webhook.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert.equal(find(objects, "Secret", SECRET).length, 0);
    const cert = find(objects, "Certificate", "rft-rft-operator-operator-webhook")[0]!;
    assert.equal(cert.metadata.namespace, "rft-system");
    assert.equal(cert.spec.secretName, SECRET);
    assert.ok(cert.spec.dnsNames.includes(`${SVC}.rft-system.svc`));
    assert.ok(cert.spec.dnsNames.includes(`${SVC}.rft-system.svc.cluster.local`));
    assert.deepEqual(cert.spec.issuerRef, { name: "cluster-ca", kind: "ClusterIssuer", group: "cert-manager.io" });
    const vwc = find(objects, "ValidatingWebhookConfiguration")[0]!;
    assert.equal(
      vwc.metadata.annotations["cert-manager.io/inject-ca-from"],
      "rft-system/rft-rft-operator-operator-webhook",
    );
    assert.equal(vwc.webhooks[0].clientConfig.caBundle, undefined, "cert-manager fills it in");
    const c = find(objects, "Deployment", "rft-rft-operator-operator")[0]!.spec.template.spec.containers[0];
    assert.ok(c.args.includes(`--webhook-secret=rft-system/${SECRET}`));
  });

  test("on by default; disabled: no webhook objects, flag, port or policy rule", async () => {
    const { objects: defaults } = await template([]);
    assert.equal(find(defaults, "ValidatingWebhookConfiguration").length, 1);
    for (const args of [["--set", "webhook.enabled=false"]]) {
      const { objects, text } = await template(args);
      for (const kind of ["ValidatingWebhookConfiguration", "Certificate"]) assert.equal(find(objects, kind).length, 0);
      assert.equal(find(objects, "Secret", SECRET).length, 0);
      assert.equal(find(objects, "Service", SVC).length, 0);
      assert.equal(find(objects, "Role", "rft-rft-operator-operator-webhook").length, 0);
      const c = find(objects, "Deployment", "rft-rft-operator-operator")[0]!.spec.template.spec.containers[0];
      assert.ok(!c.args.some((a: string) => a.startsWith("--webhook")), c.args.join(" "));
      assert.deepEqual(
        c.ports.map((p: K) => p.name),
        ["metrics"],
      );
      const np = find(objects, "NetworkPolicy", "rft-rft-operator-operator")[0]!;
      assert.deepEqual(
        np.spec.ingress.flatMap((r: K) => r.ports.map((p: K) => p.port)),
        [8080],
      );
      assert.ok(!text.includes("9443"));
    }
  });
});

describe("bad values are rejected with the field named", () => {
  const cases: [string, string[], RegExp][] = [
    ["three operators", ["--set", "operator.replicas=3"], /\/operator\/replicas': maximum: got 3, want 2/],
    ["two NATS servers", ["--set", "nats.replicas=2"], /\/nats\/replicas': value must be one of 1, 3/],
    ["an unknown value", ["--set", "operatr.replicas=1"], /additional properties 'operatr' not allowed/],
    [
      "root pods",
      ["--set", "podSecurityContext.runAsNonRoot=false"],
      /\/podSecurityContext\/runAsNonRoot': value must be true/,
    ],
    [
      "privilege escalation",
      ["--set", "containerSecurityContext.allowPrivilegeEscalation=true"],
      /\/containerSecurityContext\/allowPrivilegeEscalation': value must be false/,
    ],
    ["a bad log level", ["--set", "operator.logLevel=loud"], /\/operator\/logLevel': value must be one of/],
    ["a bad namespace name", ["--set", "watchNamespaces={Team_A}"], /\/watchNamespaces\/0': .*does not match pattern/],
    [
      "a bad NATS URL",
      ["--set", "nats.enabled=false", "--set", "nats.url=http://x"],
      /\/nats\/url': .*does not match pattern/,
    ],
    [
      "no NATS at all",
      ["--set", "nats.enabled=false"],
      /nats\.url: set it to your NATS \(with JetStream\) when nats\.enabled is false/,
    ],
    [
      "two leaders",
      ["--set", "operator.replicas=2", "--set", "operator.leaderElection.enabled=false"],
      /operator\.leaderElection\.enabled: must be true with operator\.replicas 2/,
    ],
    [
      "a storage size without unit",
      ["--set-string", "nats.jetstream.persistence.size=10"],
      /\/nats\/jetstream\/persistence\/size': .*does not match pattern/,
    ],
    [
      "an unknown alert",
      ["--set", "prometheusRule.disabledAlerts={Nope}"],
      /\/prometheusRule\/disabledAlerts\/0': value must be one of/,
    ],
    [
      "a webhook failure policy",
      ["--set", "webhook.failurePolicy=Retry"],
      /\/webhook\/failurePolicy': value must be one of/,
    ],
    [
      "a webhook timeout over 30 s",
      ["--set", "webhook.timeoutSeconds=31"],
      /\/webhook\/timeoutSeconds': maximum: got 31/,
    ],
    ["an unknown webhook value", ["--set", "webhook.cert=x"], /additional properties 'cert' not allowed/],
    [
      "cert-manager without an issuer",
      ["--set", "webhook.enabled=true", "--set", "webhook.certManager.enabled=true"],
      /webhook\.certManager\.issuerRef\.name: name the cert-manager Issuer or ClusterIssuer/,
    ],
  ];
  for (const [what, args, message] of cases)
    test(what, async () => {
      const r = await helm("template", "rft", CHART, ...args);
      assert.notEqual(r.code, 0, `${what} was accepted`);
      assert.match(r.stderr, message);
    });
});
