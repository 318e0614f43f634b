"""Hardened local sandbox for untrusted Python (the executor behind the code reward).

`run_python(code, stdin=..., timeout_s=..., memory_mb=...)` runs one program and returns a
`SandboxResult`. Everything is local: no service, no container engine. Isolation in depth:

- bubblewrap (`bwrap`): new user, pid, net, ipc, uts and cgroup namespaces; no capabilities
  (`--cap-drop ALL`, uid/gid 65534 inside, no_new_privs); nested user namespaces disabled.
- Filesystem: a fresh root with only `/usr` and the interpreter's prefix bound read-only, a
  fresh `/proc` and minimal `/dev`, the root and `/dev` remounted read-only, and fresh
  size-limited tmpfs mounts on `/tmp` (the working directory) and `/dev/shm` as the only
  writable places. The program itself is a read-only file. Nothing survives a run: the
  namespaces and the tmpfs mounts die with it.
- Empty environment, including for bwrap itself (its environment would otherwise be readable
  inside), and no bwrap init in the sandbox (`--as-pid-1`): an init would be a dumpable process
  holding copies of every descriptor passed in.
- seccomp (x86_64): ptrace, cross-process memory/descriptor access, bpf, perf_event_open,
  userfaultfd, io_uring, keyrings, namespace/mount/module/reboot calls fail with EPERM.
- `python -I -S` (no PYTHON* variables, no site-packages, no cwd on sys.path), the caller's
  own interpreter (`sys.executable` resolved to its real path) without its virtualenv: the
  program sees the standard library only.
- rlimits set before bwrap starts: address space, CPU seconds, file size, open files, no core
  dumps, and process count (binds only for non-root callers).
- A process-count limit that also binds root: the pid namespace plus a fresh cgroup v1 with
  `pids.max` per run, and a memory cgroup (`memory.limit_in_bytes`) so that many processes
  cannot add up past the memory budget. RLIMIT_NPROC does not bind uid 0, so a root caller
  without a writable pids cgroup is refused.
- The parent reads stdout/stderr itself with a cap, and at the wall-clock limit kills bwrap's
  process group; bwrap's `--die-with-parent` kills the program, which is PID 1 of the
  sandbox's pid namespace, and the kernel then kills every other process in it (double-forked
  daemons included; a daemon also dies as soon as the program exits). The cgroup is swept
  as a last resort before it is removed.

If bwrap is missing or cannot create the namespaces, `SandboxUnavailable` says what is missing;
there is no unsandboxed fallback.

Set-up a machine needs: the Debian package `bubblewrap`, and (when running as root) the cgroup v1
`pids` controller mounted and writable (`memory` is used when present too).
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import secrets
import selectors
import signal
import struct
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

STATUSES = ("ok", "error", "timeout", "oom", "killed")

# Headroom over the caller's memory budget for the interpreter's own mappings (about 18 MB of
# address space at start) and, in the cgroup, for a second process such as the test harness.
_INTERPRETER_OVERHEAD_MB = 64
_SANDBOX_UID = 65534
_PROGRAM_PATH = "/sandbox/main.py"
_WORK_DIR = "/tmp"
_RUN_IDS = itertools.count()

# `python -I -S` starts in about 10 ms instead of 50 here, because `site` would scan the base
# interpreter's site-packages (and its .pth hooks); the program gets the stdlib only, as it should.
# This bootstrap restores what `site` gives a script (exit/quit) and runs the program as __main__.
_BOOTSTRAP = f"""
import builtins, sys, types
def _exit(code=None):
    raise SystemExit(code)
builtins.exit = builtins.quit = _exit
sys.argv[0] = {_PROGRAM_PATH!r}
_main = types.ModuleType("__main__")
_main.__file__ = {_PROGRAM_PATH!r}
sys.modules["__main__"] = _main
with open({_PROGRAM_PATH!r}, "rb") as _f:
    _code = compile(_f.read(), {_PROGRAM_PATH!r}, "exec", dont_inherit=True)
