/**
 * GGUF reader (llama.cpp's model file format, versions 2 and 3): header, metadata key/values of every value
 * type (arrays included), tensor infos, alignment and the data offset. Metadata is read through a small
 * window over the file, tensors one at a time through the file handle; every length and offset is checked
 * against the file size, so a damaged file says what is wrong instead of reading garbage.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { byteSize, canDequantize, dequantize, GGML_TYPES, ggmlTypeName, SUPPORTED_TYPES } from "./gguf-dequant.js";

export class GgufError extends Error {
  override name = "GgufError";
}

/** GGUF metadata value: integers as numbers (64-bit ones beyond 2^53 as bigint), arrays as JS arrays. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT = 32;
const MAX_DIMS = 4;

/** GGUF value types (`enum gguf_type`). */
const VT = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
const FIXED_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

export interface GgufTensorInfo {
  name: string;
  /** ggml dims, innermost first (ne0, ne1, …). */
  dims: number[];
  /** The row-major (numpy / torch / safetensors) shape: dims reversed. */
  shape: number[];
  type: number;
  typeName: string;
  /** Offset from the start of the tensor data section. */
  offset: number;
  elements: number;
  bytes: number;
}

/** A buffered little-endian cursor over a file descriptor; reading past the end is a "truncated" error. */
class Cursor {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  pos = 0;
  /** What is being read, for the truncation message. */
  what = "header";

  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly file: string,
  ) {}

  private need(n: number): number {
    if (this.pos + n > this.size) {
      throw new GgufError(
        `${this.file}: truncated: ${this.what} runs past the end of the file (byte ${this.pos + n} of ${this.size})`,
      );
    }
    const rel = this.pos - this.bufStart;
    if (rel >= 0 && rel + n <= this.buf.length) return rel;
    const len = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
    this.buf = Buffer.alloc(len);
    readSync(this.fd, this.buf, 0, len, this.pos);
    this.bufStart = this.pos;
    return 0;
  }

  u8(): number {
    const o = this.need(1);
    this.pos += 1;
    return this.buf[o]!;
  }
  u32(): number {
    const o = this.need(4);
    this.pos += 4;
    return this.buf.readUInt32LE(o);
  }
  /** A u64 as a number; one past 2^53 (no real length or count is) is reported as implausible. */
  u64(field: string): number {
    const o = this.need(8);
    this.pos += 8;
    const v = this.buf.readBigUInt64LE(o);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufError(`${this.file}: ${field} ${v} is implausible`);
    return Number(v);
  }
  string(): string {
    const n = this.u64(`${this.what}: string length`);
    const o = this.need(n);
    this.pos += n;
    return this.buf.toString("utf8", o, o + n);
  }

  scalar(type: number): GgufValue {
    const n = FIXED_SIZE[type]!;
    const o = this.need(n);
    this.pos += n;
    const b = this.buf;
    switch (type) {
      case VT.UINT8:
        return b.readUInt8(o);
      case VT.INT8:
        return b.readInt8(o);
      case VT.UINT16:
        return b.readUInt16LE(o);
      case VT.INT16:
        return b.readInt16LE(o);
      case VT.UINT32:
        return b.readUInt32LE(o);
      case VT.INT32:
        return b.readInt32LE(o);
      case VT.FLOAT32:
        return b.readFloatLE(o);
      case VT.BOOL:
        return b.readUInt8(o) !== 0;
      case VT.UINT64: {
        const v = b.readBigUInt64LE(o);
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case VT.INT64: {
        const v = b.readBigInt64LE(o);
        return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
      }
      default:
        return b.readDoubleLE(o);
    }
  }

  value(type: number, key: string): GgufValue {
    if (type === VT.STRING) return this.string();
    if (type === VT.ARRAY) {
      const itemType = this.u32();
      const count = this.u64(`metadata "${key}": array length`);
      if (itemType === VT.ARRAY || itemType === VT.STRING) {
        // each element takes at least 8 bytes (a length): a count beyond that cannot fit in the file
        if (this.pos + count * 8 > this.size) this.need(count * 8);
      } else if (FIXED_SIZE[itemType] === undefined) {
        throw new GgufError(`${this.file}: metadata "${key}": unknown array element type ${itemType}`);
      } else if (this.pos + count * FIXED_SIZE[itemType]! > this.size) this.need(count * FIXED_SIZE[itemType]!);
      const out: GgufValue[] = new Array(count);
      for (let i = 0; i < count; i++) out[i] = this.value(itemType, key);
      return out;
    }
    if (FIXED_SIZE[type] === undefined)
      throw new GgufError(`${this.file}: metadata "${key}": unknown value type ${type}`);
    return this.scalar(type);
  }
}

export class GgufFile {
  private constructor(
    readonly file: string,
    readonly version: number,
    readonly metadata: Map<string, GgufValue>,
    readonly tensors: Map<string, GgufTensorInfo>,
    readonly alignment: number,
    /** Absolute file offset where the tensor data section starts. */
    readonly dataOffset: number,
    readonly fileSize: number,
    private fd: number | null,
  ) {}

