/**
 * NATS identities in operator (JWT) mode, minted here (pure but for key generation):
 *
 * - the trust: an operator key, a system account, and the RFT account with JetStream and a signing key;
 * - the server's auth config (`auth.conf`, included by nats.conf): the operator JWT and both account JWTs,
 *   preloaded into a memory resolver, so the server needs no other service to check a user;
 * - users: a JWT with the role's permissions (proto/nats-auth.ts) signed by the account signing key, and its
 *   nkey seed, written as a standard `.creds` file (what `nats --creds` and every NATS client read).
 *
 * A new job's user is minted by the operator without touching the server: the server trusts any user JWT the
 * account's signing key signed, and enforces the permissions inside it.
 *
 * JWT v2 as nats-server checks it: header {typ: JWT, alg: ed25519-nkey}; claims with jti (SHA-512/256 of the
 * claims, base32), iat, iss, sub, name and `nats` (type-specific, version 2); base64url segments; Ed25519
 * signature by the issuer's nkey over "header.claims".
 */
import { createHash } from "node:crypto";
import { createAccount, createOperator, createUser, fromSeed, type KeyPair } from "nkeys.js";
import type { Permissions } from "../proto/nats-auth.js";

/** The seeds behind every identity (kept in a Secret only the operator reads). */
export interface NatsTrust {
  operatorSeed: string;
  systemAccountSeed: string;
  accountSeed: string;
  /** The key that signs users (the account key itself signs nothing but the account's own JWT). */
  signingSeed: string;
}

export interface MintedUser {
  publicKey: string;
  jwt: string;
  seed: string;
  /** The `.creds` file: the JWT and the seed between their standard markers. */
  creds: string;
}

const te = new TextEncoder();
const seedOf = (kp: KeyPair) => new TextDecoder().decode(kp.getSeed());
const kp = (seed: string) => fromSeed(te.encode(seed));

export function newTrust(): NatsTrust {
  return {
    operatorSeed: seedOf(createOperator()),
    systemAccountSeed: seedOf(createAccount()),
    accountSeed: seedOf(createAccount()),
    signingSeed: seedOf(createAccount()),
  };
}

/** Checks a trust read back from a Secret: every seed present and of its kind. */
export function parseTrust(json: string, where: string): NatsTrust {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${where}: not JSON (${(e as Error).message})`, { cause: e });
  }
  const kinds: Record<keyof NatsTrust, string> = {
    operatorSeed: "SO",
    systemAccountSeed: "SA",
    accountSeed: "SA",
    signingSeed: "SA",
  };
  for (const [k, prefix] of Object.entries(kinds)) {
    const v = o[k];
    if (typeof v !== "string" || !v.startsWith(prefix)) throw new Error(`${where}: field ${k} is not a NATS seed`);
    try {
      kp(v).getPublicKey();
    } catch {
      throw new Error(`${where}: field ${k} is not a valid NATS seed`);
    }
  }
  return o as unknown as NatsTrust;
}

const b64url = (b: Uint8Array | string) => Buffer.from(b).toString("base64url");
const base32 = (b: Buffer) => {
  const A = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let out = "";
  let bits = 0;
  let v = 0;
  for (const x of b) {
    v = (v << 8) | x;
    bits += 8;
    while (bits >= 5) {
      out += A[(v >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += A[(v << (5 - bits)) & 31];
  return out;
};

/** Encodes and signs one JWT (claims without jti/iat/iss: added here). */
export function signJwt(issuer: KeyPair, claims: { sub: string; name: string; nats: object }, now = new Date()) {
  const body: Record<string, unknown> = {
    jti: "",
    iat: Math.floor(now.getTime() / 1000),
    iss: issuer.getPublicKey(),
    name: claims.name,
    sub: claims.sub,
    nats: claims.nats,
  };
  body.jti = base32(createHash("sha512-256").update(JSON.stringify(body)).digest());
  const head = b64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const payload = `${head}.${b64url(JSON.stringify(body))}`;
  return `${payload}.${b64url(issuer.sign(te.encode(payload)))}`;
}

/** The claims inside a JWT (no verification: for inspection and tests). */
export function jwtClaims(jwt: string): Record<string, unknown> {
  const part = jwt.split(".")[1];
  if (!part) throw new Error("not a JWT");
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8")) as Record<string, unknown>;
}

const UNLIMITED = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };

/** The public keys a server or client needs to know. */
export function trustPublic(t: NatsTrust) {
  return {
    operator: kp(t.operatorSeed).getPublicKey(),
    systemAccount: kp(t.systemAccountSeed).getPublicKey(),
    account: kp(t.accountSeed).getPublicKey(),
    signingKey: kp(t.signingSeed).getPublicKey(),
  };
}

/**
 * The server's auth config: operator mode with a memory resolver holding the system account and the RFT
 * account (JetStream on, no limits beyond the server's own; users must be signed by the signing key).
 */
export function serverAuthConfig(t: NatsTrust, now = new Date()): string {
  const pub = trustPublic(t);
  const op = kp(t.operatorSeed);
  const operatorJwt = signJwt(
    op,
    { sub: pub.operator, name: "rft", nats: { type: "operator", version: 2, system_account: pub.systemAccount } },
    now,
  );
  const sysJwt = signJwt(
    op,
    { sub: pub.systemAccount, name: "SYS", nats: { type: "account", version: 2, limits: UNLIMITED } },
    now,
  );
  const accJwt = signJwt(
    op,
    {
      sub: pub.account,
      name: "RFT",
      nats: {
        type: "account",
        version: 2,
        signing_keys: [pub.signingKey],
        limits: { ...UNLIMITED, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 },
        // A user whose JWT names no permissions may do nothing.
        default_permissions: { pub: { deny: [">"] }, sub: { deny: [">"] } },
      },
    },
    now,
  );
  return [
    "# NATS operator (JWT) mode, written by rft-operator (operator/nats-credentials.ts). Users are checked",
    "# against the account's signing key; their JWTs carry their permissions.",
    `operator: ${operatorJwt}`,
    `system_account: ${pub.systemAccount}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${pub.systemAccount}: ${sysJwt}`,
    `  ${pub.account}: ${accJwt}`,
    "}",
    "",
  ].join("\n");
}

/** Mints a user of the RFT account with `permissions(publicKey)` (the inbox prefix depends on the key). */
export function mintUser(
  t: NatsTrust,
  name: string,
  permissions: (userPublicKey: string) => Permissions,
  now = new Date(),
): MintedUser {
  const user = createUser();
  const publicKey = user.getPublicKey();
  const p = permissions(publicKey);
  const jwt = signJwt(
    kp(t.signingSeed),
    {
      sub: publicKey,
      name,
      nats: {
        type: "user",
        version: 2,
        issuer_account: trustPublic(t).account,
        pub: p.pub,
        sub: p.sub,
        subs: -1,
        data: -1,
        payload: -1,
      },
    },
    now,
  );
  const seed = seedOf(user);
  return { publicKey, jwt, seed, creds: credsFile(jwt, seed) };
}

/** The standard `.creds` layout (nsc, the nats CLI and every client library read it). */
export function credsFile(jwt: string, seed: string): string {
  return [
    "-----BEGIN NATS USER JWT-----",
    jwt,
    "------END NATS USER JWT------",
    "",
    "************************* IMPORTANT *************************",
    "NKEY Seed printed below can be used to sign and prove identity.",
    "NKEYs are sensitive and should be treated as secrets.",
    "",
    "-----BEGIN USER NKEY SEED-----",
    seed,
    "------END USER NKEY SEED------",
    "",
    "*************************************************************",
    "",
  ].join("\n");
}
