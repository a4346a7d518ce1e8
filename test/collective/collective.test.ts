/** The trainer collective over loopback: correctness, determinism, rendezvous and failure behaviour. */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { test } from "node:test";
import protobuf from "protobufjs";
import { Collective, CollectiveError, segment } from "../../trainer/collective/collective.js";
import { rankEnv } from "../../trainer/collective/env.js";
import net from "node:net";
import {
  encodeFrameHead,
  encodeLinkRequest,
  type Frame,
  FrameStream,
  readLinkRequest,
} from "../../trainer/collective/wire.js";
import { protoPath } from "../../proto/paths.js";
import { freePorts, loopbackPeers } from "./ports.js";

/** The job's collective secret in these tests (what the launcher or the job's Secret provides). */
const SECRET = "test-collective-secret-0123456789";

async function gang(n: number, opts: { chunkBytes?: number; opTimeoutMs?: number } = {}) {
  const peers = loopbackPeers(await freePorts(n));
  return Promise.all(
    peers.map((_, rank) => Collective.connect({ secret: SECRET, rank, worldSize: n, peers, ...opts })),
  );
}
const closeAll = (cs: Collective[]) => Promise.all(cs.map((c) => c.close()));

/** A vector with values of very different magnitudes, so the order of a float sum matters. */
function vector(n: number, seed: number): Float32Array {
  let s = seed * 2654435761;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6a09e667) | 0;
    return ((s % 1000) / 7) * 10 ** ((s >>> 8) % 7);
  });
}

/** The documented order: segment k is (((x_k + x_{k+1}) + …) + x_{k−1}), in float32. */
function ringOrderSum(xs: Float32Array[]): Float32Array {
  const N = xs.length;
  const n = xs[0]!.length;
  const out = new Float32Array(n);
  for (let k = 0; k < N; k++) {
    const [a, b] = segment(n, N, k);
    for (let i = a; i < b; i++) {
      let acc = xs[k]![i]!;
      for (let j = 1; j < N; j++) acc = Math.fround(xs[(k + j) % N]![i]! + acc);
      out[i] = acc;
    }
  }
  return out;
}

const bytesOf = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

test("all-reduce equals the local sum, bit-identical on every rank (2, 3 and 4 ranks; odd and tiny sizes)", async () => {
  for (const N of [2, 3, 4]) {
    const cs = await gang(N, { chunkBytes: 4096 }); // small frames: many chunks per segment
    for (const n of [0, 1, N - 1, 1000, 12_345]) {
      const xs = cs.map((_, r) => vector(n, r + 1 + n));
      const res = await Promise.all(cs.map((c, r) => c.allReduce(xs[r]!.slice())));
      const want = ringOrderSum(xs);
      for (let r = 0; r < N; r++) assert.ok(bytesOf(res[r]!).equals(bytesOf(want)), `N=${N} n=${n} rank ${r}`);
      // …and within float rounding of the exact sum.
      for (let i = 0; i < n; i++) {
        const exact = xs.reduce((s, x) => s + x[i]!, 0);
        assert.ok(Math.abs(res[0]![i]! - exact) <= 1e-6 * xs.reduce((s, x) => s + Math.abs(x[i]!), 0) + 1e-30);
      }
    }
    // The same inputs give the same bits again (deterministic order).
    const xs = cs.map((_, r) => vector(5000, r));
    const a = await Promise.all(cs.map((c, r) => c.allReduce(xs[r]!.slice())));
    const b = await Promise.all(cs.map((c, r) => c.allReduce(xs[r]!.slice())));
    assert.ok(bytesOf(a[0]!).equals(bytesOf(b[N - 1]!)));
    await closeAll(cs);
  }
});

test("broadcast from any root and all-gather of different sizes", async () => {
  const cs = await gang(3, { chunkBytes: 1000 });
  const payload = Buffer.from(vector(3000, 9).buffer); // 12 kB: several frames
  for (const root of [0, 2]) {
    const got = await Promise.all(cs.map((c) => c.broadcast(c.rank === root ? payload : null, root)));
    for (const g of got) assert.ok(Buffer.from(g).equals(payload));
  }
  const empty = await Promise.all(cs.map((c) => c.broadcast(c.rank === 1 ? new Uint8Array(0) : null, 1)));
  assert.deepEqual(
    empty.map((e) => e.length),
    [0, 0, 0],
  );
  const parts = await Promise.all(cs.map((c) => c.allGather(new Uint8Array(c.rank * 1500).fill(c.rank + 7))));
  for (const p of parts) {
    assert.deepEqual(
      p.map((b) => b.length),
      [0, 1500, 3000],
    );
    assert.ok(p[2]!.every((v) => v === 9));
  }
  const json = await Promise.all(cs.map((c) => c.allGatherJson({ rank: c.rank })));
  assert.deepEqual(json[1], [{ rank: 0 }, { rank: 1 }, { rank: 2 }]);
  assert.deepEqual(await Promise.all(cs.map((c) => c.broadcastJson(c.rank === 0 ? { step: 7 } : null))), [
    { step: 7 },
    { step: 7 },
    { step: 7 },
  ]);
  await closeAll(cs);
});

