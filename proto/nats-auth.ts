/**
 * Who may do what on NATS: the subject permissions of each role (pure), and how a client presents its
 * credentials. The NATS server runs in operator (JWT) mode: one account holds every subject, stream and
 * bucket; each role is a user of it whose JWT carries the permissions below, signed by the account's signing
 * key that only the operator holds (operator/nats-credentials.ts mints them).
 *
 * - trainer (one user per FineTuneJob): publishes only its own job's progress and ledger subjects, subscribes
 *   only to its own job's control subject; no JetStream API (it cannot touch a stream, a consumer or a bucket).
 * - operator: subscribes to every job's progress, publishes control, and writes job keys into RFT_JOB_KEYS.
 * - ledger: the JetStream API (it owns the RFT_LEDGER stream, its consumer and the buckets), acks, tree heads;
 *   it may not publish ledger events nor write job keys.
 *
 * Replies (JetStream acks, request responses) come back on a per-user inbox prefix derived from the user's
 * public key, so no user can subscribe to another's replies.
 */
import { readFileSync } from "node:fs";
import { credsAuthenticator, type ConnectionOptions } from "nats";
import { fromSeed } from "nkeys.js";
import { controlSubject, progressSubject } from "./finetunejob-status.js";
import { LEDGER_HEADS_BUCKET, LEDGER_STREAM, ledgerSubject } from "./ledger-events.js";

/** The KV bucket of registered job keys (key: jobKeyName(ns, name); value: JobKeyRecord JSON). */
export const JOB_KEYS_BUCKET = "RFT_JOB_KEYS";

/** What the operator records for a job in RFT_JOB_KEYS before any of its pods exist. */
export interface JobKeyRecord {
  /** The job's Ed25519 public key (raw, base64): the only key the ledger accepts for the job's events. */
  publicKey: string;
  /** The FineTuneJob's uid. */
  uid: string;
  registeredAt: string;
}

/** The RFT_JOB_KEYS key of a job ('.' in a name written '_', as in ledger subjects). */
export const jobKeyName = (ns: string, name: string) => `${ns}.${name.replaceAll(".", "_")}`;

export interface Permissions {
  pub: { allow: string[]; deny?: string[] };
  sub: { allow: string[]; deny?: string[] };
}

/** The reply-inbox prefix of a user (its public key's first characters after the type letter). */
export const inboxPrefixOf = (userPublicKey: string) => `_INBOX_${userPublicKey.slice(1, 21)}`;

const inbox = (userPublicKey: string) => `${inboxPrefixOf(userPublicKey)}.>`;

export function trainerPermissions(ns: string, name: string, userPublicKey: string): Permissions {
  const ledger = ledgerSubject(`${ns}/${name}`);
  return {
    pub: {
      // Its progress, its ledger events, and reading its own subject's last event back (resume).
      allow: [progressSubject(ns, name), ledger, `$JS.API.DIRECT.GET.${LEDGER_STREAM}.${ledger}`],
    },
    sub: { allow: [controlSubject(ns, name), inbox(userPublicKey)] },
  };
}

export function operatorPermissions(userPublicKey: string): Permissions {
  return {
    pub: {
      allow: [
        "rft.jobs.*.*.control",
        `$KV.${JOB_KEYS_BUCKET}.>`,
        // Binding to the bucket (account info, stream info) and reading an entry back.
        "$JS.API.INFO",
        `$JS.API.STREAM.INFO.KV_${JOB_KEYS_BUCKET}`,
        `$JS.API.DIRECT.GET.KV_${JOB_KEYS_BUCKET}.>`,
        `$JS.API.STREAM.MSG.GET.KV_${JOB_KEYS_BUCKET}`,
      ],
    },
    sub: { allow: ["rft.jobs.*.*.progress", inbox(userPublicKey)] },
  };
}

export function ledgerPermissions(userPublicKey: string): Permissions {
  return {
    pub: {
      allow: [
        "$JS.API.>",
        `$JS.ACK.${LEDGER_STREAM}.>`,
        `$JS.ACK.KV_${JOB_KEYS_BUCKET}.>`,
        `$KV.${LEDGER_HEADS_BUCKET}.>`,
      ],
      deny: ["rft.>", `$KV.${JOB_KEYS_BUCKET}.>`],
    },
    sub: { allow: [inbox(userPublicKey)] },
  };
}

/** The NATS user's public key in a creds file (from its seed). */
export function credsPublicKey(creds: string): string {
  const m = /-----BEGIN USER NKEY SEED-----\s*(\S+)\s*------END USER NKEY SEED------/.exec(creds);
  if (!m) throw new Error("not a NATS creds file: no USER NKEY SEED block");
  return fromSeed(new TextEncoder().encode(m[1])).getPublicKey();
}

/**
 * The connect options for a creds file (RFT_NATS_CREDS / --nats-creds): the JWT authenticator and the user's
 * inbox prefix. No file: no options (a NATS without authentication, as in local tests).
 */
export function natsAuthOptions(credsFile: string | undefined): Partial<ConnectionOptions> {
  if (!credsFile) return {};
  let text: string;
  try {
    text = readFileSync(credsFile, "utf8");
  } catch (e) {
    throw new Error(`cannot read the NATS credentials ${credsFile}: ${(e as Error).message}`, { cause: e });
  }
  return natsAuthFromCreds(text, credsFile);
}

/**
 * TLS to NATS with a CA file (RFT_NATS_CA_FILE / --nats-ca): the client verifies the server's certificate
 * against it (and its name against the URL's host). No file: no TLS options.
 */
export function natsTlsOptions(caFile: string | undefined): Partial<ConnectionOptions> {
  if (!caFile) return {};
  let ca: string;
  try {
    ca = readFileSync(caFile, "utf8");
  } catch (e) {
    throw new Error(`cannot read the NATS CA ${caFile}: ${(e as Error).message}`, { cause: e });
  }
  if (!ca.includes("-----BEGIN CERTIFICATE-----")) throw new Error(`${caFile}: not a PEM certificate`);
  return { tls: { ca } };
}

/** The connect options for the text of a creds file (`where` names it in errors). */
export function natsAuthFromCreds(text: string, where = "NATS credentials"): Partial<ConnectionOptions> {
  let pub: string;
  try {
    pub = credsPublicKey(text);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`, { cause: e });
  }
  return { authenticator: credsAuthenticator(new TextEncoder().encode(text)), inboxPrefix: inboxPrefixOf(pub) };
}
