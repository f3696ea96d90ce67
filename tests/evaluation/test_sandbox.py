"""mcmc_llm.sandbox: untrusted code runs in a separate, limited process and cannot harm the caller."""

import errno
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mcmc_llm.sandbox import SANDBOX_STATUSES, run_python
from mcmc_llm.sandbox.launcher import proc_entries

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")


def _survivors(result):
    """Live processes left by a run: its session, or its private uid."""
    uid = result.isolation.get("uid")
    return [e for e in proc_entries()
            if e[4] not in ("Z", "X") and (e[2] == result.session_id or e[1] == result.session_id or (uid is not None and e[3] == uid))]


@pytest.fixture
def spawn_sentinel():
    """Start sacrificial processes outside the sandbox (stand-ins for the library's own process: a test
    must never make pytest itself the target, or a successful kill could not fail any assertion)."""
    started = []

    def spawn(env=None):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True, env=env)
        started.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def _alive(proc) -> bool:
    """True when `proc` is still running 0.2 s after the run (a SIGKILL would have ended it by then)."""
    try:
        proc.wait(timeout=0.2)
    except subprocess.TimeoutExpired:
        return True
    return False


def _os_boundary(result) -> bool:
    """The OS (not only the audit hook) stops signals to and writes outside: PID+mount namespaces or a uid drop."""
    iso = result.isolation
    return ("pid" in iso.get("namespaces", []) and iso.get("read_only_fs")) or bool(iso.get("uid_dropped"))


def test_success_and_output():
    result = run_python("print('hello from the sandbox')")
    assert result.status == "passed" and result.returncode == 0 and result.passed
    assert result.stdout_tail == "hello from the sandbox\n"
    assert result.duration_s < 10 and result.status in SANDBOX_STATUSES


def test_humaneval_style_solution_passes_and_wrong_one_fails():
    template = "def add(a, b):\n{body}\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n\ncheck(add)\n"
    assert run_python(template.format(body="    return a + b")).status == "passed"
    wrong = run_python(template.format(body="    return a - b"))
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr_tail


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=1.5)
    assert result.status == "timeout" and result.returncode is None
    assert time.monotonic() - start < 8
    assert not _survivors(result)


def _kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def test_cleanup_kills_what_the_code_leaves_behind():
    """After a normal exit, the library side's cleanup alone kills a child the code left running: without
    namespaces (no PID namespace whose end would kill it) and without the guard (which refuses fork)."""
    code = "import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(30)\n    os._exit(0)\nprint(pid)\n"
    result = run_python(code, guard=False, isolate=False, drop_privileges=False)
    left = _survivors(result)
    _kill_all(e[0] for e in left)
    assert result.status == "passed" and result.isolation["namespaces"] == [], result
    assert not left, (left, result)


def test_cleanup_kills_the_session_without_proc(monkeypatch):
    """Where /proc cannot be read (proc_entries() == []), killing the session's process group alone cleans up:
    the launcher, still waiting for the sleeping code after the timeout, is gone about 2 s later."""
    import mcmc_llm.sandbox.run as run_module

    monkeypatch.setattr(run_module, "proc_entries", lambda: [])
    result = run_python("import time\ntime.sleep(8)\n", timeout_s=0.5)
    for _ in range(100):  # unchecked SIGKILLs: give the kernel a moment to finish them
        left = _survivors(result)
        if not left:
            break
        time.sleep(0.01)
    _kill_all(e[0] for e in left)
    assert result.status == "timeout" and not left, (left, result)
    assert result.duration_s < 6, result


@pytest.mark.parametrize("guard", [True, False])
def test_fork_bomb_is_contained_and_leaves_no_process(guard):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    probe = run_python("print(1)", guard=guard)
    if not guard and not (probe.isolation.get("rlimit_nproc_effective") or "pid" in probe.isolation.get("namespaces", [])):
        pytest.skip("no OS process limit here (root without uid drop or PID namespace): only the guard contains forks")
    start = time.monotonic()
    result = run_python(bomb, timeout_s=2.0, guard=guard)
    assert result.status in ("timeout", "error"), result
    assert time.monotonic() - start < 12
    time.sleep(0.1)
    assert not _survivors(result)


def test_huge_allocation_is_memory():
    result = run_python("x = bytearray(4 * 1024 ** 3)\nprint(len(x))", memory_mb=256)
    assert result.status == "memory", result


