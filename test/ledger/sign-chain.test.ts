import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, createPublicKey, verify as cryptoVerify } from "node:crypto";
import { createRequire } from "node:module";
import { test } from "node:test";
import { canonicalJson } from "../../ledger/canonical.js";
import {
  checkLink,
  decodeEventBytes,
  EventPreparer,
  encodeDecoded,
  encodeEvent,
  isCanonicalSig,
  nextEvent,
  sigSegment,
  signingBytesOf,
  verifyChain,
} from "../../ledger/chain.js";
import { leafHash, MerkleLog } from "../../ledger/merkle.js";
import {
  digestOf,
  exportPrivateKeyPem,
  exportPrivateKeyRaw,
  exportPublicKeyPem,
  generateKeyPair,
  keyId,
  loadPrivateKey,
  loadPublicKey,
  publicKeyB64,
  sha256,
  signBytes,
  verifyBytes,
} from "../../ledger/sign.js";
import { headProgressionError, signTreeHead, treeHeadError } from "../../ledger/tree-head.js";
import { VerifyPool } from "../../ledger/verify-pool.js";
import type { LedgerEvent } from "../../proto/ledger-events.js";

test("keys: PEM and raw base64 round-trip, key id = sha256(raw public key)", () => {
  const { privateKey, publicKey } = generateKeyPair();
  const raw = Buffer.from(publicKeyB64(publicKey), "base64");
  assert.equal(raw.length, 32);
  assert.equal(keyId(publicKey), sha256(raw).toString("hex"));
  assert.equal(keyId(privateKey), keyId(publicKey));
  const msg = Buffer.from("hello");
  const sig = signBytes(privateKey, msg);
  for (const priv of [
    loadPrivateKey(exportPrivateKeyPem(privateKey)),
    loadPrivateKey(exportPrivateKeyRaw(privateKey)),
  ]) {
    assert.equal(signBytes(priv, msg), sig, "Ed25519 is deterministic");
  }
  for (const pub of [
    loadPublicKey(exportPublicKeyPem(publicKey)),
    loadPublicKey(publicKeyB64(publicKey)),
    loadPublicKey(exportPrivateKeyPem(privateKey)),
  ]) {
    assert.ok(verifyBytes(pub, msg, sig));
    assert.ok(!verifyBytes(pub, Buffer.from("hellO"), sig));
  }
  assert.ok(!verifyBytes(publicKey, msg, "not base64!"));
  assert.throws(() => loadPrivateKey("AAAA"), /32-byte seed/);
  assert.equal(digestOf(""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
});

const D = (s: string) => digestOf(s);

function chain(n: number) {
  const key = generateKeyPair();
  const kid = keyId(key.publicKey);
  let head = { job: "team-a/run-1", seq: 0, prev: null as `sha256:${string}` | null };
  const events: LedgerEvent[] = [];
  const first = nextEvent(
    head,
    "job.started",
    {
      specDigest: D("spec"),
      signer: { publicKey: publicKeyB64(key.publicKey) },
      model: { numLayers: 1, groups: { embeddings: D("e0"), lm_head: D("h0") } },
      dataset: { rows: 0, manifestRoot: "00".repeat(32) },
      authorities: [],
      requireCredentials: false,
      worldSize: 1,
    },
    "2026-01-01T00:00:00.000Z",
    key.privateKey,
    kid,
  );
  events.push(first.event);
  head = first.head;
  for (let i = 1; i < n; i++) {
    const r = nextEvent(
      head,
      "checkpoint.saved",
      { step: i, name: `ckpt-${i}`, groups: { embeddings: D("e0") } },
      "2026-01-01T00:00:01.5Z",
      key.privateKey,
      kid,
    );
    events.push(r.event);
    head = r.head;
  }
  return { key, events };
}

test("encodeEvent: the one-pass encoding equals canonicalizing twice", () => {
  const { events } = chain(3);
  for (const ev of events) {
    const enc = encodeEvent(ev);
    assert.equal(enc.bytes.toString(), canonicalJson(ev));
    const { sig: _sig, ...unsigned } = ev;
    assert.equal(enc.signing.toString(), canonicalJson(unsigned));
    assert.equal(enc.hash, digestOf(canonicalJson(ev)));
  }
});

test("verifyChain accepts an intact chain and names what breaks it", () => {
  const { events } = chain(5);
  assert.deepEqual(verifyChain(events).failures, []);

  const flipped = structuredClone(events);
  (flipped[2] as { body: { name: string } }).body.name = "ckpt-X";
  const f1 = verifyChain(flipped).failures;
  assert.deepEqual(
    f1.map((f) => [f.seq, f.field]),
    [
      [2, "sig"],
      [3, "prev"],
    ],
  );

  const dropped = events.filter((_, i) => i !== 2);
  const f2 = verifyChain(dropped).failures;
  assert.equal(f2.length, 1);
  assert.equal(f2[0]!.field, "seq");
  assert.match(f2[0]!.reason, /gap: events 2\.\.2 missing/);

  const swapped = [events[0], events[2], events[1], events[3], events[4]];
  assert.match(verifyChain(swapped).failures[0]!.reason, /seq 2 follows seq 0/);

  const other = generateKeyPair();
  const forged = { ...events[1]!, sig: signBytes(other.privateKey, encodeEvent(events[1]!).signing) };
  assert.deepEqual(
    verifyChain([events[0], forged]).failures.map((f) => f.field),
    ["sig"],
  );
  const forged2 = { ...events[1]!, keyId: keyId(other.publicKey) };
  assert.match(verifyChain([events[0], forged2]).failures[0]!.reason, /signed by key/);

  const schemaBad = structuredClone(events);
  (schemaBad[1] as unknown as { body: { step: number } }).body.step = -1;
  assert.match(verifyChain(schemaBad).failures[0]!.reason, /^schema:/);
  assert.equal(verifyChain(schemaBad).failures[0]!.field, "body.step");

  assert.match(verifyChain(events.slice(1)).failures[0]!.reason, /first event is not job.started/);
  assert.equal(checkLink(null, encodeEvent(events[0]!)), null);
});

test("signed tree heads: verify, and detect rollback, replay, fork and inconsistency", () => {
  const ledger = generateKeyPair();
  const pub = publicKeyB64(ledger.publicKey);
  const log = new MerkleLog();
  for (let i = 0; i < 10; i++) log.appendData(Buffer.from(`e${i}`));
  const h4 = signTreeHead({ log: "a/b", size: 4, root: log.root(4), timestamp: 1000 }, ledger.privateKey);
  const h10 = signTreeHead({ log: "a/b", size: 10, root: log.root(10), timestamp: 2000 }, ledger.privateKey);
  assert.equal(treeHeadError(h4, pub), null);
  assert.equal(treeHeadError({ ...h4, size: 5 }, pub), "tree head signature does not verify");
  assert.match(treeHeadError(h4, publicKeyB64(generateKeyPair().publicKey))!, /not the ledger key/);
  assert.match(treeHeadError({ ...h4, sig: 3 }, pub)!, /malformed/);

  const proof = log.consistencyProof(4, 10);
  assert.equal(headProgressionError(h4, h10, proof), null);
  assert.match(headProgressionError(h10, h4)!, /^rollback/);
  const oldStamp = signTreeHead({ log: "a/b", size: 10, root: log.root(10), timestamp: 1500 }, ledger.privateKey);
  assert.match(headProgressionError(h10, oldStamp)!, /^replay/);
  const forkRoot = signTreeHead({ log: "a/b", size: 10, root: Buffer.alloc(32), timestamp: 3000 }, ledger.privateKey);
  assert.match(headProgressionError(h10, forkRoot)!, /^fork/);
  assert.match(headProgressionError(h4, forkRoot, proof)!, /inconsistent tree heads 4 → 10/);
  assert.match(headProgressionError(h4, h10)!, /no consistency proof/);
});

test("decodeEventBytes: canonical bytes are used as received; other spellings of the event are re-encoded", () => {
  const { events } = chain(3);
  for (const ev of events) {
    const ref = encodeEvent(ev);
    const { sig: _sig, ...unsigned } = ev;
    assert.equal(signingBytesOf(ref.bytes, ev)!.toString(), canonicalJson(unsigned));
    const d = decodeEventBytes(ref.bytes);
    assert.ok(d.ok && d.canonical);
    assert.equal(d.bytes, ref.bytes, "no copy, no re-serialization");
    const enc = encodeDecoded(d);
    assert.equal(enc.hash, ref.hash);
    assert.deepEqual(enc.signing, ref.signing);
    assert.deepEqual(enc.leaf, leafHash(ref.bytes));
    // The same event spelled otherwise: same hash and signing bytes (the canonical ones), flagged.
    const text = ref.bytes.toString();
    for (const other of [
      JSON.stringify(ev, null, 1),
      text.replace('"type"', '"\\u0074ype"'),
      `{"v":1,${text.slice(1, -',"v":1}'.length)}}`,
    ]) {
      assert.notEqual(other, text);
      const o = decodeEventBytes(Buffer.from(other));
      assert.ok(o.ok && !o.canonical, other.slice(0, 40));
      assert.equal(encodeDecoded(o).hash, ref.hash);
      assert.deepEqual(o.bytes, ref.bytes);
    }
  }
  const bad = decodeEventBytes(Buffer.from("{not json"));
  assert.ok(!bad.ok && bad.code === "malformed");
  const schema = decodeEventBytes(Buffer.from(JSON.stringify({ ...events[1], seq: -1 })));
  assert.ok(!schema.ok && schema.code === "schema" && schema.schema[0]!.field === "seq");
});

test("a signature must be spelled in canonical base64: another spelling of the same bytes is rejected", () => {
  const { events } = chain(2);
  const ev = events[1]!;
  // The 86th character carries 2 bits of the last byte and 4 unused bits: set one of those.
  const c = ev.sig[85]!;
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const respelled = { ...ev, sig: ev.sig.slice(0, 85) + alphabet[alphabet.indexOf(c) + 1]! + "==" };
  assert.deepEqual(Buffer.from(respelled.sig, "base64"), Buffer.from(ev.sig, "base64"), "the same 64 bytes");
  assert.ok(!isCanonicalSig(respelled.sig) && isCanonicalSig(ev.sig));
  const f = verifyChain([events[0], respelled]).failures;
  assert.deepEqual(
    f.map((x) => [x.seq, x.field, x.reason]),
    [[1, "sig", "not the canonical base64 of a 64-byte Ed25519 signature"]],
  );
});

test("the verify pool hashes and checks signatures off the main thread, like the reference", async () => {
  const { key, events } = chain(40);
  const pub = publicKeyB64(key.publicKey);
  const forged = { ...events[7]!, sig: signBytes(generateKeyPair().privateKey, encodeEvent(events[7]!).signing) };
  const list = events.map((e, i) => (i === 7 ? forged : e));
  for (const pool of [new VerifyPool({ threads: 2, batchEvents: 8, maxInFlight: 16 }), null]) {
    const p = new EventPreparer(pub, pool);
    for (const ev of list) {
      const d = decodeEventBytes(encodeEvent(ev).bytes);
      const wait = p.addDecoded(d);
      if (wait) await wait;
    }
    const prepared = await p.finish();
    list.forEach((ev, i) => {
      const ref = encodeEvent(ev);
      assert.equal(prepared.encoded[i]!.hash, ref.hash);
      assert.deepEqual(prepared.leaves[i], leafHash(ref.bytes));
      assert.equal(prepared.sigValid[i], i !== 7, `event ${i}`);
    });
    assert.deepEqual(
      verifyChain(list, { prepared }).failures.map((f) => [f.seq, f.field]),
      [
        [7, "sig"],
        [8, "prev"],
      ],
    );
    await pool?.close();
  }
});

/** Ed25519 verification straight from sodium-native (the test's own reference for what libsodium rejects). */
const sodium = createRequire(import.meta.url)("sodium-native") as {
  crypto_sign_verify_detached(sig: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
};
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const leToBig = (b: Uint8Array) => b.reduceRight((acc, x) => (acc << 8n) | BigInt(x), 0n);
const bigToLe32 = (n: bigint) => Buffer.from(Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 255n)));
const SPKI_ED25519 = Buffer.from("302a300506032b6570032100", "hex");
/** node:crypto's verdict, as the pool computed it before libsodium (and still decides on libsodium's rejects). */
function nodeVerdict(signing: Buffer, keyB64: string, sigB64: string): boolean {
  try {
    const raw = Buffer.from(keyB64, "base64");
    const sig = Buffer.from(sigB64, "base64");
    if (raw.length !== 32 || sig.length !== 64) return false;
    const key = createPublicKey({ key: Buffer.concat([SPKI_ED25519, raw]), format: "der", type: "spki" });
    return cryptoVerify(null, signing, key, sig);
  } catch {
    return false;
  }
}

test("the verify pool gives node:crypto's verdicts and hashes with libsodium and with node:crypto", async () => {
  const { key, events } = chain(12);
  const pub = publicKeyB64(key.publicKey);
  const rawPub = Buffer.from(pub, "base64");
  const withSig = (ev: LedgerEvent, sig: Buffer) => ({ ...ev, sig: sig.toString("base64") });
  const sigOf = (ev: LedgerEvent) => Buffer.from(ev.sig, "base64");
  // Small-order points: the identity (y = 1), and y = p + 1, a non-canonical spelling of it.
  const identity = Buffer.alloc(32);
  identity[0] = 1;
  const identityNonCanonical = Buffer.alloc(32, 0xff);
  identityNonCanonical[0] = 0xee;
  identityNonCanonical[31] = 0x7f;
  // A signature with R = identity that the key's holder can make: s = h·a mod L, so [s]B - [h]A = identity = R.
  const smallOrderR = (ev: LedgerEvent) => {
    const signing = encodeEvent(ev).signing;
    const seed = Buffer.from(key.privateKey.export({ format: "jwk" }).d!, "base64url");
    const a = createHash("sha512").update(seed).digest().subarray(0, 32);
    a[0]! &= 248;
    a[31]! &= 127;
    a[31]! |= 64;
    const h = leToBig(createHash("sha512").update(identity).update(rawPub).update(signing).digest()) % L;
    return withSig(ev, Buffer.concat([identity, bigToLe32((h * leToBig(a)) % L)]));
  };
  const flipSigBit = (ev: LedgerEvent) => {
    const sig = sigOf(ev);
    sig[10]! ^= 4;
    return withSig(ev, sig);
  };
  const sPlusL = (ev: LedgerEvent) => {
    const sig = sigOf(ev);
    return withSig(ev, Buffer.concat([sig.subarray(0, 32), bigToLe32(leToBig(sig.subarray(32)) + L)]));
  };
  const other = publicKeyB64(generateKeyPair().publicKey);
  // valid: the verdict, where every Ed25519 implementation agrees on it (undefined: hash only); "node:crypto":
  // whatever node:crypto says. libsodium rejects those; Node 20's OpenSSL accepts them (Node 26.5 rejects
  // small-order points itself, nodejs/node#64026).
  const identitySig = Buffer.concat([identity, Buffer.alloc(32)]);
  const cases: {
    ev: LedgerEvent;
    key: string | null;
    flip?: boolean;
    what: string;
    valid?: boolean | "node:crypto";
  }[] = [
    ...events.map((ev, i) => ({ ev, key: pub, what: `valid ${i}`, valid: true })),
    { ev: flipSigBit(events[3]!), key: pub, what: "a flipped signature bit", valid: false },
    { ev: events[4]!, key: pub, flip: true, what: "a flipped message byte", valid: false },
    { ev: events[5]!, key: other, what: "the wrong key", valid: false },
    { ev: withSig(events[6]!, sigOf(events[6]!).subarray(0, 63)), key: pub, what: "a 63-byte signature", valid: false },
    { ev: events[7]!, key: Buffer.alloc(31, 7).toString("base64"), what: "a 31-byte key", valid: false },
    { ev: events[8]!, key: null, what: "hash only", valid: undefined },
    { ev: sPlusL(events[9]!), key: pub, what: "s + L (a non-canonical s)", valid: false },
    { ev: smallOrderR(events[10]!), key: pub, what: "an R of small order, by the key's holder", valid: "node:crypto" },
    {
      ev: withSig(events[11]!, identitySig),
      key: identity.toString("base64"),
      what: "the identity as the key (R = identity, s = 0 verifies any message)",
      valid: "node:crypto",
    },
    {
      ev: withSig(events[11]!, identitySig),
      key: identityNonCanonical.toString("base64"),
      what: "a non-canonical spelling of the identity as the key",
      valid: "node:crypto",
    },
  ];
  const inputs = cases.map(({ ev, key: k, flip, what, valid }) => {
    const bytes = Buffer.from(encodeEvent(ev).bytes);
    const seg = sigSegment(bytes, ev)!;
    if (flip) bytes[seg.at - 3]! ^= 1;
    const signing = Buffer.concat([bytes.subarray(0, seg.at), bytes.subarray(seg.at + seg.len)]);
    const expected = k === null ? undefined : nodeVerdict(signing, k, ev.sig);
    if (valid !== "node:crypto") assert.equal(expected, valid, what);
    // The cases mean what they say: libsodium accepts the valid ones only.
    const rawKey = Buffer.from(k ?? "", "base64");
    const sig = sigOf(ev);
    const libsodium =
      rawKey.length === 32 && sig.length === 64 && sodium.crypto_sign_verify_detached(sig, signing, rawKey);
    assert.equal(libsodium, valid === true, `libsodium: ${what}`);
    return { bytes, seg, k, what, expected };
  });

  const results: Record<string, { hash: string; leaf: string; valid: boolean | undefined }[]> = {};
  for (const impl of ["libsodium", "openssl"] as const) {
    const pool = new VerifyPool({ threads: 2, batchEvents: 5, maxInFlight: 16, ed25519: impl });
    assert.equal(await pool.ed25519Ready(), impl, "the pool verifies with what it was asked for");
    assert.equal(pool.ed25519, impl);
    const out: (typeof results)[string] = [];
    for (const [i, x] of inputs.entries()) {
      const wait = pool.submit(x.bytes, x.seg.at, x.seg.len, x.k, (hash, leaf, valid) => {
        out[i] = { hash: hash.toString("hex"), leaf: leaf.toString("hex"), valid };
      });
      if (wait) await wait;
    }
    await pool.drain();
    await pool.close();
    inputs.forEach((x, i) => {
      assert.equal(out[i]!.hash, sha256(x.bytes).toString("hex"), x.what);
      assert.deepEqual(Buffer.from(out[i]!.leaf, "hex"), leafHash(x.bytes), x.what);
      assert.equal(out[i]!.valid, x.expected, `${impl}: ${x.what}`);
    });
    results[impl] = out;
  }
  assert.deepEqual(results.libsodium, results.openssl);
});

test("RFT_LEDGER_ED25519 picks the shared verify pool's Ed25519 (default: libsodium)", () => {
  const script =
    'const { sharedVerifyPool } = await import("./ledger/verify-pool.ts"); ' +
    "process.stdout.write(await sharedVerifyPool().ed25519Ready());";
  for (const [env, want] of [
    [undefined, "libsodium"],
    ["libsodium", "libsodium"],
    ["openssl", "openssl"],
  ] as const) {
    const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { ...process.env, RFT_LEDGER_ED25519: env, RFT_LEDGER_VERIFY_THREADS: "1" },
    });
    assert.equal(r.stdout, want, `RFT_LEDGER_ED25519=${env}: ${r.stderr}`);
  }
});
