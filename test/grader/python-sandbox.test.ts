import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type Server } from "node:net";
import { after, before, test } from "node:test";
import { type PythonResult, PythonSandbox } from "../../grader-sidecar/src/python/sandbox.js";
import { PYTHON_SOURCE_MAX_BYTES, type Sample } from "../../proto/graders.js";

// A secret in the sidecar's environment that no grader may see (set before any worker starts).
const SECRET = `s3cr3t-${randomBytes(8).toString("hex")}`;
process.env.RFT_TEST_SECRET = SECRET;

const S: Sample = { output_text: "hello", output_tools: [], choices: [] };
const TRIVIAL = "def grade(sample, item):\n    return len(sample['output_text']) + item['n']\n";
const g = (body: string, head = "") => `${head}\ndef grade(sample, item):\n${body.replace(/^/gm, "    ")}\n`;

let sb: PythonSandbox;

before(async () => {
  sb = new PythonSandbox({ size: 2, timeoutMs: 2000, fileSizeBytes: 1024 * 1024, maxProcesses: 32 });
  await sb.start();
});
after(async () => {
  await sb.close();
});

/** Processes (host-wide) whose command line contains `needle`. */
function processesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").includes(needle)) pids.push(Number(name));
    } catch {}
  }
  return pids;
}

async function until(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

/** After every hostile grader: the pool still grades correctly (a few calls so both workers are exercised). */
async function stillWorks(box = sb) {
  for (let n = 0; n < 4; n++) {
    const r = await box.grade(TRIVIAL, S, { n });
    assert.deepEqual(r, { ok: true, value: 5 + n }, "a trivial grader after a hostile one");
  }
}

function runtime(r: PythonResult, re: RegExp) {
  assert.equal(r.ok, false, JSON.stringify(r));
  if (r.ok) return;
  assert.equal(r.kind, "runtime", JSON.stringify(r));
  if (r.kind === "runtime") assert.match(r.details, re);
}

test("grades: value, sample keys and item", async () => {
  assert.deepEqual(await sb.grade(TRIVIAL, S, { n: 1 }), { ok: true, value: 6 });
  const keys = g("return float(sorted(sample) == sorted(item['keys']))");
  assert.deepEqual(await sb.grade(keys, { output_text: "x" }, { keys: ["output_text", "output_tools", "choices"] }), {
    ok: true,
    value: 1,
  });
  const withJson = { output_text: '{"a": 2}', output_json: { a: 2 } };
  assert.deepEqual(await sb.grade(g("return sample['output_json']['a'] * item['k']"), withJson, { k: 1.5 }), {
    ok: true,
    value: 3,
  });
  assert.deepEqual(await sb.grade(g("return 3"), S, {}), { ok: true, value: 3 }, "int is accepted");
  assert.deepEqual(await sb.grade(g("return np.float32(0.5)", "import numpy as np"), S, {}), { ok: true, value: 0.5 });
  const st = sb.stats();
  assert.equal(st.workers, 2);
  assert.match(st.isolation, /rlimits/);
});

test("print() and garbage on stdout/stderr do not break the protocol", async () => {
  const noisy = g(
    [
      'print(\'{"id": 1, "ok": true, "value": 99}\')',
      "print('not json at all', flush=True)",
      "sys.stderr.write('warning: x\\n')",
      "os.write(1, b'{garbage\\n\\n}')",
      "os.write(2, b'\\x00\\xff\\n')",
      "sys.__stdout__.write('\\n{\"id\": 2}\\n'); sys.__stdout__.flush()",
      "return 0.75",
    ].join("\n"),
    "import os, sys",
  );
  for (let i = 0; i < 4; i++) assert.deepEqual(await sb.grade(noisy, S, {}), { ok: true, value: 0.75 });
  await stillWorks();
});

test("invalid return values are runtime errors with a reason", async () => {
  const cases: Array<[string, RegExp]> = [
    ["return 'high'", /got str/],
    ["return None", /got NoneType/],
    ["return float('nan')", /finite/],
    ["return float('inf')", /finite/],
    ["return -float('inf')", /finite/],
    ["return True", /bool/],
    ["return [1.0]", /got list/],
    ["return 10**400", /finite|too large/],
  ];
  for (const [body, re] of cases) {
    runtime(await sb.grade(g(body), S, {}), re);
    await stillWorks();
  }
});

test("an exception is a runtime error whose traceback shows user frames only", async () => {
  const src = "def helper(x):\n    return x['missing']\n\ndef grade(sample, item):\n    return helper(item)\n";
  const r = await sb.grade(src, S, {});
  runtime(r, /KeyError: 'missing'/);
  if (!r.ok && r.kind === "runtime") {
    assert.match(r.details, /File "<grader>", line 5, in grade/);
    assert.match(r.details, /File "<grader>", line 2, in helper/);
    assert.doesNotMatch(r.details, /worker\.py/);
  }
  runtime(await sb.grade("raise ValueError('at import')\n", S, {}), /ValueError: at import/);
  runtime(await sb.grade("x = 1\n", S, {}), /does not define a callable grade/);
  runtime(await sb.grade(g("sys.exit(3)", "import sys"), S, {}), /exit\(3\)/);
  await stillWorks();
});

test("a worker that dies is replaced and the call is a server error", async () => {
  const before = sb.stats().restarts;
  for (const body of ["os._exit(0)", "ctypes.string_at(0)", "os.close(3); os.close(4)"]) {
    const r = await sb.grade(g(`${body}\nreturn 1.0`, "import ctypes, os"), S, {});
    assert.equal(r.ok, false, body);
    if (!r.ok) assert.equal(r.kind, "server", `${body}: ${JSON.stringify(r)}`);
    await stillWorks();
  }
  assert.ok(await until(() => sb.stats().restarts >= before + 3));
});

test("protocol garbage written to the response fd is a server error, then the worker is replaced", async () => {
  const r = await sb.grade(g("os.write(4, b'this is not json\\n')\nreturn 1.0", "import os"), S, {});
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.kind, "server");
  if (!r.ok && r.kind === "server") assert.equal(r.type, "protocol_error");
  await stillWorks();
});

