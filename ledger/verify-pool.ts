/**
 * A small pool of worker threads that hash events and check their Ed25519 signatures, so that the main thread
 * only parses and checks (schema, canonical form, chain, semantics). Work goes out in batches (one transferred
 * buffer of event bytes per batch, no per-event message); each event comes back as its SHA-256 (the event
 * hash), its RFC 6962 leaf hash, and whether its signature verifies.
 *
 * Why workers rather than node:crypto's callback form (libuv's thread pool): on a 2-core machine the main thread
 * is the bottleneck, and each callback-form verify costs it ~20 µs of its own (a job object, a copy, an async
 * callback), about as much as parsing the event; a batch costs it one copy of the bytes. Measured figures are in
 * ledger/README.md ("Performance").
 *
 * The worker is plain JavaScript evaluated from a string (node:crypto and node:worker_threads, plus sodium-native
 * by absolute path), so it runs the same under tsx and from the compiled dist/, and starts without loading
 * TypeScript tooling.
 *
 * Ed25519: libsodium (sodium-native's crypto_sign_verify_detached: ~50 µs for a 4.4 KB event where OpenSSL's
 * verify takes ~100, ledger/README.md) where it loads, else node:crypto alone; RFT_LEDGER_ED25519=openssl forces
 * node:crypto. Either way the verdict is node:crypto's, for every input:
 *  - OpenSSL 3 (ossl_ed25519_verify, crypto/ec/curve25519.c) rejects s >= L and an A that does not decode to a
 *    curve point, then checks, cofactorless, that the encoding of [s]B - [h]A equals R byte for byte, with
 *    h = SHA-512(R || A || M) mod L.
 *  - libsodium (crypto_sign_ed25519_verify_detached, crypto_sign/ed25519/ref10/open.c; sodium-native builds it
 *    without ED25519_COMPAT) rejects s >= L (sc25519_is_canonical), an R of small order (ge25519_has_small_order:
 *    the encodings of the 8 points of order dividing 8 with either sign bit, and the non-canonical y = p, p + 1),
 *    an A that is non-canonical (ge25519_is_canonical: y >= p) or of small order or not a curve point, then does
 *    the same cofactorless check with the same hash and the same byte comparison of R.
 * So libsodium accepts a subset of what OpenSSL accepts: its accept is final, and on its reject node:crypto
 * decides. The two differ only on signatures an honest signer never makes: an R of small order (only the key's
 * holder can make one), a key of small order (under which anyone can sign anything: the identity, R = identity,
 * s = 0), a key spelled non-canonically (y >= p). Letting libsodium's stricter answer stand would make the verdict
 * depend on where it runs, since node:crypto decides where libsodium cannot load (a musl image), under
 * RFT_LEDGER_ED25519=openssl, on libuv's path (RFT_LEDGER_VERIFY_THREADS=0) and in sign.ts (tree heads,
 * credentials): two auditors of one bundle could disagree, and the ledger service replaying its stream after a
 * restart could decide otherwise than it did. Rejecting such keys or signatures would be a protocol rule, to be
 * added on every path. Cost: a signature libsodium rejects is checked twice (~50 + ~100 µs); a valid one once.
 * (node:crypto itself rejects small-order A and R from Node 26.5 on, nodejs/node#64026; libsodium rejects those
 * too, so the subset holds there as well.)
 */
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";

/** The Ed25519 implementation a pool's workers verify with. */
export type Ed25519Impl = "libsodium" | "openssl";

let sodiumPath: string | null | undefined;
/** sodium-native's entry point, resolved here (the eval'd worker cannot resolve packages), or null. */
function sodiumNativePath(): string | null {
  if (sodiumPath === undefined) {
    try {
      sodiumPath = createRequire(import.meta.url).resolve("sodium-native");
    } catch {
      sodiumPath = null;
    }
  }
  return sodiumPath;
}