del _f, _exit
exec(_code, _main.__dict__)
"""


def _seccomp_filter() -> bytes:
    """A classic-BPF seccomp program (x86_64) that makes a deny-list of syscalls fail with EPERM.

    Denied: ptrace and cross-process memory/descriptor access (another layer between the code
    reward's harness and the candidate), kernel attack surface a test program never needs
    (bpf, perf_event_open, userfaultfd, io_uring, keyrings), and namespace/mount/module/reboot
    calls. Other architectures, and the x32 ABI, are refused outright (killed).
    """
    if platform.machine() != "x86_64":
        return b""
    denied = [
        101, 310, 311, 312, 438,          # ptrace, process_vm_readv/writev, kcmp, pidfd_getfd
        321, 298, 323, 425, 426, 427,     # bpf, perf_event_open, userfaultfd, io_uring_*
        248, 249, 250,                    # add_key, request_key, keyctl
        272, 308, 165, 166, 155,          # unshare, setns, mount, umount2, pivot_root
        428, 429, 430, 431, 432, 433, 442,  # open_tree, move_mount, fs*, mount_setattr
        175, 176, 313, 246, 320,          # (f)init_module, delete_module, kexec_*
        169, 167, 168, 163, 103, 172, 173, 303, 304,  # reboot, swap*, acct, syslog, iopl,
    ]                                     # ioperm, name_to_handle_at, open_by_handle_at
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    audit_arch_x86_64, ret_allow, ret_kill = 0xC000003E, 0x7FFF0000, 0x80000000
    ret_eperm = 0x00050000 | 1
    n = len(denied)
    prog = [
        (ld_w_abs, 0, 0, 4),                       # A = seccomp_data.arch
        (jeq_k, 1, 0, audit_arch_x86_64),
        (ret_k, 0, 0, ret_kill),
        (ld_w_abs, 0, 0, 0),                       # A = seccomp_data.nr
        (jge_k, n + 1, 0, 0x40000000),             # x32 ABI -> kill
    ]
    for i, nr in enumerate(denied):
        prog.append((jeq_k, n + 1 - i, 0, nr))     # -> EPERM
    prog += [(ret_k, 0, 0, ret_allow), (ret_k, 0, 0, ret_kill), (ret_k, 0, 0, ret_eperm)]
    # Jump offsets count from the next instruction: the x32 test skips the n tests and ALLOW to
    # reach KILL; deny test i skips the rest of the tests, ALLOW and KILL to reach EPERM.
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


_SECCOMP_FILTER = _seccomp_filter()


class SandboxUnavailable(RuntimeError):
    """The machine lacks an isolation layer the sandbox needs; the message names it and the fix."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    status: "ok" (exit 0), "error" (non-zero exit), "timeout" (wall or CPU limit), "oom" (memory
    limit), "killed" (a signal, or output over the cap). exit_code: the process's exit code, or
    -signal; None when the parent killed it. truncated: stdout or stderr hit the output cap.
    """

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    wall_s: float
    truncated: bool = False


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one run (memory_mb and timeout_s come from the call)."""

    max_processes: int = 64
    max_output_bytes: int = 1 << 20
    disk_mb: int = 64
    max_file_mb: int = 32
    max_open_files: int = 256


@dataclass(frozen=True)
class _Layers:
    """What this machine offers, found once per process."""

    bwrap: str
    python: str
    python_prefix: str
    pids_cgroup: str | None  # a directory under which per-run cgroups can be made
    memory_cgroup: str | None


_layers: _Layers | None = None
_layers_lock = threading.Lock()


