/**
 * The FineTuneJob CustomResourceDefinition, generated from proto/finetunejob.ts and
 * proto/finetunejob-status.ts (pure): structural schema, Kubernetes-only overlays (defaults, EnvVar items),
 * CEL rules (immutability, one-of, reserved names), printer columns, status subresource.
 * `npm run gen:crd` writes it to crds/finetunejobs.rft.dev.yaml.
 */
import { stringify } from "yaml";
import { FineTuneJobStatus } from "../../proto/finetunejob-status.js";
import { API_GROUP, FineTuneJobSpec, KIND } from "../../proto/finetunejob.js";
import { MAX_NAME_LENGTH, RESERVED_ENV } from "../names.js";
import { type Schema, toStructural } from "./schema.js";

export const CRD_NAME = `finetunejobs.${API_GROUP}`;
export const CRD_FILE = "crds/finetunejobs.rft.dev.yaml";

type Rule = { rule: string; message: string; reason?: string; fieldPath?: string };

const plain = (x: unknown) => JSON.parse(JSON.stringify(x)) as Record<string, any>;

function addRules(s: Schema, rules: Rule[]): void {
  s["x-kubernetes-validations"] = [...((s["x-kubernetes-validations"] as Rule[]) ?? []), ...rules];
}

const immutable = (field: string): Rule => ({
  rule: "self == oldSelf",
  message: `spec.${field} is immutable: create a new FineTuneJob to change it`,
});

/** Kubernetes EnvVar (name/value/valueFrom) for spec.trainer.env items, instead of the loose record. */
const ENV_VAR: Schema = {
  type: "object",
  required: ["name"],
  properties: {
    name: { type: "string", minLength: 1, maxLength: 256 },
    value: { type: "string", maxLength: 32768 },
    valueFrom: { type: "object", "x-kubernetes-preserve-unknown-fields": true },
  },
};

export function specSchema(): Schema {
  const spec = toStructural(plain(FineTuneJobSpec), { defaultMaxLength: 4096 }) as Record<string, any>;
  const p = spec.properties;
  p.replicas.default = 1;
  p.suspend.default = false;
  p.cancel.default = false;
  p.backoffLimit.default = 3;
  for (const f of ["model", "trainingFile", "validationFile", "method", "governance", "seed"])
    addRules(p[f], [immutable(f)]);
  addRules(p.cancel, [{ rule: "!oldSelf || self", message: "spec.cancel cannot be undone once true" }]);

  const method = p.method;
  addRules(method, [
    {
      rule: "self.type != 'reinforcement' || (has(self.reinforcement) && !has(self.supervised))",
      message: "method.type reinforcement needs method.reinforcement (and no method.supervised)",
    },
    {
      rule: "self.type != 'supervised' || !has(self.reinforcement)",
      message: "method.type supervised must not set method.reinforcement",
    },
  ]);
  const keyRef = (s: Schema) =>
    addRules(s, [
      {
        rule: "[has(self.inline), has(self.file), has(self.secretRef)].filter(x, x).size() == 1",
        message: "set exactly one of inline, file, secretRef",
      },
    ]);
  const gov = p.governance.properties;
  keyRef(gov.authorities.items.properties.publicKey);
  keyRef(gov.signingKey);

  addRules(p.graderEndpoints.items.properties.apiKey, [
    {
      rule: "has(self.secretRef) || !(has(self.env) || has(self.file))",
      message: "apiKey.env and apiKey.file are for rft run: in a cluster give apiKey.secretRef (beside them or alone)",
    },
    { rule: "!(has(self.env) && has(self.file))", message: "set apiKey.env or apiKey.file, not both" },
  ]);

  const trainer = p.trainer.properties;
  trainer.env.items = ENV_VAR;
  addRules(trainer.env, [
    {
      rule: `self.all(e, !(e.name in [${RESERVED_ENV.map((n) => `'${n}'`).join(", ")}]))`,
      message: `spec.trainer.env must not set the names the operator sets (${RESERVED_ENV.join(", ")})`,
    },
  ]);
  trainer.tolerations.items = { type: "object", "x-kubernetes-preserve-unknown-fields": true };

  // Placement may change only while suspended (before or after the update), as Kubeflow Trainer allows.
  const sameOptional = (f: string) =>
    `(has(self.${f}) == has(oldSelf.${f}) && (!has(self.${f}) || self.${f} == oldSelf.${f}))`;
  addRules(spec, [
    {
      rule: `(has(oldSelf.suspend) && oldSelf.suspend) || (has(self.suspend) && self.suspend) || (${["replicas", "trainer", "grader", "graderEndpoints", "storage", "priorityClassName"].map(sameOptional).join(" && ")})`,
      message:
        "replicas, trainer, grader, graderEndpoints, storage and priorityClassName can only change while the job is suspended",
    },
    {
      rule: sameOptional("workloadKind"),
      message: "spec.workloadKind is immutable: create a new FineTuneJob to change it",
    },
    {
      rule: `${sameOptional("validationFile")} && has(self.governance) == has(oldSelf.governance)`,
      message: "spec.validationFile and spec.governance cannot be added or removed: create a new FineTuneJob",
    },
  ]);
  return spec;
}

export function statusSchema(): Schema {
  const status = toStructural(plain(FineTuneJobStatus), { defaultMaxLength: 4096 }) as Record<string, any>;
  const cond = status.properties.conditions;
  cond["x-kubernetes-list-type"] = "map";
  cond["x-kubernetes-list-map-keys"] = ["type"];
  return status;
}

export function buildCrd(): Record<string, unknown> {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: CRD_NAME },
    spec: {
      group: API_GROUP,
      scope: "Namespaced",
      names: {
        kind: KIND,
        listKind: `${KIND}List`,
        plural: "finetunejobs",
        singular: "finetunejob",
        shortNames: ["ftj"],
        categories: ["all", "rft"],
      },
      versions: [
        {
          name: "v1alpha1",
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            { name: "State", type: "string", jsonPath: ".status.state" },
            { name: "Step", type: "integer", jsonPath: ".status.trainerStatus.step" },
            { name: "Total", type: "integer", jsonPath: ".status.trainerStatus.totalSteps", priority: 1 },
            { name: "Valid reward", type: "number", jsonPath: ".status.trainerStatus.validRewardMean" },
            { name: "Restarts", type: "integer", jsonPath: ".status.restartCount", priority: 1 },
            { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
          ],
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: "A reinforcement (or supervised) fine-tuning job: OpenAI's job request in Kubernetes style.",
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: specSchema(),
                status: statusSchema(),
              },
              "x-kubernetes-validations": [
                {
                  rule: `self.metadata.name.size() <= ${MAX_NAME_LENGTH} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')`,
                  message: `metadata.name must be a DNS-1035 label of at most ${MAX_NAME_LENGTH} characters (lower case letters, digits, '-'; starting with a letter)`,
                },
              ],
            },
          },
        },
      ],
    },
  };
}

export function crdYaml(): string {
  return `# Generated by \`npm run gen:crd\` (operator/crd/gen.ts) from proto/finetunejob.ts and proto/finetunejob-status.ts. Do not edit.\n${stringify(buildCrd(), { lineWidth: 0 })}`;
}
