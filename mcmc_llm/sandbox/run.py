"""`run_python`: run untrusted Python in a restricted child process (the library side).

Writes the code and the guard's prelude (`mcmc_llm.sandbox.guard`) to a fresh temporary directory,
starts the launcher (`mcmc_llm.sandbox.launcher`, a stand-alone script) in a new session with a
scrubbed environment, waits for it under the wall-clock limit, SIGKILLs whatever is left of the
session and of the sandbox uid, and classifies the outcome into a `SandboxResult`.  The layers
and statuses are described in `mcmc_llm.sandbox`.
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

from mcmc_llm.core.validate import optional_integer
from mcmc_llm.sandbox.guard import PRELUDE
from mcmc_llm.sandbox.launcher import proc_entries

SANDBOX_STATUSES = ("passed", "failed", "timeout", "memory", "error")
_TAIL_CHARS = 4000
_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "cannot allocate memory", "out of memory")
_VIOLATION_MARKER = "SandboxViolation"
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py")


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
    cpu_s: int | None = None,
    isolate: bool = True,
    drop_privileges: bool = True,
    guard: bool = True,
    python: str | None = None,
) -> SandboxResult:
    """Run `code` as a script in a restricted child process and classify the outcome.

    timeout_s:      wall-clock limit for the whole run.
    memory_mb:      address-space cap of the interpreter running the code (RLIMIT_AS).
    max_processes:  RLIMIT_NPROC (effective for a non-root uid only).
    max_file_mb:    RLIMIT_FSIZE, also caps captured stdout/stderr.
    cpu_s:          RLIMIT_CPU in whole CPU seconds (SIGXCPU at the limit, status "timeout");
                    default None = ceil(timeout_s) + 1, so the wall clock normally acts first.
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
    cpu_s = optional_integer("cpu_s", cpu_s)
    if cpu_s is None:
        cpu_s = int(math.ceil(timeout_s)) + 1
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
            handle.write(PRELUDE)
        os.chmod(os.path.join(outer, "prelude.py"), 0o644)
        interpreter = python or sys.executable
        config = {
            "outer": outer, "work": work, "python": interpreter,
            "isolate": bool(isolate), "drop_privileges": bool(drop_privileges), "guard": bool(guard),
            "uid": _fresh_uid(), "memory_bytes": int(memory_mb) * 2**20,
            "cpu_s": int(cpu_s), "nproc": int(max_processes),
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
                [sys.executable, "-I", "-S", _LAUNCHER, "--launch", config_path],
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
        victims = [pid for pid, pgid, sid, owner, state in proc_entries()
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
