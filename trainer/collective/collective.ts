/**
 * The trainer ranks' collective: rendezvous over gRPC, then ring all-reduce (reduce-scatter + all-gather),
 * broadcast, all-gather and barrier over one TCP data link per rank to its right neighbour, which carries every
 * operation as collective.proto Frames (see proto/collective.proto); operations are numbered and every rank runs
 * the same ones in the same order.
 *
 * All-reduce of n floats over N ranks: the vector is cut into N segments; in N−1 reduce-scatter steps segment
 * k travels k → k+1 → … → k−1, each rank adding its own values (incoming + local), so segment k is
 * (((x_k + x_{k+1}) + x_{k+2}) + … + x_{k−1}) — a fixed order for a given N; then N−1 all-gather steps copy
 * each finished segment around the ring. Every rank therefore ends with the same bits. Each rank sends
 * 2·n·(N−1)/N floats (bandwidth-optimal); segments move in chunks, and a chunk is forwarded as soon as it is
 * added, so the steps pipeline.
 *
 * Failure: a closed or broken link, an ABORT frame from a neighbour, or an operation outliving its timeout
 * fails the collective for good: every pending and later operation rejects with a CollectiveError saying
 * which rank and why, an ABORT is passed on to the right and both links are closed, so the failure travels
 * around the ring in milliseconds instead of every rank waiting out its timeout.
 *
 * Payloads are written straight from the caller's memory (no copy in user space) and received pieces are added
 * or placed as they arrive (FrameStream). Writing from the caller's memory is safe because an operation returns
 * only once everything it wrote has been handed to the kernel, and within an all-reduce a segment's final value
 * can only come back from the left after the right neighbour has read what this rank sent of it.
 */
import * as net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { ChallengeBook, NONCE_BYTES, nonce, PROOF_BYTES, proof, proofMatches, secretKey } from "./auth.js";
import type { Frame } from "./wire.js";
import {
  CHANNEL_OPTIONS,
  collectiveService,
  encodeFrameHead,
  encodeLinkRequest,
  FrameStream,
  readLinkRequest,
} from "./wire.js";

export class CollectiveError extends Error {
  override name = "CollectiveError";
}

export interface CollectiveOptions {
  rank: number;
  worldSize: number;
  /** "host:port" of every rank, by rank. A rank listens on the port of its own entry. */
  peers: string[];
  /** Ranks of different jobs never pair up (default "rft"). */
  job?: string;
  /** How long to wait for every rank to answer (default 120 s). */
  rendezvousTimeoutMs?: number;
  /** How long one operation may wait for its neighbour before the collective fails (default 300 s). */
  opTimeoutMs?: number;
  /** Bytes per frame (default 1 MiB). */
  chunkBytes?: number;
  /** Port of this rank's data link (default 0: any free port; peers learn it in the rendezvous). */
  dataPort?: number;
  /** Interface to listen on (default: the host of this rank's peer entry when it is an IP address, else 0.0.0.0). */
  bindHost?: string;
  /**
   * The job's collective secret (RFT_COLLECTIVE_SECRET, ≥ 16 bytes): every Hello and data link is a mutual
   * HMAC challenge–response keyed by it (auth.ts). Required with more than one rank.
   */
  secret?: string | Uint8Array;
}

/** Connections refused for failing authentication (a stranger, or a rank with another secret). */
export interface AuthRefusals {
  hello: number;
  link: number;
}

interface Waiter {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
}

interface HelloMsg {
  job: string;
  rank: number;
  world_size: number;
  data_port?: number;
  nonce?: Uint8Array;
  challenge?: Uint8Array;
  proof?: Uint8Array;
}
type HelloCall = (
  req: HelloMsg,
  opts: grpc.CallOptions,
  cb: (e: grpc.ServiceError | null, r?: HelloMsg) => void,
) => void;

const isIp = (h: string) => /^[0-9.]+$/.test(h) || h.includes(":");

function splitHostPort(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(":");
  if (i <= 0) throw new CollectiveError(`peer address ${JSON.stringify(addr)} is not host:port`);
  const port = Number(addr.slice(i + 1));
  if (!Number.isInteger(port) || port <= 0 || port > 65535)
    throw new CollectiveError(`peer address ${JSON.stringify(addr)} has no valid port`);
  return { host: addr.slice(0, i).replace(/^\[(.*)\]$/, "$1"), port };
}

