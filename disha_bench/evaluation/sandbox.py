"""Run one untrusted Python program (a model-written HumanEval completion) and judge it.

`run_untrusted(source)` returns a `SandboxResult`: "passed" only when the program's top-level
code ran to its end, "failed", "timeout", or "error" (the sandbox itself broke).

Process layout (Linux only)::

    harness thread --Popen--> helper  (`python -I -S -B sandbox.py`, own session, clean env)
                                |  unshare(NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS [+NEWUSER])
                                +--fork--> init  (pid 1 of the new pid namespace, trusted)
                                             |  builds the root, polls, reports on fd 1 (marshal)
                                             +--fork/exec--> program (runner.py + prog.py)

Layers of defence, each useful on its own:

1. Namespaces. NEWNET: only a downed loopback, so no connection goes anywhere. NEWPID: init is
   pid 1; when it exits the kernel SIGKILLs every process left in the namespace, whatever it did
   (setsid, double fork, ignoring SIGTERM), and the caller's processes have no pid inside.
   NEWNS: init mounts a fresh tmpfs root holding read-only, nosuid binds of /usr (+ /bin, /lib*
   symlinks) and of the Python installation only, /dev/{null,zero,random,urandom}, a size-capped
   tmpfs /tmp (the only writable place, gone with the namespace), then pivot_root()s into it and
   detaches the old root: /home, /root, /work, the caller's /tmp and /proc do not exist inside.
   As root no user namespace is needed; as non-root NEWUSER maps the caller's uid to 1000.
2. Credentials. As root the program runs under a random unused uid/gid (2e9 + n) with no groups,
   an emptied capability bounding set and no_new_privs: it can neither read root-only files nor
   signal or ptrace init. In a user namespace exec() as uid 1000 drops every capability; init is
   made non-dumpable so the program cannot ptrace it either.
3. Resource limits (setrlimit): address space (`memory_mb`), CPU seconds, processes (as root the
   uid is unique, in a user namespace the count is per namespace, so the limit is per run; it is
   ignored for root, hence the uid change), file size, open files, no core dumps. tmpfs sizes cap
   /tmp. Total memory can reach `max_processes * memory_mb` (no cgroup is used).
4. Time and output. init kills everything at `timeout_s` of wall clock; the harness reads the
   program's stdout+stderr itself and stops the run past `max_output_bytes` (it closes the helper's
   stdin, init's lifeline); if init never reports, a backstop kills the helper's process group
   and the run is an "error" (the sandbox's fault, not the program's). Wall-clock time includes
   the program's Python start-up: on a heavily loaded machine raise the timeout.
5. Clean environment: the program gets PATH/HOME/LANG only, `python -I -S -B`, stdin /dev/null.

Completion marker. A run passes only when runner.py's `exec()` of the program returned and the
runner then wrote a token to fd 3, a pipe to init, and the process exited with status 0. So
sys.exit(0), os._exit(0), SystemExit(0) raised inside check(), an atexit hook that turns a
failed assertion into exit status 0, or "passed" printed on stdout all fail. We chose an
out-of-band fd over a nonce printed on stdout: code that shares the interpreter with check() can
find any secret the interpreter holds (frames, gc, memory), so a nonce would only move the
forgery; a token on a private fd cannot be faked by echoing the source, the environment or any
file (none holds it). Code written deliberately against this harness could still write to fd 3,
just as it could return an object whose __eq__ is always true: the sandbox contains such code,
it cannot certify its honesty.

Without namespaces (no root, unprivileged user namespaces disabled) `run_untrusted` raises
`SandboxUnavailable` (a UserError) unless `unsafe_no_isolation=True`: then only layers 3-5 hold,
the program runs in a temporary directory, and init, as a child subreaper, kills its descendants.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import resource
import select
import signal
import sys
import time

TYPE_CHECKING = False  # typing's constant without importing typing into the helper; type checkers take it as True

if TYPE_CHECKING:
    from dataclasses import dataclass as _dataclass
elif __name__ == "__main__":  # the helper process: skip what only the harness side needs

    def _dataclass(cls):
        return cls
else:
    from dataclasses import dataclass as _dataclass

NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_PRIVATE, MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1 << 18, 1024, 2048, 1 << 21
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 36, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)
EXPOSED = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
INNER_ID = 1000  # uid/gid of the program inside a user namespace
BACKSTOP_S, TAIL_BYTES, TMP_MB = 60.0, 4096, 64  # backstop: start-up on a loaded machine
RUNNER = """import os, sys, types
def _run():
    mod = types.ModuleType("__main__"); mod.__file__ = "/sandbox/prog.py"
    sys.modules["__main__"] = mod
    with open(mod.__file__, encoding="utf-8") as f:
        code = compile(f.read(), mod.__file__, "exec")
    exec(code, mod.__dict__)
    sys.stdout.flush(); sys.stderr.flush()
    os.write(3, b"RAN-TO-END")
