"""The sandbox's child side: a stand-alone script, run as ``python -I -S launcher.py --launch config.json``.

It runs in a fresh single-threaded interpreter with the library's privileges and imports only the
standard library (``-I -S``: no site-packages, no script directory on the path): it creates the
namespaces, forks an "init" (PID 1 of the new PID namespace), which prepares the mounts and forks
the runner; the runner sets the limits, drops to the sandbox uid and execs `python -I prelude.py`
(`mcmc_llm.sandbox.guard`).  `proc_entries` is also used by the library side to find what to kill.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def proc_entries() -> list[tuple[int, int, int, int | None, str]]:
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
        cfg["nproc"] += sum(1 for _, _, _, owner, _ in proc_entries() if owner == os.geteuid())
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


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--launch":  # pragma: no cover
    launch(sys.argv[2])