/** The bounds of segment k of n elements cut into `parts` nearly equal segments. */
export function segment(n: number, parts: number, k: number): [number, number] {
  return [Math.floor((k * n) / parts), Math.floor(((k + 1) * n) / parts)];
}

const mod = (a: number, n: number) => ((a % n) + n) % n;

/** What a socket error on a link says about the rank at its other end. */
function brokenLink(e: NodeJS.ErrnoException): string {
  return e.code === "ECONNRESET" || e.code === "EPIPE" || e.code === "ECONNREFUSED"
    ? `broke (the rank exited or crashed): ${e.message}`
    : `failed: ${e.message}`;
}

/** dst[i] = src[i] + dst[i] for every i of dst (incoming + local: the order the file comment fixes). */
function addInto(dst: Float32Array, src: Float32Array) {
  const n = dst.length;
  for (let i = 0; i < n; i++) dst[i] = src[i]! + dst[i]!;
}

export class Collective {
  readonly rank: number;
  readonly worldSize: number;
  private readonly o: Required<Omit<CollectiveOptions, "bindHost" | "secret">> & { bindHost?: string };
  private readonly key: Buffer;
  private readonly challenges = new ChallengeBook();
  /** Hellos and data links refused because their proof was missing or wrong (never a crash, never data). */
  readonly refused: AuthRefusals = { hello: 0, link: 0 };
  private server: grpc.Server | null = null;
  private dataServer: net.Server | null = null;
  private readonly clients: grpc.Client[] = [];
  /** The data link to the right neighbour (this rank writes) and from the left one (this rank reads). */
  private out: net.Socket | null = null;
  private inbound: net.Socket | null = null;
  private outReady: (() => void) | null = null;
  private leftDataPort: ((port: number) => void) | null = null;
  /** Writes not yet handed to the kernel, and whoever waits for them. */
  private unflushed = 0;
  private flushWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** Frames received for each operation, in arrival order, and whoever waits for the next one. */
  private readonly inbox = new Map<number, Frame[]>();
  private readonly waiters = new Map<number, Waiter>();
  private op = 0;
  private failure: CollectiveError | null = null;
  private closing = false;
  private pendingLoss: NodeJS.Timeout | null = null;

  private constructor(o: CollectiveOptions, key: Buffer) {
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    const { secret: _secret, ...rest } = o;
    this.o = {
      job: "rft",
      rendezvousTimeoutMs: 120_000,
      opTimeoutMs: 300_000,
      chunkBytes: 1 << 20,
      dataPort: 0,
      ...rest,
    };
    this.key = key;
  }

  private get left() {
    return mod(this.rank - 1, this.worldSize);
  }
  private get right() {
    return mod(this.rank + 1, this.worldSize);
  }
  private addr(r: number) {
    return `rank ${r} (${this.o.peers[r]})`;
  }