test("barrier: nobody leaves before the last rank arrives", async () => {
  const cs = await gang(3);
  const log: string[] = [];
  let lateArrived: () => void = () => {};
  const othersWaiting = new Promise<void>((r) => (lateArrived = r));
  await Promise.all(
    cs.map(async (c) => {
      // Rank 1 arrives last: only once the others are already inside the barrier (and have not left it).
      if (c.rank === 1) {
        await new Promise((r) => setTimeout(r, 100));
        await othersWaiting;
      }
      log.push(`arrive ${c.rank}`);
      const left = c.barrier().then(() => log.push(`leave ${c.rank}`));
      if (c.rank === 2) lateArrived();
      await left;
    }),
  );
  const arrivedLast = log.indexOf("arrive 1");
  assert.deepEqual(
    log.slice(0, arrivedLast + 1).filter((e) => e.startsWith("leave")),
    [],
    `a rank left before the last arrived: ${log.join(", ")}`,
  );
  assert.equal(log.filter((e) => e.startsWith("leave")).length, 3);
  await closeAll(cs);
});

test("ranks that disagree on a tensor's length fail with a clear error, on every rank, at once", async () => {
  // An hour's timeout: the mismatch, not the clock, is what fails both ranks.
  const cs = await gang(2, { opTimeoutMs: 3_600_000 });
  const rs = await Promise.allSettled(cs.map((c) => c.allReduce(new Float32Array(c.rank === 0 ? 100 : 102))));
  for (const r of rs) {
    assert.equal(r.status, "rejected");
    assert.ok((r as PromiseRejectedResult).reason instanceof CollectiveError);
    assert.doesNotMatch(String((r as PromiseRejectedResult).reason), /timed out/);
  }
  assert.match(String((rs[0] as PromiseRejectedResult).reason), /length mismatch|passed different sizes/);
  // A failed collective stays failed.
  await assert.rejects(cs[0]!.barrier(), CollectiveError);
  await closeAll(cs);
});

test("rendezvous: a rank that never joins → every other rank fails with the missing rank named", async () => {
  const peers = loopbackPeers(await freePorts(3));
  const rs = await Promise.allSettled(
    [0, 1].map((rank) => Collective.connect({ secret: SECRET, rank, worldSize: 3, peers, rendezvousTimeoutMs: 1500 })),
  );
  // The rendezvous timeout (named in the message) is what ended the wait.
  for (const r of rs) {
    assert.equal(r.status, "rejected");
    const e = (r as PromiseRejectedResult).reason as Error;
    assert.ok(e instanceof CollectiveError);
    assert.match(e.message, /rendezvous timed out after 1\.5s: rank 2 \(127\.0\.0\.1:\d+\) never joined/);
  }
});

test("rendezvous: a peer of another job or world size is refused", async () => {
  const peers = loopbackPeers(await freePorts(2));
  const rs = await Promise.allSettled([
    Collective.connect({ secret: SECRET, rank: 0, worldSize: 2, peers, job: "ns/a", rendezvousTimeoutMs: 3000 }),
    Collective.connect({ secret: SECRET, rank: 1, worldSize: 2, peers, job: "ns/b", rendezvousTimeoutMs: 3000 }),
  ]);
  for (const r of rs)
    assert.match(String((r as PromiseRejectedResult).reason), /expected rank \d of 2 \(job ns\/[ab]\)/);
});

test("rank environment: RFT_RANK, RFT_WORLD_SIZE, RFT_PEERS", () => {
  assert.equal(rankEnv({}), null);
  assert.equal(rankEnv({ RFT_WORLD_SIZE: "1" }), null);
  assert.deepEqual(
    rankEnv({
      RFT_RANK: "1",
      RFT_WORLD_SIZE: "2",
      RFT_PEERS: "a:1, b:2",
      RFT_COLLECTIVE_TIMEOUT: "5",
      RFT_COLLECTIVE_SECRET: SECRET,
    }),
    { rank: 1, worldSize: 2, peers: ["a:1", "b:2"], secret: SECRET, opTimeoutMs: 5000 },
  );
  assert.equal(
    rankEnv({
      RFT_RANK: "0",
      RFT_WORLD_SIZE: "2",
      RFT_PEERS: "a:1,b:2",
      RFT_DATA_PORT: "29501",
      RFT_COLLECTIVE_SECRET: SECRET,
    })?.dataPort,
    29501,
  );
  assert.throws(() => rankEnv({ RFT_RANK: "2", RFT_WORLD_SIZE: "2", RFT_PEERS: "a:1,b:2" }), /outside/);
  assert.throws(() => rankEnv({ RFT_RANK: "0", RFT_WORLD_SIZE: "3", RFT_PEERS: "a:1,b:2" }), /lists 2 addresses/);
});

