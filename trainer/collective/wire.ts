/**
 * The collective's wire (proto/collective.proto): the gRPC service for rendezvous (Hello, proto-loader's
 * ordinary codec) and the data link's byte stream — length-delimited LinkRequest, then length-delimited
 * Frames, each Frame with its `data` last.
 *
 * The Frame codec is hand-written because it is the hot path: `encodeFrameHead` writes the frame without
 * its payload (the caller writes the payload bytes straight from the tensor: no copy in user space), and
 * `FrameStream` parses a link's bytes as they arrive, handing out each frame's payload in pieces (views of the
 * received buffers, 4-byte aligned for float32 reductions) with the piece's byte offset, so a receiver adds or
 * places data before the frame has fully arrived. test/collective/collective.test.ts checks both against
 * protobufjs on collective.proto.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType } from "../../proto/gen/collective.js";
import type { CollectiveDefinition } from "../../proto/gen/rft/collective/v1/Collective.js";
import { LOADER_OPTIONS } from "../../proto/grpc.js";
import { protoPath } from "../../proto/paths.js";

export type FrameKind = "DATA" | "ABORT" | "AUTH";
const KIND_NUM: Record<FrameKind, number> = { DATA: 0, ABORT: 1, AUTH: 2 };
const KIND_NAME: FrameKind[] = ["DATA", "ABORT", "AUTH"];

export interface Frame {
  kind: FrameKind;
  op: number;
  step: number;
  offset: number;
  data: Uint8Array;
  total: number;
  rank: number;
  error: string;
}

export function loadCollectiveProto(): ProtoGrpcType {
  const def = protoLoader.loadSync(protoPath("collective.proto"), LOADER_OPTIONS);
  return grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
}

const EMPTY = new Uint8Array(0);

function varintSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 128) {
    buf[pos++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/** The gRPC service definition (Hello). */
export function collectiveService(): CollectiveDefinition {
  return loadCollectiveProto().rft.collective.v1.Collective.service;
}

/** gRPC channel options for rendezvous. */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // Rendezvous retries: a peer that starts late is found within a second, not after a long backoff.
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 1_000,
  // Every rank dials its own peers: never share a channel with another Collective in the same process.
  "grpc.use_local_subchannel_pool": 1,
};

/** The bytes of a Frame on the data link, payload excluded: varint length, fields 1–4 and 6–8, field 5's key and length. */
export function encodeFrameHead(f: Partial<Frame>, dataLength: number): Buffer {
  const kind = KIND_NUM[f.kind ?? "DATA"];
  const err = f.error ? Buffer.from(f.error, "utf8") : null;
  const ints: [number, number][] = [
    [1, kind],
    [2, f.op ?? 0],
    [3, f.step ?? 0],
    [4, f.offset ?? 0],
    [6, f.total ?? 0],
    [7, f.rank ?? 0],
  ];
  let body = 0;
  for (const [, v] of ints) if (v !== 0) body += 1 + varintSize(v);
  if (err) body += 1 + varintSize(err.length) + err.length;
  const dataHead = dataLength > 0 ? 1 + varintSize(dataLength) : 0;
  const msgLen = body + dataHead + dataLength;
  const buf = Buffer.allocUnsafe(varintSize(msgLen) + body + dataHead);
  let pos = writeVarint(buf, 0, msgLen);
  for (const [field, v] of ints) {
    if (v === 0) continue;
    buf[pos++] = field << 3;
    pos = writeVarint(buf, pos, v);
  }
  if (err) {
    buf[pos++] = (8 << 3) | 2;
    pos = writeVarint(buf, pos, err.length);
    pos += err.copy(buf, pos);
  }
  if (dataLength > 0) {
    buf[pos++] = (5 << 3) | 2;
    writeVarint(buf, pos, dataLength);
  }
  return buf;
}