def _cgroup_v1_base(controller: str) -> str | None:
    """Our own cgroup directory for a v1 controller, if it is mounted and writable."""
    mount = None
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "cgroup" and controller in fields[3].split(","):
                mount = fields[1]
                break
    if mount is None:
        return None
    own = "/"
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                own = path
    # Nest under our own cgroup so that the sandbox stays inside whatever budget we run under.
    base = os.path.join(mount, own.lstrip("/"))
    probe = os.path.join(base, f"rlpipe-probe-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError:
        return None
    return base


def _python_prefix(python: str) -> str:
    # The base interpreter's prefix holds the stdlib and libpython; a virtualenv's site-packages
    # are left out on purpose (candidate code gets the stdlib only).
    prefix = os.path.realpath(sys.base_prefix)
    if not python.startswith(prefix + os.sep):
        prefix = os.path.dirname(os.path.dirname(python))
    return prefix


def _find_bwrap() -> str | None:
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None)


def _detect_layers() -> _Layers:
    global _layers
    with _layers_lock:
        if _layers is not None:
            return _layers
        bwrap = _find_bwrap()
        if bwrap is None:
            raise SandboxUnavailable(
                "rewards.sandbox: bubblewrap (`bwrap`) is not installed; install the Debian package "
                "with `apt-get install -y bubblewrap` (`make setup` does this). Refusing to run "
                "untrusted code without it."
            )
        python = os.path.realpath(sys.executable)
        pids = _cgroup_v1_base("pids")
        memory = _cgroup_v1_base("memory")
        if pids is None and os.geteuid() == 0:
            raise SandboxUnavailable(
                "rewards.sandbox: running as root but no writable cgroup v1 `pids` controller was "
                "found (RLIMIT_NPROC does not bind uid 0, so nothing would stop a fork bomb). "
                "Mount it (`mount -t cgroup -o pids cgroup /sys/fs/cgroup/pids`) or run as a "
                "non-root user."
            )
        layers = _Layers(bwrap, python, _python_prefix(python), pids, memory)
        _remove_stale_cgroups(layers)
        probe = _execute(layers, "pass\n", stdin=b"", timeout_s=30.0, memory_mb=64,
                         limits=SandboxLimits())[0]
        if probe.status != "ok":
            raise SandboxUnavailable(
                "rewards.sandbox: bubblewrap could not start a sandbox (user/pid/net namespaces "
                f"refused?): status={probe.status} stderr={probe.stderr.strip()[:500]!r}. Check "
                "that unprivileged user namespaces are allowed (`sysctl user.max_user_namespaces`)."
            )
        _layers = layers
        return layers


def sandbox_layers() -> dict:
    """The isolation layers in use on this machine (raises SandboxUnavailable if any is missing)."""
    layers = _detect_layers()
    return {
        "bwrap": layers.bwrap,
        "python": layers.python,
        "python_prefix": layers.python_prefix,
        "namespaces": ["user", "pid", "net", "ipc", "uts", "cgroup", "mount"],
        "pids_cgroup": layers.pids_cgroup,
        "memory_cgroup": layers.memory_cgroup,
        "rlimits": ["AS", "CPU", "FSIZE", "NOFILE", "CORE"] + (["NPROC"] if os.geteuid() != 0 else []),
        "seccomp": bool(_SECCOMP_FILTER),
    }


def _bwrap_argv(layers: _Layers, limits: SandboxLimits, program_fd: int,
                filter_fd: int | None) -> list[str]:
    argv = [
        layers.bwrap,
        "--unshare-all", "--unshare-user", "--disable-userns",
        # --as-pid-1: no bwrap init inside. That init would be a dumpable process of the
        # sandbox's uid holding copies of every descriptor passed in (ptrace-able by the
        # program), and it keeps bwrap's environment in /proc/1/environ.
        "--die-with-parent", "--new-session", "--as-pid-1",
        "--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID),
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
    ]
    if os.geteuid() == 0:
        # As root, bwrap would otherwise keep full capabilities inside the new user namespace.
        argv[1:1] = ["--cap-drop", "ALL"]
    if not layers.python_prefix.startswith("/usr/"):
        argv += ["--ro-bind", layers.python_prefix, layers.python_prefix]
    if os.path.exists("/etc/ld.so.cache"):
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    argv += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.disk_mb << 20), "--tmpfs", _WORK_DIR,
        "--size", str(min(limits.disk_mb, 16) << 20), "--tmpfs", "/dev/shm",
        "--ro-bind-data", str(program_fd), _PROGRAM_PATH,
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", _WORK_DIR, "--clearenv",
        *(["--seccomp", str(filter_fd)] if filter_fd is not None else []),
        layers.python, "-I", "-S", "-c", _BOOTSTRAP,
    ]
    return argv