def test_cpu_limit_acts_on_its_own():
    """RLIMIT_CPU stops a CPU burner long before the wall clock: SIGXCPU (returncode -SIGXCPU, status
    "timeout"), not a wall timeout (returncode None) and not a normal exit after 4 CPU seconds."""
    burn = "import time\nwhile time.process_time() < 4:\n    pass\nprint('cpu limit never hit')\n"
    result = run_python(burn, timeout_s=8, cpu_s=1)
    assert result.isolation["limits"]["cpu_s"] == 1
    assert result.returncode == -signal.SIGXCPU and result.status == "timeout", result
    assert "cpu limit never hit" not in result.stdout_tail and result.duration_s < 8


def test_cpu_s_validation():
    """cpu_s is a whole number of CPU seconds >= 1; None keeps the default ceil(timeout_s) + 1."""
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="cpu_s"):
            run_python("pass", cpu_s=bad)
    assert run_python("pass", timeout_s=2.5).isolation["limits"]["cpu_s"] == 4


def test_file_size_limit_acts_on_its_own():
    """RLIMIT_FSIZE = max_file_mb caps files in the sandbox's own (writable) directory: a write below
    the cap succeeds, a write past it fails with EFBIG ("File too large") after exactly max_file_mb."""
    code = ("import errno, os\n"
            "for name, size in (('small.bin', 1000 * 1000), ('big.bin', 2 * 2**20)):\n"
            "    try:\n        with open(name, 'wb') as handle:\n            handle.write(b'x' * size)\n"
            "        print(name, 'ok', os.path.getsize(name))\n"
            "    except OSError as e:\n        print(name, errno.errorcode[e.errno], os.path.getsize(name))\n")
    result = run_python(code, max_file_mb=1)
    assert result.isolation["limits"]["fsize_bytes"] == 2**20
    assert result.status == "passed", result
    assert result.stdout_tail.splitlines() == ["small.bin ok 1000000", f"big.bin EFBIG {2**20}"]


def test_open_file_limit_acts_on_its_own():
    """RLIMIT_NOFILE = 256: descriptors 3..255 open, the next open fails with EMFILE (the parent allows far more)."""
    code = ("import errno, os\nfds = []\ntry:\n    for _ in range(1000):\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
            "    print('no limit', len(fds))\nexcept OSError as e:\n    print(errno.errorcode[e.errno], max(fds) + 1)\n")
    result = run_python(code)
    assert result.status == "passed", result
    assert result.stdout_tail.splitlines() == ["EMFILE 256"], result


def test_process_limit_acts_on_its_own():
    """RLIMIT_NPROC = max_processes stops fork with EAGAIN (guard off, so the audit hook does not refuse fork
    first): with the private uid the code and its max_processes - 1 children are all that uid may run."""
    code = ("import errno, os\nr, w = os.pipe()\nchildren, outcome = [], 'unlimited'\nfor _ in range(20):\n"
            "    try:\n        pid = os.fork()\n    except OSError as e:\n        outcome = errno.errorcode[e.errno]\n        break\n"
            "    if pid == 0:\n        os.close(w)\n        os.read(r, 1)\n        os._exit(0)\n    children.append(pid)\n"
            "os.close(w)\nfor pid in children:\n    os.waitpid(pid, 0)\nprint(outcome, len(children))\n")
    result = run_python(code, guard=False, max_processes=6)
    if not result.isolation.get("rlimit_nproc_effective"):
        pytest.skip("RLIMIT_NPROC has no effect here (root without a uid drop)")
    assert result.status == "passed", result
    outcome, forked = result.stdout_tail.split()
    assert outcome == "EAGAIN", result
    if result.isolation["uid_dropped"]:  # (without it, the budget also counts the user's other processes)
        assert int(forked) == 5, result


def test_core_limit_acts_on_its_own():
    """RLIMIT_CORE is 0, soft and hard: the code cannot raise it (guard off, so the audit hook does not refuse
    setrlimit first), and a child that aborts leaves no core file in the (writable) sandbox directory."""
    code = ("import os, resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_CORE)\ntry:\n"
            "    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))\nexcept (ValueError, OSError):\n    pass\n"
            "print(soft, hard, resource.getrlimit(resource.RLIMIT_CORE)[0])\npid = os.fork()\nif pid == 0:\n"
            "    os.abort()\n_, status = os.waitpid(pid, 0)\nprint(os.WTERMSIG(status), os.WCOREDUMP(status))\n"
            "print(sorted(name for name in os.listdir('.') if name.startswith('core')))\n")
    result = run_python(code, guard=False)
    assert result.status == "passed", result
    limits, death, cores = result.stdout_tail.splitlines()
    assert limits == "0 0 0" and cores == "[]", result
    assert death.split()[0] == str(int(signal.SIGABRT)), result
    try:
        with open("/proc/sys/kernel/core_pattern") as handle:
            piped = handle.read().startswith("|")
    except OSError:
        piped = True
    if not piped:  # a core_pattern pipe receives a dump whatever RLIMIT_CORE says
        assert death.split()[1] == "False", result


