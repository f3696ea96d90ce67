"""Run untrusted Python (model-written code) in a separate, restricted process.

`run_python(code)` writes `code` to a fresh temporary directory and runs it as ``python -I`` in a child
process, never in-process.  Layers, strongest first (each applied only where the OS permits it; the
result's `isolation` mapping says which ones were in force):

OS boundary (enforced by the kernel)
  * Namespaces (Linux, via unshare(2): as root, or with unprivileged user namespaces):
      - network namespace: no interfaces but a down loopback, so no network at all;
      - PID namespace: the code cannot see or signal any process outside it (the library process
        included); when its init exits, the kernel kills every process left inside;
      - mount namespace: every mount is re-mounted read-only except the sandbox's own directory
        (/dev/null and other device nodes stay writable), and a fresh /proc shows only the sandbox.
  * Unprivileged user (when the library runs as root): the code runs as a fresh, otherwise unused uid
    (file permissions apply, signals to root processes are refused, RLIMIT_NPROC counts only it).
    Directories the interpreter needs but that "others" cannot traverse (e.g. /root/.pyenv inside a
    0700 /root) are exposed by covering the closed ancestor with an empty tmpfs and bind-mounting only
    the needed directories back, which also hides the rest of that ancestor (secrets in /root).
  * Resource limits (setrlimit): address space (memory_mb), CPU seconds, file size, no core files,
    open files, and processes (RLIMIT_NPROC; the kernel ignores it for root, hence the uid drop).
  * New session, wall-clock timeout, and a cleanup that SIGKILLs the session, the sandbox uid and
    (with the PID namespace) everything inside, so no process outlives `run_python`.
  * Scrubbed environment: only PATH, LANG, LC_ALL, HOME/TMPDIR (= the sandbox directory) and
    single-thread settings for numeric libraries; nothing is inherited from the parent.

Python guard (a guard, not a security boundary)
  A prelude installs a `sys.addaudithook` hook before the code runs.  It raises `SandboxViolation`
  (a PermissionError) on: opening files for writing, creating, deleting, renaming, chmod/chown
  outside the sandbox directory; os.kill/killpg of any other process; fork, exec, spawn, system,
  subprocess; sockets and urllib; ctypes symbol lookup and raw-address objects; gc object walks;
  setrlimit; reading /proc/<other pid>/environ.  Native code (C extensions) can bypass an audit
  hook, so the OS layers above are the boundary; where they are unavailable (no unshare, not root,
  macOS), the hook and the rlimits are all there is.

Result status: "passed" (exit 0), "failed" (non-zero exit, e.g. a failed assert), "timeout"
(wall clock or CPU limit), "memory" (MemoryError or allocation failure under the address-space cap),
"error" (a sandbox violation, or the sandbox itself could not start).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["SandboxResult", "run_python", "SANDBOX_STATUSES"]

SANDBOX_STATUSES = ("passed", "failed", "timeout", "memory", "error")
_TAIL_CHARS = 4000
_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "cannot allocate memory", "out of memory")
_VIOLATION_MARKER = "SandboxViolation"


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    status:      one of SANDBOX_STATUSES.
    returncode:  the code's exit status; negative -N when killed by signal N; None on a wall timeout.
    stdout_tail, stderr_tail: the last 4000 characters of each stream.
    duration_s:  wall-clock seconds of the whole run (process start to cleanup).
    isolation:   which layers were in force (namespaces, uid, limits, notes).
    session_id:  the session (and process group) id of the sandbox's top process, for audits.
    """

    status: str
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    isolation: Mapping[str, Any] = field(default_factory=dict)
    session_id: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_python(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    max_processes: int = 32,
    max_file_mb: int = 16,
    isolate: bool = True,
    drop_privileges: bool = True,
    guard: bool = True,
    python: str | None = None,
) -> SandboxResult:
    """Run `code` as a script in a restricted child process and classify the outcome.

    timeout_s:      wall-clock limit for the whole run (the CPU limit is ceil(timeout_s) + 1 s).
    memory_mb:      address-space cap of the interpreter running the code (RLIMIT_AS).
    max_processes:  RLIMIT_NPROC (effective for a non-root uid only).
    max_file_mb:    RLIMIT_FSIZE, also caps captured stdout/stderr.
    isolate:        try Linux namespaces (network, PID, mount).
    drop_privileges: when running as root, run the code as a fresh unprivileged uid.
    guard:          install the audit-hook guard (disable only to test the OS layers).
    python:         interpreter for the code (default: this one, so the same packages are importable).
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"timeout_s must be a positive finite number, got {timeout_s}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be >= 64 (the interpreter itself needs it), got {memory_mb}")
    outer = tempfile.mkdtemp(prefix="mcmc-llm-sandbox-")
    started = time.monotonic()
    proc: subprocess.Popen | None = None
    timed_out = False
    try:
        os.chmod(outer, 0o711)
        work = os.path.join(outer, "work")
        os.mkdir(work, 0o700)
        with open(os.path.join(work, "solution.py"), "w", encoding="utf-8") as handle:
            handle.write(code)
        with open(os.path.join(outer, "prelude.py"), "w", encoding="utf-8") as handle:
            handle.write(_PRELUDE)
        os.chmod(os.path.join(outer, "prelude.py"), 0o644)
        interpreter = python or sys.executable
        config = {
            "outer": outer, "work": work, "python": interpreter,
            "isolate": bool(isolate), "drop_privileges": bool(drop_privileges), "guard": bool(guard),
            "uid": _fresh_uid(), "memory_bytes": int(memory_mb) * 2**20,
            "cpu_s": int(math.ceil(timeout_s)) + 1, "nproc": int(max_processes),
            "fsize_bytes": int(max_file_mb) * 2**20,
            "needed": _outermost({os.path.realpath(p) for p in (
                sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(interpreter)))}),
        }
        config_path = os.path.join(outer, "config.json")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        with open(os.path.join(outer, "stdout"), "wb") as out, open(os.path.join(outer, "stderr"), "wb") as err, \
                open(os.path.join(outer, "isolation.json"), "wb") as report:
            # The report travels as an inherited descriptor: it stays writable for the sandbox's init after
            # the mount namespace turns the file system read-only, and the code itself never sees it.
            config["report_fd"] = report.fileno()
            with open(config_path, "w", encoding="utf-8") as handle:
                json.dump(config, handle)
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), "--launch", config_path],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=outer, env=env,
                start_new_session=True, close_fds=True, pass_fds=(report.fileno(),),
            )
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_session(proc.pid, config["uid"], spare=proc.pid)
            try:  # the launcher reaps the sandbox's init (so nothing is left, not even a zombie), then exits
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:  # pragma: no cover - defensive
                _kill_session(proc.pid, config["uid"])
                proc.wait()
        stdout = _tail(os.path.join(outer, "stdout"))
        stderr = _tail(os.path.join(outer, "stderr"))
        isolation = _read_json(os.path.join(outer, "isolation.json"))
        returncode = _decode_exit(proc.returncode)
        status = _classify(timed_out, returncode, stderr, isolation)
        return SandboxResult(status, None if timed_out else returncode, stdout, stderr,
                             time.monotonic() - started, isolation, proc.pid)
    finally:
        if proc is not None and proc.poll() is None:  # pragma: no cover - only on an exception above
            _kill_session(proc.pid, None)
        shutil.rmtree(outer, ignore_errors=True)


# ----------------------------------------------------------------------------- parent-side helpers

def _outermost(paths: set[str]) -> list[str]:
    """Drop paths that lie inside another path of the set."""
    return sorted(p for p in paths if not any(p != q and p.startswith(q.rstrip(os.sep) + os.sep) for q in paths))


def _fresh_uid() -> int:
    """A uid no real account uses (1e6 .. 2e6); collisions only merge two sandboxes' NPROC budgets."""
    import secrets

    return 1_000_000 + secrets.randbelow(1_000_000)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4 * _TAIL_CHARS))
            data = handle.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")[-_TAIL_CHARS:]


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _decode_exit(code: int | None) -> int | None:
    """The launcher exits with the code's exit status, or 128+N when the code died of signal N."""
    if code is None:
        return None
    if code < 0:
        return code
    return -(code - 128) if code > 128 else code