/** A length-delimited LinkRequest (`nonce` on the first, `proof` on the second: see collective.proto). */
export function encodeLinkRequest(
  job: string,
  rank: number,
  auth: { nonce?: Uint8Array; proof?: Uint8Array } = {},
): Buffer {
  const j = Buffer.from(job, "utf8");
  const bytesFields: [number, Uint8Array][] = [
    [3, auth.nonce ?? EMPTY],
    [4, auth.proof ?? EMPTY],
  ];
  let body = (j.length ? 1 + varintSize(j.length) + j.length : 0) + (rank ? 1 + varintSize(rank) : 0);
  for (const [, b] of bytesFields) if (b.length) body += 1 + varintSize(b.length) + b.length;
  const buf = Buffer.allocUnsafe(varintSize(body) + body);
  let pos = writeVarint(buf, 0, body);
  if (j.length) {
    buf[pos++] = (1 << 3) | 2;
    pos = writeVarint(buf, pos, j.length);
    pos += j.copy(buf, pos);
  }
  if (rank) {
    buf[pos++] = 2 << 3;
    pos = writeVarint(buf, pos, rank);
  }
  for (const [field, b] of bytesFields) {
    if (!b.length) continue;
    buf[pos++] = (field << 3) | 2;
    pos = writeVarint(buf, pos, b.length);
    buf.set(b, pos);
    pos += b.length;
  }
  return buf;
}

/** Reads one varint at `pos`; null when `buf` ends first. */
function readVarint(buf: Uint8Array, pos: number, end: number): { v: number; pos: number } | null {
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) return null;
    const b = buf[pos++]!;
    v += (b & 127) * mul;
    if (b < 128) return { v, pos };
    mul *= 128;
  }
  throw new Error("malformed varint on the data link");
}

/** Largest message header (everything but the payload) a link accepts: an ABORT's error text fits. */
const MAX_HEAD = 1 << 16;

/**
 * Accumulates a link's first message (a length-delimited LinkRequest); returns it and the bytes after it, or
 * null while incomplete. Throws on a message too large to be one.
 */
export function readLinkRequest(
  buf: Buffer,
): { job: string; rank: number; nonce: Buffer; proof: Buffer; rest: Buffer } | null {
  const len = readVarint(buf, 0, buf.length);
  if (!len) return null;
  if (len.v > MAX_HEAD) throw new Error(`a ${len.v}-byte first message is not a LinkRequest`);
  if (buf.length < len.pos + len.v) return null;
  const msg = buf.subarray(len.pos, len.pos + len.v);
  let pos = 0;
  let job = "";
  let rank = 0;
  let nonce = Buffer.alloc(0);
  let proof = Buffer.alloc(0);
  while (pos < msg.length) {
    const key = readVarint(msg, pos, msg.length);
    if (!key) throw new Error("truncated LinkRequest");
    pos = key.pos;
    const wire = key.v & 7;
    if (wire === 0) {
      const v = readVarint(msg, pos, msg.length);
      if (!v) throw new Error("truncated LinkRequest");
      pos = v.pos;
      if (key.v >> 3 === 2) rank = v.v;
    } else if (wire === 2) {
      const l = readVarint(msg, pos, msg.length);
      if (!l || l.pos + l.v > msg.length) throw new Error("truncated LinkRequest");
      if (key.v >> 3 === 1) job = msg.subarray(l.pos, l.pos + l.v).toString("utf8");
      else if (key.v >> 3 === 3) nonce = Buffer.from(msg.subarray(l.pos, l.pos + l.v));
      else if (key.v >> 3 === 4) proof = Buffer.from(msg.subarray(l.pos, l.pos + l.v));
      pos = l.pos + l.v;
    } else throw new Error(`LinkRequest: unsupported wire type ${wire}`);
  }
  return { job, rank, nonce, proof, rest: buf.subarray(len.pos + len.v) };
}

/**
 * Parses a data link's bytes into frames as they arrive. A frame's payload is handed out in pieces, each a
 * Frame whose `offset` is the piece's own position (frame offset + bytes before it) and whose `data` is a view
 * of a received buffer (or a 4-byte copy where a float straddles two reads): pieces start on 4-byte
 * boundaries of the payload and, except the payload's last, are multiples of 4 bytes long — a reduction can
 * treat each as whole float32 values. A frame without payload is handed out once, with empty `data`.
 */
export class FrameStream {
  private head = Buffer.alloc(0);
  /** The frame whose payload is streaming, and how much of it has been handed out. */
  private cur: Frame | null = null;
  private remaining = 0;
  private done = 0;
  private carry = new Uint8Array(4);
  private carryN = 0;

