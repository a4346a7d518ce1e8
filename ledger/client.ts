/**
 * The ledger client: everything a trainer uses of this folder, and the only ledger module the trainer imports
 * (test/architecture.test.ts checks it). The writer of a job's chain, the signer (keys, digests), the
 * publishers (the local file, NATS JetStream), the dataset rules (row ids and hashes, credentials, the
 * manifest root), and the resume helpers. One implementation of the canonical bytes serves the signer here
 * and the verifier.
 */
export { type ChainHead, eventHash } from "./chain.js";
export { manifestRoot, rowContentHash, rowId, verifyRowCredential } from "./dataset.js";
export { FileSink, NatsPublisher } from "./publisher.js";
export { compressRanges, lastStepOf } from "./resume.js";
export {
  digestOfJson,
  exportPrivateKeyPem,
  generateKeyPair,
  keyId,
  loadPrivateKey,
  loadPublicKey,
  publicKeyB64,
} from "./sign.js";
export { type EventSink, EventWriter } from "./writer.js";