def _classify(timed_out: bool, returncode: int | None, stderr: str, isolation: Mapping) -> str:
    if timed_out:
        return "timeout"
    if returncode == 0:
        return "passed"
    if "setup_error" in isolation or not isolation:
        return "error"
    if returncode in (-signal.SIGXCPU,):
        return "timeout"
    if _VIOLATION_MARKER in stderr or "sandbox setup failed" in stderr:
        return "error"
    if any(marker in stderr for marker in _MEMORY_MARKERS):
        return "memory"
    return "failed"


def _proc_entries() -> list[tuple[int, int, int, int | None, str]]:
    """(pid, pgid, sid, uid, state) of every process visible in /proc (empty where there is no /proc)."""
    entries = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return entries
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            fields = stat[stat.rindex(")") + 2:].split()
            uid = os.stat(f"/proc/{name}").st_uid
        except (OSError, ValueError):
            continue
        entries.append((int(name), int(fields[2]), int(fields[3]), uid, fields[0]))
    return entries


def _kill_session(session_id: int, uid: int | None, spare: int | None = None) -> None:
    """SIGKILL every live process of the sandbox's session and of its private uid, except `spare`
    (the launcher, left to reap its child), until none is left; zombies hold nothing and are skipped."""
    me = os.getpid()
    for _ in range(400):
        if spare is None:
            try:
                os.killpg(session_id, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        victims = [pid for pid, pgid, sid, owner, state in _proc_entries()
                   if pid not in (me, spare) and state not in ("Z", "X")
                   and (sid == session_id or pgid == session_id or (uid is not None and owner == uid))]
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)


