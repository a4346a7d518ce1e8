"""Long-lived worker for OpenAI-style python graders (`def grade(sample, item) -> float`).

Started by grader-sidecar/src/python/sandbox.ts, one process per pool slot, usually as pid 1 of its own
pid + network namespace. Protocol: JSON lines, requests on fd 3, responses on fd 4. stdout and stderr are
never part of the protocol: user print() output goes to a sink, and whatever is written to fd 1/2 is drained
(and discarded) by the sidecar.

argv[1] is a JSON object: {"uid", "gid", "memory", "fsize", "nproc", "nofile", "cpu"}.
Requests:  {"id", "op": "grade"|"check"|"parse", "hash", "source"?, "sample"?, "item"?, "timeout_s"}
Responses: {"id", "ok": true, "value"} | {"id", "ok": false, "kind": "runtime", "details"}
           | {"id", "need_source": true} | check, parse: {"id", "ok": true} | {"id", "ok": false, "error", "line"?}
"check" runs the module body (then inspects `grade`); "parse" runs none of the user's code (a static check,
for callers that must not run it: the admission webhook in the operator's pod).
           plus "recycle": true when this worker must not be reused (leftover threads or processes, ...).
The first line written is {"ready": true, ...} describing what the worker could set up.
"""

import ast
import builtins
import collections
import ctypes
import inspect
import json
import linecache
import math
import numbers
import os
import resource
import signal
import sys
import threading
import traceback

REQ_FD = 3
RESP_FD = 4
GRADER_FILE = "<grader>"
CACHE_MAX = 64
DETAILS_MAX = 8000
REWARD_ABS_MAX = 1e6  # proto/graders.ts REWARD_ABS_MAX: larger rewards would overflow the step's sums
MAIN_PID = os.getpid()
EXIT_BAD_REQUEST = 3
EXIT_CPU = 152  # the sidecar reports it as "CPU time limit exceeded"

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def set_limits(cfg):
    """Address space, file size, processes, open files, core dumps, CPU (backstop). Returns what failed."""
    failed = []
    wanted = [
        ("memory", resource.RLIMIT_AS, cfg.get("memory")),
        ("fsize", resource.RLIMIT_FSIZE, cfg.get("fsize")),
        ("nproc", resource.RLIMIT_NPROC, cfg.get("nproc")),
        ("nofile", resource.RLIMIT_NOFILE, cfg.get("nofile")),
        ("core", resource.RLIMIT_CORE, 0),
        ("cpu", resource.RLIMIT_CPU, cfg.get("cpu")),
    ]
    for name, res, value in wanted:
        if value is None:
            continue
        try:
            _, hard = resource.getrlimit(res)
            v = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
            resource.setrlimit(res, (v, v))
        except (ValueError, OSError):
            failed.append(name)
    return failed


MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8


def private_shm(libc, size):
    """A fresh size-limited tmpfs on /dev/shm, in the worker's own mount namespace (the sidecar asks only when
    it created one): what a grader writes there is capped at `size` bytes and vanishes with the worker."""
    if libc is None or not os.path.isdir("/dev/shm"):
        return False
    opts = f"size={int(size)},mode=1777".encode()
    return libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) == 0


def drop_privileges(uid, gid):
    """Become uid/gid (used when the sidecar runs as root). Directories on sys.path that the new uid cannot
    traverse (e.g. a Python under /root) stay importable through directory fds opened before the switch."""
    dir_fds = {}
    for p in sys.path:
        if p and os.path.isdir(p):
            try:
                dir_fds[p] = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                pass
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
        raise RuntimeError("privileges were not dropped")
    except PermissionError:
        pass
    remap = {}
    for p, fd in dir_fds.items():
        if os.access(p, os.R_OK | os.X_OK):
            os.close(fd)
        else:
            remap[p] = f"/proc/self/fd/{fd}"
    if remap:
        sys.path[:] = [remap.get(p, p) for p in sys.path]
        for mod in list(sys.modules.values()):
            paths = getattr(mod, "__path__", None)
            if isinstance(paths, list):
                for i, p in enumerate(paths):
                    for old, new in remap.items():
                        if p == old or p.startswith(old + os.sep):
                            paths[i] = new + p[len(old) :]
                            break
        sys.path_importer_cache.clear()


