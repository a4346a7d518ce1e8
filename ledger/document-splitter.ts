/**
 * Splits a provenance bundle written as one JSON document into its events as the bytes arrive, so that
 * `rft audit verify` streams a JSON document the way it streams JSONL: no 457 MB string, no whole-document
 * JSON.parse before the first signature check, and no V8 string-length cap on the document.
 *
 * It is a byte scanner, not a parser: it tracks strings (and their escapes) and nesting, finds the top-level
 * `"events"` array and hands back each element's bytes; JSON.parse of each element (decodeEventBytes) and of
 * everything else (`end`) does the validating. It needs the fields the verifier reads first (format, job, keys,
 * model, manifest, …) to come before `"events"`, as `rft audit export` writes them. Any other layout (events
 * first, a key spelled with escapes, `"events"` twice, fields after the array other than merkleRoot and
 * treeHead, text after the document, a malformed array) makes it `irregular`, and the caller parses the
 * document whole instead: the result is then the same, only slower.
 *
 * Pure (no I/O): push chunks, collect elements, call `end`.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_OBJ = 0x7b;
const CLOSE_OBJ = 0x7d;
const OPEN_ARR = 0x5b;
const CLOSE_ARR = 0x5d;
const isSpace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;

/** The members a document may hold after its events array: the trailer. */
const TRAILER_KEYS = new Set(["events", "merkleRoot", "treeHead"]);

/** One push's position in its chunk: the elements it completed, where the kept bytes and the open element start. */
interface Scan {
  chunk: Buffer;
  out: Buffer[];
  /** Where the bytes outside the events array start in this chunk (-1: none so far). */
  restFrom: number;
  /** Where the open element starts in this chunk (-1: none). */
  elementFrom: number;
}

export class DocumentSplitter {
  /** The document's members before `"events"` (parsed), once the events array opens; null before. */
  header: Record<string, unknown> | null = null;
  /** Why this document cannot be streamed (the caller parses it whole); null while it can. */
  irregular: string | null = null;

  private depth = 0;
  private inString = false;
  private escaped = false;
  /** At depth 1: the next string is a member name. */
  private expectKey = false;
  /** The member name being read at depth 1 (null: not in one). */
  private key: string | null = null;
  private lastKey = "";
  private awaitingEvents = false;
  private sawEvents = false;
  /** Inside the events array (depth ≥ 2 below it). */
  private inEvents = false;
  /** Inside one element of the array: its bytes from earlier chunks, and where it starts in this one. */
  private inElement = false;
  private elementParts: Buffer[] = [];
  /** The last thing at the array's level was a comma (an element must follow). */
  private sawElementComma = false;
  private closed = false;
  /** The document without the array's elements. */
  private rest: Buffer[] = [];