@pytest.mark.parametrize("guard", [True, False])
def test_writing_outside_is_blocked(tmp_path, guard):
    target = tmp_path / "escaped.txt"
    result = run_python(f"open({str(target)!r}, 'w').write('x')\n", guard=guard)
    if not guard and not _os_boundary(result):
        pytest.skip("no OS write boundary here (root without namespaces or uid drop): only the guard blocks writes")
    assert result.status in ("error", "failed"), result
    assert not target.exists()
    inside = run_python("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n", guard=guard)
    assert inside.status == "passed" and inside.stdout_tail == "ok\n"


def test_read_only_mounts_act_on_their_own(tmp_path):
    """The mount namespace's read-only remount alone stops writes outside the sandbox directory: the code runs
    as root (drop_privileges=False) with no guard; the control run without namespaces shows root could write."""
    target = tmp_path / "escaped.txt"
    code = (f"import errno\nfor name, path in (('outside', {str(target)!r}), ('inside', 'inside.txt')):\n"
            "    try:\n        with open(path, 'w') as handle:\n            handle.write('x')\n        print(name, 'written')\n"
            "    except OSError as e:\n        print(name, errno.errorcode[e.errno])\n")
    control = run_python(code, guard=False, isolate=False, drop_privileges=False)
    assert control.stdout_tail.splitlines() == ["outside written", "inside written"] and target.exists(), control
    target.unlink()
    result = run_python(code, guard=False, drop_privileges=False)
    if "mount" not in result.isolation.get("namespaces", []):
        pytest.skip(f"no mount namespace here (isolation notes: {result.isolation.get('notes')})")
    assert result.isolation["read_only_fs"] and not result.isolation["uid_dropped"], result
    assert result.status == "passed", result
    assert result.stdout_tail.splitlines() == ["outside EROFS", "inside written"] and not target.exists(), result


@needs_proc
def test_private_uid_acts_on_its_own(tmp_path):
    """The code runs as the private uid with no groups and no capabilities, so (guard off) it cannot undo the
    read-only mounts and write outside; the control run as root in the same namespaces shows that it could."""
    target = tmp_path / "escaped.txt"
    code = ("import ctypes, errno, os\nprint(os.getresuid(), os.getresgid(), os.getgroups())\n"
            "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('CapEff:')][0])\n"
            f"target = {str(target)!r}\n"
            "mounts = [line.split()[4] for line in open('/proc/self/mountinfo')]\n"
            "point = max((m for m in mounts if target.startswith(m.rstrip('/') + '/')), key=len)\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "if libc.mount(None, point.encode(), None, ctypes.c_ulong(32 | 4096), None) == 0:  # MS_REMOUNT | MS_BIND\n"
            "    print('remounted')\nelse:\n    print('remount', errno.errorcode[ctypes.get_errno()])\n"
            "try:\n    with open(target, 'w') as handle:\n        handle.write('x')\n    print('written')\n"
            "except OSError as e:\n    print('write', errno.errorcode[e.errno])\n")
    result = run_python(code, guard=False)
    if not result.isolation.get("uid_dropped"):
        pytest.skip(f"no uid drop here (euid {os.geteuid()}; notes: {result.isolation.get('notes')})")
    uid = result.isolation["uid"]
    assert result.status == "passed", result
    ids, caps, remount, write = result.stdout_tail.splitlines()
    assert ids == f"{(uid,) * 3} {(uid,) * 3} []" and int(caps, 16) == 0, result
    assert remount == "remount EPERM" and write in ("write EACCES", "write EROFS") and not target.exists(), result
    if "mount" in result.isolation["namespaces"]:
        control = run_python(code, guard=False, drop_privileges=False)
        assert control.stdout_tail.splitlines()[2:] == ["remounted", "written"] and target.exists(), control


