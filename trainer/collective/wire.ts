/**
 * The collective's gRPC service (proto/collective.proto) with a hand-written codec for `Frame`, the hot path:
 * protobufjs would decode `data` fine, but encodes through a generic writer; this encoder writes the same
 * proto3 wire format (field numbers and types of collective.proto, default values omitted) with one copy of
 * the payload, and the decoder returns `data` as a view of the received buffer (no copy).
 * test/collective/wire.test.ts checks both directions against protobufjs on collective.proto.
 * Hello uses proto-loader's ordinary (de)serializers.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType } from "../../proto/gen/collective.js";
import type { CollectiveDefinition } from "../../proto/gen/rft/collective/v1/Collective.js";
import { protoPath } from "../../proto/paths.js";

export type FrameKind = "DATA" | "ABORT";
const KIND_NUM: Record<FrameKind, number> = { DATA: 0, ABORT: 1 };
const KIND_NAME: FrameKind[] = ["DATA", "ABORT"];

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

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

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

/** proto3 encoding of a Frame (fields with default values omitted, as protobufjs does). */
export function encodeFrame(f: Partial<Frame>): Buffer {
  const kind = KIND_NUM[f.kind ?? "DATA"];
  const data = f.data ?? EMPTY;
  const err = f.error ? Buffer.from(f.error, "utf8") : null;
  const ints: [number, number][] = [
    [1, kind],
    [2, f.op ?? 0],
    [3, f.step ?? 0],
    [4, f.offset ?? 0],
  ];
  const tail: [number, number][] = [
    [6, f.total ?? 0],
    [7, f.rank ?? 0],
  ];
  let size = 0;
  for (const [, v] of [...ints, ...tail]) if (v !== 0) size += 1 + varintSize(v);
  if (data.length > 0) size += 1 + varintSize(data.length) + data.length;
  if (err) size += 1 + varintSize(err.length) + err.length;
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  for (const [field, v] of ints) {
    if (v === 0) continue;
    buf[pos++] = field << 3;
    pos = writeVarint(buf, pos, v);
  }
  if (data.length > 0) {
    buf[pos++] = (5 << 3) | 2;
    pos = writeVarint(buf, pos, data.length);
    buf.set(data, pos);
    pos += data.length;
  }
  for (const [field, v] of tail) {
    if (v === 0) continue;
    buf[pos++] = field << 3;
    pos = writeVarint(buf, pos, v);
  }
  if (err) {
    buf[pos++] = (8 << 3) | 2;
    pos = writeVarint(buf, pos, err.length);
    err.copy(buf, pos);
  }
  return buf;
}

/** Decodes a Frame; `data` is a view of `buf`. Unknown fields are skipped (forward compatibility). */
export function decodeFrame(buf: Uint8Array): Frame {
  const f: Frame = { kind: "DATA", op: 0, step: 0, offset: 0, data: EMPTY, total: 0, rank: 0, error: "" };
  let pos = 0;
  const varint = (): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (pos >= buf.length) throw new Error("truncated collective frame");
      const b = buf[pos++]!;
      v += (b & 127) * mul;
      if (b < 128) return v;
      mul *= 128;
    }
  };
  while (pos < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      const v = varint();
      if (field === 1) f.kind = KIND_NAME[v] ?? "DATA";
      else if (field === 2) f.op = v;
      else if (field === 3) f.step = v;
      else if (field === 4) f.offset = v;
      else if (field === 6) f.total = v;
      else if (field === 7) f.rank = v;
    } else if (wire === 2) {
      const len = varint();
      if (pos + len > buf.length) throw new Error("truncated collective frame");
      const bytes = buf.subarray(pos, pos + len);
      pos += len;
      if (field === 5) f.data = bytes;
      else if (field === 8) f.error = Buffer.from(bytes).toString("utf8");
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new Error(`collective frame: unsupported wire type ${wire}`);
  }
  return f;
}

/** The service definition with the fast Frame codec on Link's response stream. */
export function collectiveService(): CollectiveDefinition {
  const proto = loadCollectiveProto();
  const base = proto.rft.collective.v1.Collective.service;
  return {
    ...base,
    Link: {
      ...base.Link,
      responseSerialize: (f: Partial<Frame>) => encodeFrame(f),
      responseDeserialize: (b: Buffer) => decodeFrame(b),
    },
  } as unknown as CollectiveDefinition;
}

/**
 * Channel options for ring links: no message size limit, a large flow-control window (the receiving client's
 * HTTP/2 window; the default 64 KiB caps a loopback link at a few hundred MB/s), keepalive pings.
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": -1,
  "grpc.max_send_message_length": -1,
  "grpc-node.flow_control_window": 64 * 1024 * 1024,
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_time_between_pings_ms": 5_000,
  "grpc.http2.max_pings_without_data": 0,
  // Rendezvous retries: a peer that starts late is found within a second, not after a long backoff.
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 1_000,
  // Every rank dials its own peers: never share a channel with another Collective in the same process.
  "grpc.use_local_subchannel_pool": 1,
};
