/**
 * What isolates one job from another, the operator's pure parts: what a job's pods get (their NATS user, a
 * NetworkPolicy that admits only their own ranks), what a minted user's JWT allows, which signing key is
 * registered for a job, and clear errors for bad flags, trusts and keys.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { test } from "node:test";
import { jobKeySource } from "../../cli/commands/ledger.js";
import {
  desiredNetworkPolicy,
  desiredSecret,
  desiredTrainerJob,
  type FineTuneJobObject,
} from "../../operator/desired.js";
import { parseNatsAuthRef } from "../../operator/nats-bootstrap.js";
import { jwtClaims, mintUser, newTrust, parseTrust, trustPublic } from "../../operator/nats-credentials.js";
import { ed25519PublicOf, jobSigningPublicKey } from "../../operator/signing-key.js";
import { inboxPrefixOf, trainerPermissions } from "../../proto/nats-auth.js";

const job = (spec: Record<string, unknown> = {}): FineTuneJobObject =>
  ({
    apiVersion: "rft.dev/v1alpha1",
    kind: "FineTuneJob",
    metadata: { name: "sorter", namespace: "ml", uid: "0123456789abcdef", generation: 1 },
    spec: {
      model: "base",
      trainingFile: "train.jsonl",
      method: { type: "reinforcement", reinforcement: { grader: { type: "string_check" } } },
      ...spec,
    },
  }) as unknown as FineTuneJobObject;

const envOf = (natsAuth: boolean) =>
  Object.fromEntries(
    (
      desiredTrainerJob(job(), 0, { image: "rft:dev", natsUrl: "nats://n:4222", natsAuth }).spec.template.spec
        .containers[0].env as { name: string; value?: string }[]
    ).map((e) => [e.name, e.value]),
  );

test("with NATS authentication, trainers read their job's user from the job's Secret", () => {
  assert.equal(envOf(true).RFT_NATS_CREDS, "/var/run/rft/signing/nats.creds");
  assert.equal(envOf(false).RFT_NATS_CREDS, undefined);
  const s = desiredSecret(job(), { privatePem: "k", publicRaw: "p", natsCreds: "CREDS" });
  assert.equal((s.stringData as Record<string, string>)["nats.creds"], "CREDS");
});

test("a minted trainer user may publish only its job's progress and ledger subjects", () => {
  const trust = newTrust();
  const u = mintUser(trust, "trainer-ml-sorter", (k) => trainerPermissions("ml", "sorter", k));
  const c = jwtClaims(u.jwt) as { iss: string; sub: string; nats: Record<string, any> };
  assert.equal(c.iss, trustPublic(trust).signingKey, "signed by the account's signing key, not the account key");
  assert.equal(c.nats.issuer_account, trustPublic(trust).account);
  assert.deepEqual(c.nats.pub.allow, [
    "rft.jobs.ml.sorter.progress",
    "rft.ledger.ml.sorter",
    "$JS.API.DIRECT.GET.RFT_LEDGER.rft.ledger.ml.sorter",
  ]);
  assert.deepEqual(c.nats.sub.allow, ["rft.jobs.ml.sorter.control", `${inboxPrefixOf(u.publicKey)}.>`]);
  assert.match(u.creds, /-----BEGIN USER NKEY SEED-----\nSU/);
});

test("bad trusts, flags and job-key files are refused with what is wrong", () => {
  assert.throws(() => parseTrust("{", "Secret rft/x key trust.json"), /Secret rft\/x key trust.json: not JSON/);
  const t = newTrust();
  assert.throws(
    () => parseTrust(JSON.stringify({ ...t, signingSeed: t.operatorSeed }), "trust.json"),
    /field signingSeed is not a NATS seed/,
  );
  assert.throws(() => parseNatsAuthRef("rft-system"), /NAMESPACE\/PREFIX/);
  assert.deepEqual(parseNatsAuthRef("rft-system/rft"), { namespace: "rft-system", prefix: "rft" });
  assert.throws(() => jobKeySource("etcd"), /--job-keys must be kv, file:PATH or none/);
  assert.throws(() => jobKeySource("file:/nonexistent.json"), /--job-keys file:\/nonexistent.json/);
  assert.equal(jobKeySource("kv"), "kv");
  assert.equal(jobKeySource("none"), undefined);
});

test("the registered key is the Secret's, or the job's own signing key", async () => {
  const { privateKey } = generateKeyPairSync("ed25519");
  const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  const pub = ed25519PublicOf(pem);
  assert.equal(await jobSigningPublicKey(job(), "SECRET-KEY", async () => undefined), "SECRET-KEY");
  assert.equal(
    await jobSigningPublicKey(
      job({ governance: { authorities: [], signingKey: { inline: pem } } }),
      "S",
      async () => undefined,
    ),
    pub,
  );
  const ref = job({ governance: { authorities: [], signingKey: { secretRef: { name: "k", key: "key.pem" } } } });
  assert.equal(
    await jobSigningPublicKey(ref, "S", async (n, k) => (n === "k" && k === "key.pem" ? pem : undefined)),
    pub,
  );
  await assert.rejects(
    jobSigningPublicKey(ref, "S", async () => undefined),
    /secretRef: Secret k key key.pem not found/,
  );
  await assert.rejects(
    jobSigningPublicKey(
      job({ governance: { authorities: [], signingKey: { file: "/k.pem" } } }),
      "S",
      async () => undefined,
    ),
    /signingKey.file: .* cannot be registered/,
  );
  const { privateKey: rsa } = generateKeyPairSync("rsa", { modulusLength: 1024 });
  assert.throws(() => ed25519PublicOf(rsa.export({ format: "pem", type: "pkcs8" }).toString()), /not an Ed25519 key/);
});

test("a job's NetworkPolicy admits the collective only from pods of the same job, and never limits egress", () => {
  const np = desiredNetworkPolicy(job());
  const pods = desiredTrainerJob(job(), 0, { image: "rft:dev", natsUrl: "nats://n:4222" }).spec.template.metadata
    .labels;
  assert.equal(np.metadata.name, "sorter-ranks");
  assert.equal(np.metadata.ownerReferences[0].uid, "0123456789abcdef", "deleted with the job");
  assert.deepEqual(np.spec.policyTypes, ["Ingress"]);
  for (const [k, v] of Object.entries(np.spec.podSelector.matchLabels))
    assert.equal(pods[k], v, `selects the pods (${k})`);
  assert.equal(np.spec.podSelector.matchLabels["rft.dev/finetunejob"], "sorter");
  assert.deepEqual(np.spec.ingress, [
    {
      from: [{ podSelector: { matchLabels: np.spec.podSelector.matchLabels } }],
      ports: [
        { port: 29500, protocol: "TCP" },
        { port: 29501, protocol: "TCP" },
      ],
    },
  ]);
});