test("the data link's byte stream: length-delimited Frames (data last) that protobufjs reads, parsed from any split", async () => {
  const root = await protobuf.load(protoPath("collective.proto"));
  const Frame = root.lookupType("rft.collective.v1.Frame");
  const LinkRequest = root.lookupType("rft.collective.v1.LinkRequest");
  const payload = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + n) & 255);
  const frames: Partial<Frame>[] = [
    { kind: "DATA", op: 1, step: 0, offset: 0, data: payload(4099), total: 8000, rank: 1 },
    { kind: "DATA", op: 1, step: 1, offset: 4099, data: payload(1), total: 8000, rank: 1 },
    { kind: "DATA", op: 2, step: 3, offset: 0, data: new Uint8Array(0), total: 0, rank: 1 },
    { kind: "DATA", op: 2 ** 33, step: 1, offset: 1 << 20, data: payload(64), total: 2 << 20, rank: 0 },
    { kind: "ABORT", rank: 2, error: "rank 2 aborted: ü" },
  ];
  const stream = Buffer.concat(
    frames.flatMap((f) => [encodeFrameHead(f, f.data?.length ?? 0), f.data ?? new Uint8Array(0)]),
  );
  // protobufjs reads the stream as length-delimited Frames.
  const reader = protobuf.Reader.create(stream);
  for (const f of frames) {
    const m = Frame.toObject(Frame.decodeDelimited(reader), { enums: String, longs: Number, defaults: true });
    assert.deepEqual(
      { ...m, data: [...m.data] },
      { step: 0, op: 0, offset: 0, total: 0, error: "", ...f, data: [...(f.data ?? [])] },
    );
  }
  // FrameStream hands out the same frames from every split of the stream (one byte at a time, odd chunks, all
  // at once): pieces start on 4-byte boundaries of their payload and are whole float32s except a payload's last.
  for (const cut of [1, 3, 5, 4096, 7777, stream.length]) {
    const got: Frame[] = [];
    const fs = new FrameStream((f) => got.push({ ...f, data: Uint8Array.from(f.data) }));
    for (let i = 0; i < stream.length; i += cut) fs.push(stream.subarray(i, i + cut));
    for (const f of frames) {
      const pieces = got.filter((g) => g.op === (f.op ?? 0) && g.step === (f.step ?? 0) && g.kind === f.kind);
      assert.ok(pieces.length > 0);
      const joined = Buffer.concat(pieces.map((g) => g.data));
      assert.deepEqual([...joined], [...(f.data ?? [])], `split ${cut}: frame op ${f.op} step ${f.step}`);
      let at = f.offset ?? 0;
      pieces.forEach((g, i) => {
        assert.equal(g.offset, at);
        assert.equal((g.offset - (f.offset ?? 0)) % 4, 0, "pieces start on a float boundary");
        if (i < pieces.length - 1) assert.equal(g.data.length % 4, 0);
        at += g.data.length;
      });
    }
    assert.equal(got.find((g) => g.kind === "ABORT")?.error, "rank 2 aborted: ü");
  }
  // The receiver's first message.
  const req = encodeLinkRequest("ns/job", 3);
  assert.deepEqual(LinkRequest.toObject(LinkRequest.decodeDelimited(req)), { job: "ns/job", rank: 3 });
  assert.equal(readLinkRequest(req.subarray(0, 4)), null);
  const parsed = readLinkRequest(Buffer.concat([req, Buffer.from([9])]));
  assert.deepEqual(
    { job: parsed?.job, rank: parsed?.rank, rest: [...parsed!.rest] },
    { job: "ns/job", rank: 3, rest: [9] },
  );
  // Frames protobufjs writes are read the same (field order aside, see below).
  const theirs = Frame.encodeDelimited(
    Frame.fromObject({ kind: 1, op: 2 ** 40 + 3, step: 5, rank: 7, error: "x ü" }),
  ).finish();
  const read: Frame[] = [];
  new FrameStream((f) => read.push(f)).push(Buffer.from(theirs));
  assert.deepEqual(read, [
    { kind: "ABORT", op: 2 ** 40 + 3, step: 5, offset: 0, data: new Uint8Array(0), total: 0, rank: 7, error: "x ü" },
  ]);
  // A payload that is not the frame's last field is refused, not misread.
  const bad = Frame.encodeDelimited(Frame.fromObject({ op: 1, data: payload(8), rank: 3 })).finish();
  assert.throws(() => new FrameStream(() => {}).push(Buffer.from(bad)), /data must be its last field/);
});

