/**
 * Provenance bundles as files: the JSON document (`rft-provenance-bundle/1`, one object) and the JSONL form
 * (`rft-provenance-bundle-jsonl/1`), written by `rft audit export` and read by `rft audit verify`, which tells
 * them apart by content. Format: ledger/README.md ("Provenance bundle").
 *
 * JSONL: line 1 the header (the bundle without events, merkleRoot and treeHead, plus the event count); then one
 * line per event, in seq order, each the event's exact canonical JSON (the bytes its hash covers); last, the
 * trailer `{"merkleRoot":…,"treeHead":…}`.
 *
 * Both forms are written in pieces and verified as streams: each event (a line, or an element of the document's
 * events array found by DocumentSplitter) is decoded here, hashed and signature-checked on the verify pool, and
 * handed in order to bundleVerifier, which keeps only the replay's state.
 */
import { closeSync, openSync, readFileSync, readSync } from "node:fs";
import type { SignedTreeHead } from "../proto/ledger-events.js";
import { BUNDLE_FORMAT, type ProvenanceBundle } from "./bundle.js";
import { decodeEventBytes, encodeEvent } from "./chain.js";
import { DocumentSplitter } from "./document-splitter.js";
import {
  type BundleFields,
  type Failure,
  type VerifyOptions,
  type VerifyReport,
  preparedVerifier,
  verifyBundleAsync,
} from "./verify.js";

export const BUNDLE_JSONL_FORMAT = "rft-provenance-bundle-jsonl/1";

/** A bundle file that cannot be read as either form (missing, not JSON). */
export class BundleFileError extends Error {}

export type BundleHeader = Omit<ProvenanceBundle, "format" | "events" | "merkleRoot" | "treeHead"> & {
  format: typeof BUNDLE_JSONL_FORMAT;
  /** Number of event lines that follow. */
  events: number;
};

/**
 * The JSON document form, in pieces to write one after the other (no single string of the whole bundle, so no
 * size cap): JSON.stringify of the bundle, except that each event is written as its canonical JSON (a verifier
 * parsing the document gets events whose keys are already in canonical order), with the members laid out as
 * DocumentSplitter streams them: everything else, then events, merkleRoot, treeHead.
 */
export function* bundleJsonParts(bundle: ProvenanceBundle): Generator<string | Buffer> {
  const { events, merkleRoot, treeHead, ...rest } = bundle;
  const head = JSON.stringify(rest);
  yield `${head.slice(0, -1)}${head === "{}" ? "" : ","}"events":[`;
  let first = true;
  for (const ev of events) {
    if (!first) yield ",";
    first = false;
    yield encodeEvent(ev).bytes;
  }
  yield `],"merkleRoot":${JSON.stringify(merkleRoot)},"treeHead":${JSON.stringify(treeHead)}}`;
}

/** The JSON document form as one string (small bundles; bundleJsonParts for any size). */
export function bundleJsonText(bundle: ProvenanceBundle): string {
  return [...bundleJsonParts(bundle)].map((p) => p.toString()).join("");
}

/** The JSONL form, as a sequence of lines (each ends with "\n"); events are their canonical bytes. */
export function* bundleJsonlLines(bundle: ProvenanceBundle): Generator<string | Buffer> {
  const { events, merkleRoot, treeHead, format: _format, ...rest } = bundle;
  const header: BundleHeader = { format: BUNDLE_JSONL_FORMAT, ...rest, events: events.length };
  yield `${JSON.stringify(header)}\n`;
  const nl = Buffer.from("\n");
  for (const ev of events) yield Buffer.concat([encodeEvent(ev).bytes, nl]);
  yield `${JSON.stringify({ merkleRoot, treeHead })}\n`;
}

