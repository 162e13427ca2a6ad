"""The sandbox contains hostile completions: each is a failed sample with a reason, and nothing
outside (files, environment, network, processes, this test process) is touched."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from disha_bench.evaluation.code_execution import build_program, check_sample
from disha_bench.evaluation.sandbox import SandboxUnavailable, run_untrusted

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

REPO = Path(__file__).resolve().parents[1]
TOY = {"task_id": "Toy/0", "prompt": "def add(a, b):\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}
OK = "    return a + b\n"  # a correct body: every hostile case below would pass without the attack
TIMEOUT = 20.0  # generous: only the looping cases wait for it, and CI machines can be loaded
LOOP_TIMEOUT = 2.0

# id, completion (formatted with the fixture's values), expected status, expected reason part
HOSTILE = [
    ("infinite_loop", "    while True:\n        pass\n", "timeout", "timed out"),
    ("ignore_sigterm", OK + "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
     "while True:\n    time.sleep(0.1)\n", "timeout", "timed out"),
    ("new_session_daemons", OK + textwrap.dedent("""\
        import os, subprocess, sys, time
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        subprocess.Popen([sys.executable, "-c", code, "{token}"], start_new_session=True)
        if os.fork() == 0:  # double fork into a new session
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", code, "{token}"])
            os._exit(0)
        time.sleep(0.5)
        os._exit(0)
        """), "failed", "status 0 before"),
    ("fork_bomb", OK + "import os, sys\nwhile True:\n    if os.fork() == 0:\n        os.execv("
     "sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', '{token}'])\n",
     "failed", "BlockingIOError"),
    ("multi_gb_allocation", OK + "x = bytearray(8 * 1024 ** 3)\n", "failed", "MemoryError"),
    ("write_outside", OK + "open({victim!r}, 'w').write('pwned')\n", "failed", "FileNotFoundError"),
    ("delete_outside", OK + "import os\nos.remove({victim!r})\n", "failed", "FileNotFoundError"),
    ("write_usr", OK + "open('/usr/disha-pwned-{token}', 'w').write('pwned')\n", "failed", "Error"),
    ("fill_tmp", OK + "open('/tmp/big', 'wb').write(b'x' * (80 << 20))\n", "failed", "Error"),
    ("read_secret_file", OK + "print(open({secret!r}).read())\n", "failed", "FileNotFoundError"),
    ("read_caller_proc", OK + "print(open('/proc/{caller}/environ').read())\n", "failed",
     "FileNotFoundError"),
    ("read_environment", OK + "import os\nprint(os.environ[{env!r}])\n", "failed", "KeyError"),
    ("network", OK + "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
     "s.sendall(b'leak')\n", "failed", "OSError"),
    ("nested_userns_escape", OK + textwrap.dedent("""\
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000 | 0x20000) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        print(open({secret!r}).read())
        """), "failed", "Error"),
    ("become_root", OK + "import os\nos.setuid(0)\n", "failed", "PermissionError"),
    ("kill_parent", OK + "import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(0.2)\n"
     "os.killpg(0, 9)\n", "failed", ""),
    ("kill_everything", OK + "import os\nos.kill(-1, 9)\n", "failed", ""),
    ("os_exit_0", OK + "import os\nos._exit(0)\n", "failed", "status 0 before"),
    ("sys_exit_0", OK + "import sys\nsys.exit(0)\n", "failed", "status 0 before"),
    ("system_exit_in_candidate", "    raise SystemExit(0)\n", "failed", "status 0 before"),
    ("atexit_exit_0", "    return a - b\nimport atexit, os\natexit.register(os._exit, 0)\n",
     "failed", "status 0 before"),
    ("fake_marker_on_stdout", OK + "import os\nprint('RAN-TO-END passed')\nos._exit(0)\n", "failed",
     "status 0 before"),
    ("exit_1_after_check", OK + "import atexit, os\natexit.register(os._exit, 1)\n", "failed",
     "then exited with status 1"),
    ("gigabyte_of_output", OK + "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
     "failed", "output exceeded"),
]


def _processes_with(token: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(int(pid))
    return found


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Things a contained program must not reach: files, an env var, a listener."""
    token = uuid.uuid4().hex
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    secret = tmp_path / "secret.txt"
    secret.write_text(f"SECRET-{token}")
    monkeypatch.setenv("DISHA_TEST_SECRET", f"ENV-{token}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    yield dict(token=token, victim=str(victim), secret=str(secret), env="DISHA_TEST_SECRET",
               port=listener.getsockname()[1], caller=os.getpid(), listener=listener)
    listener.close()
    Path(f"/usr/disha-pwned-{token}").unlink(missing_ok=True)


def test_correct_and_empty_bodies():
    assert check_sample(TOY, OK, timeout_s=TIMEOUT).status == "passed"
    res = check_sample(TOY, "    pass\n", timeout_s=TIMEOUT)
    assert (res.status, res.reason) == ("failed", "AssertionError")


