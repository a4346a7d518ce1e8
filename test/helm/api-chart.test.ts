/**
 * The chart's `rft api` (api.enabled, test/helm/values/api.yaml): lint, a restricted pod with probes and
 * resources, the cluster config it is started with, RBAC limited to what the API does in exactly the projects'
 * namespaces, API keys from a Secret (generated, or the named one; never in values), the files claim, the
 * NetworkPolicies (trainer pods may reach the API, the API only the API server and DNS), and bad values refused
 * with a message naming the field. Real helm (`helm template`, `helm lint`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { checkClusterConfig } from "../../api/cluster-config.js";
import { apiEndpoints } from "../../api/endpoints.js";
import { CHART, find, helm, type K, template, VALUES } from "./helm.js";

const API = ["-f", join(VALUES, "api.yaml")];
const NAME = "rft-rft-operator-api";

describe("the chart's rft api", () => {
  test("helm lint passes; off by default", async () => {
    const r = await helm("lint", CHART, "--strict", ...API);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const { objects } = await template();
    assert.equal(find(objects, "Deployment", NAME).length, 0);
  });

  test("a restricted Deployment running `rft api --cluster` with its config, keys, dataset key and files claim", async () => {
    const { objects } = await template(API);
    const [dep] = find(objects, "Deployment", NAME);
    const spec = dep!.spec.template.spec as K;
    assert.equal(dep!.spec.replicas, 1);
    assert.equal(dep!.spec.strategy.type, "Recreate");
    assert.equal(spec.serviceAccountName, NAME);
    assert.equal(spec.securityContext.runAsNonRoot, true);
    const c = spec.containers[0] as K;
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
    assert.ok(c.livenessProbe && c.readinessProbe && c.startupProbe);
    assert.ok(c.resources.requests.cpu && c.resources.limits.memory);
    assert.deepEqual(c.args.slice(0, 2), ["api", "--cluster=/etc/rft/api/cluster.json"]);
    for (const a of ["--api-key-file=/var/run/rft/api-keys/keys", "--dataset-key-file=/var/run/rft/api-dataset/key"])
      assert.ok(c.args.includes(a), a);
    assert.ok(!JSON.stringify(c.env ?? []).includes("sk-"), "no key in the pod spec");
    const vol = (n: string) => spec.volumes.find((v: K) => v.name === n);
    assert.equal(vol("files").persistentVolumeClaim.claimName, `${NAME}-files`);
    assert.equal(vol("keys").secret.secretName, "rft-rft-operator-api-keys");

    // The config is what `rft api --cluster` accepts, with the URL trainer pods reach the Service at.
    const [cm] = find(objects, "ConfigMap", NAME);
    const config = checkClusterConfig(JSON.parse(cm!.data["cluster.json"]), "cluster.json");
    assert.equal(config.datasetBaseUrl, `http://${NAME}.rft-system.svc:8080`);
    assert.deepEqual(Object.keys(config.projects).sort(), ["default", "other", "research"]);
    assert.deepEqual(config.trainer, { backend: "wasm" });
    const [svc] = find(objects, "Service", NAME);
    assert.equal(svc!.spec.ports[0].port, 8080);
    const [pvc] = find(objects, "PersistentVolumeClaim", `${NAME}-files`);
    assert.deepEqual(pvc!.spec.accessModes, ["ReadWriteOnce"]);
    assert.equal(pvc!.metadata.annotations["helm.sh/resource-policy"], "keep");
  });

  test("a generated API key for generatedProject (kept on upgrades), or the Secret named; none in values", async () => {
    const { objects } = await template(API);
    const [keys] = find(objects, "Secret", "rft-rft-operator-api-keys");
    assert.match(Buffer.from(keys!.data.keys, "base64").toString(), /^sk-rft-[A-Za-z0-9]{40} default\n$/);
    assert.equal(keys!.metadata.annotations["helm.sh/resource-policy"], "keep");
    const [dk] = find(objects, "Secret", "rft-rft-operator-api-dataset-key");
    assert.ok(Buffer.from(dk!.data.key, "base64").length >= 32);

    const own = await template([...API, "--set", "api.apiKeys.existingSecret=my-keys"]);
    assert.equal(find(own.objects, "Secret", "rft-rft-operator-api-keys").length, 0);
    const spec = find(own.objects, "Deployment", NAME)[0]!.spec.template.spec as K;
    assert.equal(spec.volumes.find((v: K) => v.name === "keys").secret.secretName, "my-keys");
  });

  test("RBAC: create/get/list/patch FineTuneJobs and create Secrets, in the projects' namespaces only", async () => {
    const { objects } = await template(API);
    const roles = find(objects, "Role", NAME);
    assert.deepEqual(roles.map((r) => r.metadata.namespace).sort(), ["team-a", "team-b"]);
    for (const r of roles)
      assert.deepEqual(r.rules, [
        { apiGroups: ["rft.dev"], resources: ["finetunejobs"], verbs: ["create", "get", "list", "patch"] },
        { apiGroups: [""], resources: ["secrets"], verbs: ["create"] },
      ]);
    const bindings = find(objects, "RoleBinding", NAME);
    assert.equal(bindings.length, 2);
    for (const b of bindings)
      assert.deepEqual(b.subjects, [{ kind: "ServiceAccount", name: NAME, namespace: "rft-system" }]);
    assert.equal(
      objects.filter((o) => /ClusterRole/.test(o.kind) && JSON.stringify(o).includes(NAME)).length,
      0,
      "no cluster-wide rights",
    );
  });

  test("NetworkPolicies: trainer pods reach the API; the API reaches the API server, DNS and the model servers", async () => {
    const { objects } = await template(API);
    const [np] = find(objects, "NetworkPolicy", "rft-rft-operator-api");
    assert.deepEqual(np!.spec.policyTypes, ["Ingress", "Egress"]);
    assert.deepEqual(np!.spec.ingress[0].ports, [{ port: 8080, protocol: "TCP" }]);
    assert.deepEqual(
      np!.spec.egress.flatMap((e: K) => e.ports.map((p: K) => p.port)),
      [443, 6443, 53, 53, 8000],
    );
    // Model servers (spec.serve's <job>-serve pods), only in the projects' namespaces.
    assert.deepEqual(
      np!.spec.egress
        .at(-1)
        .to.map((t: K) => [
          t.namespaceSelector.matchLabels["kubernetes.io/metadata.name"],
          t.podSelector.matchLabels["rft.dev/role"],
        ]),
      [
        ["team-a", "serve"],
        ["team-b", "serve"],
      ],
    );
    for (const ns of ["team-a", "team-b"]) {
      // The serving pods: in, only from the API's pods on the server's port; out, nothing.
      const [sv] = find(objects, "NetworkPolicy", "rft-rft-operator-serve").filter((o) => o.metadata.namespace === ns);
      assert.deepEqual(sv!.spec.podSelector.matchLabels, {
        "rft.dev/role": "serve",
        "app.kubernetes.io/managed-by": "rft-operator",
      });
      assert.deepEqual(sv!.spec.policyTypes, ["Ingress", "Egress"]);
      assert.deepEqual(sv!.spec.egress, []);
      assert.equal(sv!.spec.ingress.length, 1, ns);
      const [from] = sv!.spec.ingress[0].from;
      assert.equal(from.podSelector.matchLabels["app.kubernetes.io/component"], "api", ns);
      assert.equal(from.namespaceSelector.matchLabels["kubernetes.io/metadata.name"], "rft-system", ns);
      assert.deepEqual(sv!.spec.ingress[0].ports, [{ port: 8000, protocol: "TCP" }]);
      // The trainers' policy (metrics in, NATS and the API out) does not select the serving pods.
      const [t] = find(objects, "NetworkPolicy", "rft-rft-operator-trainers").filter(
        (o) => o.metadata.namespace === ns,
      );
      assert.ok(
        t!.spec.podSelector.matchExpressions.some((e: K) => e.key === "rft.dev/role" && e.operator === "DoesNotExist"),
      );
    }
    for (const ns of ["team-a", "team-b"]) {
      const [t] = find(objects, "NetworkPolicy", "rft-rft-operator-trainers").filter(
        (o) => o.metadata.namespace === ns,
      );
      const toApi = t!.spec.egress.find((e: K) => e.ports?.[0]?.port === 8080);
      assert.equal(toApi.to[0].podSelector.matchLabels["app.kubernetes.io/component"], "api", ns);
      assert.equal(toApi.to[0].namespaceSelector.matchLabels["kubernetes.io/metadata.name"], "rft-system");
    }
    // With api.from, clients are narrowed; trainer pods of the projects' namespaces still get in.
    const narrowed = await template([
      ...API,
      "--set-json",
      'api.from=[{"namespaceSelector":{"matchLabels":{"team":"ml"}}}]',
    ]);
    const [n2] = find(narrowed.objects, "NetworkPolicy", "rft-rft-operator-api");
    assert.deepEqual(n2!.spec.ingress[0].from, [{ namespaceSelector: { matchLabels: { team: "ml" } } }]);
    assert.deepEqual(
      n2!.spec.ingress[1].from.map((f: K) => f.namespaceSelector.matchLabels["kubernetes.io/metadata.name"]),
      ["team-a", "team-b"],
    );
  });

  test("bad values are refused naming the field", async () => {
    const cases: [string[], RegExp][] = [
      [["--set", "api.enabled=true"], /api\.projects: name at least one project/],
      [
        ["--set", "api.enabled=true", "--set-json", 'api.projects={"default":{"namespace":"a","modelClaim":"m"}}'],
        /api\.models: name at least one base model/,
      ],
      [
        [...API, "--set", "api.apiKeys.generatedProject=nobody"],
        /api\.apiKeys\.generatedProject: "nobody" is not in api\.projects/,
      ],
      [
        [...API, "--set", "api.projects.default.namespace=Team_A"],
        /at '\/api\/projects\/default\/namespace': 'Team_A' does not match/,
      ],
      [[...API, "--set", "api.port=0"], /at '\/api\/port': minimum: got 0, want 1/],
      [[...API, "--set", "api.bogus=1"], /at '\/api': additional properties 'bogus' not allowed/],
    ];
    for (const [args, want] of cases) {
      const r = await helm("template", "rft", CHART, "--namespace", "rft-system", ...args);
      assert.notEqual(r.code, 0, args.join(" "));
      assert.match(r.stderr, want, args.join(" "));
    }
  });
});

test("api.endpoints: an endpoints file `rft api` accepts, each key from its Secret by env var, egress to them", async () => {
  const endpoints = [
    { baseUrl: "http://vllm.ml.svc:8000/v1", models: ["qwen2.5-7b-instruct"] },
    { baseUrl: "https://llm.example/v1", models: ["judge-1"], apiKey: { secretRef: { name: "judge", key: "k" } } },
  ];
  const egress = [{ to: [{ ipBlock: { cidr: "10.20.0.0/16" } }], ports: [{ port: 443, protocol: "TCP" }] }];
  const { objects } = await template([
    ...API,
    "--set-json",
    `api.endpoints=${JSON.stringify(endpoints)}`,
    "--set-json",
    `api.endpointEgress=${JSON.stringify(egress)}`,
  ]);
  const [dep] = find(objects, "Deployment", NAME);
  const c = dep!.spec.template.spec.containers[0] as K;
  assert.ok(c.args.includes("--endpoints=/etc/rft/api/endpoints.json"));
  assert.deepEqual(
    c.env.find((e: K) => e.name === "RFT_ENDPOINT_KEY_1"),
    { name: "RFT_ENDPOINT_KEY_1", valueFrom: { secretKeyRef: { name: "judge", key: "k" } } },
  );
  const [cm] = find(objects, "ConfigMap", NAME);
  assert.ok(!cm!.data["endpoints.json"].includes("secretRef"));
  const parsed = apiEndpoints(JSON.parse(cm!.data["endpoints.json"]), {
    where: "endpoints.json",
    env: { RFT_ENDPOINT_KEY_1: "sk-x" },
  });
  assert.deepEqual(
    parsed.list.map((e) => [e.baseUrl, e.models, e.apiKey]),
    [
      ["http://vllm.ml.svc:8000/v1", ["qwen2.5-7b-instruct"], undefined],
      ["https://llm.example/v1", ["judge-1"], "sk-x"],
    ],
  );
  const [np] = find(objects, "NetworkPolicy", NAME);
  assert.deepEqual(np!.spec.egress.at(-1), egress[0]);
  // Without endpoints: no file, no flag.
  const plain = find((await template(API)).objects, "Deployment", NAME)[0]!.spec.template.spec.containers[0] as K;
  assert.ok(!plain.args.some((a: string) => a.startsWith("--endpoints")));
});
