/**
 * The ranks authenticate each other with the job's collective secret: an outsider that claims rank 1 — on the
 * rendezvous (Hello) or straight on rank 0's data port — without the secret, or with a wrong one, is refused,
 * counted, and receives no data; the real ranks still pair up and all-reduce. Ranks with different secrets
 * never pair up.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { nonce, proof } from "../../trainer/collective/auth.js";
import { Collective, CollectiveError } from "../../trainer/collective/collective.js";
import { rankEnv } from "../../trainer/collective/env.js";
import {
  CHANNEL_OPTIONS,
  collectiveService,
  encodeLinkRequest,
  type Frame,
  FrameStream,
} from "../../trainer/collective/wire.js";
import { freePorts, loopbackPeers } from "./ports.js";

const SECRET = "the-jobs-collective-secret-0123456789";
const WRONG = "another-secret-of-another-job-98765";

interface HelloMsg {
  job: string;
  rank: number;
  world_size: number;
  data_port?: number;
  nonce?: Uint8Array;
  challenge?: Uint8Array;
  proof?: Uint8Array;
}

function hello(addr: string, req: HelloMsg): Promise<{ err: grpc.ServiceError | null; res?: HelloMsg }> {
  const Client = grpc.makeGenericClientConstructor(collectiveService(), "Collective");
  const client = new Client(addr, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  return new Promise((resolve) =>
    (
      client as unknown as {
        Hello(r: HelloMsg, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: HelloMsg) => void): void;
      }
    ).Hello(req, { deadline: Date.now() + 5000 }, (err, res) => {
      client.close();
      resolve({ err, res });
    }),
  );
}

/** Dials a data port as rank 1 would; `answer` is what it sends after the first frame (or nothing). */
function dialLink(
  port: number,
  first: Buffer,
  answer?: (auth: Buffer) => Buffer,
): Promise<{ frames: Frame[]; bytes: number }> {
  return new Promise((resolve) => {
    const frames: Frame[] = [];
    let bytes = 0;
    let auth = Buffer.alloc(0);
    const sock = net.connect({ host: "127.0.0.1", port });
    const stream = new FrameStream((f) => {
      frames.push(f);
      if (f.kind === "AUTH") {
        auth = Buffer.concat([auth, f.data]);
        if (auth.length === 64 && answer) sock.write(answer(auth));
      }
    });
    sock.on("data", (b: Buffer) => {
      bytes += b.length;
      stream.push(b);
    });
    sock.on("error", () => {});
    sock.on("close", () => resolve({ frames, bytes }));
    sock.write(first);
    setTimeout(() => sock.destroy(), 8000).unref();
  });
}