def test_deleting_outside_is_blocked(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = run_python(f"import os, shutil\nos.remove({str(victim)!r})\n")
    assert result.status in ("error", "failed") and victim.read_text() == "precious"
    result = run_python(f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n")
    assert result.status in ("error", "failed") and victim.exists()


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("MCMC_LLM_TEST_SECRET", "hunter2-secret")
    result = run_python(
        "import os\nprint(sorted(os.environ))\nprint(os.environ.get('MCMC_LLM_TEST_SECRET'))\n"
        f"try:\n    print(open('/proc/{os.getpid()}/environ').read())\nexcept Exception as e:\n    print('denied', type(e).__name__)\n"
    )
    assert result.status == "passed", result
    assert "hunter2-secret" not in result.stdout_tail and "MCMC_LLM_TEST_SECRET" not in result.stdout_tail
    assert "denied" in result.stdout_tail


_CODE_ENV = ["HOME", "LANG", "LC_ALL", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH",
             "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "TMPDIR"]
# The code's environment (built by the launcher) and the launcher's own (read from the sandbox's init, its fork);
# with the OS layers and the guard off, so that the code may read its parent's environ.
_ENV_PROBE = ("import os\nprint(sorted(os.environ))\n"
              "with open(f'/proc/{os.getppid()}/environ', 'rb') as handle:\n"
              "    print(sorted(item.split(b'=')[0].decode() for item in handle.read().split(b'\\0') if item))\n")
_PLAIN = dict(guard=False, isolate=False, drop_privileges=False)


@needs_proc
def test_launcher_is_started_with_a_scrubbed_environment(monkeypatch):
    """The library side starts the launcher (and so the sandbox's init) with PATH, LANG and LC_ALL only."""
    monkeypatch.setenv("MCMC_LLM_TEST_SECRET", "hunter2-secret")
    result = run_python(_ENV_PROBE, **_PLAIN)
    assert result.status == "passed", result
    assert result.stdout_tail.splitlines() == [str(_CODE_ENV), str(["LANG", "LC_ALL", "PATH"])], result


@needs_proc
def test_launcher_builds_the_code_environment_from_scratch(monkeypatch):
    """The launcher on its own: started with a dirty environment (the library side's scrub switched off by
    patching Popen, the second line shows the secret did reach it), it still gives the code only its own list."""
    real_popen = subprocess.Popen

    def dirty_popen(args, **kwargs):
        kwargs["env"] = dict(kwargs["env"], MCMC_LLM_TEST_SECRET="hunter2-secret")
        return real_popen(args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", dirty_popen)
    result = run_python(_ENV_PROBE, **_PLAIN)
    assert result.status == "passed", result
    assert result.stdout_tail.splitlines() == [str(_CODE_ENV), str(["LANG", "LC_ALL", "MCMC_LLM_TEST_SECRET", "PATH"])]


@needs_proc
def test_guard_alone_blocks_reading_another_process_environment(spawn_sentinel):
    """The audit hook on its own refuses /proc/<other pid>/environ: with the OS layers off (same PID namespace,
    root) the control run without the guard reads the sentinel's secret, the guarded one is refused."""
    sentinel = spawn_sentinel(env=dict(os.environ, MCMC_LLM_TEST_SECRET="hunter2-secret"))
    code = (f"try:\n    with open('/proc/{sentinel.pid}/environ', 'rb') as handle:\n"
            "        print('read', b'hunter2-secret' in handle.read())\nexcept PermissionError as e:\n    print('blocked:', e)\n")
    plain = dict(isolate=False, drop_privileges=False)
    control = run_python(code, guard=False, **plain)
    assert control.stdout_tail.splitlines() == ["read True"], control
    result = run_python(code, **plain)
    assert result.status == "passed", result
    assert result.stdout_tail.splitlines() == [
        f"blocked: SandboxViolation: reading another process's environment: '/proc/{sentinel.pid}/environ'"], result


@pytest.mark.parametrize("guard", [True, False])
def test_cannot_kill_its_parent(guard, spawn_sentinel):
    """SIGKILL to its own parent (the sandbox's init) and to a sentinel outside (standing in for the library
    process) both fail and both survive; with guard=False the OS boundary alone (PID namespace, uid) does it."""
    sentinel = spawn_sentinel()
    code = (f"import os, signal\nfor name, pid in (('parent', os.getppid()), ('sentinel', {sentinel.pid})):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        print(name, 'killed')\n"
            "    except Exception as e:\n        print(name, type(e).__name__)\nprint('still running')\n")
    probe = run_python("print(1)", guard=guard)
    if not guard and not _os_boundary(probe):
        pytest.skip("no OS signal boundary here: only the guard stops os.kill")
    result = run_python(code, guard=guard)
    assert _alive(sentinel), result
    # A killed parent would take the code down with it (PDEATHSIG / PID namespace): exit 0 shows it survived.
    # (Without the guard, a PID namespace's init may silently discard the signal: kill() then "succeeds".)
    assert result.status == "passed" and result.returncode == 0, result
    parent, outside, last = result.stdout_tail.splitlines()
    refused = ("SandboxViolation",) if guard else ("PermissionError", "ProcessLookupError")
    assert outside.split()[1] in refused and last == "still running", result
    assert parent.split()[1] in (refused if guard else refused + ("killed",)), result


def test_guard_alone_blocks_kill_of_an_outside_process(spawn_sentinel):
    """The audit hook on its own refuses os.kill and os.killpg of another process: with the OS layers off
    (same PID namespace, root uid: the control run shows the kernel would deliver the signal) the
    sentinel survives and the code sees the guard's SandboxViolation."""
    plain = dict(isolate=False, drop_privileges=False)
    code = ("import os, signal\nfor kill in (os.kill, os.killpg):\n    try:\n        kill({pid}, signal.SIGKILL)\n"
            "        print('allowed')\n    except PermissionError as e:\n        print('blocked:', e)\n")
    control = spawn_sentinel()
    unguarded = run_python(code.format(pid=control.pid), guard=False, **plain)
    assert not _alive(control) and unguarded.stdout_tail.splitlines()[0] == "allowed", unguarded
    sentinel = spawn_sentinel()
    result = run_python(code.format(pid=sentinel.pid), **plain)
    assert _alive(sentinel), result
    assert result.isolation["namespaces"] == [] and not result.isolation["uid_dropped"]
    assert result.status == "passed", result
    assert result.stdout_tail.splitlines() == [f"blocked: SandboxViolation: os.kill pid {sentinel.pid}",
                                               f"blocked: SandboxViolation: os.killpg pid {sentinel.pid}"]


def test_no_network():
    result = run_python(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.settimeout(1)\n"
        "s.connect(('1.1.1.1', 53))\nprint('connected')\n", timeout_s=5)
    assert result.status in ("error", "failed") and "connected" not in result.stdout_tail


def test_network_namespace_alone_blocks_network():
    """The network namespace acts on its own (guard off, so no audit hook stops `socket`): the code sees
    only a loopback interface, which is down, so even a server on the host's own loopback is unreachable."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        code = ("import socket\nprint(sorted(name for _, name in socket.if_nameindex()))\n"
                "s = socket.socket()\ns.settimeout(2)\ntry:\n"
                f"    s.connect(('127.0.0.1', {server.getsockname()[1]}))\n    print('connected')\n"
                "except OSError as e:\n    print('refused', e.errno)\n")
        result = run_python(code, guard=False, timeout_s=5)
    if not result.isolation.get("namespaces"):
        pytest.skip(f"no namespaces on this machine (isolation notes: {result.isolation.get('notes')})")
    assert "net" in result.isolation["namespaces"] and result.isolation["guard"] is False, result
    assert result.status == "passed", result
    assert result.stdout_tail.splitlines() == ["['lo']", f"refused {errno.ENETUNREACH}"], result


def test_subprocess_is_blocked_by_guard():
    result = run_python("import subprocess\nprint(subprocess.run(['echo', 'hi'], capture_output=True).stdout)\n")
    assert result.status == "error" and "SandboxViolation" in result.stderr_tail


def test_temporary_directory_is_removed():
    result = run_python("import os\nprint(os.getcwd())\n")
    work = result.stdout_tail.strip()
    assert work and not os.path.exists(work)


def test_argument_validation():
    with pytest.raises(ValueError, match="timeout_s"):
        run_python("pass", timeout_s=0)
    with pytest.raises(TypeError):
        run_python(b"pass")


def test_guard_alone_when_os_layers_are_off(tmp_path, spawn_sentinel):
    """What a machine without namespaces or uid drop gets: the audit-hook guard and the rlimits."""
    target = tmp_path / "escaped.txt"
    sentinel = spawn_sentinel()
    plain = dict(isolate=False, drop_privileges=False)
    code = (f"import os\nfor action in (lambda: open({str(target)!r}, 'w'),\n"
            f"               lambda: os.kill({sentinel.pid}, 9), os.fork,\n"
            "               lambda: os.system('true')):\n"
            "    try:\n        action()\n        print('allowed')\n    except PermissionError as e:\n        print('blocked')\n")
    result = run_python(code, **plain)
    assert result.status == "passed", result
    assert result.stdout_tail.split() == ["blocked"] * 4
    assert not target.exists() and result.isolation["namespaces"] == [] and _alive(sentinel)
    assert run_python("x = bytearray(4 * 1024 ** 3)", memory_mb=256, **plain).status == "memory"