test("timeout: a hung grader is killed and replaced (server/timeout)", async () => {
  const restarts = sb.stats().restarts;
  // A grader that never returns: only the timeout can end this grade.
  const r = await sb.grade(g("while True:\n    pass"), S, {}, { timeoutMs: 1000 });
  assert.deepEqual(r.ok === false && r.kind === "server" ? r.type : r, "timeout");
  // also a grader stuck in a blocking call that ignores signals
  const r2 = await sb.grade(
    g("signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)", "import signal, time"),
    S,
    {},
    {
      timeoutMs: 500,
    },
  );
  assert.deepEqual(r2.ok === false && r2.kind === "server" ? r2.type : r2, "timeout");
  await stillWorks();
  assert.ok(await until(() => sb.stats().restarts >= restarts + 2));
});

test("memory: allocating 10 GB fails fast and is contained", async () => {
  for (const [head, body] of [
    ["", "b = bytearray(10 * 1024**3)\nreturn 1.0"],
    ["import numpy as np", "a = np.ones(10 * 1024**3 // 8)\nreturn float(a.sum())"],
    ["", "x = [0] * (2 * 1024**3)\nreturn 1.0"],
  ] as const) {
    // A timeout far beyond the test's: the memory limit is what ends the grade, never the clock.
    const r = await sb.grade(g(body, head), S, {}, { timeoutMs: 600_000 });
    assert.equal(r.ok, false);
    if (!r.ok && r.kind === "runtime") assert.match(r.details, /MemoryError/);
    else if (!r.ok && r.kind === "server") assert.equal(r.type, "worker_died", `${body}: ${JSON.stringify(r)}`);
    else assert.fail(`${body}: ${JSON.stringify(r)}`);
    await stillWorks();
  }
});