/** Per event: [offset, length, sig segment offset (-1: hash only), sig segment length, key index (-1: none)]. */
const META = 5;

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { createHash, createPublicKey, verify } = require("node:crypto");
// libsodium when asked for and it loads (a prebuilt binary: none for musl, for one), else node:crypto alone.
let sodium = null;
if (workerData.ed25519 === "libsodium" && workerData.sodiumPath) {
  try {
    const s = require(workerData.sodiumPath);
    if (typeof s.crypto_sign_verify_detached === "function") sodium = s;
  } catch { sodium = null; }
}
parentPort.postMessage({ ed25519: sodium ? "libsodium" : "openssl" });
const SPKI = Buffer.from("302a300506032b6570032100", "hex");
const LEAF = Buffer.from([0]);
const keys = new Map();
let scratch = Buffer.allocUnsafeSlow(1 << 16);
// Per base64 key: node:crypto's KeyObject (whose import failing still means invalid) and the raw 32 bytes.
function keyOf(b64) {
  let k = keys.get(b64);
  if (k === undefined) {
    try {
      const raw = Buffer.from(b64, "base64");
      k = raw.length === 32
        ? { raw, obj: createPublicKey({ key: Buffer.concat([SPKI, raw]), format: "der", type: "spki" }) }
        : null;
    } catch { k = null; }
    if (keys.size > 1000) keys.clear();
    keys.set(b64, k);
  }
  return k;
}
parentPort.on("message", (m) => {
  const buf = Buffer.from(m.buf, 0, m.len);
  const meta = new Int32Array(m.meta);
  const n = meta.length / ${META};
  const hashes = Buffer.alloc(32 * n);
  const leaves = Buffer.alloc(32 * n);
  const valid = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const off = meta[i * ${META}], len = meta[i * ${META} + 1], at = meta[i * ${META} + 2];
    const segLen = meta[i * ${META} + 3], ki = meta[i * ${META} + 4];
    const bytes = buf.subarray(off, off + len);
    createHash("sha256").update(bytes).digest().copy(hashes, 32 * i);
    createHash("sha256").update(LEAF).update(bytes).digest().copy(leaves, 32 * i);
    if (at < 0 || ki < 0) { valid[i] = 2; continue; }
    let ok = false;
    try {
      const key = keyOf(m.keys[ki]);
      const sig = Buffer.from(bytes.toString("latin1", at + 8, at + segLen - 1), "base64");
      if (key && sig.length === 64) {
        // One scratch buffer for the signing bytes (verify is synchronous): no allocation per event.
        if (scratch.length < len) scratch = Buffer.allocUnsafeSlow(2 * len);
        bytes.copy(scratch, 0, 0, at);
        bytes.copy(scratch, at, at + segLen);
        const signing = scratch.subarray(0, len - segLen);
        // libsodium's accept implies node:crypto's; on its reject node:crypto decides (see the file comment).
        let fast = false;
        if (sodium !== null) {
          try { fast = sodium.crypto_sign_verify_detached(sig, signing, key.raw); } catch { fast = false; }
        }
        ok = fast || verify(null, signing, key.obj, sig);
      }
    } catch { ok = false; }
    valid[i] = ok ? 1 : 0;
  }
  parentPort.postMessage({ id: m.id, hashes: hashes.buffer, hashOff: hashes.byteOffset, leaves: leaves.buffer,
    leafOff: leaves.byteOffset, valid }, [hashes.buffer, leaves.buffer, valid.buffer]);
});
`;

/** What the pool reports for one event: its hash and leaf hash (32 bytes each) and its signature's validity. */
export type PoolDone = (hash: Buffer, leaf: Buffer, valid: boolean | undefined) => void;

interface Batch {
  id: number;
  /** The events' bytes, back to back (grown by doubling). */
  buf: Buffer;
  bytes: number;
  meta: number[];
  keys: string[];
  keyIndex: Map<string, number>;
  done: PoolDone[];
}

interface Slot {
  worker: Worker;
  /** Events sent and not yet answered. */
  pending: number;
  batches: Map<number, PoolDone[]>;
  /** What the worker said it verifies with (its first message), once it has. */
  ed25519?: Ed25519Impl;
  exited: boolean;
}

export interface VerifyPoolOptions {
  /** Worker threads (default: the number of CPUs, at most 4). */
  threads?: number;
  /** Events per batch (default 128). */
  batchEvents?: number;
  /** `submit` asks the caller to wait when this many events are in flight (default 4096). */
  maxInFlight?: number;
  /**
   * Ed25519 in the workers (default "libsodium"): "libsodium" where sodium-native loads (else node:crypto), or
   * "openssl" (node:crypto only). The verdicts are the same (see the file comment); only the speed differs.
   */
  ed25519?: Ed25519Impl;
}

export class VerifyPool {
  private readonly slots: Slot[] = [];
  private readonly batchEvents: number;
  private readonly maxInFlight: number;
  private batch: Batch | null = null;
  private nextId = 1;
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private idle: (() => void)[] = [];
  private failed: Error | null = null;
  /** Callers of ed25519Ready waiting for every worker's report. */
  private reportWaiters: { resolve: (impl: Ed25519Impl) => void; reject: (e: Error) => void }[] = [];

  constructor(opts: VerifyPoolOptions = {}) {
    const threads = opts.threads ?? Math.max(1, Math.min(availableParallelism(), 4));
    this.batchEvents = opts.batchEvents ?? 128;
    this.maxInFlight = opts.maxInFlight ?? 4096;
    const ed25519 = opts.ed25519 ?? "libsodium";
    const workerData = { ed25519, sodiumPath: ed25519 === "libsodium" ? sodiumNativePath() : null };
    for (let i = 0; i < threads; i++) this.slots.push(this.spawn(workerData));
  }

  /**
   * The Ed25519 implementation the workers verify with, as they reported it once started: "libsodium" when every
   * worker loaded it, "openssl" when any did not (or was told not to); undefined until all have reported.
   */
  get ed25519(): Ed25519Impl | undefined {
    if (this.slots.some((s) => s.ed25519 === "openssl")) return "openssl";
    return this.slots.every((s) => s.ed25519 === "libsodium") ? "libsodium" : undefined;
  }

  /** Resolves to `ed25519` once every worker has reported (keeping the process alive until then). */
  ed25519Ready(): Promise<Ed25519Impl> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.slots.some((s) => s.exited && s.ed25519 === undefined))
      return Promise.reject(new Error("a verify worker exited before it started"));
    const impl = this.reported();
    if (impl) return Promise.resolve(impl);
    return new Promise<Ed25519Impl>((resolve, reject) => {
      this.reportWaiters.push({ resolve, reject });
      for (const s of this.slots) this.updateRef(s);
    });
  }

  /** `ed25519` once every worker has reported, else undefined. */
  private reported(): Ed25519Impl | undefined {
    return this.slots.every((s) => s.ed25519 !== undefined) ? this.ed25519 : undefined;
  }

  /** A worker keeps the process alive only while it has work, or owes a report someone awaits. */
  private updateRef(slot: Slot): void {
    if (slot.batches.size > 0 || (this.reportWaiters.length > 0 && slot.ed25519 === undefined)) slot.worker.ref();
    else slot.worker.unref();
  }

  private spawn(workerData: { ed25519: Ed25519Impl; sodiumPath: string | null }): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], stdout: false, stderr: false, workerData });
    const slot: Slot = { worker, pending: 0, batches: new Map(), exited: false };
    worker.unref();
    // Unref again once online (starting up refs its port): an idle pool never keeps the process alive.
    worker.once("online", () => this.updateRef(slot));
    worker.on(
      "message",
      (
        m:
          | { ed25519: Ed25519Impl }
          | {
              id: number;
              hashes: ArrayBuffer;
              hashOff: number;
              leaves: ArrayBuffer;
              leafOff: number;
              valid: Uint8Array;
            },
      ) => {
        if ("ed25519" in m) {
          slot.ed25519 = m.ed25519;
          const impl = this.reported();
          if (impl) for (const w of this.reportWaiters.splice(0)) w.resolve(impl);
          this.updateRef(slot);
          return;
        }
        const done = slot.batches.get(m.id)!;
        slot.batches.delete(m.id);
        slot.pending -= done.length;
        this.updateRef(slot);
        const hashes = Buffer.from(m.hashes, m.hashOff, 32 * done.length);
        const leaves = Buffer.from(m.leaves, m.leafOff, 32 * done.length);
        for (let i = 0; i < done.length; i++) {
          const v = m.valid[i];
          done[i]!(
            hashes.subarray(32 * i, 32 * i + 32),
            leaves.subarray(32 * i, 32 * i + 32),
            v === 2 ? undefined : v === 1,
          );
        }
        this.settle(done.length);
      },
    );
    worker.on("error", (e) => this.fail(e));
    worker.on("exit", (code) => {
      slot.exited = true;
      if (slot.batches.size > 0) this.fail(new Error(`verify worker exited (code ${code}) with work pending`));
      else if (slot.ed25519 === undefined && this.reportWaiters.length > 0)
        this.fail(new Error(`verify worker exited (code ${code}) before it started`));
    });
    return slot;
  }

  /** A worker failed: this pool takes no more work. */
  get broken(): boolean {
    return this.failed !== null;
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const w of this.waiters.splice(0)) w();
    for (const w of this.idle.splice(0)) w();
    for (const w of this.reportWaiters.splice(0)) w.reject(this.failed);
  }

  private settle(n: number): void {
    this.inFlight -= n;
    if (this.inFlight <= this.maxInFlight / 2) for (const w of this.waiters.splice(0)) w();
    if (this.inFlight === 0) for (const w of this.idle.splice(0)) w();
  }

  /**
   * Queues one event: `bytes` (its canonical JSON, copied now), the offset and length of its top-level
   * `,"sig":"<b64>"` segment (chain.ts sigSegment; at -1: hash only), and the key to verify under (null: hash
   * only). `done` runs on this thread when the batch comes back. Returns a promise to await when the pool is
   * saturated.
   */
  submit(
    bytes: Uint8Array,
    sigAt: number,
    sigLen: number,
    key: string | null,
    done: PoolDone,
  ): Promise<void> | undefined {
    if (this.failed) throw this.failed;
    const b: Batch = (this.batch ??= {
      id: this.nextId++,
      buf: Buffer.allocUnsafeSlow(1 << 20),
      bytes: 0,
      meta: [],
      keys: [],
      keyIndex: new Map(),
      done: [],
    });
    let ki = -1;
    if (key !== null) {
      ki = b.keyIndex.get(key) ?? -1;
      if (ki < 0) {
        ki = b.keys.length;
        b.keys.push(key);
        b.keyIndex.set(key, ki);
      }
    }
    b.meta.push(b.bytes, bytes.length, sigAt, sigLen, ki);
    if (b.bytes + bytes.length > b.buf.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(2 * b.buf.length, b.bytes + bytes.length));
      b.buf.copy(grown, 0, 0, b.bytes);
      b.buf = grown;
    }
    b.buf.set(bytes, b.bytes);
    b.bytes += bytes.length;
    b.done.push(done);
    this.inFlight++;
    if (b.done.length >= this.batchEvents) this.flush();
    if (this.inFlight < this.maxInFlight) return undefined;
    this.flush();
    return new Promise<void>((r) => this.waiters.push(r)).then(() => {
      if (this.failed) throw this.failed;
    });
  }

  /** Sends the batch being filled. */
  flush(): void {
    const b = this.batch;
    if (!b) return;
    this.batch = null;
    const meta = Int32Array.from(b.meta);
    // The least busy worker.
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.pending < slot.pending) slot = s;
    slot.pending += b.done.length;
    slot.batches.set(b.id, b.done);
    slot.worker.ref();
    // allocUnsafeSlow: the batch owns its whole ArrayBuffer, which is moved (not copied) to the worker.
    const ab = b.buf.buffer as ArrayBuffer;
    slot.worker.postMessage({ id: b.id, buf: ab, len: b.bytes, meta: meta.buffer, keys: b.keys }, [
      ab as ArrayBuffer,
      meta.buffer,
    ]);
  }

  /** Sends what is queued and resolves when every event submitted so far is done. */
  async drain(): Promise<void> {
    this.flush();
    if (this.inFlight > 0 && !this.failed) await new Promise<void>((r) => this.idle.push(r));
    if (this.failed) throw this.failed;
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

let shared: VerifyPool | null | undefined;
/**
 * The process-wide pool (idle threads are unref'd: they never keep the process alive); null where workers cannot
 * start, one has failed, or RFT_LEDGER_VERIFY_THREADS=0 (callers then use libuv's thread pool). Its Ed25519 is
 * libsodium unless RFT_LEDGER_ED25519=openssl (or libsodium cannot load).
 */
export function sharedVerifyPool(): VerifyPool | null {
  if (shared?.broken) shared = null;
  if (shared === undefined) {
    // RFT_LEDGER_VERIFY_THREADS: worker threads (0: none, use libuv's thread pool).
    const env = process.env.RFT_LEDGER_VERIFY_THREADS;
    const threads = env !== undefined && /^\d+$/.test(env) ? Number(env) : undefined;
    // RFT_LEDGER_ED25519: libsodium (the default; node:crypto where it cannot load) or openssl (node:crypto only).
    const impl = process.env.RFT_LEDGER_ED25519;
    const ed25519 = impl === "openssl" || impl === "libsodium" ? impl : undefined;
    try {
      shared = threads === 0 ? null : new VerifyPool({ threads, ed25519 });
    } catch {
      shared = null;
    }
  }
  return shared;
}
