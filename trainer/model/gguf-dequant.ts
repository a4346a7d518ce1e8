/**
 * ggml tensor types and their dequantization to float32 (block layouts as in ggml's `ggml-common.h`).
 * Every product below is exact in float32 before its one rounding (fp16 scales × small integers), so the
 * results equal ggml's and gguf-py's float32 dequantization bit for bit.
 */
import { f16ToF32 } from "./safetensors.js";

export interface GgmlType {
  name: string;
  /** Elements per block. */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

/** The ggml type table (`enum ggml_type`), as far as GGUF files use it. */
export const GGML_TYPES: Record<number, GgmlType> = {
  0: { name: "F32", blockSize: 1, typeSize: 4 },
  1: { name: "F16", blockSize: 1, typeSize: 2 },
  2: { name: "Q4_0", blockSize: 32, typeSize: 18 },
  3: { name: "Q4_1", blockSize: 32, typeSize: 20 },
  6: { name: "Q5_0", blockSize: 32, typeSize: 22 },
  7: { name: "Q5_1", blockSize: 32, typeSize: 24 },
  8: { name: "Q8_0", blockSize: 32, typeSize: 34 },
  9: { name: "Q8_1", blockSize: 32, typeSize: 36 },
  10: { name: "Q2_K", blockSize: 256, typeSize: 84 },
  11: { name: "Q3_K", blockSize: 256, typeSize: 110 },
  12: { name: "Q4_K", blockSize: 256, typeSize: 144 },
  13: { name: "Q5_K", blockSize: 256, typeSize: 176 },
  14: { name: "Q6_K", blockSize: 256, typeSize: 210 },
  15: { name: "Q8_K", blockSize: 256, typeSize: 292 },
  16: { name: "IQ2_XXS", blockSize: 256, typeSize: 66 },
  17: { name: "IQ2_XS", blockSize: 256, typeSize: 74 },
  18: { name: "IQ3_XXS", blockSize: 256, typeSize: 98 },
  19: { name: "IQ1_S", blockSize: 256, typeSize: 50 },
  20: { name: "IQ4_NL", blockSize: 32, typeSize: 18 },
  21: { name: "IQ3_S", blockSize: 256, typeSize: 110 },
  22: { name: "IQ2_S", blockSize: 256, typeSize: 82 },
  23: { name: "IQ4_XS", blockSize: 256, typeSize: 136 },
  24: { name: "I8", blockSize: 1, typeSize: 1 },
  25: { name: "I16", blockSize: 1, typeSize: 2 },
  26: { name: "I32", blockSize: 1, typeSize: 4 },
  27: { name: "I64", blockSize: 1, typeSize: 8 },
  28: { name: "F64", blockSize: 1, typeSize: 8 },
  29: { name: "IQ1_M", blockSize: 256, typeSize: 56 },
  30: { name: "BF16", blockSize: 1, typeSize: 2 },
  34: { name: "TQ1_0", blockSize: 256, typeSize: 54 },
  35: { name: "TQ2_0", blockSize: 256, typeSize: 66 },
  39: { name: "MXFP4", blockSize: 32, typeSize: 17 },
};

export function ggmlTypeName(type: number): string {
  return GGML_TYPES[type]?.name ?? `unknown type ${type}`;
}

type Dequant = (src: Uint8Array, out: Float32Array) => void;

const f16 = (b: Uint8Array, o: number): number => f16ToF32(b[o]! | (b[o + 1]! << 8));
const s8 = (v: number): number => (v << 24) >> 24;

function dqF32(src: Uint8Array, out: Float32Array): void {
  new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(src.subarray(0, out.length * 4));
}

function dqF16(src: Uint8Array, out: Float32Array): void {
  for (let i = 0; i < out.length; i++) out[i] = f16(src, 2 * i);
}

function dqBF16(src: Uint8Array, out: Float32Array): void {
  const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < out.length; i++) u[i] = ((src[2 * i]! | (src[2 * i + 1]! << 8)) << 16) >>> 0;
}

/** Q8_0: 32 × int8, one fp16 scale d: x = d·q. */
function dqQ8_0(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 34, o += 32) {
    const d = f16(src, b);
    for (let j = 0; j < 32; j++) out[o + j] = d * s8(src[b + 2 + j]!);
  }
}