  constructor(private readonly onFrame: (f: Frame) => void) {}

  push(buf: Buffer) {
    let p = 0;
    while (p < buf.length) {
      if (this.cur) {
        p = this.payload(buf, p);
        continue;
      }
      // Header bytes: gather until the frame's head (or the whole payload-less frame) is complete.
      const take = buf.subarray(p);
      const head = this.head.length ? Buffer.concat([this.head, take]) : take;
      const parsed = parseHead(head);
      if (!parsed) {
        if (head.length > MAX_HEAD) throw new Error(`a frame header over ${MAX_HEAD} bytes on the data link`);
        this.head = Buffer.from(head); // keep a copy: `buf` may be reused by the socket
        return;
      }
      const used = parsed.headLen - this.head.length;
      this.head = Buffer.alloc(0);
      p += used;
      if (parsed.dataLength === 0) this.onFrame(parsed.frame);
      else {
        this.cur = parsed.frame;
        this.remaining = parsed.dataLength;
        this.done = 0;
        this.carryN = 0;
      }
    }
  }

  /** Hands out payload bytes from buf[p…]; returns the new position. */
  private payload(buf: Buffer, p: number): number {
    const f = this.cur!;
    const n = Math.min(this.remaining, buf.length - p);
    let d = buf.subarray(p, p + n);
    this.remaining -= n;
    if (this.carryN > 0) {
      const k = Math.min(4 - this.carryN, d.length);
      this.carry.set(d.subarray(0, k), this.carryN);
      this.carryN += k;
      d = d.subarray(k);
      if (this.carryN === 4 || (this.remaining === 0 && d.length === 0)) {
        this.emit(f, this.carry.slice(0, this.carryN));
        this.carryN = 0;
      }
    }
    const whole = this.remaining === 0 ? d.length : d.length & ~3;
    if (whole > 0) this.emit(f, d.subarray(0, whole));
    if (whole < d.length) {
      this.carry.set(d.subarray(whole));
      this.carryN = d.length - whole;
    }
    if (this.remaining === 0) this.cur = null;
    return p + n;
  }

  private emit(f: Frame, data: Uint8Array) {
    this.onFrame({ ...f, offset: f.offset + this.done, data });
    this.done += data.length;
  }
}

/** A frame's head from the start of `buf`: null while incomplete. The payload (field 5) must come last. */
function parseHead(buf: Uint8Array): { frame: Frame; headLen: number; dataLength: number } | null {
  const len = readVarint(buf, 0, buf.length);
  if (!len) return null;
  const end = len.pos + len.v;
  const f: Frame = { kind: "DATA", op: 0, step: 0, offset: 0, data: EMPTY, total: 0, rank: 0, error: "" };
  let pos = len.pos;
  while (pos < end) {
    const key = readVarint(buf, pos, Math.min(end, buf.length));
    if (!key) return null;
    pos = key.pos;
    const field = Math.floor(key.v / 8);
    const wire = key.v & 7;
    if (wire === 0) {
      const v = readVarint(buf, pos, Math.min(end, buf.length));
      if (!v) return null;
      pos = v.pos;
      if (field === 1) f.kind = KIND_NAME[v.v] ?? "DATA";
      else if (field === 2) f.op = v.v;
      else if (field === 3) f.step = v.v;
      else if (field === 4) f.offset = v.v;
      else if (field === 6) f.total = v.v;
      else if (field === 7) f.rank = v.v;
    } else if (wire === 2) {
      const l = readVarint(buf, pos, Math.min(end, buf.length));
      if (!l) return null;
      if (field === 5) {
        if (l.pos + l.v !== end) throw new Error("data link: a frame's data must be its last field");
        return { frame: f, headLen: l.pos, dataLength: l.v };
      }
      if (l.pos + l.v > buf.length) return null;
      if (field === 8) f.error = Buffer.from(buf.subarray(l.pos, l.pos + l.v)).toString("utf8");
      pos = l.pos + l.v;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new Error(`data link: unsupported wire type ${wire}`);
  }
  if (pos > end) throw new Error("data link: malformed frame");
  return { frame: f, headLen: end, dataLength: 0 };
}