  /** Feeds the next bytes; returns the elements of the events array that they complete, in order. */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (this.irregular) return out;
    const scan: Scan = { chunk, out, restFrom: this.inEvents ? -1 : 0, elementFrom: this.inElement ? 0 : -1 };
    const n = chunk.length;
    for (let i = 0; i < n; i++) {
      if (this.inEvents && this.depth > 2 && !this.inString) {
        // Inside an element (most of the document): only strings and brackets matter.
        i = this.skipInside(chunk, i) - 1;
        continue;
      }
      if (this.inString) {
        i = this.stringByte(chunk, i);
        if (this.irregular) return [];
        continue;
      }
      const b = chunk[i]!;
      if (isSpace(b)) continue;
      if (!this.structural(scan, b, i)) return [];
    }
    if (this.inElement && scan.elementFrom >= 0) this.elementParts.push(Buffer.from(chunk.subarray(scan.elementFrom)));
    if (scan.restFrom >= 0) this.addRest(chunk.subarray(scan.restFrom));
    return out;
  }

  /**
   * Inside a string at `i`: past its plain content in a tight loop (most of a bundle is string content), then one
   * escape, quote or member-name byte. Returns the index of the last byte consumed (the chunk's length: all of it).
   */
  private stringByte(chunk: Buffer, i: number): number {
    if (!this.escaped && this.key === null) {
      const n = chunk.length;
      while (i < n && chunk[i] !== QUOTE && chunk[i] !== BACKSLASH) i++;
      if (i === n) return n;
    }
    const b = chunk[i]!;
    if (this.escaped) this.escaped = false;
    else if (b === BACKSLASH) {
      this.escaped = true;
      if (this.key !== null) this.stop("a member name spelled with escapes");
    } else if (b === QUOTE) {
      this.inString = false;
      if (this.key !== null) {
        this.lastKey = this.key;
        this.key = null;
      }
    } else if (this.key !== null) this.key += String.fromCharCode(b);
    return i;
  }

  /** A byte outside strings that is not whitespace: nesting, members, the events array. False: irregular. */
  private structural(scan: Scan, b: number, i: number): boolean {
    if (this.closed) return this.irregularBecause("text after the document");
    const d = this.depth;
    if (this.inEvents && d === 2) {
      const r = this.betweenElements(scan, b, i);
      if (r !== null) return r;
    }
    if (b === QUOTE) {
      this.inString = true;
      if (d === 1 && this.expectKey && !this.inEvents) this.key = "";
      return true;
    }
    if (d === 0) {
      if (b !== OPEN_OBJ) return this.irregularBecause("the document is not an object");
      this.depth = 1;
      this.expectKey = true;
      return true;
    }
    if (d === 1 && !this.inEvents) {
      const r = this.member(scan, b, i);
      if (r !== null) return r;
    }
    if (b === OPEN_OBJ || b === OPEN_ARR) this.depth++;
    else if (b === CLOSE_OBJ || b === CLOSE_ARR) {
      this.depth--;
      if (this.depth === 0) this.closed = true;
    }
    return true;
  }

  /**
   * At the events array's level: an element starts, or one ends at "," or "]". True or false: the byte is
   * handled (false: irregular); null: it starts an element and is read as the element's first byte.
   */
  private betweenElements(scan: Scan, b: number, i: number): boolean | null {
    if (b === COMMA || b === CLOSE_ARR) {
      if (!this.inElement) {
        if (b === COMMA || this.sawElementComma) return this.irregularBecause("an empty element in the events array");
      } else {
        scan.out.push(this.takeElement(scan.chunk, scan.elementFrom, i));
        scan.elementFrom = -1;
      }
      this.sawElementComma = b === COMMA;
      if (b === CLOSE_ARR) {
        this.inEvents = false;
        this.depth = 1;
        scan.restFrom = i;
      }
      return true;
    }
    if (!this.inElement) {
      // (Two elements without a comma between them read as one, which JSON.parse then refuses.)
      this.inElement = true;
      this.sawElementComma = false;
      scan.elementFrom = i;
    }
    return null;
  }

  /** At the document's top level: the events array opening, a member's colon or comma (null: anything else). */
  private member(scan: Scan, b: number, i: number): boolean | null {
    if (this.awaitingEvents) {
      this.awaitingEvents = false;
      if (b !== OPEN_ARR) return this.irregularBecause('"events" is not an array');
      this.inEvents = true;
      this.depth = 2;
      this.addRest(scan.chunk.subarray(scan.restFrom, i + 1));
      scan.restFrom = -1;
      return this.parseHeader();
    }
    if (b === COLON) {
      this.expectKey = false;
      if (this.lastKey === "events") {
        if (this.sawEvents) return this.irregularBecause('"events" twice');
        this.sawEvents = true;
        this.awaitingEvents = true;
      }
      return true;
    }
    if (b === COMMA) {
      this.expectKey = true;
      return true;
    }
    return null;
  }

  /**
   * After the last chunk: the document's merkleRoot and treeHead, once its members outside the array are proved
   * to be exactly the header's (a whole-document JSON.parse would give the same bundle); null when irregular.
   */
  end(): { merkleRoot: unknown; treeHead: unknown } | null {
    if (!this.closed) this.stop("the document ends early");
    if (!this.header) this.stop('no "events" array');
    if (this.irregular || !this.header) return null;
    let all: Record<string, unknown>;
    try {
      all = JSON.parse(Buffer.concat(this.rest).toString("utf8")) as Record<string, unknown>;
    } catch {
      this.stop("the members outside the events array are not JSON");
      return null;
    }
    for (const k of Object.keys(all)) {
      if (TRAILER_KEYS.has(k)) continue;
      if (!(k in this.header) || JSON.stringify(all[k]) !== JSON.stringify(this.header[k])) {
        this.stop(`member ${JSON.stringify(k)} after the events array`);
        return null;
      }
    }
    return { merkleRoot: all.merkleRoot, treeHead: all.treeHead };
  }

  /**
   * From `i` inside an element (depth > 2, not in a string): past the bracket that brings the depth back to 2, or
   * to the chunk's end (the string and escape state carried over).
   */
  private skipInside(chunk: Buffer, i: number): number {
    const n = chunk.length;
    let depth = this.depth;
    while (i < n) {
      const c = chunk[i]!;
      if (c === QUOTE) {
        for (i++; ; i += 2) {
          while (i < n && chunk[i] !== QUOTE && chunk[i] !== BACKSLASH) i++;
          if (i >= n || (chunk[i] === BACKSLASH && i + 1 >= n)) {
            this.depth = depth;
            this.inString = true;
            this.escaped = i < n;
            return n;
          }
          if (chunk[i] === QUOTE) break;
        }
      } else if (c === OPEN_OBJ || c === OPEN_ARR) depth++;
      else if ((c === CLOSE_OBJ || c === CLOSE_ARR) && --depth === 2) {
        this.depth = 2;
        return i + 1;
      }
      i++;
    }
    this.depth = depth;
    return n;
  }

  private takeElement(chunk: Buffer, from: number, to: number): Buffer {
    this.inElement = false;
    const tail = chunk.subarray(Math.max(from, 0), to);
    if (this.elementParts.length === 0) return trimEnd(tail);
    const whole = Buffer.concat([...this.elementParts, tail]);
    this.elementParts = [];
    return trimEnd(whole);
  }

  private addRest(part: Buffer): void {
    if (part.length === 0) return;
    // Copied: the chunk's buffer is reused or freed by the caller.
    this.rest.push(Buffer.from(part));
  }

  /** The members before "events": the document so far, closed. */
  private parseHeader(): boolean {
    try {
      const text = `${Buffer.concat(this.rest).toString("utf8")}]}`;
      const v = JSON.parse(text) as Record<string, unknown>;
      delete v.events;
      this.header = v;
      return true;
    } catch {
      this.stop('the members before "events" are not JSON');
      return false;
    }
  }

  private stop(why: string): Buffer[] {
    this.irregular ??= why;
    return [];
  }

  private irregularBecause(why: string): false {
    this.stop(why);
    return false;
  }
}

function trimEnd(b: Buffer): Buffer {
  let e = b.length;
  while (e > 0 && isSpace(b[e - 1]!)) e--;
  return e === b.length ? b : b.subarray(0, e);
}