/** Q4_0: fp16 d, 16 bytes of nibbles (low nibbles = elements 0..15, high = 16..31): x = d·(q − 8). */
function dqQ4_0(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 18, o += 32) {
    const d = f16(src, b);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 2 + j]!;
      out[o + j] = d * ((q & 15) - 8);
      out[o + j + 16] = d * ((q >> 4) - 8);
    }
  }
}

/** Q4_1: fp16 d, fp16 m, 16 bytes of nibbles: x = d·q + m. */
function dqQ4_1(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 20, o += 32) {
    const d = f16(src, b);
    const m = f16(src, b + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[b + 4 + j]!;
      out[o + j] = d * (q & 15) + m;
      out[o + j + 16] = d * (q >> 4) + m;
    }
  }
}

/** Q4_K: 256 elements = 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes; fp16 d and dmin. */
function dqQ4_K(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 144, o += 256) {
    const d = f16(src, b);
    const dmin = f16(src, b + 2);
    const sc = b + 4;
    const qs = b + 16;
    for (let j = 0; j < 8; j++) {
      let s: number;
      let m: number;
      if (j < 4) {
        s = src[sc + j]! & 63;
        m = src[sc + j + 4]! & 63;
      } else {
        s = (src[sc + j + 4]! & 15) | ((src[sc + j - 4]! >> 6) << 4);
        m = (src[sc + j + 4]! >> 4) | ((src[sc + j]! >> 6) << 4);
      }
      const d1 = Math.fround(d * s);
      const m1 = Math.fround(dmin * m);
      // Sub-blocks 2k and 2k+1 share 32 bytes: low nibbles, then high nibbles.
      const q = qs + (j >> 1) * 32;
      const shift = (j & 1) * 4;
      const base = o + j * 32;
      for (let l = 0; l < 32; l++) out[base + l] = d1 * ((src[q + l]! >> shift) & 15) - m1;
    }
  }
}

/** Q6_K: 256 elements: 4-bit low parts (128 bytes), 2-bit high parts (64 bytes), 16 int8 scales, fp16 d. */
function dqQ6_K(src: Uint8Array, out: Float32Array): void {
  for (let b = 0, o = 0; o < out.length; b += 210, o += 256) {
    const d = f16(src, b + 208);
    for (let half = 0; half < 2; half++) {
      const ql = b + half * 64;
      const qh = b + 128 + half * 32;
      const sc = b + 192 + half * 8;
      const y = o + half * 128;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = src[qh + l]!;
        const q1 = ((src[ql + l]! & 15) | ((h & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32]! & 15) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        out[y + l] = Math.fround(d * s8(src[sc + is]!)) * q1;
        out[y + l + 32] = Math.fround(d * s8(src[sc + is + 2]!)) * q2;
        out[y + l + 64] = Math.fround(d * s8(src[sc + is + 4]!)) * q3;
        out[y + l + 96] = Math.fround(d * s8(src[sc + is + 6]!)) * q4;
      }
    }
  }
}

const DEQUANT: Record<string, Dequant> = {
  F32: dqF32,
  F16: dqF16,
  BF16: dqBF16,
  Q8_0: dqQ8_0,
  Q4_0: dqQ4_0,
  Q4_1: dqQ4_1,
  Q4_K: dqQ4_K,
  Q6_K: dqQ6_K,
};

export const SUPPORTED_TYPES = Object.keys(DEQUANT);

export function canDequantize(type: number): boolean {
  return GGML_TYPES[type]?.name !== undefined && DEQUANT[GGML_TYPES[type]!.name] !== undefined;
}

/** Bytes that `count` elements of `type` occupy (count must be a whole number of blocks). */
export function byteSize(type: number, count: number): number {
  const t = GGML_TYPES[type]!;
  return (count / t.blockSize) * t.typeSize;
}

/** Dequantizes raw little-endian tensor bytes of a supported type to `count` float32 values. */
export function dequantize(type: number, src: Uint8Array, count: number): Float32Array {
  const name = ggmlTypeName(type);
  const fn = DEQUANT[name];
  if (!fn) throw new Error(`cannot dequantize ${name} (supported: ${SUPPORTED_TYPES.join(", ")})`);
  const out = new Float32Array(count);
  fn(src, out);
  return out;
}