  /**
   * Joins the gang: listens on this rank's address, waits until every peer answers Hello with the expected
   * rank, world size and job, links to the right neighbour, and runs a barrier. Rejects with a
   * CollectiveError naming the ranks that never joined when the rendezvous timeout passes.
   */
  static async connect(o: CollectiveOptions): Promise<Collective> {
    if (!Number.isInteger(o.worldSize) || o.worldSize < 1) throw new CollectiveError(`bad world size ${o.worldSize}`);
    if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize)
      throw new CollectiveError(`rank ${o.rank} is outside world size ${o.worldSize}`);
    if (o.worldSize === 1) return new Collective(o, Buffer.alloc(0));
    const key = secretKey(o.secret);
    if (!key)
      throw new CollectiveError(
        `rank ${o.rank}: no collective secret of at least 16 bytes (RFT_COLLECTIVE_SECRET): the ranks cannot authenticate each other`,
      );
    const c = new Collective(o, key);
    if (o.peers.length !== o.worldSize)
      throw new CollectiveError(`${o.peers.length} peer addresses for world size ${o.worldSize}`);
    try {
      await c.rendezvous();
    } catch (e) {
      c.fail(e instanceof CollectiveError ? e : new CollectiveError((e as Error).message));
      await c.close();
      throw c.failure;
    }
    return c;
  }

  private async rendezvous() {
    const deadline = Date.now() + this.o.rendezvousTimeoutMs;
    const service = collectiveService();
    const outReady = new Promise<void>((resolve) => (this.outReady = resolve));
    const { host, port } = splitHostPort(this.o.peers[this.rank]!);
    const bind = this.o.bindHost ?? (isIp(host) ? host : "0.0.0.0");
    // The data link's listener first: Hello tells peers its port.
    const dataPort = await this.listenData(bind);
    const leftDataPort = new Promise<number>((resolve) => (this.leftDataPort = resolve));
    await this.serveHello(service, bind, port, dataPort);
    // Every peer must answer, as the rank we expect.
    const Client = grpc.makeGenericClientConstructor(service, "Collective");
    const missing = new Set(this.o.peers.map((_, r) => r).filter((r) => r !== this.rank));
    await Promise.all([...missing].map((r) => this.helloPeer(Client, r, deadline, missing)));
    if (missing.size > 0) {
      throw new CollectiveError(
        `rank ${this.rank}: rendezvous timed out after ${this.o.rendezvousTimeoutMs / 1000}s: ${[...missing]
          .sort((a, b) => a - b)
          .map((r) => this.addr(r))
          .join(", ")} never joined`,
      );
    }
    this.dialLeft(await leftDataPort);
    let timer: NodeJS.Timeout | undefined;
    const right = await Promise.race([
      outReady.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now())))),
    ]);
    clearTimeout(timer);
    if (!right)
      throw new CollectiveError(
        `rank ${this.rank}: rendezvous timed out after ${this.o.rendezvousTimeoutMs / 1000}s: ${this.addr(this.right)} never opened its link`,
      );
    await this.barrier(Math.max(1, deadline - Date.now()));
  }

  /** The data links' listener (the right neighbour dials it); resolves to its port. */
  private async listenData(bind: string): Promise<number> {
    const dataServer = net.createServer({ noDelay: true }, (sock) => this.acceptLink(sock));
    this.dataServer = dataServer;
    await new Promise<void>((resolve, reject) => {
      dataServer.once("error", (e) =>
        reject(new CollectiveError(`rank ${this.rank} cannot listen on ${bind}:${this.o.dataPort}: ${e.message}`)),
      );
      dataServer.listen(this.o.dataPort, bind, () => resolve());
    });
    return (dataServer.address() as net.AddressInfo).port;
  }

  /** The gRPC Hello service: a challenge first, then a proven Hello answered with this rank's proof and data port. */
  private async serveHello(service: grpc.ServiceDefinition, bind: string, port: number, dataPort: number) {
    const server = new grpc.Server(CHANNEL_OPTIONS);
    server.addService(service, {
      Hello: (call: grpc.ServerUnaryCall<HelloMsg, HelloMsg>, cb: grpc.sendUnaryData<HelloMsg>) => {
        const req = call.request;
        // First call: a challenge, and nothing else about this rank.
        if (!req.proof?.length) return cb(null, { job: "", rank: 0, world_size: 0, nonce: this.challenges.issue() });
        const fresh = this.challenges.redeem(req.challenge);
        const want = proof(
          this.key,
          "hello-request",
          req.job,
          [req.rank, req.world_size],
          [req.challenge ?? Buffer.alloc(0), req.nonce ?? Buffer.alloc(0)],
        );
        if (!fresh || req.nonce?.length !== NONCE_BYTES || !proofMatches(req.proof, want)) {
          this.refused.hello++;
          return cb({
            code: grpc.status.UNAUTHENTICATED,
            details: `rank ${this.rank} (job ${this.o.job}): Hello refused: ${fresh ? "wrong proof (another collective secret?)" : "unknown or used challenge"}`,
          });
        }
        cb(null, {
          job: this.o.job,
          rank: this.rank,
          world_size: this.worldSize,
          data_port: dataPort,
          nonce: req.challenge,
          proof: proof(
            this.key,
            "hello-response",
            this.o.job,
            [this.rank, this.worldSize, dataPort],
            [req.nonce!, req.challenge!],
          ),
        });
      },
    });
    this.server = server;
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(
        `${bind.includes(":") ? `[${bind}]` : bind}:${port}`,
        grpc.ServerCredentials.createInsecure(),
        (e) =>
          e
            ? reject(new CollectiveError(`rank ${this.rank} cannot listen on ${bind}:${port}: ${e.message}`))
            : resolve(),
      ),
    );
  }

  /** Challenge, then the proven Hello; the answer only counts when the peer proves the secret too. */
  private async authenticatedHello(
    call: (req: HelloMsg) => Promise<{ err: grpc.ServiceError | null; res?: HelloMsg }>,
    r: number,
  ): Promise<{ err: grpc.ServiceError | null; res?: HelloMsg }> {
    const me = { job: this.o.job, rank: this.rank, world_size: this.worldSize };
    const first = await call(me);
    if (first.err || !first.res) return first;
    const challenge = first.res.nonce;
    if (challenge?.length !== NONCE_BYTES)
      throw new CollectiveError(`${this.o.peers[r]} sent no authentication challenge (an older rank version?)`);
    const mine = nonce();
    const res = await call({
      ...me,
      nonce: mine,
      challenge,
      proof: proof(this.key, "hello-request", this.o.job, [this.rank, this.worldSize], [challenge, mine]),
    });
    if (res.err || !res.res) return res;
    const want = proof(
      this.key,
      "hello-response",
      res.res.job,
      [res.res.rank, res.res.world_size, res.res.data_port ?? 0],
      [mine, challenge],
    );
    if (!proofMatches(res.res.proof, want))
      throw new CollectiveError(
        `rank ${this.rank}: ${this.o.peers[r]} answered Hello without proving it knows the job's collective secret (not rank ${r} of job ${this.o.job})`,
      );
    return res;
  }

  /**
   * Hello to peer `r` until it answers as the rank expected (retried every 200 ms until the deadline; a peer still
   * missing then stays in `missing`, reported by the caller with every other).
   */
  private helloPeer(
    Client: grpc.ServiceClientConstructor,
    r: number,
    deadline: number,
    missing: Set<number>,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const client = new Client(this.o.peers[r]!, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      this.clients.push(client);
      const call = (req: HelloMsg) =>
        new Promise<{ err: grpc.ServiceError | null; res?: HelloMsg }>((done) =>
          (client as unknown as { Hello: HelloCall }).Hello(req, { deadline: Date.now() + 2000 }, (err, res) =>
            done({ err, res }),
          ),
        );
      const attempt = () => {
        if (this.failure) return reject(this.failure);
        this.authenticatedHello(call, r).then(({ err, res }) => {
          if (err?.code === grpc.status.UNAUTHENTICATED)
            return reject(
              new CollectiveError(
                `rank ${this.rank}: ${this.addr(r)} refused the rendezvous: ${err.details} (do the ranks share RFT_COLLECTIVE_SECRET?)`,
              ),
            );
          if (!err && res) {
            const wrong = this.wrongPeer(r, res);
            if (wrong) return reject(wrong);
            if (r === this.left) this.leftDataPort?.(res.data_port!);
            missing.delete(r);
            return resolve();
          }
          if (Date.now() >= deadline) return resolve(); // reported by the caller, with every missing rank
          setTimeout(attempt, 200);
        }, reject);
      };
      attempt();
    });
  }

  /** Why a peer's Hello answer is not rank `r` of this job with a data link (null: it is). */
  private wrongPeer(r: number, res: HelloMsg): CollectiveError | null {
    if (res.job !== this.o.job || res.rank !== r || res.world_size !== this.worldSize)
      return new CollectiveError(
        `${this.o.peers[r]} answered as rank ${res.rank} of ${res.world_size} (job ${res.job}), expected rank ${r} of ${this.worldSize} (job ${this.o.job})`,
      );
    if (!res.data_port) return new CollectiveError(`${this.o.peers[r]} has no data link (an older rank version?)`);
    return null;
  }

  /**
   * The data link from the left neighbour (this rank dials and receives on it; the right neighbour opens the
   * other). The left neighbour is authenticated before any data is taken from it (its AUTH frame, then our proof).
   */
  private dialLeft(leftDataPort: number) {
    const inbound = net.connect({ host: splitHostPort(this.o.peers[this.left]!).host, port: leftDataPort });
    this.inbound = inbound;
    inbound.setNoDelay(true);
    inbound.setKeepAlive(true, 10_000);
    const dialNonce = nonce();
    inbound.write(encodeLinkRequest(this.o.job, this.rank, { nonce: dialNonce }));
    let linked = false;
    let auth = Buffer.alloc(0);
    const frames = new FrameStream((f) => {
      if (linked || f.kind === "ABORT") return this.receiveFrame(f);
      if (f.kind !== "AUTH")
        return this.fail(
          new CollectiveError(`rank ${this.rank}: ${this.addr(this.left)} sent data before authenticating the link`),
        );
      auth = Buffer.concat([auth, f.data]);
      if (auth.length < NONCE_BYTES + PROOF_BYTES) return;
      const theirs = auth.subarray(0, NONCE_BYTES);
      const want = proof(this.key, "link-acceptor", this.o.job, [this.left, this.rank], [dialNonce, theirs]);
      if (auth.length !== NONCE_BYTES + PROOF_BYTES || !proofMatches(auth.subarray(NONCE_BYTES), want))
        return this.fail(
          new CollectiveError(
            `rank ${this.rank}: the data link of ${this.addr(this.left)} did not prove it knows the job's collective secret`,
          ),
        );
      linked = true;
      inbound.write(
        encodeLinkRequest(this.o.job, this.rank, {
          proof: proof(this.key, "link-dialer", this.o.job, [this.rank, this.left], [theirs, dialNonce]),
        }),
      );
    });
    inbound.on("data", (b: Buffer) => {
      try {
        frames.push(b);
      } catch (e) {
        this.fail(
          new CollectiveError(
            `rank ${this.rank}: garbage on the link from ${this.addr(this.left)}: ${(e as Error).message}`,
          ),
        );
      }
    });
    const lost = (why: string) =>
      this.linkLost(() => new CollectiveError(`rank ${this.rank}: the link from ${this.addr(this.left)} ${why}`));
    inbound.on("error", (e: NodeJS.ErrnoException) => lost(brokenLink(e)));
    inbound.on("close", () => lost("closed (the rank exited)"));
  }

  /**
   * A connection to the data port. Its LinkRequest must name this job and the right neighbour, and it must
   * pass the challenge–response (collective.proto, LinkRequest): this rank proves the secret in an AUTH frame,
   * the dialer answers with its own proof. Only then do frames go there. Anything else is refused with an ABORT
   * frame (and counted in `refused.link` when authentication failed); the connection never sees data.
   */
  private acceptLink(sock: net.Socket) {
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 10_000);
    let got: Buffer = Buffer.alloc(0);
    let challenged: { dialer: Buffer; mine: Buffer } | null = null;
    const timer = setTimeout(() => sock.destroy(), 10_000);
    const refuse = (why: string, counted = false) => {
      clearTimeout(timer);
      sock.off("data", onData);
      if (counted) this.refused.link++;
      sock.end(encodeFrameHead({ kind: "ABORT", rank: this.rank, error: why }, 0));
      sock.destroySoon();
    };
    const onData = (b: Buffer) => {
      got = got.length ? Buffer.concat([got, b]) : b;
      let req: ReturnType<typeof readLinkRequest>;
      try {
        req = readLinkRequest(got);
      } catch (e) {
        return refuse(`rank ${this.rank}: ${(e as Error).message}`, challenged !== null);
      }
      if (!req) return;
      got = req.rest;
      if (req.job !== this.o.job || req.rank !== this.right || this.out) {
        return refuse(
          `rank ${this.rank} (job ${this.o.job}) takes one link, from rank ${this.right}; got rank ${req.rank} (job ${req.job})`,
          challenged !== null,
        );
      }
      if (!challenged) {
        if (req.nonce.length !== NONCE_BYTES)
          return refuse(`rank ${this.rank}: the link request carries no authentication nonce`, true);
        challenged = { dialer: req.nonce, mine: nonce() };
        const p = proof(this.key, "link-acceptor", this.o.job, [this.rank, req.rank], [req.nonce, challenged.mine]);
        sock.write(encodeFrameHead({ kind: "AUTH", rank: this.rank, total: NONCE_BYTES + PROOF_BYTES }, 64));
        sock.write(Buffer.concat([challenged.mine, p]));
        if (got.length) onData(Buffer.alloc(0));
        return;
      }
      const want = proof(
        this.key,
        "link-dialer",
        this.o.job,
        [req.rank, this.rank],
        [challenged.mine, challenged.dialer],
      );
      if (!proofMatches(req.proof, want))
        return refuse(`rank ${this.rank}: link refused: wrong proof (another collective secret?)`, true);
      clearTimeout(timer);
      sock.off("data", onData);
      this.out = sock;
      // A failing right neighbour tells why: an ABORT back on this link.
      const lost = (why: string) =>
        this.linkLost(() => new CollectiveError(`rank ${this.rank}: the link to ${this.addr(this.right)} ${why}`));
      const back = new FrameStream((f) => {
        if (f.kind === "ABORT") this.fail(new CollectiveError(f.error || `rank ${f.rank} aborted`));
      });
      sock.on("data", (b: Buffer) => {
        try {
          back.push(b);
        } catch {}
      });
      sock.on("error", (e: NodeJS.ErrnoException) => lost(brokenLink(e)));
      sock.on("close", () => lost("closed (the rank exited or crashed)"));
      this.outReady?.();
    };
    sock.on("data", onData);
    sock.on("error", () => {});
    sock.on("close", () => clearTimeout(timer));
  }

  /**
   * A link broke or closed. A neighbour that fails says why first (an ABORT), but one that crashed, or exited
   * right after failing, cannot: the first break seen wins after a short grace, so that a rank reports the
   * root cause (the link to the rank that died) rather than a neighbour's exit that followed it.
   */
  private linkLost(error: () => CollectiveError) {
    if (this.closing || this.failure || this.pendingLoss) return;
    this.pendingLoss = setTimeout(() => {
      if (!this.closing) this.fail(error());
    }, 250);
    this.pendingLoss.unref();
  }

  private receiveFrame(f: Frame) {
    if (f.kind === "ABORT") {
      this.fail(new CollectiveError(f.error || `rank ${f.rank} aborted`));
      return;
    }
    if (f.kind === "AUTH") return; // only the link's first frame (handled before the link is up)
    const w = this.waiters.get(f.op);
    if (w) {
      this.waiters.delete(f.op);
      w.resolve(f);
    } else {
      let q = this.inbox.get(f.op);
      if (!q) this.inbox.set(f.op, (q = []));
      q.push(f);
    }
  }

  /** Fails the collective: rejects everything pending, tells the right neighbour, closes both links. */
  private fail(e: CollectiveError) {
    if (this.failure) return;
    this.failure = e;
    for (const w of this.waiters.values()) w.reject(e);
    this.waiters.clear();
    this.inbox.clear();
    for (const w of this.flushWaiters.splice(0)) w.reject(e);
    // Both neighbours hear why: the right one on this rank's outgoing link, the left one back on the link it
    // writes to (which it reads for exactly this).
    const abort = encodeFrameHead({ kind: "ABORT", rank: this.rank, error: e.message }, 0);
    try {
      this.out?.end(abort);
    } catch {}
    try {
      this.inbound?.end(abort);
    } catch {}
    setTimeout(() => this.inbound?.destroy(), 1000).unref();
  }

  /** The collective's failure, if it failed. */
  get error(): CollectiveError | null {
    return this.failure;
  }

  private next(op: number): Promise<Frame> {
    if (this.failure) return Promise.reject(this.failure);
    const q = this.inbox.get(op);
    if (q?.length) {
      const f = q.shift()!;
      if (q.length === 0) this.inbox.delete(op);
      return Promise.resolve(f);
    }
    return new Promise((resolve, reject) => this.waiters.set(op, { resolve, reject }));
  }

  /**
   * Writes a frame to the right neighbour. The payload is written from `f.data` itself: it must not change until
   * the operation has flushed (run() waits for that before it returns).
   */
  private send(f: Partial<Frame>) {
    if (this.failure) throw this.failure;
    const data = f.data ?? new Uint8Array(0);
    const out = this.out!;
    this.unflushed++;
    out.cork();
    out.write(encodeFrameHead(f, data.length));
    if (data.length > 0) out.write(data, this.written);
    out.uncork();
    if (data.length === 0) this.written();
  }

  private readonly written = () => {
    if (--this.unflushed === 0) for (const w of this.flushWaiters.splice(0)) w.resolve();
  };

  /** Resolves once every frame written so far is in the kernel's hands (the caller's memory is free again). */
  private flushed(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.unflushed === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.flushWaiters.push({ resolve, reject }));
  }

  /** Runs one numbered operation under the operation timeout. */
  private async run<T>(name: string, body: (op: number) => Promise<T>, timeoutMs = this.o.opTimeoutMs): Promise<T> {
    if (this.failure) throw this.failure;
    const op = ++this.op;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.fail(
          new CollectiveError(
            `rank ${this.rank}: ${name} (operation ${op}) timed out after ${timeoutMs / 1000}s waiting for ${this.addr(this.left)} (a rank stalled, or is too slow for the timeout)`,
          ),
        );
        reject(this.failure);
      }, timeoutMs);
    });
    try {
      return await Promise.race([body(op).then(async (v) => (await this.flushed(), v)), timeout]);
    } catch (e) {
      // Whatever went wrong, the neighbours must learn it now rather than at their timeout.
      this.fail(
        e instanceof CollectiveError ? e : new CollectiveError(`rank ${this.rank}: ${name}: ${(e as Error).message}`),
      );
      throw this.failure ?? e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Receives one step's payload of `total` bytes (unknown to the caller: total < 0) chunk by chunk. */
  private async receive(op: number, step: number, onChunk: (f: Frame) => void | Promise<void>): Promise<number> {
    let got = 0;
    for (;;) {
      const f = await this.next(op);
      if (f.step !== step || f.offset !== got)
        throw new CollectiveError(
          `rank ${this.rank}: out-of-order frame from ${this.addr(this.left)} (operation ${op}: step ${f.step} offset ${f.offset}, expected step ${step} offset ${got}) — ranks disagree on the sequence of operations`,
        );
      await onChunk(f);
      got += f.data.length;
      if (got >= f.total) return f.total;
    }
  }

  /** Sends `bytes` as one step's payload, in chunks (an empty payload is one empty frame). */
  private sendBytes(op: number, step: number, bytes: Uint8Array) {
    const chunk = this.o.chunkBytes;
    let off = 0;
    do {
      const end = Math.min(bytes.length, off + chunk);
      this.send({
        kind: "DATA",
        op,
        step,
        offset: off,
        data: bytes.subarray(off, end),
        total: bytes.length,
        rank: this.rank,
      });
      off = end;
    } while (off < bytes.length);
  }

  /**
   * Sums `x` over all ranks, in place (and returns it). Every rank must pass the same length. The result is
   * bit-identical on every rank (see the file comment for the summation order).
   */
  async allReduce(x: Float32Array): Promise<Float32Array> {
    const N = this.worldSize;
    if (N === 1) return x;
    return this.run(`all-reduce of ${x.length} floats`, async (op) => {
      const r = this.rank;
      const bytes = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
      const segBytes = (k: number) => {
        const [a, b] = segment(x.length, N, k);
        return bytes.subarray(a * 4, b * 4);
      };
      const chunkFloats = Math.max(1, Math.floor(this.o.chunkBytes / 4));
      const scratch = new Float32Array(chunkFloats);
      const forward = (step: number, offset: number, data: Uint8Array, total: number) =>
        this.send({ kind: "DATA", op, step, offset, data, total, rank: r });
      // Step 0 of the reduce-scatter: this rank's own segment starts its trip.
      const own = segBytes(r);
      for (let off = 0; off === 0 || off < own.length; off += chunkFloats * 4) {
        forward(0, off, own.subarray(off, Math.min(own.length, off + chunkFloats * 4)), own.length);
        if (own.length === 0) break;
      }
      const lastStep = 2 * N - 3;
      for (let s = 0; s <= lastStep; s++) {
        const reduce = s < N - 1;
        const k = reduce ? mod(r - s - 1, N) : mod(r - (s - (N - 1)), N);
        const seg = segBytes(k);
        const [a] = segment(x.length, N, k);
        await this.receive(op, s, (f) => {
          if (f.total !== seg.length)
            throw new CollectiveError(
              `rank ${this.rank}: all-reduce length mismatch with ${this.addr(this.left)} (segment of ${f.total / 4} floats, expected ${seg.length / 4}): ranks passed different sizes`,
            );
          const at = f.offset;
          if (reduce) {
            const n = f.data.length >>> 2;
            let inc: Float32Array;
            if (f.data.byteOffset % 4 === 0) inc = new Float32Array(f.data.buffer, f.data.byteOffset, n);
            else {
              new Uint8Array(scratch.buffer, 0, f.data.length).set(f.data);
              inc = scratch;
            }
            addInto(x.subarray(a + (at >>> 2), a + (at >>> 2) + n), inc);
          } else seg.set(f.data, at);
          // Forward the finished chunk: the next reduce step, or (after the last reduce step, which leaves this
          // rank owning segment k) the first all-gather step; all-gather forwards until the ring is covered.
          if (s < lastStep) forward(s + 1, at, seg.subarray(at, at + f.data.length), seg.length);
        });
      }
      return x;
    });
  }

  /** Root's bytes to every rank (others pass null or anything; they get root's). */
  async broadcast(data: Uint8Array | null, root = 0): Promise<Uint8Array> {
    const N = this.worldSize;
    if (N === 1) return data ?? new Uint8Array(0);
    if (this.rank === root && !data) throw new CollectiveError("broadcast: the root passes the data");
    return this.run(`broadcast from rank ${root}`, async (op) => {
      if (this.rank === root) {
        this.sendBytes(op, 0, data!);
        return data!;
      }
      let buf = new Uint8Array(0);
      const forward = this.right !== root;
      await this.receive(op, 0, (f) => {
        if (buf.length !== f.total) buf = new Uint8Array(f.total);
        buf.set(f.data, f.offset);
        if (forward) this.send({ ...f, data: buf.subarray(f.offset, f.offset + f.data.length), rank: this.rank });
      });
      return buf;
    });
  }

  /** Every rank's bytes, by rank, on every rank. */
  async allGather(data: Uint8Array): Promise<Uint8Array[]> {
    const N = this.worldSize;
    if (N === 1) return [data];
    return this.run("all-gather", (op) => this.gatherOp(op, data));
  }

  private async gatherOp(op: number, data: Uint8Array): Promise<Uint8Array[]> {
    const N = this.worldSize;
    const out: Uint8Array[] = new Array(N);
    out[this.rank] = data;
    this.sendBytes(op, 0, data);
    for (let s = 0; s < N - 1; s++) {
      const k = mod(this.rank - s - 1, N);
      let buf = new Uint8Array(0);
      await this.receive(op, s, (f) => {
        if (buf.length !== f.total) buf = new Uint8Array(f.total);
        buf.set(f.data, f.offset);
        if (s < N - 2)
          this.send({ ...f, step: s + 1, data: buf.subarray(f.offset, f.offset + f.data.length), rank: this.rank });
      });
      out[k] = buf;
    }
    return out;
  }

  /** Returns once every rank has called barrier (or rejects when the collective fails or times out). */
  async barrier(timeoutMs = this.o.opTimeoutMs): Promise<void> {
    if (this.worldSize === 1) return;
    await this.run("barrier", (op) => this.gatherOp(op, new Uint8Array(0)).then(() => undefined), timeoutMs);
  }

  /** JSON helpers over broadcast / all-gather. */
  async broadcastJson<T>(value: T | null, root = 0): Promise<T> {
    const b = await this.broadcast(this.rank === root ? Buffer.from(JSON.stringify(value)) : null, root);
    return JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("utf8")) as T;
  }

  async allGatherJson<T>(value: T): Promise<T[]> {
    const parts = await this.allGather(Buffer.from(JSON.stringify(value)));
    return parts.map((b) => JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("utf8")) as T);
  }

  /** Closes the links and the server. Neighbours that are still running an operation see the link close. */
  async close(): Promise<void> {
    this.closing = true;
    this.out?.end();
    this.inbound?.destroy();
    this.dataServer?.close();
    this.dataServer = null;
    for (const c of this.clients) c.close();
    const s = this.server;
    this.server = null;
    if (s) {
      // Graceful for a moment (frames in flight reach their rank), then forced: a peer's idle channel must
      // not keep this process waiting.
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          s.forceShutdown();
          resolve();
        }, 500);
        s.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Fails the collective on purpose (e.g. this rank hit an error outside a collective): neighbours learn at once. */
  abort(reason: string) {
    this.fail(new CollectiveError(`rank ${this.rank} aborted: ${reason}`));
  }
}