test("fork bomb: RLIMIT_NPROC caps the processes, the pid namespace / kill cleans up", async () => {
  // bounded: counts how many forks succeed (each child sleeps, then exits)
  const bounded = g(
    [
      "n = 0",
      "for _ in range(300):",
      "    try:",
      "        pid = os.fork()",
      "    except OSError:",
      "        break",
      "    if pid == 0:",
      "        time.sleep(20)",
      "        os._exit(0)",
      "    n += 1",
      "return n",
    ].join("\n"),
    "import os, time",
  );
  const r = await sb.grade(bounded, S, {});
  assert.equal(r.ok, true, JSON.stringify(r));
  if (r.ok) assert.ok(r.value <= 32, `forks capped by maxProcesses (got ${r.value})`);
  assert.ok(await until(() => processesWith(sb.tag).length <= 4), "the sleeping children were killed");
  await stillWorks();
  // the classic one
  const bomb = g("while True:\n    os.fork()", "import os");
  const r2 = await sb.grade(bomb, S, {}, { timeoutMs: 1500 });
  assert.equal(r2.ok, false);
  assert.ok(await until(() => processesWith(sb.tag).length <= 4), "no stray processes after the bomb");
  await stillWorks();
});

test("a grader that leaves processes or threads behind gets its worker recycled", async () => {
  const marker = `${3000 + Math.floor(Math.random() * 500)}.${randomBytes(3).readUIntBE(0, 3)}`;
  const daemon = g(
    [
      "if os.fork() == 0:",
      "    os.setsid()",
      "    if os.fork() == 0:",
      `        os.execv('/bin/sleep', ['sleep', '${marker}'])`,
      "    os._exit(0)",
      "time.sleep(0.2)",
      "return 0.5",
    ].join("\n"),
    "import os, time",
  );
  const restarts = sb.stats().restarts;
  assert.deepEqual(await sb.grade(daemon, S, {}), { ok: true, value: 0.5 });
  assert.ok(await until(() => processesWith(`sleep\0${marker}`).length === 0), "double-forked daemon killed");
  const thread = g("threading.Thread(target=time.sleep, args=(30,)).start()\nreturn 0.25", "import threading, time");
  assert.deepEqual(await sb.grade(thread, S, {}), { ok: true, value: 0.25 });
  assert.ok(await until(() => sb.stats().restarts >= restarts + 2), "both workers were replaced");
  await stillWorks();
});

