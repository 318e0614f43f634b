"""The code sandbox (rewards/sandbox.py): honest programs run; every attack is contained.

Each attack test also checks that nothing it started outlives the run: processes that must die
carry a per-test marker in their command line, and /proc on the host is scanned for it.
Network checks use a listener this test opens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pathlib
import platform
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from rewards import sandbox
from rewards.sandbox import SandboxUnavailable, run_python, sandbox_layers


def _stray(marker: str) -> list[int]:
    """Host processes whose command line carries `marker` (psutil-free)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _assert_no_stray(marker: str) -> None:
    for _ in range(50):  # the kernel may still be tearing the namespace down
        if not _stray(marker):
            return
        time.sleep(0.02)
    assert _stray(marker) == [], f"processes with marker {marker} survived the run"


def _spawn_marked(marker: str, seconds: int = 60) -> str:
    """Python source that starts a long-lived process whose argv carries `marker`."""
    return (f"import os, sys\n"
            f"os.execv(sys.executable, [sys.executable, '-S', '-c', "
            f"'import time; time.sleep({seconds})', {marker!r}])\n")


@pytest.fixture(scope="module", autouse=True)
def _layers():
    sandbox_layers()  # raises SandboxUnavailable (with the fix) on a machine that cannot sandbox


def _marker() -> str:
    return "rlpipe-test-" + secrets.token_hex(6)


# ----------------------------------------------------------------------------- honest programs

def test_honest_program_reads_stdin_and_writes_unicode():
    r = run_python("name = input()\nprint(f'héllo {name} ✓ 日本語')\n", stdin="wörld\n")
    assert (r.status, r.exit_code) == ("ok", 0)
    assert r.stdout == "héllo wörld ✓ 日本語\n"


def test_honest_recursion_depth_900():
    r = run_python("def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\nprint(f(900))\n")
    assert r.status == "ok" and r.stdout.strip() == "900"