test("a stranger on a rank's data port is refused with an ABORT naming the mismatch; the gang is unaffected", async () => {
  const [a, b] = await gang(2);
  // Rank 0's data port (peers learn it from Hello).
  const port = (a as unknown as { dataServer: net.Server }).dataServer.address() as net.AddressInfo;
  const sock = net.connect({ host: "127.0.0.1", port: port.port });
  sock.write(encodeLinkRequest("other/job", 1));
  const got: Frame[] = [];
  const fs = new FrameStream((f) => got.push(f));
  sock.on("data", (d: Buffer) => fs.push(d));
  await new Promise((r) => sock.on("close", r));
  assert.equal(got[0]?.kind, "ABORT");
  assert.match(got[0]!.error, /takes one link, from rank 1; got rank 1 \(job other\/job\)/);
  const x = Float32Array.of(1, 2, 3);
  const y = Float32Array.of(10, 20, 30);
  await Promise.all([a!.allReduce(x), b!.allReduce(y)]);
  assert.deepEqual([...x], [11, 22, 33]);
  await closeAll([a!, b!]);
});

// ---- faults, with real rank processes

interface Rank {
  proc: ChildProcess;
  out: string;
  err: string;
  exit: Promise<{ code: number | null; at: number }>;
  ops: () => number;
}

function startRank(rank: number, peers: string[], env: Record<string, string> = {}): Rank {
  const proc = spawn(process.execPath, ["--import", "tsx", "test/collective/rank-worker.ts"], {
    env: {
      ...process.env,
      RFT_RANK: String(rank),
      RFT_WORLD_SIZE: String(peers.length),
      RFT_PEERS: peers.join(","),
      RFT_COLLECTIVE_SECRET: SECRET,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const r: Rank = {
    proc,
    out: "",
    err: "",
    exit: new Promise((resolve) => proc.once("exit", (code) => resolve({ code, at: Date.now() }))),
    ops: () => (r.out.match(/^op \d+$/gm) ?? []).length,
  };
  proc.stdout!.on("data", (d) => (r.out += d));
  proc.stderr!.on("data", (d) => (r.err += d));
  return r;
}

async function until(cond: () => boolean, ms: number, what: string) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a rank killed mid-all-reduce: the others exit at once (the broken link, not the timeout) with a clear error", async () => {
  const peers = loopbackPeers(await freePorts(3));
  // An hour: were the others to wait for the operation timeout, the test would time out instead of passing.
  const timeout = 3_600_000;
  const ranks = peers.map((_, r) => startRank(r, peers, { RFT_TEST_OP_TIMEOUT_MS: String(timeout) }));
  try {
    await until(() => ranks.every((r) => r.ops() >= 2), 60_000, "two all-reduces on every rank");
    ranks[1]!.proc.kill("SIGKILL");
    const [a, , c] = await Promise.all(ranks.map((r) => r.exit));
    for (const [r, e] of [
      [ranks[0]!, a!],
      [ranks[2]!, c!],
    ] as const) {
      assert.equal(e.code, 3, r.err);
      assert.doesNotMatch(r.err, /timed out/);
      assert.match(r.err, /CollectiveError: .*rank 1 \(127\.0\.0\.1:\d+\)|CollectiveError: .*rank \d: the link/);
    }
    // Rank 2 receives from rank 1 (its link broke); rank 0 sends to rank 1 (its link broke).
    assert.match(ranks[2]!.err, /link from rank 1 .*(exited|crashed)|rank 1/);
    assert.match(ranks[0]!.err, /link to rank 1|rank 1/);
  } finally {
    for (const r of ranks) r.proc.kill("SIGKILL");
  }
});

test("a stalled rank (SIGSTOP): the others fail after the operation timeout, naming the wait", async () => {
  const peers = loopbackPeers(await freePorts(2));
  const timeout = 2000;
  const ranks = peers.map((_, r) => startRank(r, peers, { RFT_TEST_OP_TIMEOUT_MS: String(timeout) }));
  try {
    await until(() => ranks.every((r) => r.ops() >= 1), 60_000, "an all-reduce on every rank");
    ranks[1]!.proc.kill("SIGSTOP");
    const e = await ranks[0]!.exit;
    assert.equal(e.code, 3, ranks[0]!.err);
    // The cause, in rank 0's words: the operation timeout, waiting for the stalled rank.
    assert.match(ranks[0]!.err, /timed out after 2s waiting for rank 1/);
  } finally {
    for (const r of ranks) {
      r.proc.kill("SIGCONT");
      r.proc.kill("SIGKILL");
    }
  }
});