test("an outsider claiming rank 1 without the secret is refused on Hello and on the data link, gets no data; the real ranks train", async () => {
  const [p0, p1, data0] = await freePorts(3);
  const peers = loopbackPeers([p0!, p1!]);
  const job = "team-a/job-1";
  // Rank 0 waits for rank 1 to join; the outsider gets there first.
  const rank0 = Collective.connect({ rank: 0, worldSize: 2, peers, job, secret: SECRET, dataPort: data0! });
  const c0Ready = rank0.then((c) => c);

  // Hello: the challenge reveals nothing (no data port); a proof with the wrong secret is refused.
  let first: Awaited<ReturnType<typeof hello>>;
  for (;;) {
    first = await hello(peers[0]!, { job, rank: 1, world_size: 2 });
    if (!first.err) break;
    await new Promise((r) => setTimeout(r, 100)); // rank 0 still starting
  }
  assert.equal(first.res!.data_port, 0, "no data port before authentication");
  assert.equal(first.res!.nonce!.length, 32);
  const mine = nonce();
  const bad = await hello(peers[0]!, {
    job,
    rank: 1,
    world_size: 2,
    nonce: mine,
    challenge: first.res!.nonce,
    proof: proof(Buffer.from(WRONG), "hello-request", job, [1, 2], [first.res!.nonce!, mine]),
  });
  assert.equal(bad.err?.code, grpc.status.UNAUTHENTICATED);
  assert.match(bad.err!.details, /Hello refused: wrong proof/);
  // A proof that replays a challenge it never got (or one already used) is refused too.
  const replay = await hello(peers[0]!, {
    job,
    rank: 1,
    world_size: 2,
    nonce: mine,
    challenge: first.res!.nonce,
    proof: Buffer.alloc(32),
  });
  assert.equal(replay.err?.code, grpc.status.UNAUTHENTICATED);
  assert.match(replay.err!.details, /unknown or used challenge/);

  // The data link, dialed directly as rank 1: without a nonce, then with a wrong proof. Never a DATA frame.
  const noNonce = await dialLink(data0!, encodeLinkRequest(job, 1));
  assert.deepEqual(
    noNonce.frames.map((f) => f.kind),
    ["ABORT"],
  );
  assert.match(noNonce.frames[0]!.error, /no authentication nonce/);
  const dialNonce = nonce();
  const wrong = await dialLink(data0!, encodeLinkRequest(job, 1, { nonce: dialNonce }), (auth) =>
    encodeLinkRequest(job, 1, {
      proof: proof(Buffer.from(WRONG), "link-dialer", job, [1, 0], [auth.subarray(0, 32), dialNonce]),
    }),
  );
  assert.equal(wrong.frames[0]!.kind, "AUTH", "rank 0 proves itself first");
  assert.ok(
    wrong.frames.every((f) => f.kind !== "DATA"),
    "no data frame reaches the outsider",
  );
  assert.equal(wrong.frames.at(-1)!.kind, "ABORT");
  assert.match(wrong.frames.at(-1)!.error, /link refused: wrong proof/);

  // The real rank 1 joins; the ranks all-reduce as ever.
  const c1 = await Collective.connect({ rank: 1, worldSize: 2, peers, job, secret: SECRET });
  const c0 = await c0Ready;
  const xs = [new Float32Array([1, 2, 3, 4]), new Float32Array([10, 20, 30, 40])];
  await Promise.all([c0.allReduce(xs[0]!), c1.allReduce(xs[1]!)]);
  assert.deepEqual([...xs[0]!], [11, 22, 33, 44]);
  assert.deepEqual([...xs[1]!], [11, 22, 33, 44]);
  assert.deepEqual(c0.refused, { hello: 2, link: 2 }, "every refusal counted");
  await Promise.all([c0.close(), c1.close()]);
});

test("ranks with different secrets never pair up: both stop with a line that names the secret", async () => {
  const peers = loopbackPeers(await freePorts(2));
  const rs = await Promise.allSettled([
    Collective.connect({ rank: 0, worldSize: 2, peers, secret: SECRET, rendezvousTimeoutMs: 10_000 }),
    Collective.connect({ rank: 1, worldSize: 2, peers, secret: WRONG, rendezvousTimeoutMs: 10_000 }),
  ]);
  const messages = rs.map((r) => {
    assert.equal(r.status, "rejected");
    const e = (r as PromiseRejectedResult).reason as Error;
    assert.ok(e instanceof CollectiveError);
    return e.message;
  });
  // The first to be refused stops at once; the other may see it gone before its own refusal.
  assert.ok(
    messages.some((m) => /refused the rendezvous: .*wrong proof.*RFT_COLLECTIVE_SECRET/.test(m)),
    messages.join("\n"),
  );
});

test("more than one rank needs a collective secret: from RFT_COLLECTIVE_SECRET, removed from the environment once read", async () => {
  const peers = loopbackPeers(await freePorts(2));
  await assert.rejects(
    Collective.connect({ rank: 0, worldSize: 2, peers }),
    /no collective secret of at least 16 bytes \(RFT_COLLECTIVE_SECRET\)/,
  );
  const env: NodeJS.ProcessEnv = { RFT_RANK: "0", RFT_WORLD_SIZE: "2", RFT_PEERS: peers.join(",") };
  assert.throws(() => rankEnv({ ...env }), /RFT_COLLECTIVE_SECRET is not set/);
  assert.throws(() => rankEnv({ ...env, RFT_COLLECTIVE_SECRET: "short" }), /shorter than 16 bytes/);
  const withSecret = { ...env, RFT_COLLECTIVE_SECRET: SECRET };
  assert.equal(rankEnv(withSecret)!.secret, SECRET);
  assert.equal(withSecret.RFT_COLLECTIVE_SECRET, undefined, "not inherited by the processes a rank starts");
});
