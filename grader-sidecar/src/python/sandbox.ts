/**
 * Sandbox for OpenAI-style python graders (`def grade(sample, item) -> float`): a warm pool of long-lived
 * python workers (grader-sidecar/python/worker.py), each in its own namespaces where the kernel allows it,
 * with rlimits, a minimal environment and a fresh temp dir. JSON lines on fds 3 (requests) and 4 (responses);
 * stdout/stderr are drained and never parsed. A worker that times out, dies or breaks the protocol is killed
 * (with everything it started) and replaced; the call gets a `server` result. See grader-sidecar/python/README.md.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chown, lstat, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { PYTHON_SOURCE_MAX_BYTES, REWARD_ABS_MAX, type Sample } from "../../../proto/graders.js";
import { packageRoot } from "../../../proto/paths.js";
import { type IsolationPlan, probeIsolation } from "./isolation.js";
import { claimUidBlock, type UidBlock } from "./uid-block.js";

export interface PythonSandboxOptions {
  /** Warm workers, default 2. */
  size?: number;
  python?: string;
  /** Per call, default 120_000. */
  timeoutMs?: number;
  /** Per worker address-space limit (RLIMIT_AS), default 2 GiB. */
  memoryBytes?: number;
  /** Default true: no network, via a network namespace where the kernel allows it. */
  isolateNetwork?: boolean;
  logger?: { info(o: object, msg?: string): void; warn(o: object, msg?: string): void };
  /** Largest file a grader may write (RLIMIT_FSIZE), default 1 GiB. */
  fileSizeBytes?: number;
  /** Processes + threads a worker may add (RLIMIT_NPROC, over what its uid already runs), default 64. */
  maxProcesses?: number;
  /** Size of each worker's private /dev/shm (a tmpfs in its mount namespace), default 64 MiB. */
  shmBytes?: number;
  /** Where sandboxes on this host record their uid blocks (default $TMPDIR/rft-pygrader-uids; null: none). */
  uidLockDir?: string | null;
}

export type PythonResult =
  | { ok: true; value: number }
  | { ok: false; kind: "runtime"; details: string }
  | { ok: false; kind: "server"; type: string; details: string };

export type PythonCheckResult = { ok: true } | { ok: false; error: string; line?: number };

/** Longest line the sidecar reads from a worker's result fd; past it the worker is killed (protocol_error). */
export const RESPONSE_LINE_MAX = 1024 * 1024;
const GIB = 1024 ** 3;
const READY_TIMEOUT_MS = 30_000;
const STDERR_TAIL = 4096;
const NOFILE = 256;
/** Worker CPU-seconds cap over its lifetime (RLIMIT_CPU hard); the worker retires itself at 80 %. */
const CPU_LIFETIME_S = 3600;
const EXIT_CPU = 152;
const KNOWN_SOURCES = 64;

type Reply = { kind: "reply"; msg: Record<string, any> } | { kind: "server"; type: string; details: string };

interface Call {
  id: number;
  op: "grade" | "check" | "parse";
  hash: string;
  source: string;
  sample?: unknown;
  item?: unknown;
  timeoutMs: number;
  done: (r: Reply) => void;
}

interface Worker {
  slot: number;
  proc: ChildProcess;
  state: "starting" | "idle" | "busy" | "dead";
  call?: Call;
  timer?: NodeJS.Timeout;
  buf: string;
  uid?: number;
  stderr: string;
  known: Set<string>;
  tmp: string;
  exited: Promise<void>;
  ready: (err?: Error) => void;
  report?: Record<string, any>;
  exitHandled?: boolean;
}

const noopLogger = { info() {}, warn() {} };

