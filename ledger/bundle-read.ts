/**
 * Reads a provenance bundle file of either form (JSON document or JSONL, told apart by content, as
 * `verifyBundleFile` does) as a stream: its header fields, then each event in order. For the auditor's
 * documents (report, Annex XI, signing), which summarize a bundle that `verifyBundleFile` checks; nothing here
 * checks signatures. A JSON document laid out otherwise than `rft audit export` writes it is parsed whole.
 */
import { createReadStream, openSync, readFileSync, readSync, closeSync } from "node:fs";
import type { LedgerEvent } from "../proto/ledger-events.js";
import type { ProvenanceBundle } from "./bundle.js";
import { BUNDLE_JSONL_FORMAT } from "./bundle-file.js";
import { DocumentSplitter } from "./document-splitter.js";

export type BundleHead = Omit<ProvenanceBundle, "events" | "merkleRoot" | "treeHead">;

export class BundleReadError extends Error {}

function firstLine(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new BundleReadError(`cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const nl = buf.subarray(0, n).indexOf(10);
    return buf.subarray(0, nl < 0 ? n : nl).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

function isJsonlHeader(line: string): boolean {
  try {
    return (JSON.parse(line) as { format?: unknown }).format === BUNDLE_JSONL_FORMAT;
  } catch {
    return false;
  }
}

/**
 * Streams the bundle: `onHead` once (before any event), then `onEvent` for each event in file order; returns the
 * bundle's Merkle root (as the file states it; the verifier checks it against the events).
 */
export async function readBundleFile(
  path: string,
  onHead: (head: BundleHead) => void,
  onEvent: (ev: LedgerEvent) => void,
): Promise<{ merkleRoot: string | null }> {
  const first = firstLine(path);
  if (isJsonlHeader(first)) {
    const { events: _n, ...head } = JSON.parse(first) as BundleHead & { events: number };
    onHead(head);
    let lineNo = 0;
    let carry = "";
    let merkleRoot: string | null = null;
    const handle = (line: string) => {
      lineNo++;
      if (lineNo === 1 || line.trim() === "") return;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        throw new BundleReadError(`${path}:${lineNo}: not JSON`);
      }
      const trailer = v as { seq?: unknown; merkleRoot?: unknown };
      if (trailer.seq === undefined) {
        if (typeof trailer.merkleRoot === "string") merkleRoot = trailer.merkleRoot;
        return;
      }
      onEvent(v as LedgerEvent);
    };
    for await (const chunk of createReadStream(path, { encoding: "utf8", highWaterMark: 4 << 20 })) {
      const lines = (carry + (chunk as string)).split("\n");
      carry = lines.pop()!;
      for (const l of lines) handle(l);
    }
    if (carry) handle(carry);
    return { merkleRoot };
  }
  const split = new DocumentSplitter();
  let headed = false;
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) {
    const els = split.push(chunk as Buffer);
    if (split.irregular) break;
    if (!headed && split.header) {
      // Only a document whose fields come before its events (as exported) is streamed; any other is parsed whole.
      if (typeof split.header.job !== "string" || !("model" in split.header)) break;
      onHead(split.header as BundleHead);
      headed = true;
    }
    for (const el of els) onEvent(JSON.parse(el.toString("utf8")) as LedgerEvent);
  }
  const trailer = split.irregular || !headed ? null : split.end();
  if (trailer) return { merkleRoot: typeof trailer.merkleRoot === "string" ? trailer.merkleRoot : null };
  if (headed)
    throw new BundleReadError(`${path}: the document is malformed after its events began (${split.irregular})`);
  let whole: ProvenanceBundle;
  try {
    whole = JSON.parse(readFileSync(path, "utf8")) as ProvenanceBundle;
  } catch (e) {
    throw new BundleReadError(`${path} is not a provenance bundle (${(e as Error).message})`);
  }
  if (!Array.isArray(whole.events)) throw new BundleReadError(`${path}: no "events" array`);
  const { events, merkleRoot, treeHead: _t, ...head } = whole;
  onHead(head);
  for (const ev of events) onEvent(ev);
  return { merkleRoot: typeof merkleRoot === "string" ? merkleRoot : null };
}

/** The header fields only (the members before the events), without reading the events of a regular file. */
export async function readBundleHead(path: string): Promise<BundleHead> {
  const first = firstLine(path);
  if (isJsonlHeader(first)) {
    const { events: _n, ...head } = JSON.parse(first) as BundleHead & { events: number };
    return head;
  }
  const split = new DocumentSplitter();
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    split.push(chunk as Buffer);
    if (split.header) {
      if (typeof split.header.job === "string" && "model" in split.header) return split.header as BundleHead;
      break;
    }
    if (split.irregular) break;
  }
  let head: BundleHead | null = null;
  await readBundleFile(
    path,
    (h) => (head = h),
    () => {},
  );
  if (!head) throw new BundleReadError(`${path}: no bundle header`);
  return head;
}
