"""The Python guard of the sandbox (a guard, not a security boundary): `PRELUDE`, the script that
runs the code.

`run_python` writes `PRELUDE` next to the code as `prelude.py`; the runner execs
``python -I -B prelude.py WORK GUARD``.  With GUARD = 1 it installs a `sys.addaudithook` hook that
raises `SandboxViolation` (a PermissionError) on the events listed in `mcmc_llm.sandbox`, then
compiles and runs `solution.py` from WORK as `__main__`.
"""

PRELUDE = r'''
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
