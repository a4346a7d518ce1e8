/**
 * The validating admission webhook for FineTuneJobs: what the CRD's schema and CEL rules cannot express.
 *
 * - `learningRateMultiplier` / `computeMultiplier` bounds: the fields are `"auto"` or a number, which a
 *   structural schema can only hold as an untyped node that CEL cannot see (operator/crd/schema.ts).
 * - The grader: a `calculate_output` that does not parse, a template naming nothing, a python grader that
 *   does not compile. The operator may import only proto/, so the grader engine's own validation is passed
 *   in (`validateGrader`; `rft operator` wires grader-sidecar's GraderEngine.compile).
 *
 * Served over HTTPS (AdmissionReview v1) with the certificate and key of a kubernetes.io/tls Secret, re-read
 * periodically so a rotated certificate is picked up without a restart. Every replica serves it (admission
 * must not depend on who leads). On UPDATE only what changed is checked, so an object admitted under older
 * rules can still be edited (suspend, cancel, labels) or have its finalizers removed.
 */
import { createServer, type Server } from "node:https";
import type { TSchema } from "@sinclair/typebox";
import { API_GROUP, ReinforcementHyperparameters, SupervisedHyperparameters } from "../proto/finetunejob.js";
import type { Logger } from "../proto/log.js";
import type { KObj } from "./client.js";

export const WEBHOOK_PATH = "/validate-finetunejob";
export const WEBHOOK_NAME = "validate.finetunejobs.rft.dev";

/** Validates a grader config; throws an Error whose message says what to fix (path-prefixed `grader…`). */
export type GraderValidator = (grader: unknown) => Promise<void>;

interface NumberBounds {
  minimum?: number;
  exclusiveMinimum?: number;
  maximum?: number;
  exclusiveMaximum?: number;
}

/** The number branch of an `"auto" | number` field of the proto schema (the one source of the bounds). */
function boundsOf(schema: TSchema, field: string): NumberBounds {
  const f = (schema as unknown as { properties: Record<string, { anyOf?: (NumberBounds & { type?: string })[] }> })
    .properties[field];
  const num = f?.anyOf?.find((b) => b.type === "number" || b.type === "integer");
  if (!num) throw new Error(`proto schema: ${field} is not "auto" | number`);
  return num;
}

function boundsText(b: NumberBounds): string {
  const parts: string[] = [];
  if (b.exclusiveMinimum !== undefined) parts.push(`> ${b.exclusiveMinimum}`);
  if (b.minimum !== undefined) parts.push(`>= ${b.minimum}`);
  if (b.exclusiveMaximum !== undefined) parts.push(`< ${b.exclusiveMaximum}`);
  if (b.maximum !== undefined) parts.push(`<= ${b.maximum}`);
  return parts.join(" and ");
}

function inBounds(v: number, b: NumberBounds): boolean {
  return (
    Number.isFinite(v) &&
    (b.exclusiveMinimum === undefined || v > b.exclusiveMinimum) &&
    (b.minimum === undefined || v >= b.minimum) &&
    (b.exclusiveMaximum === undefined || v < b.exclusiveMaximum) &&
    (b.maximum === undefined || v <= b.maximum)
  );
}

const AUTO_OR_NUMBER: { method: "reinforcement" | "supervised"; field: string; bounds: NumberBounds }[] = [
  ...["learningRateMultiplier", "computeMultiplier"].map((field) => ({
    method: "reinforcement" as const,
    field,
    bounds: boundsOf(ReinforcementHyperparameters, field),
  })),
  {
    method: "supervised",
    field: "learningRateMultiplier",
    bounds: boundsOf(SupervisedHyperparameters, "learningRateMultiplier"),
  },
];

const get = (o: unknown, path: string[]): unknown =>
  path.reduce<unknown>((x, k) => (x && typeof x === "object" ? (x as Record<string, unknown>)[k] : undefined), o);
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/**
 * The reasons a FineTuneJob is not admissible (empty: allowed). `old` is the stored object on UPDATE: fields
 * equal to it are not checked again.
 */
export async function validateFineTuneJob(
  obj: KObj,
  old: KObj | undefined,
  validateGrader?: GraderValidator,
): Promise<string[]> {
  const errors: string[] = [];
  for (const { method, field, bounds } of AUTO_OR_NUMBER) {
    const path = ["spec", "method", method, "hyperparameters", field];
    const v = get(obj, path);
    if (v === undefined || v === "auto" || (old && same(v, get(old, path)))) continue;
    if (typeof v !== "number" || !inBounds(v, bounds)) {
      errors.push(
        `${path.join(".")}: Invalid value: ${JSON.stringify(v)}: must be "auto" or a number ${boundsText(bounds)}`,
      );
    }
  }
  const gpath = ["spec", "method", "reinforcement", "grader"];
  const grader = get(obj, gpath);
  if (validateGrader && grader !== undefined && !(old && same(grader, get(old, gpath)))) {
    try {
      await validateGrader(grader);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      errors.push(`spec.method.reinforcement.${msg.startsWith("grader") ? msg : `grader: ${msg}`}`);
    }
  }
  return errors;
}

