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

Modules: `run` (`run_python`, `SandboxResult`: the library side, which starts the launcher, waits,
kills and classifies), `launcher` (the child side, a stand-alone script run as
``python -I -S launcher.py --launch config.json``: namespaces, mounts, uid, limits) and `guard`
(the prelude that installs the audit hook before the code runs).

Result status: "passed" (exit 0), "failed" (non-zero exit, e.g. a failed assert), "timeout"
(wall clock or CPU limit), "memory" (MemoryError or allocation failure under the address-space cap),
"error" (a sandbox violation, or the sandbox itself could not start).
"""

from mcmc_llm.sandbox.run import SANDBOX_STATUSES, SandboxResult, run_python

__all__ = ["SandboxResult", "run_python", "SANDBOX_STATUSES"]