@pytest.mark.parametrize("name,completion,status,reason", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_completion_is_contained(world, name, completion, status, reason):
    timeout = LOOP_TIMEOUT if status == "timeout" else TIMEOUT
    res = check_sample(TOY, completion.format(**world), timeout_s=timeout)
    assert res.status == status, res
    assert res.reason and reason in res.reason, res
    assert "\n" not in res.reason
    # nothing outside was touched or seen
    assert Path(world["victim"]).read_text() == "original"
    assert not Path(f"/usr/disha-pwned-{world['token']}").exists()
    for leaked in (f"SECRET-{world['token']}", f"ENV-{world['token']}"):
        assert leaked not in res.stdout_tail and leaked not in res.reason
    with pytest.raises(socket.timeout):
        world["listener"].accept()
    deadline = time.monotonic() + 2
    while _processes_with(world["token"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(world["token"]) == []


def test_tmp_is_writable_and_fresh():
    src = ("import os\nassert os.listdir('/tmp') == [], os.listdir('/tmp')\n"
           "open('/tmp/x', 'w').write('ok')\nassert os.getcwd() == '/tmp'\n")
    assert run_untrusted(src, timeout_s=TIMEOUT).status == "passed"
    assert run_untrusted(src, timeout_s=TIMEOUT).status == "passed"  # not the same /tmp


def test_program_sees_no_caller_files():
    src = "import os\nprint(sorted(os.listdir('/')))\nassert not os.path.exists('/work')\n"
    res = run_untrusted(src, timeout_s=TIMEOUT)
    assert res.status == "passed", res
    assert set(eval(res.stdout_tail)) <= {"bin", "dev", "lib", "lib32", "lib64", "libx32", "sbin",
                                          "usr", "tmp", "sandbox", "root", "home", "opt"}


def test_stdout_tail_and_syntax_error():
    res = run_untrusted("def f(:\n", timeout_s=TIMEOUT)
    assert res.status == "failed" and res.reason.startswith("SyntaxError")


def test_unsafe_mode_still_limits_and_reaps():
    token = uuid.uuid4().hex
    assert run_untrusted("print(1)", unsafe_no_isolation=True).status == "passed"
    res = run_untrusted("while True: pass", timeout_s=LOOP_TIMEOUT, unsafe_no_isolation=True)
    assert res.status == "timeout"
    src = ("import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; "
           f"time.sleep(600)', '{token}'], start_new_session=True)\nraise SystemExit(0)\n")
    res = run_untrusted(src, timeout_s=TIMEOUT, unsafe_no_isolation=True)
    assert res.status == "failed"
    time.sleep(0.2)
    assert _processes_with(token) == []


def _run_in_userns(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_refuses_without_namespaces():
    """With namespace creation forbidden the sandbox refuses instead of running unsandboxed."""
    probe = _run_in_userns("true")
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr.strip()}")
    code = ("from disha_bench.evaluation.sandbox import run_untrusted\n"
            "try:\n    run_untrusted('print(1)')\nexcept Exception as e:\n"
            "    print(type(e).__name__, e)\n")
    # inside a user namespace we own, forbid new network namespaces, then try to sandbox
    out = _run_in_userns('echo 0 > /proc/sys/user/max_net_namespaces && exec "$0" -c "$1"',
                         sys.executable, code)
    assert "SandboxUnavailable cannot isolate untrusted code" in out.stdout, out
    assert "--unsafe-no-isolation" in out.stdout
    assert issubclass(SandboxUnavailable, Exception)


NOBODY_SCRIPT = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
# By its file: the sandbox needs only the standard library, while its package (disha_bench.tasks) imports
# torch, which the system Python the unprivileged user runs lacks.
spec = importlib.util.spec_from_file_location("disha_sandbox", sys.argv[1] + "/disha_bench/evaluation/sandbox.py")
sandbox = sys.modules["disha_sandbox"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)
run_untrusted = sandbox.run_untrusted
cases = json.loads(sys.argv[2])
print(json.dumps({k: run_untrusted(src, timeout_s=2 if k == "loop" else 20).status
                  for k, src in cases.items()}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to switch to an unprivileged user")
def test_unprivileged_user_namespace_path(world):
    """As a non-root user the sandbox uses a user namespace and still contains the program."""
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("needs a system Python an unprivileged user can run")
    shared = Path(tempfile.mkdtemp(prefix="disha-nobody-"))
    try:
        shared.chmod(0o755)
        secret = shared / "secret.txt"
        secret.write_text(f"SECRET-{world['token']}")  # readable by nobody outside the sandbox
        secret.chmod(0o644)
        # The package goes beside it: the checkout may sit where nobody cannot read (mktemp -d is 0700).
        shutil.copytree(REPO / "disha_bench", shared / "disha_bench",
                        ignore=shutil.ignore_patterns("__pycache__"))
        cases = {
            "ok": "print('hi')",
            "secret": f"print(open({str(secret)!r}).read())",
            "network": f"import socket\nsocket.create_connection(('127.0.0.1', {world['port']}), 2)",
            "daemon": ("import subprocess, sys, os\nsubprocess.Popen([sys.executable, '-c', 'import "
                       f"time; time.sleep(600)', '{world['token']}'], start_new_session=True)\n"
                       "os._exit(0)"),
            "kill_parent": "import os\nos.kill(os.getppid(), 9)\nos.kill(-1, 9)",
            "loop": "while True: pass",
        }
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              python, "-I", "-c", NOBODY_SCRIPT, str(shared), json.dumps(cases)],
                             capture_output=True, text=True, timeout=120, cwd="/")
        if "cannot isolate" in out.stderr or "Permission denied" in out.stderr:
            pytest.skip(f"unprivileged path unavailable: {out.stderr.strip()[-300:]}")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.splitlines()[-1]) == {"ok": "passed", "secret": "failed", "network": "failed",
                                          "daemon": "failed", "kill_parent": "failed",
                                          "loop": "timeout"}
        with pytest.raises(socket.timeout):
            world["listener"].accept()
        time.sleep(0.2)
        assert _processes_with(world["token"]) == []
    finally:
        shutil.rmtree(shared)


def test_build_program_layout():
    prog = build_program(TOY, OK)
    assert prog == TOY["prompt"] + OK + "\n" + TOY["test"] + "\ncheck(add)\n"