def _launcher(limits: SandboxLimits, memory_mb: int, timeout_s: float,
              cgroups: list[str]) -> str:
    """A /bin/sh script that joins the run's cgroups and sets rlimits, then execs bwrap ("$@").

    Doing this in the child instead of a Python preexec_fn keeps run_python safe to call from
    many threads at once. dash's ulimit sets soft and hard limits together, one limit per call.
    """
    join = "".join(f"echo 0 > {shlex.quote(cg + '/cgroup.procs')} && " for cg in cgroups)
    cpu_s = int(math.ceil(timeout_s)) + 1
    as_kb = (memory_mb + _INTERPRETER_OVERHEAD_MB) << 10
    fsize_blocks = (limits.max_file_mb << 20) // 512
    # RLIMIT_NPROC counts every process of the host uid and never binds root (which may not even
    # raise it): set it only for non-root callers, where the pids cgroup may be missing.
    nproc = f" && ulimit -p {limits.max_processes}" if os.geteuid() != 0 else ""
    return (
        f"{join}ulimit -c 0 && ulimit -t {cpu_s} && ulimit -v {as_kb} && "
        f"ulimit -f {fsize_blocks} && ulimit -n {limits.max_open_files}{nproc} && "
        f"exec \"$@\""
    )


def _make_cgroups(layers: _Layers, limits: SandboxLimits, memory_mb: int) -> list[str]:
    name = f"rlpipe-sb-{os.getpid()}-{next(_RUN_IDS)}-{secrets.token_hex(3)}"
    made = []
    try:
        if layers.pids_cgroup:
            cg = os.path.join(layers.pids_cgroup, name)
            os.mkdir(cg)
            made.append(cg)
            _write(cg, "pids.max", str(limits.max_processes))
        if layers.memory_cgroup:
            cg = os.path.join(layers.memory_cgroup, name)
            os.mkdir(cg)
            made.append(cg)
            mem = (memory_mb + limits.disk_mb + _INTERPRETER_OVERHEAD_MB) << 20
            _write(cg, "memory.limit_in_bytes", str(mem))
            if os.path.exists(os.path.join(cg, "memory.memsw.limit_in_bytes")):
                _write(cg, "memory.memsw.limit_in_bytes", str(mem))
    except OSError as e:
        _remove_cgroups(made)
        raise SandboxUnavailable(f"rewards.sandbox: cannot set up a per-run cgroup: {e}") from e
    return made


def _remove_stale_cgroups(layers: _Layers) -> None:
    """Remove empty per-run cgroups left by processes that were killed mid-run."""
    for base in (layers.pids_cgroup, layers.memory_cgroup):
        if not base:
            continue
        for name in os.listdir(base):
            parts = name.split("-")
            if name.startswith("rlpipe-sb-") and len(parts) > 2 and parts[2].isdigit():
                if not os.path.exists(f"/proc/{parts[2]}"):
                    try:
                        os.rmdir(os.path.join(base, name))
                    except OSError:
                        pass


def _write(cgroup: str, name: str, value: str) -> None:
    with open(os.path.join(cgroup, name), "w") as f:
        f.write(value)


