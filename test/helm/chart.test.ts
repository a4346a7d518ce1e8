/**
 * The Helm chart (helm/rft-operator): `helm lint` and `helm template` with default and non-default values,
 * what the rendered manifests promise (restricted security, probes, resources, least-privilege RBAC, the CRD
 * and the alerts from their one source, NATS clustering, NetworkPolicies, PDBs), and bad values rejected
 * by values.schema.json (or the chart's checks) with a message naming the field.
 */
import assert from "node:assert/strict";
import { lstatSync, readFileSync, readlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import { parse } from "yaml";
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
      "core/services": ["get", "list", "watch", "create", "patch"],
      "core/secrets": ["get", "list", "watch", "create"],
      "core/events": ["create", "patch"],
    });
    assert.ok(!JSON.stringify(objects.filter((o) => /Role/.test(o.kind))).includes('"*"'), "no wildcards");
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
    // Ledger: the given Secret, no generated one.
    assert.equal(find(objects, "Secret").length, 0);
    const ledger = find(objects, "Deployment", "rft-rft-operator-ledger")[0]!;
    assert.equal(ledger.spec.template.spec.volumes[0].secret.secretName, "my-ledger-key");
    // Trainer pods in ml-team: egress only to DNS, NATS, other ranks and the judge CIDR.
    const np = find(objects, "NetworkPolicy", "rft-rft-operator-trainers")[0]!;
    assert.equal(np.metadata.namespace, "ml-team");
    assert.deepEqual(np.spec.policyTypes, ["Ingress", "Egress"]);
    const egressPorts = np.spec.egress.map((e: K) => (e.ports ?? []).map((p: K) => p.port).join("+"));
    assert.deepEqual(egressPorts, ["29500+29501", "4222", "53+53", "443"]);
    assert.deepEqual(np.spec.egress[3].to, [{ ipBlock: { cidr: "10.20.0.0/16" } }]);
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
  ];
  for (const [what, args, message] of cases)
    test(what, async () => {
      const r = await helm("template", "rft", CHART, ...args);
      assert.notEqual(r.code, 0, `${what} was accepted`);
      assert.match(r.stderr, message);
    });
});