# ----------------------------------------------------------------------------- child side
# Everything below runs in the launcher process (`python -I -S sandbox.py --launch config.json`), a fresh
# single-threaded interpreter with the library's privileges: it creates the namespaces, forks an "init"
# (PID 1 of the new PID namespace), which prepares the mounts and forks the runner; the runner sets the
# limits, drops to the sandbox uid and execs `python -I prelude.py`.

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MOUNT_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC, "noatime": 1024,
                "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}
_PR_SET_PDEATHSIG = 1


def _libc():  # pragma: no cover - child side
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _mount(libc, source, target, fstype, flags, data=None) -> None:  # pragma: no cover - child side
    import ctypes

    enc = (lambda value: None if value is None else os.fsencode(value))
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} -> {target}: {os.strerror(errno)}")


def _unshare(libc, info: dict) -> int:  # pragma: no cover - child side
    """Enter new network, PID and mount namespaces (with a user namespace when not root)."""
    root = os.geteuid() == 0
    user = 0 if root else _CLONE_NEWUSER
    uid, gid = os.geteuid(), os.getegid()
    for flags in (_CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET, _CLONE_NEWPID | _CLONE_NEWNET, _CLONE_NEWNET):
        if libc.unshare(user | flags) == 0:
            break
    else:
        info["notes"].append("unshare(2) refused: no namespaces")
        return 0
    if user:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    info["namespaces"] = [name for bit, name in ((_CLONE_NEWUSER, "user"), (_CLONE_NEWNET, "net"),
                          (_CLONE_NEWPID, "pid"), (_CLONE_NEWNS, "mount")) if (user | flags) & bit]
    return user | flags


def _other_can_reach(path: str, listable: bool = True) -> bool:  # pragma: no cover - child side
    """Can a uid with no special rights traverse to `path` (and list it, when `listable`)?"""
    import stat

    parts = os.path.realpath(path).split(os.sep)
    for i in range(1, len(parts) + 1):
        current = os.sep + os.path.join(*parts[1:i]) if i > 1 else os.sep
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return not listable or bool(os.stat(path).st_mode & stat.S_IROTH)


def _closed_ancestor(path: str) -> str | None:  # pragma: no cover - child side
    import stat

    parts = os.path.realpath(path).split(os.sep)
    for i in range(2, len(parts)):
        current = os.sep + os.path.join(*parts[1:i])
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _expose(libc, cfg: dict, info: dict) -> None:  # pragma: no cover - child side
    """Cover each closed ancestor of a needed directory with a tmpfs and bind the needed one back."""
    needed = [p for p in cfg["needed"] if not _other_can_reach(p)]
    by_ancestor: dict[str, list[str]] = {}
    for path in needed:
        ancestor = _closed_ancestor(path)
        if ancestor is None:
            continue
        by_ancestor.setdefault(ancestor, []).append(path)
    stash = os.path.join(cfg["outer"], "stash")
    for ancestor, paths in by_ancestor.items():
        held = []
        for path in paths:
            keep = os.path.join(stash, str(len(os.listdir(stash)) if os.path.isdir(stash) else 0))
            os.makedirs(keep, 0o700)
            _mount(libc, path, keep, None, _MS_BIND | _MS_REC)
            held.append((keep, path))
        _mount(libc, "tmpfs", ancestor, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=1m")
        for keep, path in held:
            os.makedirs(path, 0o755, exist_ok=True)
            _mount(libc, keep, path, None, _MS_BIND | _MS_REC)
        info["notes"].append(f"hid {ancestor} except {', '.join(paths)}")


def _read_only_everything(libc, work: str, info: dict) -> None:  # pragma: no cover - child side
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        rows = [line.split() for line in handle]
    failed = []
    for row in rows:
        target = row[4].encode().decode("unicode_escape")
        if target == work:
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for option in row[5].split(","):
            flags |= _MOUNT_FLAGS.get(option, 0)
        try:
            _mount(libc, None, target, None, flags)
        except OSError:
            failed.append(target)
    if failed:
        info["notes"].append(f"could not make read-only: {', '.join(failed[:5])}")


def _prepare_mounts(libc, cfg: dict, info: dict, ns: int) -> bool:  # pragma: no cover - child side
    """In the private mount namespace: fresh /proc, expose the interpreter, all read-only but work."""
    try:
        _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)  # never propagate anything to the host
    except OSError as error:
        info["notes"].append(f"mount namespace unusable ({error}); no mount changes")
        return False
    if ns & _CLONE_NEWPID:
        try:
            _mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
            info["fresh_proc"] = True
        except OSError as error:
            info["notes"].append(f"no fresh /proc: {error}")
    if os.geteuid() == 0 and cfg["drop_privileges"]:
        try:
            _expose(libc, cfg, info)
        except OSError as error:
            info["notes"].append(f"could not expose interpreter: {error}")
    _mount(libc, cfg["work"], cfg["work"], None, _MS_BIND)
    _read_only_everything(libc, cfg["work"], info)
    info["read_only_fs"] = True
    return True


