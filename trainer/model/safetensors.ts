/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then the tensor bytes.
 * Reading goes tensor by tensor through a file handle (files may exceed a Buffer); F32, F16, BF16 and F64 are
 * converted to float32. Writing emits F32, F16 or BF16 with the header padded to 8 bytes, as Python's writer does.
 */
import { open, writeFile } from "node:fs/promises";

export type StDtype = "F32" | "F16" | "BF16" | "F64";
const BYTES: Record<StDtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };
const MAX_HEADER = 100 * 1024 * 1024;

export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

export interface TensorEntry {
  dtype: StDtype;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  entries: Map<string, TensorEntry>;
  metadata: Record<string, string>;
  /** Byte offset of the data section. */
  dataStart: number;
}

/** Validates a parsed header against the file size. Pure: `file` names the file in errors. */
export function parseHeader(json: unknown, headerLen: number, fileSize: number, file: string): SafetensorsHeader {
  if (json === null || typeof json !== "object" || Array.isArray(json))
    throw new SafetensorsError(`${file}: header is not a JSON object`);
  const dataStart = 8 + headerLen;
  const dataLen = fileSize - dataStart;
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = (v ?? {}) as Record<string, string>;
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!e || typeof e !== "object") throw new SafetensorsError(`${file}: tensor "${name}": entry is not an object`);
    if (typeof e.dtype !== "string" || !(e.dtype in BYTES)) {
      throw new SafetensorsError(
        `${file}: tensor "${name}": unsupported dtype ${JSON.stringify(e.dtype)} (supported: F32, F16, BF16, F64)`,
      );
    }
    const dtype = e.dtype as StDtype;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new SafetensorsError(`${file}: tensor "${name}": bad shape ${JSON.stringify(e.shape)}`);
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !off.every((x) => Number.isInteger(x) && x >= 0) ||
      off[0] > off[1]
    ) {
      throw new SafetensorsError(`${file}: tensor "${name}": bad data_offsets ${JSON.stringify(off)}`);
    }
    const shape = e.shape as number[];
    const want = shape.reduce((a, b) => a * b, 1) * BYTES[dtype];
    if (off[1] - off[0] !== want) {
      throw new SafetensorsError(
        `${file}: tensor "${name}": ${off[1] - off[0]} bytes for shape [${shape}] ${dtype} (want ${want})`,
      );
    }
    if (off[1] > dataLen) {
      throw new SafetensorsError(
        `${file}: truncated: tensor "${name}" ends at byte ${dataStart + off[1]} but the file has ${fileSize} bytes`,
      );
    }
    entries.set(name, { dtype, shape, begin: off[0], end: off[1] });
  }
  return { entries, metadata, dataStart };
}

export class SafetensorsReader {
  private constructor(
    readonly file: string,
    readonly header: SafetensorsHeader,
    private readonly fh: import("node:fs/promises").FileHandle,
  ) {}

