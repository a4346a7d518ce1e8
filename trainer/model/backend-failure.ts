/**
 * The wasm backend's fatal failures, kept as they first happen and turned into one message that says what to
 * change. wasm has a 4 GiB heap; when it runs out, `_malloc` returns 0 (tfjs then writes through a null
 * pointer: "memory access out of bounds"), XNNPACK cannot pack an operator ("XNN status … Got status 6",
 * printed, not thrown) and the next kernel aborts ("RuntimeError: Aborted()"); from then on every call
 * fails, cleanup code included, so the error that reaches the top is rarely the first. `watchBackendFailures`
 * (called by useBackend) makes an allocation failure throw where it arises and records the first failure with
 * the work in progress (`noteWork`); `backendFailure(err)` gives the error to report.
 */
import * as tf from "@tensorflow/tfjs-core";

export class BackendMemoryError extends Error {
  constructor(
    message: string,
    /** The first failure seen, where it arose. */
    readonly first: string,
    /** The work in progress then ("training step 3, micro-batch 2/4 (4 sequences)"). */
    readonly during: string,
  ) {
    super(message);
    this.name = "BackendMemoryError";
  }
}

let first: { what: string; during: string } | null = null;
let during = "starting";

/** Names the work in progress, for the failure message (cheap: one string assignment). */
export function noteWork(what: string): void {
  during = what;
}

function record(what: string): void {
  if (!first) first = { what, during };
}

interface WasmModule {
  _malloc(n: number): number;
  onAbort?: (what: unknown) => void;
  HEAPU8: Uint8Array;
  __rftWatched?: boolean;
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;

/** On wasm: allocation failures throw at once, aborts and XNNPACK errors are recorded. Idempotent. */
export function watchBackendFailures(): void {
  if (tf.getBackend() !== "wasm") return;
  const w = (tf.backend() as unknown as { wasm?: WasmModule }).wasm;
  if (!w || w.__rftWatched) return;
  w.__rftWatched = true;
  const malloc = w._malloc.bind(w);
  w._malloc = (n: number) => {
    const p = malloc(n);
    if (p === 0 && n > 0) {
      const what = `allocating ${mib(n)} failed with ${mib(tf.memory().numBytes)} in tensors (wasm heap ${mib(w.HEAPU8.length)} of 4096 MiB)`;
      record(what);
      throw new BackendMemoryError(oneLine(), what, during);
    }
    return p;
  };
  w.onAbort = (what: unknown) => record(`wasm abort${what ? `: ${String(what)}` : ""}`);
  // XNNPACK's operator errors are printed (stderr), not thrown; the abort comes later.
  const write = process.stderr.write.bind(process.stderr) as (...a: unknown[]) => boolean;
  process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
    const s = typeof chunk === "string" ? chunk : Buffer.isBuffer(chunk) ? chunk.toString() : "";
    if (s.includes("XNN status") && /status 6\b/.test(s)) record(s.trim().split("\n")[0]!);
    return write(chunk, ...rest);
  }) as typeof process.stderr.write;
}

/** What a failure message says to change. */
const ADVICE =
  "use a smaller --micro-batch (sequences per forward/backward pass), fewer or shorter samples per step " +
  "(batch_size, n_samples, max_completion_tokens), an envelope with fewer layers, or --backend tensorflow";

function oneLine(): string {
  const f = first!;
  return `the wasm backend ran out of memory (4 GiB) during ${f.during} (${f.what}): ${ADVICE}`;
}

const FATAL = /Aborted\(|memory access out of bounds|Cannot enlarge memory|Out of memory|XNN status|unreachable/i;

/**
 * The error to report for `err`: a BackendMemoryError naming the first failure when the backend failed
 * (whatever `err` is: often a later symptom), else null.
 */
export function backendFailure(err: unknown): BackendMemoryError | null {
  if (err instanceof BackendMemoryError && !first) return err;
  if (!first) {
    const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    if (tf.getBackend() !== "wasm" || !FATAL.test(msg)) return null;
    record(msg);
  }
  return new BackendMemoryError(oneLine(), first!.what, first!.during);
}

/**
 * Runs cleanup code (disposing tensors in a `finally`): once the backend has failed, its errors are dropped,
 * so that they do not replace the error in flight (the first one).
 */
export function cleanup(f: () => void): void {
  try {
    f();
  } catch (e) {
    if (!first && !backendFailure(e)) throw e;
  }
}