def _run_child(cfg: dict, uid: int | None) -> None:  # pragma: no cover - child side
    import resource

    limits = [(resource.RLIMIT_AS, cfg["memory_bytes"]), (resource.RLIMIT_CPU, cfg["cpu_s"]),
              (resource.RLIMIT_FSIZE, cfg["fsize_bytes"]), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_NPROC, cfg["nproc"])]
    for kind, soft in limits:
        hard = soft + 1 if kind == resource.RLIMIT_CPU else soft
        try:
            resource.setrlimit(kind, (soft, hard))
        except (ValueError, OSError):
            pass
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(cfg["work"])
    os.umask(0o077)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": cfg["work"],
           "TMPDIR": cfg["work"], "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    prelude = os.path.join(cfg["outer"], "prelude.py")
    argv = [cfg["python"], "-I", "-B", prelude, cfg["work"], "1" if cfg["guard"] else "0"]
    os.execve(cfg["python"], argv, env)


def _init(cfg: dict, info: dict, ns: int, libc) -> int:  # pragma: no cover - child side
    """PID 1 of the sandbox: mounts, uid choice, fork the runner, reap, return its wait status."""
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if ns & _CLONE_NEWNS:
        _prepare_mounts(libc, cfg, info, ns)
    uid = None
    if os.geteuid() == 0 and cfg["drop_privileges"]:
        closed = [p for p in cfg["needed"] if not _other_can_reach(p)]
        closed += [] if _other_can_reach(cfg["outer"], listable=False) else [cfg["outer"]]
        if closed:
            info["notes"].append(f"uid not dropped: {', '.join(closed)} not reachable by other users")
        else:
            uid = cfg["uid"]
            for path in (cfg["work"], os.path.join(cfg["work"], "solution.py")):
                os.chown(path, uid, uid)
    info["uid"] = uid
    info["uid_dropped"] = uid is not None
    info["rlimit_nproc_effective"] = uid is not None or os.geteuid() != 0
    info["guard"] = cfg["guard"]
    _report(cfg, info)
    runner = os.fork()
    if runner == 0:
        try:
            os.close(cfg["report_fd"])
            if libc is not None:
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            _run_child(cfg, uid)
        except BaseException as error:
            os.write(2, f"sandbox setup failed: {error!r}\n".encode())
        os._exit(126)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 126
        if pid == runner:
            return status


def _report(cfg: dict, info: dict) -> None:  # pragma: no cover - child side
    fd = cfg["report_fd"]
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode())


