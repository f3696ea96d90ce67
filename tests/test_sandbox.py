"""mcmc_llm.sandbox: untrusted code runs in a separate, limited process and cannot harm the caller."""

import os
import time

import pytest

from mcmc_llm.sandbox import SANDBOX_STATUSES, run_python
from mcmc_llm.sandbox.launcher import proc_entries

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")


def _survivors(result):
    """Live processes left by a run: its session, or its private uid."""
    uid = result.isolation.get("uid")
    return [e for e in proc_entries()
            if e[4] not in ("Z", "X") and (e[2] == result.session_id or e[1] == result.session_id or (uid is not None and e[3] == uid))]


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


@pytest.mark.parametrize("guard", [True, False])
def test_cannot_kill_its_parent(guard):
    me = os.getpid()
    code = f"import os, signal\nfor pid in (os.getppid(), {me}):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except Exception as e:\n        print(type(e).__name__)\n"
    probe = run_python("print(1)", guard=guard)
    if not guard and not _os_boundary(probe):
        pytest.skip("no OS signal boundary here: only the guard stops os.kill")
    result = run_python(code, guard=guard)
    assert os.getpid() == me  # we are still alive to check
    assert result.status in ("passed", "error", "failed"), result


def test_no_network():
    result = run_python(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.settimeout(1)\n"
        "s.connect(('1.1.1.1', 53))\nprint('connected')\n", timeout_s=5)
    assert result.status in ("error", "failed") and "connected" not in result.stdout_tail


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


def test_guard_alone_when_os_layers_are_off(tmp_path):
    """What a machine without namespaces or uid drop gets: the audit-hook guard and the rlimits."""
    target = tmp_path / "escaped.txt"
    me = os.getpid()
    plain = dict(isolate=False, drop_privileges=False)
    code = (f"import os\nfor action in (lambda: open({str(target)!r}, 'w'), lambda: os.kill({me}, 9), os.fork,\n"
            "               lambda: os.system('true')):\n"
            "    try:\n        action()\n        print('allowed')\n    except PermissionError as e:\n        print('blocked')\n")
    result = run_python(code, **plain)
    assert result.status == "passed", result
    assert result.stdout_tail.split() == ["blocked"] * 4
    assert not target.exists() and result.isolation["namespaces"] == []
    assert run_python("x = bytearray(4 * 1024 ** 3)", memory_mb=256, **plain).status == "memory"