class _Sink:
    """Stands in for sys.stdout / sys.stderr during user code: accepts and drops everything."""

    encoding = "utf-8"
    errors = "replace"

    def write(self, s):
        return len(s)

    def writelines(self, lines):
        pass

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("no file descriptor")


class Worker:
    def __init__(self, cfg):
        self.cfg = cfg
        self.cache = collections.OrderedDict()  # hash -> (namespace, linecache entry)
        self.sink = _Sink()
        self.reqs = open(REQ_FD, "rb", buffering=1 << 16)  # noqa: SIM115 - lives as long as the process
        self.cpu_hard = cfg.get("cpu")

    # protocol -----------------------------------------------------------------------------------------------
    def send(self, obj):
        data = (json.dumps(obj, ensure_ascii=True, allow_nan=False) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(RESP_FD, view)
            view = view[n:]

    def serve(self):
        while True:
            line = self.reqs.readline()
            if not line:
                return
            try:
                req = json.loads(line)
                rid = req["id"]
            except Exception:
                os._exit(EXIT_BAD_REQUEST)
            try:
                resp = self.handle(req)
            except BaseException as e:  # never let the loop die on our own bug
                if os.getpid() != MAIN_PID:
                    os._exit(0)
                resp = {"ok": False, "kind": "runtime", "details": f"internal worker error: {e!r}", "recycle": True}
            resp["id"] = rid
            self.send(resp)

    # user code ------------------------------------------------------------------------------------------------
    def load(self, h, source):
        """Returns (namespace, None) or (None, error response). Compiles and runs the module body once per hash."""
        hit = self.cache.get(h)
        if hit is not None:
            self.cache.move_to_end(h)
            linecache.cache[GRADER_FILE] = hit[1]
            return hit[0], None
        if source is None:
            return None, {"need_source": True}
        entry = (len(source), None, source.splitlines(True), GRADER_FILE)
        linecache.cache[GRADER_FILE] = entry
        try:
            code = compile(source, GRADER_FILE, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as e:
            return None, {"ok": False, "kind": "runtime", "details": format_exc(e), "line": getattr(e, "lineno", None)}
        ns = {"__name__": "grader", "__builtins__": builtins, "__file__": GRADER_FILE}
        err = self.run_user(exec, code, ns)
        if err is not None:
            return None, err
        self.cache[h] = (ns, entry)
        if len(self.cache) > CACHE_MAX:
            self.cache.popitem(last=False)
        return ns, None

    def run_user(self, fn, *args):
        """Calls fn(*args) with stdout/stderr sunk. Returns an error response or None; the value in self.ret."""
        self.ret = None
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.sink
        try:
            self.ret = fn(*args)
            return None
        except MemoryError as e:
            return {"ok": False, "kind": "runtime", "details": format_exc(e), "recycle": True}
        except SystemExit as e:
            return {"ok": False, "kind": "runtime", "details": f"grader called exit({e.code!r})"}
        except BaseException as e:
            return {"ok": False, "kind": "runtime", "details": format_exc(e), "line": user_line(e)}
        finally:
            if os.getpid() != MAIN_PID:
                os._exit(0)  # a process forked by user code must never reach the protocol
            sys.stdout, sys.stderr = saved

    def handle(self, req):
        op = req.get("op")
        self.arm_cpu(req.get("timeout_s", 120))
        try:
            if op == "check":
                resp = self.check(req)
            elif op == "parse":
                resp = self.parse(req)
            elif op == "grade":
                resp = self.grade(req)
            else:
                resp = {"ok": False, "kind": "runtime", "details": f"unknown op {op!r}"}
        finally:
            if os.getpid() != MAIN_PID:
                os._exit(0)
        if self.leftovers():
            resp["recycle"] = True
        return resp

    def check(self, req):
        ns, err = self.load(req["hash"], req.get("source"))
        if err is not None:
            if err.get("need_source"):
                return err
            out = {"ok": False, "error": err["details"]}
            if err.get("line") is not None:
                out["line"] = err["line"]
            if err.get("recycle"):
                out["recycle"] = True
            return out
        grade = ns.get("grade")
        if grade is None:
            return {"ok": False, "error": "source must define grade(sample, item)"}
        if not callable(grade):
            return {"ok": False, "error": f"grade must be callable, got {type(grade).__name__}"}
        try:
            sig = inspect.signature(grade)
        except (TypeError, ValueError):
            return {"ok": True}  # builtins without a signature: accept
        try:
            sig.bind(None, None)
        except TypeError:
            out = {"ok": False, "error": f"grade must take exactly 2 positional arguments (sample, item), got {sig}"}
            line = getattr(getattr(grade, "__code__", None), "co_firstlineno", None)
            if line is not None and getattr(grade.__code__, "co_filename", None) == GRADER_FILE:
                out["line"] = line
            return out
        return {"ok": True}

    def parse(self, req):
        """check() without running anything: the source parses, and binds `grade` at module level; where that is one
        plain `def grade`, it must accept (sample, item). Other bindings (a lambda, an import, a decorated def,
        several definitions) are accepted: only running the module could tell, and the grader's first load does."""
        source = req.get("source")
        if not isinstance(source, str):
            return {"ok": False, "error": "no source"}
        try:
            tree = ast.parse(source, GRADER_FILE)
        except (SyntaxError, ValueError) as e:  # ValueError: a null byte
            return {"ok": False, "error": format_exc(e), "line": getattr(e, "lineno", None)}
        except (RecursionError, MemoryError) as e:
            return {"ok": False, "error": f"{type(e).__name__}: the source is nested too deeply to parse"}
        bindings = list(module_bindings(tree.body, "grade"))
        if not bindings:
            return {"ok": False, "error": "source must define grade(sample, item)"}
        only = bindings[0] if len(bindings) == 1 else None  # several: which one wins is decided at run time
        if isinstance(only, (ast.FunctionDef, ast.AsyncFunctionDef)) and not only.decorator_list:
            a = only.args
            positional = len(a.posonlyargs) + len(a.args)
            required = positional - len(a.defaults)
            kw_required = sum(1 for d in a.kw_defaults if d is None)
            if required > 2 or (positional < 2 and a.vararg is None) or kw_required > 0:
                got = f"({ast.unparse(a)})"
                msg = f"grade must take exactly 2 positional arguments (sample, item), got {got}"
                return {"ok": False, "error": msg, "line": only.lineno}
        return {"ok": True}

    def grade(self, req):
        ns, err = self.load(req["hash"], req.get("source"))
        if err is not None:
            err.pop("line", None)
            return err
        grade = ns.get("grade")
        if not callable(grade):
            return {"ok": False, "kind": "runtime", "details": "source does not define a callable grade(sample, item)"}
        err = self.run_user(grade, req.get("sample"), req.get("item"))
        if err is not None:
            err.pop("line", None)
            return err
        value, reason = validate(self.ret)
        self.ret = None
        if reason is not None:
            return {"ok": False, "kind": "runtime", "details": reason}
        return {"ok": True, "value": value}

    # limits and hygiene --------------------------------------------------------------------------------------
    def arm_cpu(self, timeout_s):
        """RLIMIT_CPU is per process and cumulative: move the soft limit to `used + timeout + 2 s` per call."""
        if not self.cpu_hard:
            return
        r = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(r.ru_utime + r.ru_stime + float(timeout_s) + 2)
        try:
            _, hard = resource.getrlimit(resource.RLIMIT_CPU)
            resource.setrlimit(resource.RLIMIT_CPU, (min(soft, hard), hard))
        except (ValueError, OSError):
            pass

    def leftovers(self):
        """True when user code left threads or processes behind (the worker is then replaced)."""
        reap()
        dirty = threading.active_count() > 1
        kids = children()
        if kids:
            dirty = True
            if os.getpid() != 1:  # not a pid namespace: the sidecar cannot kill strays for us, so do it here
                for _ in range(50):
                    for pid in kids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
                    reap()
                    kids = children()
                    if not kids:
                        break
        if self.cpu_hard:
            r = resource.getrusage(resource.RUSAGE_SELF)
            if r.ru_utime + r.ru_stime > self.cpu_hard * 0.8:
                dirty = True
        return dirty


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def children():
    try:
        with open(f"/proc/self/task/{MAIN_PID}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def validate(v):
    """OpenAI: a float is expected. Accepted: int, float and numpy real scalars. Rejected: bool, NaN, ±inf, rest."""
    if isinstance(v, bool) or type(v).__name__ in ("bool_", "bool"):
        return None, f"grade() must return a float, got bool ({v!r})"
    if not isinstance(v, numbers.Real):
        r = repr(v)
        if len(r) > 200:
            r = r[:200] + "..."
        return None, f"grade() must return a float, got {type(v).__name__}: {r}"
    try:
        f = float(v)
    except (OverflowError, ValueError, TypeError) as e:
        return None, f"grade() returned a number that is not a finite float: {e}"
    if not math.isfinite(f):
        return None, f"grade() must return a finite float, got {f}"
    if abs(f) > REWARD_ABS_MAX:
        return None, f"grade() returned {f!r}; rewards must lie within ±{REWARD_ABS_MAX:g}"
    return f, None


def module_bindings(body, name):
    """The statements that bind `name` at module level (in order), including inside if/try/with/for/while/match
    blocks, but not inside functions or classes (their own scopes)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                yield node
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name or a.name == "*" for a in node.names):
                yield node
            continue
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            targets = [node.target]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
        if any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t)):
            yield node
        if any(isinstance(n, ast.NamedExpr) and n.target.id == name for n in ast.walk(node)):
            yield node
        for field in ("body", "orelse", "finalbody"):
            yield from module_bindings(getattr(node, field, []) or [], name)
        for h in getattr(node, "handlers", []) or []:
            yield from module_bindings(h.body, name)
        for c in getattr(node, "cases", []) or []:
            yield from module_bindings(c.body, name)


def user_tb(tb):
    """Drops the worker's own frames: the traceback starts at the first frame of the grader source."""
    t = tb
    while t is not None and t.tb_frame.f_code.co_filename != GRADER_FILE:
        t = t.tb_next
    return t


def user_line(e):
    t = user_tb(e.__traceback__)
    line = None
    while t is not None:
        if t.tb_frame.f_code.co_filename == GRADER_FILE:
            line = t.tb_lineno
        t = t.tb_next
    return line


def format_exc(e):
    try:
        te = traceback.TracebackException(type(e), e, user_tb(e.__traceback__), limit=50)
        text = "".join(te.format())
    except BaseException:
        text = f"{type(e).__name__}: <unprintable exception>"
    if len(text) > DETAILS_MAX:
        text = "...(truncated)\n" + text[-DETAILS_MAX:]
    return text


def network_is_isolated():
    """True when no interface besides loopback exists (a fresh network namespace has only `lo`, down)."""
    try:
        import socket

        return all(name == "lo" for _, name in socket.if_nameindex())
    except OSError:
        return False


def main():
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    report = {"ready": True, "pid": os.getpid()}
    libc = _libc()
    if cfg.get("shm"):
        report["shm_private"] = private_shm(libc, cfg["shm"])
    failed = set_limits(cfg)
    if libc is not None:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        report["no_new_privs"] = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    if cfg.get("uid") is not None and os.geteuid() == 0:
        try:
            drop_privileges(int(cfg["uid"]), int(cfg.get("gid", cfg["uid"])))
        except (OSError, RuntimeError) as e:
            report["drop_error"] = str(e)
    if libc is not None:
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    os.umask(0o077)
    report["uid"] = os.getuid()
    report["net_isolated"] = network_is_isolated()
    report["limits_failed"] = failed
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # As pid 1 of a pid namespace the default action of SIGXCPU (soft RLIMIT_CPU) would be ignored: act on it.
    signal.signal(signal.SIGXCPU, lambda *_: os._exit(EXIT_CPU))
    worker = Worker(cfg)
    worker.send(report)
    worker.serve()


if __name__ == "__main__":
    main()
