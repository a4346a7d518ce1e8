import assert from "node:assert/strict";
import { test } from "node:test";
import { canonicalJson } from "../../ledger/canonical.js";
import { checkLink, encodeEvent, nextEvent, verifyChain } from "../../ledger/chain.js";
import { MerkleLog } from "../../ledger/merkle.js";
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