  static async open(file: string): Promise<SafetensorsReader> {
    const fh = await open(file, "r").catch((e: Error) => {
      throw new SafetensorsError(`${file}: cannot open: ${e.message}`);
    });
    try {
      const size = (await fh.stat()).size;
      if (size < 8) throw new SafetensorsError(`${file}: truncated: ${size} bytes, not even the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      await fh.read(lenBuf, 0, 8, 0);
      const len = Number(lenBuf.readBigUInt64LE(0));
      if (len > MAX_HEADER)
        throw new SafetensorsError(`${file}: not a safetensors file (header length ${len} is implausible)`);
      if (8 + len > size)
        throw new SafetensorsError(`${file}: truncated: header of ${len} bytes but the file has ${size} bytes`);
      const hb = Buffer.alloc(len);
      await fh.read(hb, 0, len, 8);
      let json: unknown;
      try {
        json = JSON.parse(hb.toString("utf8"));
      } catch (e) {
        throw new SafetensorsError(`${file}: header is not valid JSON (${(e as Error).message})`);
      }
      return new SafetensorsReader(file, parseHeader(json, len, size, file), fh);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  names(): string[] {
    return [...this.header.entries.keys()];
  }

  /** Reads one tensor as float32 (converted from its stored dtype). */
  async readF32(name: string): Promise<{ data: Float32Array; shape: number[]; dtype: StDtype }> {
    const e = this.header.entries.get(name);
    if (!e) throw new SafetensorsError(`${this.file}: no tensor "${name}"`);
    const n = e.end - e.begin;
    const buf = Buffer.alloc(n);
    const { bytesRead } = await this.fh.read(buf, 0, n, this.header.dataStart + e.begin);
    if (bytesRead !== n) throw new SafetensorsError(`${this.file}: truncated while reading tensor "${name}"`);
    return { data: toF32(buf, e.dtype), shape: e.shape, dtype: e.dtype };
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Converts little-endian raw bytes of a dtype to float32. */
export function toF32(buf: Uint8Array, dtype: StDtype): Float32Array {
  const aligned = new Uint8Array(buf.byteLength);
  aligned.set(buf);
  switch (dtype) {
    case "F32":
      return new Float32Array(aligned.buffer);
    case "F64":
      return Float32Array.from(new Float64Array(aligned.buffer));
    case "BF16": {
      const u16 = new Uint16Array(aligned.buffer);
      const u32 = new Uint32Array(u16.length);
      for (let i = 0; i < u16.length; i++) u32[i] = u16[i]! << 16;
      return new Float32Array(u32.buffer);
    }
    case "F16": {
      const u16 = new Uint16Array(aligned.buffer);
      const out = new Float32Array(u16.length);
      for (let i = 0; i < u16.length; i++) out[i] = f16ToF32(u16[i]!);
      return out;
    }
  }
}

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even (NaN kept quiet). */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 → float16 bits, round to nearest even, with subnormals and overflow to infinity. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let hm = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && hm & 1)) hm++;
    return sign | hm;
  }
  let hm = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && hm & 1)) {
    hm++;
    if (hm === 0x400) {
      hm = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | hm;
}

function encode(data: Float32Array, dtype: Exclude<StDtype, "F64">): Uint8Array {
  if (dtype === "F32") return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint16Array(data.length);
  const conv = dtype === "BF16" ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < data.length; i++) out[i] = conv(data[i]!);
  return new Uint8Array(out.buffer);
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** The 8-byte length + JSON header (padded to 8 bytes) for tensors of these shapes, in this order. */
function headerBytes(
  tensors: { name: string; shape: number[] }[],
  dtype: Exclude<StDtype, "F64">,
  metadata: Record<string, string>,
): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * BYTES[dtype];
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const hb = Buffer.from(json, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.byteLength));
  return Buffer.concat([len, hb]);
}

/**
 * Writes a safetensors file one tensor at a time: the header from the shapes first, then each tensor's data as
 * `data(i)` produces it, so only one tensor is in memory (importers of large models use this).
 */
export async function writeSafetensorsStreaming(
  file: string,
  tensors: { name: string; shape: number[] }[],
  data: (index: number) => Float32Array | Promise<Float32Array>,
  dtype: Exclude<StDtype, "F64"> = "F32",
  metadata: Record<string, string> = { format: "pt" },
): Promise<void> {
  const fh = await open(file, "w");
  try {
    await fh.write(headerBytes(tensors, dtype, metadata));
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      const d = await data(i);
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (n !== d.length) throw new SafetensorsError(`tensor "${t.name}": ${d.length} values for shape [${t.shape}]`);
      await fh.write(encode(d, dtype));
    }
  } finally {
    await fh.close();
  }
}

/** Serialises tensors (in the given order) as one safetensors buffer. */
export function serialize(
  tensors: TensorToWrite[],
  dtype: Exclude<StDtype, "F64"> = "F32",
  metadata: Record<string, string> = { format: "pt" },
): Buffer {
  const chunks: Uint8Array[] = [];
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length)
      throw new SafetensorsError(`tensor "${t.name}": ${t.data.length} values for shape [${t.shape}]`);
    chunks.push(encode(t.data, dtype));
  }
  return Buffer.concat([headerBytes(tensors, dtype, metadata), ...chunks]);
}

export async function writeSafetensors(
  file: string,
  tensors: TensorToWrite[],
  dtype: Exclude<StDtype, "F64"> = "F32",
): Promise<void> {
  await writeFile(file, serialize(tensors, dtype));
}