test("no network: a socket to a local test server fails (control: it connects without isolation)", async () => {
  let connections = 0;
  const server: Server = createServer((s) => {
    connections++;
    s.end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const probe = g(
    [
      "try:",
      "    socket.create_connection(('127.0.0.1', item['port']), timeout=1).close()",
      "    return 1.0",
      "except OSError:",
      "    return 0.0",
    ].join("\n"),
    "import socket",
  );
  try {
    assert.deepEqual(await sb.grade(probe, S, { port }), { ok: true, value: 0 });
    assert.match(sb.stats().isolation, /netns/);
    assert.equal(connections, 0);
    const open = new PythonSandbox({ size: 1, timeoutMs: 2000, isolateNetwork: false });
    try {
      assert.deepEqual(await open.grade(probe, S, { port }), { ok: true, value: 1 }, "the probe itself works");
      assert.doesNotMatch(open.stats().isolation, /netns/);
    } finally {
      await open.close();
    }
    assert.equal(connections, 1);
  } finally {
    server.close();
  }
});

test("no access to the sidecar's environment: os.environ, /proc/*/environ, cwd", async () => {
  const snoop = g(
    [
      "secret = item['secret'].encode()",
      "found = []",
      "if any(item['secret'] in v for v in os.environ.values()): found.append('os.environ')",
      "for k in os.environ: assert not k.startswith('RFT_'), k",
      "pids = {'self', str(os.getppid()), str(item['pid'])} | {p for p in os.listdir('/proc') if p.isdigit()}",
      "for p in pids:",
      "    for f in ('environ', 'cmdline'):",
      "        try:",
      "            if secret in open(f'/proc/{p}/{f}', 'rb').read(): found.append(f'/proc/{p}/{f}')",
      "        except OSError:",
      "            pass",
      "assert not found, found",
      "assert os.getcwd() != item['cwd'] and os.listdir('.') == [], os.getcwd()",
      "return 1.0",
    ].join("\n"),
    "import os",
  );
  const r = await sb.grade(snoop, S, { secret: SECRET, pid: process.pid, cwd: process.cwd() });
  assert.deepEqual(r, { ok: true, value: 1 });
});

test("rlimits are set: address space, file size, CPU backstop, processes", async () => {
  const limits = g(
    [
      "R = resource",
      "assert R.getrlimit(R.RLIMIT_AS)[1] == 2 * 1024**3, R.getrlimit(R.RLIMIT_AS)",
      "assert R.getrlimit(R.RLIMIT_FSIZE)[1] == 1024**2, R.getrlimit(R.RLIMIT_FSIZE)",
      "soft, hard = R.getrlimit(R.RLIMIT_CPU)",
      "used = sum(R.getrusage(R.RUSAGE_SELF)[:2])",
      "assert hard != R.RLIM_INFINITY and soft <= used + 2 + 3, (soft, hard, used)",
      "assert R.getrlimit(R.RLIMIT_NPROC)[1] != R.RLIM_INFINITY",
      "assert R.getrlimit(R.RLIMIT_CORE) == (0, 0)",
      "assert not item['root'] or os.geteuid() != 0, 'a root sidecar must run graders as another uid'",
      "try:",
      "    R.setrlimit(R.RLIMIT_AS, (R.RLIM_INFINITY, R.RLIM_INFINITY))",
      "    raise AssertionError('could raise the memory limit')",
      "except ValueError:",
      "    pass",
      "return 1.0",
    ].join("\n"),
    "import os, resource",
  );
  assert.deepEqual(await sb.grade(limits, S, { root: process.getuid?.() === 0 }), { ok: true, value: 1 });
  // the file size limit (1 MiB here) is enforced
  runtime(await sb.grade(g("open('big', 'wb').write(b'x' * 2 * 1024**2)\nreturn 1.0"), S, {}), /File too large/);
  await stillWorks();
});

test("check(): compiles and requires a callable grade taking 2 positional args", async () => {
  assert.deepEqual(await sb.check(TRIVIAL), { ok: true });
  assert.deepEqual(await sb.check("grade = lambda s, i: 1.0\n"), { ok: true });
  const syntax = await sb.check("def grade(sample, item):\n    return (1 +\n\nx = 2\n");
  assert.equal(syntax.ok, false);
  if (!syntax.ok) {
    assert.match(syntax.error, /SyntaxError/);
    assert.equal(typeof syntax.line, "number");
  }
  const arity = await sb.check("import math\n\ndef grade(sample):\n    return 1.0\n");
  assert.deepEqual(arity.ok === false && [arity.line, /2 positional/.test(arity.error)], [3, true]);
  const three = await sb.check("def grade(a, b, c):\n    return 1.0\n");
  assert.equal(three.ok, false);
  const missing = await sb.check("def score(sample, item):\n    return 1.0\n");
  assert.deepEqual(missing.ok === false && /define grade/.test(missing.error), true);
  const notCallable = await sb.check("grade = 3\n");
  assert.deepEqual(notCallable.ok === false && /callable/.test(notCallable.error), true);
  const raising = await sb.check("x = 1\nraise RuntimeError('boom')\n");
  assert.deepEqual(raising.ok === false && [raising.line, /boom/.test(raising.error)], [2, true]);
});

test("check({ parse: true }) runs none of the user's code, and judges what it can see", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rft-parse-"));
  chmodSync(dir, 0o777); // workers may run as another uid
  try {
    const marker = join(dir, "ran");
    // A module body with side effects: writing a file, reading one into an error message.
    const probe = `open(${JSON.stringify(marker)}, "w").write("x")\nraise Exception(open("/etc/hostname").read())\n\ndef grade(sample, item):\n    return 1.0\n`;
    assert.deepEqual(await sb.check(probe, { parse: true }), { ok: true });
    assert.equal(existsSync(marker), false, "the module body did not run");
    // The running check does run it (which is why the operator's webhook must not use it).
    const ran = await sb.check(probe);
    assert.equal(ran.ok, false);
    assert.equal(existsSync(marker), true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const parse = (src: string) => sb.check(src, { parse: true });
  assert.deepEqual(await parse(TRIVIAL), { ok: true });
  assert.deepEqual(await parse("grade = lambda s, i: 1.0\n"), { ok: true });
  const syntax = await parse("def grade(sample, item):\n    return (1 +\n\nx = 2\n");
  assert.deepEqual(syntax.ok === false && [syntax.line, /SyntaxError/.test(syntax.error)], [2, true]);
  const arity = await parse("import math\n\ndef grade(sample):\n    return 1.0\n");
  assert.deepEqual(arity.ok === false && [arity.line, arity.error], [
    3,
    "grade must take exactly 2 positional arguments (sample, item), got (sample)",
  ]);
  for (const bad of ["def grade(a, b, c):\n    return 1.0\n", "def grade(a, b=1, *, c):\n    return 1.0\n"])
    assert.equal((await parse(bad)).ok, false, bad);
  const missing = await parse("def score(sample, item):\n    return 1.0\n");
  assert.deepEqual(missing.ok === false && missing.error, "source must define grade(sample, item)");
  // What only running could decide is left to the grader's first load: accepted here.
  for (const ok of [
    "def grade(*args):\n    return 1.0\n",
    "def grade(a, /, b, c=0):\n    return 1.0\n",
    "try:\n    from mygraders import grade\nexcept ImportError:\n    def grade(s, i):\n        return 0.0\n",
    "if True:\n    def grade(s, i):\n        return 1.0\nelse:\n    def grade(s):\n        return 0.0\n",
    "import functools\n\n@functools.lru_cache\ndef grade(s):\n    return 1.0\n",
  ])
    assert.deepEqual(await parse(ok), { ok: true }, ok);
  await stillWorks();
});

test("source size: ≤ 256 kB accepted, larger rejected by check() and grade()", async () => {
  const pad = (n: number) => TRIVIAL + "#".repeat(n - Buffer.byteLength(TRIVIAL) - 1) + "\n";
  const max = pad(PYTHON_SOURCE_MAX_BYTES);
  assert.equal(Buffer.byteLength(max), PYTHON_SOURCE_MAX_BYTES);
  assert.deepEqual(await sb.check(max), { ok: true });
  assert.deepEqual(await sb.grade(max, S, { n: 0 }), { ok: true, value: 5 });
  const big = pad(PYTHON_SOURCE_MAX_BYTES + 1);
  const c = await sb.check(big);
  assert.deepEqual(c.ok === false && /larger than/.test(c.error), true);
  runtime(await sb.grade(big, S, { n: 0 }), /larger than/);
});

test("calls queue when all workers are busy; the module body runs once per worker (cache by source hash)", async () => {
  const one = new PythonSandbox({ size: 1, timeoutMs: 5000 });
  try {
    await one.start();
    const counter =
      "import time\ncalls = 0\n\ndef grade(sample, item):\n    global calls\n    calls += 1\n    time.sleep(item['t'])\n    return calls\n";
    const all = Array.from({ length: 5 }, () => one.grade(counter, S, { t: 0.05 }));
    await new Promise((r) => setImmediate(r));
    const st = one.stats();
    assert.equal(st.busy, 1);
    assert.equal(st.queued, 4);
    const values = (await Promise.all(all)).map((r) => (r.ok ? r.value : r));
    assert.deepEqual(values, [1, 2, 3, 4, 5]);
  } finally {
    await one.close();
  }
});

test("close() kills every worker and what it started: no orphans", async () => {
  const box = new PythonSandbox({ size: 2, timeoutMs: 10_000 });
  await box.start();
  assert.ok(processesWith(box.tag).length >= 2);
  const hung = box.grade(g("if os.fork() == 0:\n    time.sleep(60)\ntime.sleep(60)", "import os, time"), S, {});
  await new Promise((r) => setTimeout(r, 300));
  await box.close();
  const r = await hung;
  assert.deepEqual(r.ok === false && r.kind === "server" ? r.type : r, "closed");
  assert.ok(await until(() => processesWith(box.tag).length === 0, 2000), "no worker process survives close()");
  const after = await box.grade(TRIVIAL, S, { n: 0 });
  assert.deepEqual(after.ok === false && after.kind === "server" ? after.type : after, "closed");
});
