import assert from "node:assert/strict";
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