_run()
"""
MARKER = b"RAN-TO-END"


@_dataclass
class SandboxResult:
    status: str  # "passed" | "failed" | "timeout" | "error"
    reason: str  # one line
    returncode: int | None = None  # negative: killed by that signal
    stdout_tail: str = ""  # last TAIL_BYTES of stdout+stderr
    duration_s: float = 0.0


if TYPE_CHECKING:
    from disha_bench.core.errors import UserError as _Base
else:
    try:
        from disha_bench.core.errors import UserError as _Base
    except ImportError:  # running as the helper script (python -I -S): never raised there
        _Base = Exception


class SandboxUnavailable(_Base):
    """No namespaces here: refuse rather than run untrusted code unsandboxed."""

    def __init__(self, detail: str):
        super().__init__(
            f"cannot isolate untrusted code ({detail}); run as root, or enable unprivileged user "
            "namespaces (sysctl user.max_user_namespaces>0, kernel.unprivileged_userns_clone=1, "
            "kernel.apparmor_restrict_unprivileged_userns=0), or pass --unsafe-no-isolation to "
            "run it without a sandbox")


def _python() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def run_untrusted(source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                  max_processes: int = 16, max_output_bytes: int = 1_000_000,
                  unsafe_no_isolation: bool = False) -> SandboxResult:
    """Run `source` as __main__ in a fresh sandbox; see the module docstring."""
    import subprocess
    import tempfile

    mount_dir = tempfile.mkdtemp(prefix="disha-sandbox-")
    cfg = dict(source=source, timeout_s=float(timeout_s), memory_mb=int(memory_mb),
               max_processes=int(max_processes), isolate=not unsafe_no_isolation, mount_dir=mount_dir)
    out_r, out_w = os.pipe()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [_python(), "-I", "-S", "-B", os.path.abspath(__file__), str(out_w)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(out_w,), cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True)
    except BaseException:
        os.close(out_r)
        os.rmdir(mount_dir)
        raise
    finally:
        os.close(out_w)
    try:
        return _supervise(proc, cfg, out_r, start, max_output_bytes)
    finally:
        os.close(out_r)
        try:
            os.rmdir(mount_dir)
        except OSError:
            pass


def _supervise(proc, cfg, out_r, start, max_output_bytes) -> SandboxResult:
    try:
        blob = marshal.dumps(cfg)  # marshal, not json: nothing to import in the helper
        proc.stdin.write(len(blob).to_bytes(8, "little") + blob)
        proc.stdin.flush()  # stdin stays open: closing it tells init to stop (its lifeline)
    except BrokenPipeError:
        pass
    bufs, stopped = _collect(proc, out_r, start + cfg["timeout_s"] + BACKSTOP_S, max_output_bytes)
    _close_quietly(proc.stdin)
    proc.wait()
    duration = time.monotonic() - start
    tail = bytes(bufs[out_r][-TAIL_BYTES:]).decode("utf-8", "replace")
    res = SandboxResult("error", "", None, tail, duration)
    try:
        report = marshal.loads(bytes(bufs[proc.stdout.fileno()]))
    except (ValueError, EOFError, TypeError):
        report = None
    if stopped == "output":
        res.status, res.reason = "failed", f"output exceeded {max_output_bytes} bytes"
    elif stopped == "backstop":  # init enforces the timeout; if it did not, the fault is ours
        res.reason = f"the sandbox did not finish within {cfg['timeout_s'] + BACKSTOP_S:g} s"
    elif report and report.get("timeout"):
        res.status, res.reason = "timeout", f"timed out after {cfg['timeout_s']:g} s"
    elif report is None:
        err = bytes(bufs[proc.stderr.fileno()]).decode("utf-8", "replace").strip().splitlines()
        res.reason = "sandbox helper died: " + (err[-1] if err else f"exit status {proc.returncode}")
    elif "setup_error" in report:
        if report.get("unavailable"):
            raise SandboxUnavailable(report["setup_error"])
        res.reason = "sandbox setup failed: " + report["setup_error"]
    else:
        res.returncode = report["returncode"]
        res.status, res.reason = _program_outcome(report["returncode"], report["marker"], tail)
    res.reason = " ".join(res.reason.split())[:300]
    return res


def _collect(proc, out_r: int, deadline: float, max_output_bytes: int) -> tuple[dict[int, bytearray], str | None]:
    """Read the program's output (`out_r`) and the helper's stdout/stderr until all close.

    Returns the buffers (the program's keeps its last 64-128 KiB) and why the run was stopped:
    "output" (past `max_output_bytes`: init's lifeline, the helper's stdin, is closed), "backstop"
    (init never finished by `deadline`: the helper's process group is killed) or None."""
    bufs = {out_r: bytearray(), proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    open_fds, total, stopped, killed = set(bufs), 0, None, False
    poller = select.poll()
    for fd in bufs:
        poller.register(fd, select.POLLIN)
    while open_fds:
        if time.monotonic() > deadline and not killed:  # init never finished
            stopped, killed = stopped or "backstop", True
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # helper and init: the namespace dies with init
            except ProcessLookupError:
                pass
        for fd, _ in poller.poll(500):
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
                poller.unregister(fd)
                continue
            if fd == out_r:
                total += len(data)
                if total > max_output_bytes and stopped is None:
                    stopped = "output"
                    _close_quietly(proc.stdin)
            buf = bufs[fd]
            buf += data
            if len(buf) > 2 * 65536:
                del buf[:-65536]
    return bufs, stopped


def _program_outcome(rc: int, ran_to_end: bool, tail: str) -> tuple[str, str]:
    """Status and reason of a program that init ran and reaped (exit status `rc`, marker seen or not)."""
    if ran_to_end and rc == 0:
        return "passed", "passed"
    if ran_to_end:
        return "failed", f"ran to the end, then exited with status {rc}"
    if rc == 0:
        return "failed", "exited with status 0 before the program ran to its end"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}.get(name, "")
        return "failed", f"killed by {name}{hint}"
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    return "failed", lines[-1].strip() if lines else f"exited with status {rc}"


def _close_quietly(f) -> None:
    try:
        f.close()
    except OSError:
        pass


# ---------------------------------------------------------------- helper side (runs as a script)

_libc = None


def _call(name: str, *args) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    ret = getattr(_libc, name)(*args)
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


def _mount(src, dst, fstype, flags, data=None) -> None:
    def enc(s):
        return s.encode() if isinstance(s, str) else s

    _call("mount", enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data))


def _report(**kw) -> None:
    os.write(1, marshal.dumps(kw))  # the one message the harness reads on the helper's stdout


def _read_exactly(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError("the harness closed the config pipe")
        data += chunk
    return data


def _helper_main() -> int:
    out_w = int(sys.argv[1])
    cfg = marshal.loads(_read_exactly(0, int.from_bytes(_read_exactly(0, 8), "little")))
    uid, gid = os.getuid(), os.getgid()
    with open("/proc/self/uid_map") as f:  # root of the initial user namespace, not a mapped one
        real_root = uid == 0 and f.read().split() == ["0", "0", "4294967295"]
    # as real root: a fresh uid for the program, so RLIMIT_NPROC (counted per uid) is per run
    cfg["ident"] = 2_000_000_000 + int.from_bytes(os.urandom(4), "big") % 100_000_000 if real_root else None
    if cfg["isolate"]:
        flags = NEWNS | NEWPID | NEWNET | NEWIPC | NEWUTS | (0 if real_root else NEWUSER)
        try:
            try:
                _call("unshare", flags)
            except OSError as e:
                names = ("NEWUSER|" if flags & NEWUSER else "") + "NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS"
                raise OSError(e.errno, f"unshare({names}) failed: {e.strerror}") from None
            if not real_root:
                for name, text in (("setgroups", "deny"), ("uid_map", f"{INNER_ID} {uid} 1"),
                                   ("gid_map", f"{INNER_ID} {gid} 1")):
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
        except OSError as e:
            _report(setup_error=e.strerror or str(e), unavailable=True)
            return 3
    pid = os.fork()
    if pid == 0:
        code = 4
        try:
            code = _init_main(cfg, out_w)
        except BaseException as e:  # noqa: BLE001 - reported, then the namespace dies
            _report(setup_error=f"{type(e).__name__}: {e}")
        os._exit(code)
    os.close(out_w)
    os.waitpid(pid, 0)
    return 0


def _expose(path: str, root: str, done: list[str]) -> None:
    """Bind `path` read-only (or copy it as a symlink) into the new root."""
    if not os.path.lexists(path) or any(path == d or path.startswith(d + "/") for d in done):
        return
    target = root + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
        return
    os.makedirs(target, mode=0o755, exist_ok=True)
    _mount(path, target, None, MS_BIND | MS_REC)
    st = os.statvfs(path).f_flag  # keep flags a user namespace may not clear
    keep = [(os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
            (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)]
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    _mount(None, target, None, flags | sum(ms for st_flag, ms in keep if st & st_flag))
    done.append(path)


def _build_root(cfg: dict) -> None:
    root = cfg["mount_dir"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks to the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    py = _python()
    done: list[str] = []
    for path in (*EXPOSED, *{os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)},
                 os.path.dirname(py)):
        _expose(path, root, done)
    os.mkdir(root + "/dev", 0o755)
    for dev in ("null", "zero", "random", "urandom"):
        open(f"{root}/dev/{dev}", "w").close()
        _mount(f"/dev/{dev}", f"{root}/dev/{dev}", None, MS_BIND)
    os.mkdir(root + "/tmp", 0o1777)
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={TMP_MB}m,mode=1777")
    os.mkdir(root + "/sandbox", 0o755)
    for name, text in (("runner.py", RUNNER), ("prog.py", cfg["source"])):
        with open(f"{root}/sandbox/{name}", "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(f"{root}/sandbox/{name}", 0o644)
    os.chdir(root)
    if SYS_PIVOT_ROOT is None:
        os.chroot(".")
    else:
        _call("syscall", SYS_PIVOT_ROOT, b".", b".")  # the old root is stacked under the new one
        _call("umount2", b".", 2)  # MNT_DETACH: and now it is gone
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _call("sethostname", b"sandbox", 7)


def _init_main(cfg: dict, out_w: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # no Python handler the program could trigger
    isolate = cfg["isolate"]
    _call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
    ident = cfg["ident"] if isolate else None  # unsafe mode: the caller's uid (it runs Python)
    if isolate:
        if os.getpid() != 1:  # kill(-1) below must only ever reach this namespace
            raise RuntimeError("init is not pid 1 of a new pid namespace")
        _call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        try:
            _build_root(cfg)
        except OSError as e:
            _report(setup_error=f"building the sandbox root: {e}", unavailable=True)
            return 3
        runner, workdir = "/sandbox/runner.py", "/tmp"
    else:
        runner, workdir = _unsafe_workdir(cfg["source"])
    mine, theirs = os.pipe()  # the marker channel, fd 3 in the program
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            _exec_program(cfg, out_w, theirs, runner, workdir, ident)
        except BaseException as e:  # noqa: BLE001 - fd 2 is the output pipe by now
            os.write(2, f"sandbox: cannot start the program: {e}\n".encode())
        finally:
            os._exit(126)
    os.close(out_w)
    os.close(theirs)
    marker, returncode, timed_out = _wait_program(pid, mine, start + cfg["timeout_s"])
    if isolate:
        try:
            os.kill(-1, signal.SIGKILL)  # from pid 1: every other process of the namespace
        except ProcessLookupError:
            pass
    else:
        _kill_descendants()
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    os.set_blocking(mine, False)
    try:
        marker += os.read(mine, 64)
    except OSError:
        pass
    _report(returncode=returncode, marker=marker == MARKER, timeout=timed_out)
    return 0


def _unsafe_workdir(source: str) -> tuple[str, str]:
    """Unsafe mode: become a child subreaper and write runner and program into a temporary folder."""
    import tempfile

    _call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    workdir = tempfile.mkdtemp(prefix="disha-unsafe-")
    prog = workdir + "/prog.py"
    runner = workdir + "/runner.py"
    for path, text in ((runner, RUNNER.replace("/sandbox/prog.py", prog)), (prog, source)):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return runner, workdir


def _wait_program(pid: int, mine: int, deadline: float) -> tuple[bytes, int | None, bool]:
    """Wait for the program until it exits, `deadline` passes or the harness hangs up (stdin).

    Returns the marker bytes read from `mine` so far, the exit code (None if it did not exit)
    and whether the deadline passed."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (pidfd, mine, 0):
        poller.register(fd, select.POLLIN)
    marker, returncode, timed_out = b"", None, False
    while returncode is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        events = dict(poller.poll(left * 1000))
        if mine in events:
            data = os.read(mine, 64)
            marker += data
            if not data or len(marker) > 64:
                poller.unregister(mine)
        if 0 in events and not os.read(0, 1):
            break  # the harness hung up (output limit, or it died)
        if pidfd in events:
            returncode = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return marker, returncode, timed_out


def _kill_descendants() -> None:
    """Unsafe mode: as a child subreaper every orphan becomes our child; kill until none is left."""
    while True:
        kids: set[int] = set()
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                kids.update(int(p) for p in f.read().split())
        if not kids:
            return
        for kid in kids:
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in kids:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break


def _exec_program(cfg: dict, out_w: int, marker_fd: int, runner: str, workdir: str,
                  ident: int | None) -> None:
    os.setsid()  # its own process group: kill(0, ...) reaches only the program's processes
    import fcntl

    # copy the sources above 0-3 first, so that no dup2 below clobbers a later source (or is a
    # no-op that leaves close-on-exec set)
    null, out_w, marker_fd = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in
                              (os.open("/dev/null", os.O_RDONLY), out_w, marker_fd))
    for src, dst in ((null, 0), (out_w, 1), (out_w, 2), (marker_fd, 3)):
        os.dup2(src, dst)  # inheritable
    os.closerange(4, 1 << 16)
    timeout = int(cfg["timeout_s"]) + 1
    mem = cfg["memory_mb"] << 20
    # in a user namespace the count is per namespace and includes helper and init
    nproc = cfg["max_processes"] + (0 if ident is not None else 2)
    for lim, val in ((resource.RLIMIT_AS, (mem, mem)), (resource.RLIMIT_CPU, (timeout, timeout + 1)),
                     (resource.RLIMIT_NPROC, (nproc, nproc)),
                     (resource.RLIMIT_FSIZE, (TMP_MB << 20,) * 2),
                     (resource.RLIMIT_NOFILE, (256, 256)), (resource.RLIMIT_CORE, (0, 0))):
        resource.setrlimit(lim, val)
    for cap in range(64):  # empty the bounding set: no way back to any capability
        try:
            _call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
        except OSError:
            break
    if ident is not None:
        os.setgroups([])
        os.setresgid(ident, ident, ident)
        os.setresuid(ident, ident, ident)
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir(workdir)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    os.execve(_python(), [_python(), "-I", "-S", "-B", runner], env)


if __name__ == "__main__":
    sys.exit(_helper_main())