/** `opts.python ?? $RFT_PYTHON ?? <package root>/.venv/bin/python (if present) ?? python3`. */
export function resolvePython(python?: string): string {
  if (python) return python;
  if (process.env.RFT_PYTHON) return process.env.RFT_PYTHON;
  const venv = join(packageRoot(), ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export function sourceHash(source: string): string {
  return createHash("sha256").update(source, "utf8").digest("hex");
}

function minimalEnv(cwd: string): NodeJS.ProcessEnv {
  return {
    PATH: "/usr/local/bin:/usr/bin:/bin",
    HOME: cwd,
    TMPDIR: cwd,
    LANG: "C.UTF-8",
    LC_ALL: "C.UTF-8",
    OPENBLAS_NUM_THREADS: "1",
    OMP_NUM_THREADS: "1",
    MKL_NUM_THREADS: "1",
    NUMEXPR_NUM_THREADS: "1",
  };
}

/** Tasks (processes and threads) the given uid runs now: RLIMIT_NPROC counts them all. */
async function tasksOfUid(uid: number): Promise<number> {
  let n = 0;
  for (const name of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const status = await readFile(`/proc/${name}/status`, "utf8").catch(() => "");
    const u = /^Uid:\s+(\d+)/m.exec(status);
    const t = /^Threads:\s+(\d+)/m.exec(status);
    if (u && Number(u[1]) === uid) n += t ? Number(t[1]) : 1;
  }
  return n;
}

function killTree(proc: ChildProcess) {
  if (proc.pid === undefined) return;
  try {
    process.kill(-proc.pid, "SIGKILL"); // the worker's process group (it is spawned detached)
  } catch {}
  try {
    proc.kill("SIGKILL");
  } catch {}
}

export class PythonSandbox {
  private readonly size: number;
  private readonly python: string;
  private readonly timeoutMs: number;
  private readonly memoryBytes: number;
  private readonly fileSizeBytes: number;
  private readonly maxProcesses: number;
  private readonly isolateNetwork: boolean;
  private readonly log: NonNullable<PythonSandboxOptions["logger"]>;
  private readonly workerPath: string;
  private readonly slots: Array<Worker | undefined>;
  private readonly failures: number[];
  private readonly queue: Call[] = [];
  private plan?: IsolationPlan;
  private starting?: Promise<void>;
  private closed = false;
  /** The pool is up: dead workers are replaced. */
  private running = false;
  private nextId = 1;
  private spawned = 0;
  private restarts = 0;
  private isolation = "unknown";
  private readonly shmBytes: number;
  private readonly uidLockDir?: string | null;
  /** This sandbox's own uids (root only). */
  private uids?: UidBlock;
  /** A random tag on every worker's command line (lets tests find strays). */
  readonly tag = `rftpy-${randomBytes(6).toString("hex")}`;

  constructor(opts: PythonSandboxOptions = {}) {
    this.size = Math.max(1, Math.floor(opts.size ?? 2));
    this.python = resolvePython(opts.python);
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.memoryBytes = opts.memoryBytes ?? 2 * GIB;
    this.fileSizeBytes = opts.fileSizeBytes ?? GIB;
    this.maxProcesses = opts.maxProcesses ?? 64;
    this.isolateNetwork = opts.isolateNetwork ?? true;
    this.shmBytes = opts.shmBytes ?? 64 * 1024 * 1024;
    this.uidLockDir = opts.uidLockDir;
    this.log = opts.logger ?? noopLogger;
    this.workerPath = join(packageRoot(), "grader-sidecar", "python", "worker.py");
    this.slots = new Array(this.size).fill(undefined);
    this.failures = new Array(this.size).fill(0);
  }

  /** Spawns the warm pool; resolves when every worker is ready. */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new Error("python sandbox is closed"));
    this.starting ??= this.doStart().catch(async (err) => {
      await this.close();
      throw err;
    });
    return this.starting;
  }

  private async doStart() {
    const probeDir = await mkdtemp(join(tmpdir(), "rft-pygrader-"));
    try {
      this.plan = await probeIsolation(this.python, this.isolateNetwork, minimalEnv(probeDir), probeDir);
    } finally {
      await rm(probeDir, { recursive: true, force: true });
    }
    if (this.plan.dropUid) this.uids = claimUidBlock({ lockDir: this.uidLockDir });
    await Promise.all(this.slots.map((_, slot) => this.spawnWorker(slot)));
    if (this.closed) throw new Error("python sandbox closed while starting");
    this.running = true;
    this.describeIsolation();
  }

  private describeIsolation() {
    const plan = this.plan!;
    const reports = this.slots.map((w) => w?.report ?? {});
    const parts = [...plan.namespaces];
    const dropped = plan.dropUid && reports.every((r) => typeof r.uid === "number" && r.uid !== 0);
    if (dropped) parts.push("uid-drop");
    if (reports.every((r) => r.no_new_privs)) parts.push("nnp");
    if (reports.every((r) => r.shm_private)) parts.push("shm");
    parts.push("rlimits");
    this.isolation = parts.join("+");
    const netIsolated = reports.every((r) => r.net_isolated === true);
    const info = { isolation: this.isolation, python: this.python, workers: this.size, netIsolated };
    this.log.info(info, "python grader sandbox started");
    const problems: string[] = [];
    if (this.isolateNetwork && !netIsolated) problems.push("network is NOT isolated (no network namespace)");
    if (!plan.namespaces.includes("pidns"))
      problems.push("no pid namespace: strays of a killed worker may survive, other processes are visible");
    if (plan.dropUid && !dropped) problems.push("running as root and could not switch workers to another uid");
    if (!plan.dropUid && !plan.namespaces.includes("userns"))
      problems.push("workers share the sidecar's uid: RLIMIT_NPROC is shared and /proc of the sidecar is readable");
    const failed = [...new Set(reports.flatMap((r) => (Array.isArray(r.limits_failed) ? r.limits_failed : [])))];
    if (failed.length) problems.push(`rlimits not applied: ${failed.join(", ")}`);
    if (problems.length) this.log.warn({ ...info, problems }, "python grader sandbox runs with reduced isolation");
  }

  private async spawnWorker(slot: number): Promise<void> {
    const plan = this.plan!;
    const tmp = await mkdtemp(join(tmpdir(), "rft-pygrader-"));
    // a fresh uid per spawn, from this sandbox's own block: processes of a killed worker still being torn down
    // never eat into the next worker's RLIMIT_NPROC budget, no two live workers share a uid, and no two
    // sandboxes on the host do either
    const uid = this.uids ? this.uids.base + (this.spawned++ % this.uids.size) : undefined;
    if (uid !== undefined) await chown(tmp, uid, uid);
    const myUid = process.getuid?.() ?? 0;
    const nproc = uid !== undefined ? this.maxProcesses : (await tasksOfUid(myUid)) + this.maxProcesses;
    const cfg = {
      uid,
      gid: uid,
      memory: this.memoryBytes,
      fsize: this.fileSizeBytes,
      nproc,
      nofile: NOFILE,
      cpu: Math.max(CPU_LIFETIME_S, Math.ceil((this.timeoutMs / 1000) * 4)),
      tag: this.tag,
      // --mount-proc gave the worker its own mount namespace: it mounts a private, size-limited /dev/shm
      shm: plan.namespaces.includes("pidns") ? this.shmBytes : undefined,
    };
    const argv = [...plan.prefix, this.python, "-I", "-B", this.workerPath, JSON.stringify(cfg), this.tag];
    const proc = spawn(argv[0]!, argv.slice(1), {
      cwd: tmp,
      env: minimalEnv(tmp),
      stdio: ["ignore", "pipe", "pipe", "pipe", "pipe"],
      detached: true,
    });
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    const readyP = new Promise<void>((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    let exitResolve!: () => void;
    const w: Worker = {
      slot,
      proc,
      state: "starting",
      buf: "",
      uid,
      stderr: "",
      known: new Set(),
      tmp,
      exited: new Promise<void>((r) => {
        exitResolve = r;
      }),
      ready: (err) => (err ? readyReject(err) : readyResolve()),
    };
    this.slots[slot] = w;
    const readyTimer = setTimeout(() => {
      w.ready(new Error(`python worker not ready after ${READY_TIMEOUT_MS} ms`));
      this.retire(w);
    }, READY_TIMEOUT_MS);
    readyP.then(
      () => clearTimeout(readyTimer),
      () => clearTimeout(readyTimer),
    );

    const out = proc.stdio[4] as Readable;
    out.setEncoding("utf8");
    out.on("data", (chunk: string) => this.onData(w, chunk));
    out.on("error", () => {});
    (proc.stdio[3] as Writable).on("error", () => {});
    const keepTail = (chunk: Buffer) => {
      w.stderr = (w.stderr + chunk.toString("utf8")).slice(-STDERR_TAIL);
    };
    proc.stdout!.on("data", () => {}); // user output: drained and dropped
    proc.stderr!.on("data", keepTail);
    proc.on("error", (err) => {
      w.stderr += `\nspawn error: ${err.message}`;
      if (proc.pid === undefined) this.onExit(w, null, null, exitResolve);
    });
    proc.on("exit", (code, signal) => this.onExit(w, code, signal, exitResolve));
    return readyP;
  }

  private onExit(w: Worker, code: number | null, signal: NodeJS.Signals | null, exitResolve: () => void) {
    if (w.exitHandled) return;
    w.exitHandled = true;
    const wasStarting = w.state === "starting";
    w.state = "dead";
    const why =
      code === EXIT_CPU
        ? "CPU time limit exceeded"
        : signal
          ? `worker killed by ${signal}${signal === "SIGKILL" ? " (killed, possibly out of memory)" : ""}`
          : `worker exited with code ${code}`;
    const tail = w.stderr.trim() ? `; stderr: ${w.stderr.trim().slice(-1000)}` : "";
    this.finish(w, { kind: "server", type: "worker_died", details: why + tail });
    if (wasStarting) {
      w.ready(new Error(`python worker failed to start (${why})${tail}`));
      this.failures[w.slot]! += 1;
    }
    killTree(w.proc); // strays left in the process group (matters without a pid namespace)
    Promise.allSettled([rm(w.tmp, { recursive: true, force: true }), sweepShm(w.uid)]).then(exitResolve, exitResolve);
    if (this.slots[w.slot] !== w || this.closed || !this.running) return;
    this.slots[w.slot] = undefined;
    if (wasStarting && !this.slots.some((s) => s?.state === "idle" || s?.state === "busy")) {
      // nothing can serve the queue: fail it rather than let it wait on retries
      for (const c of this.queue.splice(0)) {
        c.done({ kind: "server", type: "spawn_failed", details: `python worker failed to start (${why})${tail}` });
      }
    }
    this.respawn(w.slot);
  }

  private respawn(slot: number) {
    const failures = this.failures[slot]!;
    const delay = failures === 0 ? 0 : Math.min(5000, 100 * 2 ** failures);
    this.restarts += 1;
    setTimeout(() => {
      if (this.closed || this.slots[slot]) return;
      this.spawnWorker(slot).then(
        () => {
          this.failures[slot] = 0;
          this.pump();
        },
        (err) => this.log.warn({ err: String(err), slot }, "python grader worker failed to start"),
      );
    }, delay);
  }

  private onData(w: Worker, chunk: string) {
    if (w.state === "dead") return;
    // Only the new chunk is searched for a newline (searching the whole buffer each time is quadratic on a
    // long line), and a line may not grow past RESPONSE_LINE_MAX (replies are small: details are capped).
    let from = 0;
    let nl = chunk.indexOf("\n");
    while (nl >= 0) {
      const line = w.buf + chunk.slice(from, nl);
      w.buf = "";
      if (line.length > RESPONSE_LINE_MAX)
        return this.protocolError(w, `response line over ${RESPONSE_LINE_MAX} characters`);
      this.onLine(w, line);
      if ((w.state as Worker["state"]) === "dead") return;
      from = nl + 1;
      nl = chunk.indexOf("\n", from);
    }
    w.buf += chunk.slice(from);
    if (w.buf.length > RESPONSE_LINE_MAX) {
      w.buf = "";
      this.protocolError(w, `response line over ${RESPONSE_LINE_MAX} characters without a newline`);
    }
  }

  private onLine(w: Worker, line: string) {
    let msg: Record<string, any>;
    try {
      msg = JSON.parse(line);
      if (typeof msg !== "object" || msg === null || Array.isArray(msg)) throw new Error("not an object");
    } catch {
      return this.protocolError(w, `unparseable line from worker: ${JSON.stringify(line.slice(0, 200))}`);
    }
    if (w.state === "starting") {
      if (msg.ready !== true) return this.protocolError(w, "worker did not announce readiness");
      w.report = msg;
      w.state = "idle";
      w.ready();
      this.pump();
      return;
    }
    const call = w.call;
    if (!call || msg.id !== call.id) return this.protocolError(w, `unexpected response id ${JSON.stringify(msg.id)}`);
    if (msg.need_source === true) {
      w.known.delete(call.hash);
      this.send(w, call, true);
      return;
    }
    this.finish(w, { kind: "reply", msg });
    if (msg.recycle === true) this.retire(w);
    else {
      w.state = "idle";
      this.pump();
    }
  }

  private protocolError(w: Worker, details: string) {
    if (w.state === "starting") w.ready(new Error(`python worker protocol error: ${details}`));
    this.finish(w, { kind: "server", type: "protocol_error", details });
    this.retire(w);
  }

  /** Resolves the worker's current call (if any) and clears its timer. */
  private finish(w: Worker, r: Reply) {
    const call = w.call;
    if (!call) return;
    clearTimeout(w.timer);
    w.call = undefined;
    w.timer = undefined;
    call.done(r);
  }

  /** Kills a worker with everything it started; its exit handler replaces it. */
  private retire(w: Worker) {
    if (w.state !== "dead") w.state = "dead";
    killTree(w.proc);
  }

  private send(w: Worker, call: Call, withSource: boolean) {
    const req: Record<string, unknown> = {
      id: call.id,
      op: call.op,
      hash: call.hash,
      timeout_s: call.timeoutMs / 1000,
    };
    if (withSource) req.source = call.source;
    if (call.op === "grade") {
      req.sample = call.sample;
      req.item = call.item;
    }
    let line: string;
    try {
      line = `${JSON.stringify(req)}\n`;
    } catch (err) {
      this.finish(w, { kind: "server", type: "protocol_error", details: `sample/item not serialisable: ${err}` });
      w.state = "idle";
      queueMicrotask(() => this.pump());
      return;
    }
    // A worker caches the module of a source it ran (check, grade), not of one it only parsed.
    if (withSource && call.op !== "parse") {
      w.known.add(call.hash);
      if (w.known.size > KNOWN_SOURCES) w.known.delete(w.known.values().next().value!);
    }
    (w.proc.stdio[3] as Writable).write(line);
  }

  private dispatch(w: Worker, call: Call) {
    w.state = "busy";
    w.call = call;
    w.timer = setTimeout(() => {
      if (w.call !== call) return;
      this.finish(w, {
        kind: "server",
        type: "timeout",
        details: `grader did not finish within ${call.timeoutMs} ms; worker killed and replaced`,
      });
      this.retire(w);
    }, call.timeoutMs);
    this.send(w, call, call.op === "parse" || !w.known.has(call.hash));
  }

  private pump() {
    while (this.queue.length > 0) {
      const w = this.slots.find((s) => s?.state === "idle");
      if (!w) return;
      this.dispatch(w, this.queue.shift()!);
    }
  }

  private async submit(call: Omit<Call, "id" | "done">): Promise<Reply> {
    if (this.closed) return { kind: "server", type: "closed", details: "python sandbox is closed" };
    try {
      await this.start();
    } catch (err) {
      return { kind: "server", type: "spawn_failed", details: String(err) };
    }
    if (this.closed) return { kind: "server", type: "closed", details: "python sandbox is closed" };
    return new Promise<Reply>((done) => {
      this.queue.push({ ...call, id: this.nextId++, done });
      this.pump();
    });
  }

  /**
   * Compiles the source, runs its module body, and checks it defines a callable `grade` that accepts (sample,
   * item). With `parse: true`, runs none of it: the source must parse and bind `grade` at module level, and a
   * single plain `def grade` must accept (sample, item) — for callers that must not run user code where they
   * are (the operator's admission webhook: its pod holds the operator's credentials).
   */
  async check(source: string, opts: { timeoutMs?: number; parse?: boolean } = {}): Promise<PythonCheckResult> {
    if (Buffer.byteLength(source, "utf8") > PYTHON_SOURCE_MAX_BYTES) {
      return { ok: false, error: `source is larger than ${PYTHON_SOURCE_MAX_BYTES} bytes` };
    }
    const r = await this.submit({
      op: opts.parse ? "parse" : "check",
      hash: sourceHash(source),
      source,
      timeoutMs: opts.timeoutMs ?? this.timeoutMs,
    });
    if (r.kind === "server") return { ok: false, error: `sandbox error (${r.type}): ${r.details}` };
    if (r.msg.ok === true) return { ok: true };
    const error = typeof r.msg.error === "string" ? r.msg.error : "invalid grader";
    return typeof r.msg.line === "number" ? { ok: false, error, line: r.msg.line } : { ok: false, error };
  }

  /** Runs `grade(sample, item)`. Never throws: failures are `runtime` (user code) or `server` (sandbox). */
  async grade(source: string, sample: Sample, item: unknown, opts: { timeoutMs?: number } = {}): Promise<PythonResult> {
    if (Buffer.byteLength(source, "utf8") > PYTHON_SOURCE_MAX_BYTES) {
      return { ok: false, kind: "runtime", details: `source is larger than ${PYTHON_SOURCE_MAX_BYTES} bytes` };
    }
    const r = await this.submit({
      op: "grade",
      hash: sourceHash(source),
      source,
      sample: samplePayload(sample),
      item: item ?? null,
      timeoutMs: opts.timeoutMs ?? this.timeoutMs,
    });
    if (r.kind === "server") return { ok: false, kind: "server", type: r.type, details: r.details };
    const m = r.msg;
    if (m.ok === true && typeof m.value === "number" && Number.isFinite(m.value)) {
      // The worker checks the range too; this side decides (a reward past it would overflow the step's sums).
      if (Math.abs(m.value) <= REWARD_ABS_MAX) return { ok: true, value: m.value };
      return {
        ok: false,
        kind: "runtime",
        details: `grade() returned ${m.value}; rewards must lie within ±${REWARD_ABS_MAX}`,
      };
    }
    if (m.ok === false && m.kind === "runtime") {
      return { ok: false, kind: "runtime", details: typeof m.details === "string" ? m.details : "grader error" };
    }
    return { ok: false, kind: "server", type: "protocol_error", details: `malformed response: ${JSON.stringify(m)}` };
  }

  /** Kills every worker (and what it started) and fails queued calls. */
  async close(): Promise<void> {
    this.closed = true;
    for (const c of this.queue.splice(0)) c.done({ kind: "server", type: "closed", details: "python sandbox closed" });
    const workers = this.slots.filter((w): w is Worker => w !== undefined);
    for (const w of workers) {
      this.finish(w, { kind: "server", type: "closed", details: "python sandbox closed" });
      if (w.state === "starting") w.ready(new Error("python sandbox closed"));
      this.retire(w);
    }
    await Promise.race([Promise.all(workers.map((w) => w.exited)), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.uids?.release();
  }

  stats(): { workers: number; busy: number; queued: number; restarts: number; isolation: string } {
    const live = this.slots.filter((w) => w?.state === "idle" || w?.state === "busy");
    return {
      workers: live.length,
      busy: live.filter((w) => w!.state === "busy").length,
      queued: this.queue.length,
      restarts: this.restarts,
      isolation: this.isolation,
    };
  }
}

/**
 * Removes what a worker's uid left in the host's /dev/shm (where it had no private one). The uid is this
 * sandbox's alone, so everything it owns there is the dead worker's.
 */
async function sweepShm(uid: number | undefined): Promise<void> {
  if (uid === undefined) return;
  let names: string[];
  try {
    names = await readdir("/dev/shm");
  } catch {
    return;
  }
  await Promise.all(
    names.map(async (n) => {
      const p = join("/dev/shm", n);
      try {
        if ((await lstat(p)).uid === uid) await rm(p, { recursive: true, force: true });
      } catch {}
    }),
  );
}

/** The `sample` namespace with OpenAI's keys: output_text, output_json (only when present), output_tools,
 * choices (and output_audio when present). */
function samplePayload(s: Sample): Record<string, unknown> {
  const out: Record<string, unknown> = {
    output_text: s?.output_text ?? "",
    output_tools: s?.output_tools ?? [],
    choices: s?.choices ?? [],
  };
  if (s?.output_json !== undefined) out.output_json = s.output_json;
  if (s?.output_audio !== undefined) out.output_audio = s.output_audio;
  return out;
}