def launch(config_path: str) -> None:  # pragma: no cover - child side
    with open(config_path, encoding="utf-8") as handle:
        cfg = json.load(handle)
    info: dict = {"platform": sys.platform, "euid": os.geteuid(), "namespaces": [], "notes": [],
                  "limits": {"memory_bytes": cfg["memory_bytes"], "cpu_s": cfg["cpu_s"], "nproc": cfg["nproc"],
                             "fsize_bytes": cfg["fsize_bytes"]}}
    libc = _libc()
    if os.geteuid() != 0:  # RLIMIT_NPROC counts all of this user's processes: allow the existing ones too
        cfg["nproc"] += sum(1 for _, _, _, owner, _ in _proc_entries() if owner == os.geteuid())
        info["limits"]["nproc"] = cfg["nproc"]
    ns = 0
    if libc is not None and cfg["isolate"]:
        try:
            ns = _unshare(libc, info)
        except OSError as error:
            info["notes"].append(f"namespaces unavailable: {error}")
    init = os.fork()
    if init == 0:
        try:
            status = _init(cfg, info, ns, libc)
        except BaseException as error:
            info["setup_error"] = repr(error)
            _report(cfg, info)
            os.write(2, f"sandbox setup failed: {error!r}\n".encode())
            os._exit(126)
        if os.WIFSIGNALED(status):
            os._exit(128 + os.WTERMSIG(status))
        os._exit(os.WEXITSTATUS(status))
    _, status = os.waitpid(init, 0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


_PRELUDE = r'''
import sys, os
def _install(work, guard):
    if not guard:
        return
    import os.path as _p, re as _re
    realpath, isabs, join, getcwd, getpid, fsdecode = _p.realpath, _p.isabs, _p.join, os.getcwd, os.getpid, os.fsdecode
    work = realpath(work)
    prefix = work + os.sep
    devices = frozenset(("/dev/null", "/dev/zero", "/dev/stdout", "/dev/stderr", "/dev/tty"))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    environ_re = _re.compile(r"^/proc/(\d+|self|thread-self)/(task/\d+/)?(environ|mem)$")
    class SandboxViolation(PermissionError):
        pass
    def resolve(path, dir_fd=None):
        if isinstance(path, int):
            return None
        path = fsdecode(path)
        if not isabs(path):
            base = getcwd() if dir_fd is None else os.readlink(f"/proc/self/fd/{dir_fd}")
            path = join(base, path)
        return realpath(path)
    def inside(path, dir_fd=None):
        try:
            full = resolve(path, dir_fd)
        except Exception:
            return False
        return full is None or full == work or full.startswith(prefix) or full in devices
    def deny(event, what=""):
        raise SandboxViolation(f"SandboxViolation: {event} {what}".rstrip())
    path_events = {"os.remove": (0, 1), "os.rmdir": (0, 1), "os.mkdir": (0, 2), "os.chmod": (0, 2),
                   "os.chown": (0, 3), "os.utime": (0, 4), "os.truncate": (0, None), "os.chflags": (0, None),
                   "os.lchflags": (0, None), "os.setxattr": (0, None), "os.removexattr": (0, None),
                   "shutil.rmtree": (0, 1), "os.symlink": (1, 2), "os.link": (1, 3), "os.mkfifo": (0, 2),
                   "os.mknod": (0, 3)}
    prefixes = ("socket.", "urllib.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "nntplib.", "telnetlib.",
                "http.client.", "webbrowser.", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
                "gc.get_", "resource.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                "pty.", "winreg.", "msvcrt.", "_winapi.")
    denied = frozenset(("subprocess.Popen", "os.system", "os.popen", "os.startfile", "sys.remote_exec"))
    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                deny("write outside the sandbox directory:", repr(path))
            if isinstance(path, (str, bytes)):
                try:
                    full = resolve(path)
                except Exception:
                    full = None
                match = environ_re.match(full or "")
                if match and match.group(1) not in (str(getpid()), "self", "thread-self"):
                    deny("reading another process's environment:", repr(path))
            return
        if event in path_events:
            index, fd_index = path_events[event]
            dir_fd = args[fd_index] if fd_index is not None and len(args) > fd_index else None
            if not inside(args[index], dir_fd):
                deny(event, repr(args[index]))
            return
        if event == "os.rename":
            src, dst, src_fd, dst_fd = (tuple(args) + (None,) * 4)[:4]
            if not (inside(src, src_fd) and inside(dst, dst_fd)):
                deny(event, repr((src, dst)))
            return
        if event in ("os.kill", "os.killpg"):
            if args[0] != getpid():
                deny(event, f"pid {args[0]}")
            return
        if event in denied or event.startswith(prefixes):
            deny(event)
    sys.addaudithook(hook)
    try:
        import _posixsubprocess
        def fork_exec(*args, **kwargs):
            deny("_posixsubprocess.fork_exec")
        _posixsubprocess.fork_exec = fork_exec
    except ImportError:
        pass
_install(sys.argv[1], sys.argv[2] == "1")
del _install
_path = os.path.join(os.getcwd(), "solution.py")
with open(_path, encoding="utf-8") as _handle:
    _source = _handle.read()
_code = compile(_source, _path, "exec")
del _path, _handle, _source
sys.argv = ["solution.py"]
_globals = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": "solution.py"}
exec(_code, _globals)
'''


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--launch":  # pragma: no cover
    launch(sys.argv[2])