def test_honest_50mb_list():
    r = run_python("l = [0] * (50 * 2**20 // 8)\nb = bytearray(50 * 2**20)\nprint(len(l), len(b))\n")
    assert r.status == "ok", r.stderr
    assert r.stdout.split() == [str(50 * 2**20 // 8), str(50 * 2**20)]


def test_nonzero_exit_is_error_and_exit_builtin_works():
    r = run_python("print('x')\nexit(3)\n")
    assert (r.status, r.exit_code, r.stdout) == ("error", 3, "x\n")


def test_stdlib_only_and_isolated_mode():
    r = run_python("import sys, json, math, collections, itertools\n"
                   "print(sys.flags.isolated, sys.flags.no_site, any('site-packages' in p for p in sys.path))\n")
    assert r.stdout.split() == ["1", "1", "False"]


def test_runs_unprivileged_without_capabilities():
    r = run_python("import os\n"
                   "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
                   "print(os.getuid(), status['CapEff'].strip(), status['CapBnd'].strip(), "
                   "status['NoNewPrivs'].strip(), status['Seccomp'].strip())\n")
    uid, cap_eff, cap_bnd, no_new_privs, seccomp = r.stdout.split()
    assert uid == "65534" and int(cap_eff, 16) == 0 and int(cap_bnd, 16) == 0 and no_new_privs == "1"
    if platform.machine() == "x86_64":
        assert seccomp == "2"  # filter mode


# ----------------------------------------------------------------------------- time

def test_infinite_loop_times_out():
    r = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert r.status == "timeout" and r.wall_s < 3.0


def test_sleep_times_out():
    r = run_python("import time\ntime.sleep(100)\n", timeout_s=1.0)
    assert r.status == "timeout" and r.wall_s < 3.0


def test_reading_past_end_of_stdin_does_not_block():
    r = run_python("a = input()\nb = input()\n", stdin="only one line\n", timeout_s=5.0)
    assert r.status == "error" and "EOFError" in r.stderr and r.wall_s < 4.0


def test_ignoring_signals_does_not_help():
    marker = _marker()
    code = ("import signal, os\n"
            "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):\n"
            "    signal.signal(s, signal.SIG_IGN)\n"
            "if os.fork() == 0:\n" + "".join("    " + ln + "\n" for ln in _spawn_marked(marker).splitlines()) +
            "while True:\n    pass\n")
    r = run_python(code, timeout_s=1.0)
    assert r.status == "timeout" and r.wall_s < 3.0
    _assert_no_stray(marker)


# ----------------------------------------------------------------------------- processes

def test_fork_bomb_is_contained():
    marker = _marker()
    code = ("import os\n"
            "while True:\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            f"            os.execv('/bin/sleep', ['/bin/sleep', '30', {marker!r}])\n"
            "    except OSError:\n"
            "        pass\n")
    r = run_python(code, timeout_s=2.0)
    assert r.status in ("timeout", "error", "killed") and r.wall_s < 4.0
    _assert_no_stray(marker)


def test_process_limit_binds_inside():
    code = ("import os, time\nn = 0\n"
            "try:\n"
            "    while n < 500:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(5)\n"
            "            os._exit(0)\n"
            "        n += 1\n"
            "except OSError:\n"
            "    pass\n"
            "print(n)\n")
    r = run_python(code, timeout_s=5.0)
    assert r.status == "ok"
    assert int(r.stdout) < sandbox.SandboxLimits().max_processes


def test_double_fork_daemon_dies_with_the_run():
    marker = _marker()
    code = ("import os\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n" + "".join("        " + ln + "\n" for ln in _spawn_marked(marker).splitlines()) +
            "    os._exit(0)\n"
            "os.wait()\n"
            "import time\ntime.sleep(0.3)\n"
            "print('parent done')\n")
    r = run_python(code, timeout_s=5.0)
    assert r.status == "ok" and r.stdout == "parent done\n"
    assert r.wall_s < 3.0  # the daemon does not keep the run alive
    _assert_no_stray(marker)


def test_killing_parent_and_process_group_is_harmless():
    code = ("import os, signal\n"
            "for target in (os.getppid(), 0, -1, 1):\n"
            "    for fn in (os.kill, ):\n"
            "        try:\n"
            "            fn(target, signal.SIGKILL)\n"
            "        except OSError:\n"
            "            pass\n"
            "try:\n    os.killpg(0, signal.SIGKILL)\nexcept OSError:\n    pass\n"
            "print('still here')\n")
    r = run_python(code)
    # We are still running (this test process was not hit), and so is the sandbox's own PID 1.
    assert r.status == "ok" and r.stdout == "still here\n"


def test_ctypes_crash_is_reported_as_killed():
    r = run_python("import ctypes\nctypes.string_at(0)\n")
    assert r.status == "killed" and r.exit_code == -11


def test_deep_recursion_is_contained():
    r = run_python("import sys\nsys.setrecursionlimit(10**7)\n"
                   "def f(n):\n    return f(n + 1) + 1\nf(0)\n", timeout_s=2.0)
    assert r.status in ("error", "killed", "timeout") and r.wall_s < 4.0


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter is x86_64-only")
def test_seccomp_denies_ptrace_namespaces_and_bpf():
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "for name, call in (('ptrace', lambda: libc.ptrace(0, 0, 0, 0)),\n"
            "                   ('unshare', lambda: libc.unshare(0x10000000)),\n"
            "                   ('bpf', lambda: libc.syscall(321, 0, 0, 0))):\n"
            "    print(name, call(), ctypes.get_errno())\n")
    r = run_python(code)
    assert r.stdout.split("\n")[:3] == ["ptrace -1 1", "unshare -1 1", "bpf -1 1"]  # EPERM


# ----------------------------------------------------------------------------- memory, output, disk

def test_memory_bomb_single_allocation():
    r = run_python("x = bytearray(10**10)\n")
    assert r.status == "oom"


def test_memory_bomb_growing():
    r = run_python("l = []\nwhile True:\n    l.append(' ' * 10**7)\n", timeout_s=5.0)
    assert r.status == "oom" and r.wall_s < 4.0


def test_memory_bomb_across_processes_is_capped_by_cgroup():
    # Each child stays under its own address-space limit; together they exceed the run's memory
    # cgroup, so the kernel's OOM killer must take some of them.
    if not sandbox_layers()["memory_cgroup"]:
        pytest.skip("no writable memory cgroup on this machine")
    code = ("import os, time, signal\n"
            "pids = []\n"
            "for i in range(6):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        b = bytearray(150 * 2**20)\n"
            "        b[::4096] = b'x' * len(b[::4096])\n"
            "        time.sleep(30)\n"
            "        os._exit(0)\n"
            "    pids.append(pid)\n"
            "time.sleep(2)\n"
            "killed = 0\n"
            "for pid in pids:\n"
            "    done, status = os.waitpid(pid, os.WNOHANG)\n"
            "    killed += bool(done and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)\n"
            "print(killed)\n")
    r = run_python(code, timeout_s=8.0)
    assert r.status in ("ok", "oom"), r
    assert int(r.stdout) >= 3  # 6 x 150 MB against a cgroup of memory_mb + disk + 64 MB


def test_huge_output_is_capped_and_killed():
    r = run_python("while True:\n    print('x' * 100000)\n", timeout_s=5.0)
    assert r.status == "killed" and r.truncated
    assert len(r.stdout) <= sandbox.SandboxLimits().max_output_bytes
    assert r.wall_s < 4.0


def test_disk_fill_is_bounded():
    code = ("import os\nn = 0\n"
            "for path in ('/tmp', '/dev/shm'):\n"
            "    for i in range(200):\n"
            "        try:\n"
            "            with open(f'{path}/f{i}', 'wb') as f:\n"
            "                f.write(b'x' * 2**20)\n"
            "            n += 1\n"
            "        except OSError:\n"
            "            break\n"
            "try:\n"
            "    open('/tmp/big', 'wb').write(b'y' * (40 * 2**20))\n"
            "    big = 'wrote'\n"
            "except OSError as e:\n"
            "    big = type(e).__name__\n"
            "print(n, big)\n")
    r = run_python(code)
    n, big = r.stdout.split()
    limits = sandbox.SandboxLimits()
    assert int(n) <= limits.disk_mb + 16
    assert big != "wrote"  # file size limit or a full tmpfs


def test_writes_outside_work_dir_fail(tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    targets = ["/x", "/usr/x", "/etc/x", "/dev/x", "/proc/x", "/sandbox/x", "/root/x",
               str(host_dir / "x"), os.path.join(sandbox.sandbox_layers()["python_prefix"], "x")]
    code = ("ok = []\n"
            f"for p in {targets!r}:\n"
            "    try:\n"
            "        open(p, 'w').write('pwned')\n"
            "        ok.append(p)\n"
            "    except OSError:\n"
            "        pass\n"
            "open('/tmp/fine', 'w').write('ok')\n"
            "print(ok)\n")
    r = run_python(code)
    assert r.status == "ok" and r.stdout.strip() == "[]"
    assert list(host_dir.iterdir()) == []


def test_no_state_survives_between_runs():
    token = secrets.token_hex(8)
    first = run_python(f"open('/tmp/state', 'w').write({token!r})\nopen('/dev/shm/state', 'w').write({token!r})\n")
    assert first.status == "ok"
    second = run_python("import os\nprint(os.path.exists('/tmp/state'), os.path.exists('/dev/shm/state'))\n")
    assert second.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- secrets, network

def test_environment_secrets_do_not_leak(monkeypatch):
    secret = "rlpipe-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("RLPIPE_TEST_SECRET", secret)
    code = ("import os\nout = [repr(dict(os.environ))]\n"
            "for pid in [p for p in os.listdir('/proc') if p.isdigit()] + [str(os.getppid()), '1', 'self']:\n"
            "    try:\n"
            "        out.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))\n"
            "    except OSError as e:\n"
            "        out.append(type(e).__name__)\n"
            "print('\\n'.join(out))\n")
    r = run_python(code)
    assert r.status == "ok"
    assert secret not in r.stdout and "RLPIPE_TEST_SECRET" not in r.stdout


def test_no_network_to_loopback_listener():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    code = ("import socket\n"
            "s = socket.socket()\ns.settimeout(2)\n"
            "try:\n"
            f"    s.connect(('127.0.0.1', {port}))\n"
            "    s.sendall(b'leak')\n"
            "    print('CONNECTED')\n"
            "except OSError as e:\n"
            "    print('blocked', type(e).__name__)\n")
    try:
        r = run_python(code)
        assert r.status == "ok" and r.stdout.startswith("blocked")
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


# ----------------------------------------------------------------------------- set-up

def test_missing_bwrap_refuses_instead_of_running_unsandboxed(monkeypatch):
    monkeypatch.setattr(sandbox, "_layers", None)
    monkeypatch.setattr(sandbox, "_find_bwrap", lambda: None)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        run_python("print('should not run')")


def test_per_run_cgroups_are_removed():
    layers = sandbox_layers()
    run_python("print(1)")
    for base in (layers["pids_cgroup"], layers["memory_cgroup"]):
        if base:
            mine = [d for d in os.listdir(base) if d.startswith(f"rlpipe-sb-{os.getpid()}-")]
            assert mine == []


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv")
                    or not os.path.exists("/usr/bin/python3"),
                    reason="needs root (to become uid 65534), setpriv and a system python3")
def test_non_root_caller_sandboxes_without_cgroups():
    # A non-root caller (as on CI) has no writable cgroup: bwrap runs unprivileged and
    # RLIMIT_NPROC, which binds non-root users, is the process-count limit.
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # pytest's tmp_path is root-only
        _non_root_probe(pathlib.Path(tmp))


def _non_root_probe(tmp_path: pathlib.Path) -> None:
    shutil.copytree(os.path.join(os.path.dirname(sandbox.__file__)), tmp_path / "rewards")
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from rewards.sandbox import run_python, sandbox_layers\n"
        "layers = sandbox_layers()\n"
        "print(layers['pids_cgroup'], 'NPROC' in layers['rlimits'])\n"
        "r = run_python('import os\\nn = 0\\ntry:\\n    while n < 500:\\n        if os.fork() == 0:\\n'\n"
        "               '            import time\\n            time.sleep(3)\\n            os._exit(0)\\n'\n"
        "               '        n += 1\\nexcept OSError:\\n    pass\\nprint(n)\\n')\n"
        "print(r.status, r.stdout.strip())\n")
    os.chmod(tmp_path, 0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    out = subprocess.run(["/usr/bin/setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                          "/usr/bin/python3", str(script)], capture_output=True, text=True, cwd="/",
                         env={}, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == "None True"
    status, forks = second.split()
    assert status == "ok" and int(forks) < sandbox.SandboxLimits().max_processes