  /** Opens and parses header, metadata and tensor infos; tensor data is read on demand. */
  static open(file: string): GgufFile {
    let fd: number;
    try {
      fd = openSync(file, "r");
    } catch (e) {
      throw new GgufError(`${file}: cannot open: ${(e as Error).message}`);
    }
    try {
      const size = fstatSync(fd).size;
      const c = new Cursor(fd, size, file);
      if (size < 4) throw new GgufError(`${file}: not a GGUF file (${size} bytes, no magic)`);
      const magic = c.u32();
      if (magic !== GGUF_MAGIC) {
        const shown = Buffer.alloc(4);
        shown.writeUInt32LE(magic);
        throw new GgufError(
          `${file}: not a GGUF file (bad magic ${JSON.stringify(shown.toString("latin1"))}, want "GGUF")`,
        );
      }
      const version = c.u32();
      const swapped =
        (((version & 0xff) << 24) | ((version & 0xff00) << 8) | ((version >>> 8) & 0xff00) | (version >>> 24)) >>> 0;
      if (swapped === 2 || swapped === 3) {
        throw new GgufError(`${file}: big-endian GGUF (version ${swapped}) is not supported (little-endian only)`);
      }
      if (version !== 2 && version !== 3) {
        throw new GgufError(`${file}: unsupported GGUF version ${version} (supported: 2, 3)`);
      }
      const nTensors = c.u64("tensor count");
      const nKv = c.u64("metadata count");
      const metadata = new Map<string, GgufValue>();
      for (let i = 0; i < nKv; i++) {
        c.what = `metadata entry ${i + 1} of ${nKv}`;
        const key = c.string();
        c.what = `metadata "${key}"`;
        const type = c.u32();
        metadata.set(key, c.value(type, key));
      }
      const alignment = metadata.get("general.alignment") ?? DEFAULT_ALIGNMENT;
      if (typeof alignment !== "number" || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
        throw new GgufError(`${file}: general.alignment must be a power of two, got ${String(alignment)}`);
      }
      const infos: Omit<GgufTensorInfo, "typeName" | "elements" | "bytes" | "shape">[] = [];
      for (let i = 0; i < nTensors; i++) {
        c.what = `tensor info ${i + 1} of ${nTensors}`;
        const name = c.string();
        c.what = `tensor info "${name}"`;
        const nDims = c.u32();
        if (nDims < 1 || nDims > MAX_DIMS)
          throw new GgufError(`${file}: tensor "${name}" has ${nDims} dimensions (1..${MAX_DIMS} allowed)`);
        const dims: number[] = [];
        for (let d = 0; d < nDims; d++) dims.push(c.u64(`tensor "${name}" dimension`));
        const type = c.u32();
        const offset = c.u64(`tensor "${name}" offset`);
        infos.push({ name, dims, type, offset });
      }
      const dataOffset = Math.ceil(c.pos / alignment) * alignment;
      const tensors = new Map<string, GgufTensorInfo>();
      for (const t of infos) {
        const tt = GGML_TYPES[t.type];
        const typeName = ggmlTypeName(t.type);
        const elements = t.dims.reduce((a, b) => a * b, 1);
        if (tensors.has(t.name)) throw new GgufError(`${file}: tensor "${t.name}" is listed twice`);
        if (t.offset % alignment !== 0)
          throw new GgufError(`${file}: tensor "${t.name}" offset ${t.offset} is not a multiple of ${alignment}`);
        let bytes = 0;
        if (tt) {
          if (t.dims[0]! % tt.blockSize !== 0) {
            throw new GgufError(
              `${file}: tensor "${t.name}" (${typeName}) has a row of ${t.dims[0]} elements, not a multiple of the block size ${tt.blockSize}`,
            );
          }
          bytes = byteSize(t.type, elements);
          if (dataOffset + t.offset + bytes > size) {
            throw new GgufError(
              `${file}: truncated: tensor "${t.name}" data ends at byte ${dataOffset + t.offset + bytes}, past the end of the file (${size} bytes)`,
            );
          }
        }
        tensors.set(t.name, { ...t, shape: [...t.dims].reverse(), typeName, elements, bytes });
      }
      return new GgufFile(file, version, metadata, tensors, alignment, dataOffset, size, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** The raw bytes of one tensor. */
  tensorBytes(name: string): Uint8Array {
    const t = this.tensors.get(name);
    if (!t) throw new GgufError(`${this.file}: no tensor "${name}"`);
    if (this.fd === null) throw new GgufError(`${this.file}: closed`);
    if (!GGML_TYPES[t.type]) throw new GgufError(`${this.file}: tensor "${name}" has unknown ggml type ${t.type}`);
    const buf = Buffer.alloc(t.bytes);
    let got = 0;
    while (got < t.bytes) {
      const n = readSync(this.fd, buf, got, t.bytes - got, this.dataOffset + t.offset + got);
      if (n === 0) throw new GgufError(`${this.file}: truncated while reading tensor "${name}"`);
      got += n;
    }
    return buf;
  }

  /** One tensor dequantized to float32, in row-major order of `shape`. */
  readF32(name: string): { data: Float32Array; shape: number[]; typeName: string } {
    const t = this.tensors.get(name);
    if (!t) throw new GgufError(`${this.file}: no tensor "${name}"`);
    if (!canDequantize(t.type)) {
      throw new GgufError(
        `${this.file}: tensor "${name}" has type ${t.typeName}, which is not supported (supported: ${SUPPORTED_TYPES.join(", ")})`,
      );
    }
    return { data: dequantize(t.type, this.tensorBytes(name), t.elements), shape: t.shape, typeName: t.typeName };
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