/** The AdmissionReview v1 response for one request. */
export async function review(body: KObj, validateGrader?: GraderValidator): Promise<KObj> {
  const req = body.request ?? {};
  const respond = (allowed: boolean, message?: string) => ({
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    response: {
      uid: req.uid ?? "",
      allowed,
      ...(message ? { status: { code: 422, reason: "Invalid", message } } : {}),
    },
  });
  if (req.operation === "DELETE" || !req.object) return respond(true);
  const errors = await validateFineTuneJob(
    req.object,
    req.operation === "UPDATE" ? req.oldObject : undefined,
    validateGrader,
  );
  if (errors.length === 0) return respond(true);
  const name = req.object.metadata?.name ?? req.name ?? "";
  return respond(false, `FineTuneJob.${API_GROUP} "${name}" is invalid: ${errors.join("; ")}`);
}

export interface WebhookTls {
  cert: string;
  key: string;
}

export interface WebhookServerOptions {
  port: number;
  host?: string;
  /** Reads the current certificate and key (the operator reads its Secret). */
  loadTls: () => Promise<WebhookTls>;
  /** How often to re-read the certificate (default 60 s). */
  reloadMs?: number;
  validateGrader?: GraderValidator;
  log: Logger;
}

const MAX_BODY = 3 * 1024 * 1024;

export class WebhookServer {
  private server?: Server;
  private timer?: NodeJS.Timeout;
  private tls?: WebhookTls;
  port = 0;

  constructor(private readonly o: WebhookServerOptions) {}

  async start(): Promise<void> {
    this.tls = await this.o.loadTls();
    const server = createServer({ cert: this.tls.cert, key: this.tls.key }, (req, res) => {
      if (req.method !== "POST" || (req.url ?? "").split("?")[0] !== WEBHOOK_PATH) {
        res.statusCode = req.url === "/healthz" ? 200 : 404;
        return void res.end(req.url === "/healthz" ? "ok" : "");
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) req.destroy();
        else chunks.push(c);
      });
      req.on("end", () => {
        void (async () => {
          let out: KObj;
          try {
            out = await review(JSON.parse(Buffer.concat(chunks).toString("utf8")), this.o.validateGrader);
          } catch (e) {
            this.o.log.warn({ err: String(e) }, "admission review failed");
            res.statusCode = 400;
            return void res.end(String(e));
          }
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify(out));
        })();
      });
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.o.port, this.o.host ?? "0.0.0.0", () => resolve());
    });
    const addr = server.address();
    this.port = typeof addr === "object" && addr ? addr.port : 0;
    this.timer = setInterval(() => void this.reload(), this.o.reloadMs ?? 60_000);
    this.timer.unref();
  }

  private async reload(): Promise<void> {
    try {
      const tls = await this.o.loadTls();
      if (tls.cert !== this.tls?.cert || tls.key !== this.tls?.key) {
        this.server?.setSecureContext({ cert: tls.cert, key: tls.key });
        this.tls = tls;
        this.o.log.info("webhook certificate reloaded");
      }
    } catch (e) {
      this.o.log.warn({ err: String(e) }, "could not re-read the webhook certificate (keeping the current one)");
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    const s = this.server;
    if (!s) return;
    await new Promise<void>((r) => s.close(() => r()));
    s.closeAllConnections();
  }
}

/**
 * The ValidatingWebhookConfiguration that registers the webhook: by URL (the test harness, whose Services
 * route nowhere) or by Service (a cluster install).
 */
export function webhookConfiguration(o: {
  name?: string;
  caBundle: string;
  url?: string;
  service?: { namespace: string; name: string; port?: number };
  timeoutSeconds?: number;
}): KObj {
  const clientConfig = o.url
    ? { url: `${o.url.replace(/\/$/, "")}${WEBHOOK_PATH}` }
    : { service: { ...o.service, path: WEBHOOK_PATH } };
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: { name: o.name ?? "rft-operator" },
    webhooks: [
      {
        name: WEBHOOK_NAME,
        admissionReviewVersions: ["v1"],
        sideEffects: "None",
        failurePolicy: "Fail",
        // Python compilation runs in the grader sandbox; its first start takes a few seconds.
        timeoutSeconds: o.timeoutSeconds ?? 20,
        clientConfig: { ...clientConfig, caBundle: Buffer.from(o.caBundle).toString("base64") },
        rules: [
          {
            apiGroups: [API_GROUP],
            apiVersions: ["v1alpha1"],
            operations: ["CREATE", "UPDATE"],
            resources: ["finetunejobs"],
            scope: "Namespaced",
          },
        ],
      },
    ],
  };
}