/** Writes lines to a stream (stdout, a file), waiting for 'drain' when it buffers. */
export async function writeLines(
  out: NodeJS.WritableStream,
  lines: Iterable<string | Buffer>,
  chunkBytes = 1 << 20,
): Promise<void> {
  let buf: (string | Buffer)[] = [];
  let size = 0;
  const flush = async () => {
    if (buf.length === 0) return;
    const data = Buffer.concat(buf.map((b) => (typeof b === "string" ? Buffer.from(b, "utf8") : b)));
    buf = [];
    size = 0;
    if (out.write(data)) return;
    // Wait for the buffer to drain, or for the stream to go away (a client that hung up).
    await new Promise<void>((r) => {
      const done = () => {
        out.off("drain", done);
        out.off("close", done);
        r();
      };
      out.once("drain", done);
      out.once("close", done);
    });
    if ((out as { destroyed?: boolean }).destroyed) throw new Error("the output stream closed while writing");
  };
  for (const l of lines) {
    buf.push(l);
    size += l.length;
    if (size >= chunkBytes) await flush();
  }
  await flush();
}

const CHUNK = 16 << 20;
const JSONL_PREFIX = /^\s*\{/;

/**
 * Verifies a bundle file of either form (detected by content: a first line that is a JSONL header means JSONL,
 * anything else is read as one JSON document). Everything a user waits for is in here: reading, parsing,
 * and every check.
 */
export async function verifyBundleFile(path: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new BundleFileError(`cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const first = Buffer.allocUnsafe(CHUNK);
    const n = readSync(fd, first, 0, CHUNK, null);
    const chunk = first.subarray(0, n);
    const nl = chunk.indexOf(10);
    if (nl > 0 && JSONL_PREFIX.test(chunk.subarray(0, 64).toString("latin1"))) {
      let header: unknown;
      try {
        header = JSON.parse(chunk.subarray(0, nl).toString("utf8"));
      } catch {
        header = undefined;
      }
      if ((header as { format?: unknown } | undefined)?.format === BUNDLE_JSONL_FORMAT) {
        return await verifyJsonl(fd, header as BundleHeader, chunk.subarray(nl + 1), opts);
      }
    }
    // A JSON document: streamed like JSONL where its layout allows (DocumentSplitter), else parsed whole.
    const streamed = await verifyDocument(fd, chunk, opts);
    if ("report" in streamed) return streamed.report;
    closeSync(fd);
    fd = -1;
    let bundle: ProvenanceBundle;
    try {
      bundle = JSON.parse(readFileSync(path, "utf8")) as ProvenanceBundle;
    } catch (e) {
      const msg = (e as Error).message;
      if (/Cannot create a string longer|string longer than/i.test(msg))
        throw new BundleFileError(
          `${path} is too large to parse whole, and cannot be streamed (${streamed.irregular}): re-export it with \`rft audit export\` (either format)`,
        );
      throw new BundleFileError(`${path} is not JSON (${msg})`);
    }
    return await verifyBundleAsync(bundle, opts);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/**
 * Reads the rest of a file line by line (`rest`: bytes already read past the header), awaiting `onLine` where
 * it returns a promise (the verify pool's back-pressure); the last line may lack its newline.
 */
async function readLines(fd: number, rest: Buffer, onLine: (line: Buffer) => Promise<void> | undefined) {
  let carry = rest;
  for (;;) {
    let start = 0;
    for (;;) {
      const nl = carry.indexOf(10, start);
      if (nl < 0) break;
      const wait = onLine(carry.subarray(start, nl));
      if (wait) await wait;
      start = nl + 1;
    }
    const chunk = Buffer.allocUnsafe(CHUNK);
    const n = readSync(fd, chunk, 0, CHUNK, null);
    if (n === 0) {
      if (start < carry.length) await onLine(carry.subarray(start));
      return;
    }
    carry = start < carry.length ? Buffer.concat([carry.subarray(start), chunk.subarray(0, n)]) : chunk.subarray(0, n);
  }
}

/** The JSONL form's end checks: its trailer line is there, and the header announced as many events as it holds. */
function endFailures(hasTrailer: boolean, announced: unknown, events: number): Failure[] {
  const out: Failure[] = [];
  if (!hasTrailer)
    out.push({
      check: "bundle",
      seq: null,
      field: "trailer",
      reason: "the bundle ends without its trailer line (merkleRoot, treeHead): cut short?",
    });
  if (announced !== events)
    out.push({
      check: "bundle",
      seq: null,
      field: "events",
      reason: `the header announces ${String(announced)} events, the file holds ${events} event lines`,
    });
  return out;
}

/**
 * The JSONL form: each event line is decoded here, hashed and signature-checked on the verify pool, and handed in
 * order to the streaming verifier (bundleVerifier), which keeps only the replay's state: memory stays bounded
 * whatever the bundle's length.
 */
async function verifyJsonl(fd: number, header: BundleHeader, rest: Buffer, opts: VerifyOptions): Promise<VerifyReport> {
  const { format: _f, events: announced, ...fields } = header;
  const { verifier, prep } = preparedVerifier({ ...fields, format: BUNDLE_FORMAT } as BundleFields, opts);
  let events = 0;
  const lineFailures: Failure[] = [];
  let trailer: { merkleRoot?: unknown; treeHead?: unknown } | null = null;
  let trailerLine = 0;
  let lineNo = 1; // the header

  const onLine = (line: Buffer): Promise<void> | undefined => {
    lineNo++;
    if (line.length === 0 || (line.length === 1 && line[0] === 13)) return undefined;
    if (trailer) {
      lineFailures.push({
        check: "bundle",
        seq: null,
        field: `line ${trailerLine}`,
        reason: `the trailer (merkleRoot, treeHead) is followed by more lines (line ${lineNo})`,
      });
      trailer = null;
    }
    const d = decodeEventBytes(line);
    if (!d.ok && d.code === "malformed") {
      lineFailures.push({ check: "bundle", seq: null, field: `line ${lineNo}`, reason: "not JSON" });
      return undefined;
    }
    if (!d.ok && isTrailer(d.value)) {
      trailer = d.value as typeof trailer;
      trailerLine = lineNo;
      return undefined;
    }
    events++;
    return prep.addDecoded(d);
  };

  await readLines(fd, rest, onLine);
  await prep.finish();

  const t = trailer as { merkleRoot?: unknown; treeHead?: unknown } | null;
  lineFailures.push(...endFailures(t !== null, announced, events));
  const report = verifier.finish(t?.merkleRoot, t?.treeHead);
  if (lineFailures.length > 0) {
    report.failures.unshift(...lineFailures);
    report.ok = false;
  }
  if (prep.nonCanonical > 0) {
    report.notes.push(
      `${prep.nonCanonical} event lines are not in canonical form (RFC 8785); they were verified over their canonical form`,
    );
  }
  return report;
}

/**
 * A JSON document, streamed: DocumentSplitter hands over the events array's elements as the file is read, and
 * each goes the JSONL way (decoded here, hashed and signature-checked on the pool, verified in order). When the
 * document is not laid out for streaming or not valid JSON, says why: the caller then parses it whole, which gives
 * the same report (or the precise JSON error).
 */
async function verifyDocument(
  fd: number,
  first: Buffer,
  opts: VerifyOptions,
): Promise<{ report: VerifyReport } | { irregular: string }> {
  const split = new DocumentSplitter();
  // Started once the members before "events" are known.
  let v: ReturnType<typeof preparedVerifier> | null = null;
  let chunk = first;
  while (chunk.length > 0 && !split.irregular) {
    const elements = split.push(chunk);
    if (split.header && !v) v = preparedVerifier(split.header as BundleFields, opts);
    for (const el of elements) {
      const d = decodeEventBytes(el);
      if (!d.ok && d.code === "malformed") {
        split.irregular = "an element of the events array is not JSON";
        break;
      }
      const wait = v!.prep.addDecoded(d);
      if (wait) await wait;
    }
    const next = Buffer.allocUnsafe(CHUNK);
    chunk = next.subarray(0, readSync(fd, next, 0, CHUNK, null));
  }
  await v?.prep.finish();
  const trailer = split.end();
  if (!trailer || !v) return { irregular: split.irregular ?? "not streamable" };
  return { report: v.verifier.finish(trailer.merkleRoot, trailer.treeHead) };
}

function isTrailer(v: unknown): boolean {
  return typeof v === "object" && v !== null && "treeHead" in v && !("seq" in v);
}

export type { SignedTreeHead };