def _cgroup_pids(cgroup: str) -> list[int]:
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _sweep_cgroups(cgroups: list[str]) -> None:
    """SIGKILL anything left in the run's cgroups (normally nothing: the pid namespace is gone)."""
    for _ in range(200):
        pids = {p for cg in cgroups for p in _cgroup_pids(cg)}
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def _remove_cgroups(cgroups: list[str]) -> None:
    for cg in cgroups:
        for _ in range(100):
            try:
                os.rmdir(cg)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.005)


def _oom_killed(cgroups: list[str]) -> bool:
    for cg in cgroups:
        path = os.path.join(cg, "memory.oom_control")
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
    return False


def _execute(
    layers: _Layers,
    program: str,
    *,
    stdin: bytes,
    timeout_s: float,
    memory_mb: int,
    limits: SandboxLimits,
    args: tuple[str, ...] = (),
    side_inputs: tuple[bytes, ...] = (),
    side_output_cap: int = 0,
) -> tuple[SandboxResult, bytes]:
    """Run `program` in a fresh sandbox; the building block of run_python and check_solution.

    args: the program's first arguments. side_inputs: extra data, each readable inside on its
    own pipe; side_output_cap > 0 adds one more pipe the program may write to (read with that
    cap). The program finds those descriptors' numbers after `args` in sys.argv (inputs first,
    then the output). Returns the result and the side output.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    prog_r, prog_w = os.pipe()
    filter_r, filter_w = os.pipe()
    in_pipes = [os.pipe() for _ in side_inputs]
    out_pipe = os.pipe() if side_output_cap > 0 else None
    child_fds = [prog_r, filter_r] + [r for r, _ in in_pipes] + ([out_pipe[1]] if out_pipe else [])
    cgroups = _make_cgroups(layers, limits, memory_mb)
    argv = _bwrap_argv(layers, limits, prog_r, filter_r if _SECCOMP_FILTER else None)
    argv += list(args) + [str(r) for r, _ in in_pipes] + ([str(out_pipe[1])] if out_pipe else [])
    proc = None
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _launcher(limits, memory_mb, timeout_s, cgroups), "sh", *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=child_fds, env={}, cwd="/", start_new_session=True, close_fds=True,
        )
    finally:
        for fd in child_fds:
            os.close(fd)
        if proc is None:
            for fd in [prog_w, filter_w] + [w for _, w in in_pipes] + ([out_pipe[0]] if out_pipe else []):
                os.close(fd)
            _remove_cgroups(cgroups)

    writers = {prog_w: program.encode("utf-8"), filter_w: _SECCOMP_FILTER, proc.stdin.fileno(): stdin}
    writers.update({w: data for (_, w), data in zip(in_pipes, side_inputs)})
    readers = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    caps = {"stdout": limits.max_output_bytes, "stderr": limits.max_output_bytes}
    if out_pipe:
        readers[out_pipe[0]] = "side"
        caps["side"] = side_output_cap
    chunks: dict[str, list[bytes]] = {name: [] for name in caps}
    sizes = dict.fromkeys(caps, 0)
    # Every descriptor the parent owns, closed exactly once: with threads, a second close could
    # hit a descriptor number another thread has just been given.
    owned: dict[int, object] = {fd: None for fd in writers}
    owned.update({fd: None for fd in readers})
    owned.update({proc.stdin.fileno(): proc.stdin, proc.stdout.fileno(): proc.stdout,
                  proc.stderr.fileno(): proc.stderr})

    def close(fd: int) -> None:
        if fd in owned:
            f = owned.pop(fd)
            try:
                f.close() if f is not None else os.close(fd)
            except OSError:
                pass
    killed_reason = None
    sel = selectors.DefaultSelector()
    try:
        for fd in writers:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_WRITE)
        for fd in readers:
            sel.register(fd, selectors.EVENT_READ)
        offsets = dict.fromkeys(writers, 0)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed_reason = "timeout"
                break
            for key, _ in sel.select(remaining):
                fd = key.fd
                if fd in writers:
                    data, off = writers[fd], offsets[fd]
                    try:
                        off += os.write(fd, data[off: off + 65536])
                    except (BrokenPipeError, BlockingIOError) as e:
                        if isinstance(e, BlockingIOError):
                            continue
                        off = len(data)
                    offsets[fd] = off
                    if off >= len(data):
                        sel.unregister(fd)
                        close(fd)
                    continue
                name = readers[fd]
                block = os.read(fd, 65536)
                if not block:
                    sel.unregister(fd)
                    continue
                room = caps[name] - sizes[name]
                chunks[name].append(block[:room])
                sizes[name] += min(len(block), room)
                if len(block) > room:
                    killed_reason = "output"
                    break
            if killed_reason:
                break
        if killed_reason is None:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed_reason = "timeout"
    finally:
        if killed_reason is not None or proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _sweep_cgroups(cgroups)
        returncode = proc.wait()
        oom = _oom_killed(cgroups)
        _remove_cgroups(cgroups)
        sel.close()
        for fd in list(owned):
            close(fd)
    wall_s = time.monotonic() - start
    stdout = b"".join(chunks["stdout"]).decode("utf-8", "replace")
    stderr = b"".join(chunks["stderr"]).decode("utf-8", "replace")
    side = b"".join(chunks.get("side", []))
    status, exit_code = _classify(returncode, killed_reason, oom, stderr)
    result = SandboxResult(status, exit_code, stdout, stderr, wall_s,
                           truncated=killed_reason == "output")
    return result, side


def _classify(returncode: int, killed_reason: str | None, oom: bool,
              stderr: str) -> tuple[str, int | None]:
    if killed_reason == "timeout":
        return "timeout", None
    if killed_reason == "output":
        return "killed", None
    # bwrap reports a child killed by signal N as exit code 128 + N.
    signum = returncode - 128 if 128 < returncode < 128 + 65 else (-returncode if returncode < 0 else 0)
    if oom or (returncode != 0 and stderr.rstrip().endswith("MemoryError")):
        return "oom", -signum if signum else returncode
    if signum:
        # SIGXCPU / SIGKILL after the CPU rlimit are a time limit, not a crash.
        if signum == signal.SIGXCPU:
            return "timeout", -signum
        return "killed", -signum
    return ("ok" if returncode == 0 else "error"), returncode


def run_python(
    code: str,
    *,
    stdin: str = "",
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    limits: SandboxLimits | None = None,
) -> SandboxResult:
    """Run the Python program `code` in a fresh sandbox and return what happened.

    stdin is fed to the program; timeout_s is the wall-clock limit (the CPU limit is one second
    more); memory_mb bounds the address space of each process and, with the cgroup, of all of
    them together. Raises SandboxUnavailable if the machine cannot sandbox.
    """
    if not timeout_s > 0 or memory_mb < 32:
        raise ValueError(f"run_python: timeout_s must be > 0 and memory_mb >= 32 "
                         f"(got timeout_s={timeout_s}, memory_mb={memory_mb})")
    layers = _detect_layers()
    result, _ = _execute(layers, code, stdin=stdin.encode("utf-8"), timeout_s=timeout_s,
                         memory_mb=memory_mb, limits=limits or SandboxLimits())
    return result


def run_sandboxed(
    program: str,
    *,
    args: tuple[str, ...] = (),
    side_inputs: tuple[bytes, ...] = (),
    side_output_cap: int = 0,
    stdin: bytes = b"",
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    limits: SandboxLimits | None = None,
) -> tuple[SandboxResult, bytes]:
    """run_python with private pipes (for a harness): see `_execute` for the fd protocol."""
    layers = _detect_layers()
    return _execute(layers, program, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb,
                    limits=limits or SandboxLimits(), args=args, side_inputs=side_inputs,
                    side_output_cap=side_output_cap)
