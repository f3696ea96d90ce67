"""A mutation battery: realistic bugs, each of which the test suite must catch.

    python tests/mutation_battery.py            # every mutation (at most ~20 min on 2 cores)
    python tests/mutation_battery.py --quick    # the fast subset that CI runs
    python tests/mutation_battery.py --list     # the catalogue, without running anything
    python tests/mutation_battery.py --only NAME [NAME ...]

Each mutation is one exact text replacement in one source file (`old` must occur exactly once, so
a stale entry is reported instead of silently testing nothing).  The battery copies the project
(the files git knows, tracked or not ignored) into a temporary directory, applies one mutation at a
time there, and runs that mutation's tests with `python -m pytest -x` in the copy (PYTHONPATH and
the working directory point at the copy; the run checks that `mcmc_llm` is imported from it).

A mutation is *killed* when its tests fail (pytest exit code 1; a run past `--timeout` counts as
killed too, and is labelled so), *survived* when they pass (exit code 0), and an *error* otherwise
(the edit does not apply, tests not collected, no tests ran, pytest crashed): an error is a defect
of the battery, not a kill.  Before mutating, the battery runs every selected mutation's tests on
the unmutated copy (`--no-baseline` skips this, e.g. in CI right after the suite has passed), so
a kill is never a test that fails anyway.

The last line of the output is a JSON summary:
`{"mutations": N, "killed": K, "survived": [...], "errors": [...], "seconds": S}`.
The exit status is 0 only if every mutation was killed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One realistic bug: replace `old` by `new` in `path`; `tests` are pytest arguments (files,
    node ids, `-k` expressions) that must fail; `slow` runs slow-marked tests too; `quick` puts it
    in the CI subset."""

    name: str
    area: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str
    quick: bool = False
    slow: bool = False


def m(name, area, path, old, new, tests, why, quick=False, slow=False) -> Mutation:
    return Mutation(name, area, path, old, new, tuple(tests), why, quick, slow)


MUTATIONS: tuple[Mutation, ...] = (
    # ---- the sampler: MH rule, suffix proposal, cut rules, target
    m("hastings-ratio-inverted", "sampler", "mcmc_llm/kernels/mh.py",
      "(log_q_backward - log_q_forward)", "(log_q_forward - log_q_backward)",
      ["tests/core/test_core_mh.py"], "the proposal terms of the MH ratio with the wrong sign", quick=True),
    m("uniform-not-logged", "sampler", "mcmc_llm/kernels/mh.py",
      "accepted = torch.log(uniform(source, log_ratio)) < log_ratio", "accepted = uniform(source, log_ratio) < log_ratio",
      ["tests/core/test_core_statistics.py"], "the uniform compared with a log ratio without its log"),
    m("reverse-cut-term-dropped", "sampler", "mcmc_llm/proposals/two_phase.py",
      "backward = value_at(reverse_cut, safe_index) + current.suffix_sum(current.log_q, cut_index)",
      "backward = current.suffix_sum(current.log_q, cut_index)",
      ["tests/drivers/test_power_exactness.py"], "the backward cut probability P(m | x') left out of q(x | x')", quick=True),
    m("reverse-cut-law-at-x", "sampler", "mcmc_llm/proposals/two_phase.py",
      "reverse_cut = self.cut_rule.log_probs(self.cut_view(proposed), self.block_start)",
      "reverse_cut = self.cut_rule.log_probs(self.cut_view(current), self.block_start)",
      ["tests/drivers/test_power_exactness.py"], "the reverse cut law evaluated at the current state instead of the proposal"),
    m("cut-may-take-the-length", "sampler", "mcmc_llm/proposals/cut_rules.py",
      "return (positions >= lowest) & (positions < position.lengths[:, None])",
      "return (positions >= lowest) & (positions <= position.lengths[:, None])",
      ["tests/proposals/test_cut_rules.py"], "an off-by-one: a cut at m = L (an empty move) is allowed"),
    m("within-block-budget-off-by-one", "sampler", "mcmc_llm/proposals/cut_rules.py",
      "return (length - block_start + 1) / 2 if length > block_start else 0.0",
      "return (length - block_start) / 2 if length > block_start else 0.0",
      ["tests/proposals/test_cut_rules.py"], "E[L - m] of within-block cuts off by one (the token budget)"),
    m("power-target-ignores-alpha", "sampler", "mcmc_llm/targets/sequence.py",
      "scale = 1.0 if self.max_swap else self.alpha", "scale = 1.0",
      ["tests/drivers/test_power_exactness.py"], "the target is p, not p^alpha"),
    # ---- pre-fetching
    m("prefetch-length-check-dropped", "prefetch", "mcmc_llm/drivers/asynchronous.py",
      "return accepted and int(self.position.lengths[chain]) == self.stage_caps[stage]", "return accepted",
      ["tests/drivers/test_prefetch.py"], "an acceptance pre-fetch kept when the accepted state ended before the stage cap",
      quick=True),
    m("prefetch-kept-after-acceptance", "prefetch", "mcmc_llm/drivers/prefetch.py",
      "        if accepted:\n            return None, requests\n", "        if False:\n            return None, requests\n",
      ["tests/drivers/test_prefetch.py"], "requests pre-fetched from a state the chain has just left are promoted"),
    m("prefetch-cut-for-current-length", "prefetch", "mcmc_llm/drivers/prefetch.py",
      "return torch.full_like(sub.lengths, self.chains.stage_caps[stage])", "return sub.lengths",
      ["tests/drivers/test_prefetch.py", "-k", "cap_length"], "the acceptance pre-fetch's cut drawn for the old state's length",
      slow=True),
    m("plans-keep-first-samplers", "prefetch", "mcmc_llm/proposals/plans.py",
      "        elif all(_equal(tree.samplers, trees[0].samplers) for tree in trees[1:]):\n",
      "        elif True:  # keep the first plan's samplers\n",
      ["tests/proposals/test_stage_plans.py"], "rows of several plans merged keeping the first plan's samplers (another stage's law)",
      quick=True),
    m("early-reject-forward-cut-dropped", "sampler", "mcmc_llm/proposals/suffix.py",
      "                  - value_at(plan.log_cut, cut_index.clamp(max=position.capacity - 1)))",
      "                  )", ["tests/kernels/test_early_rejection.py"],
      "the early-rejection bound leaves out -log P(m | x): proposals that could be accepted are stopped", quick=True),
    m("early-reject-any-temperature", "sampler", "mcmc_llm/proposals/suffix.py",
      "not (1.0 / alpha - 1e-12 <= tau <= 1.0)", "not (0.0 <= tau <= 1.0)", ["tests/kernels/test_early_rejection.py"],
      "early rejection switched on below temperature 1/alpha, where a token can raise the ratio"),
    # ---- Power-SMC and resampling
    m("smc-ramp-completion-dropped", "smc", "mcmc_llm/smc/power_smc.py",
      "log_w += torch.nan_to_num((config.alpha - exponent_now) * log_p_total, nan=0.0).reshape(num_prompts, count)",
      "pass", ["tests/smc/test_smc.py", "-k", "ramp_completed"],
      "a ramp unfinished when every particle ended is never brought to alpha", quick=True),
    m("smc-weight-proposal-sign", "smc", "mcmc_llm/smc/power_smc.py",
      'increment[rows] -= step["log_q"]', 'increment[rows] += step["log_q"]',
      ["tests/smc/test_smc.py", "-k", "normalising_constant"], "the incremental weight multiplies by q instead of dividing"),
    m("smc-normaliser-not-averaged", "smc", "mcmc_llm/smc/power_smc.py",
      "log_normalizer = torch.logsumexp(log_w, -1) - math.log(count)", "log_normalizer = torch.logsumexp(log_w, -1)",
      ["tests/smc/test_smc.py", "-k", "normalising_constant"], "Z_hat is the sum of the weights, not their mean"),
    m("smc-adaptive-moves", "smc", "mcmc_llm/smc/power_smc.py",
      "moving = (resampling if _adaptive_moves else scheduled[:, t] & positive) & intermediate_moves",
      "moving = resampling & intermediate_moves",
      ["tests/smc/test_smc_unbiased.py"], "rejuvenation moves triggered by the particles' own ESS (biased)"),
    m("systematic-without-offset", "smc", "mcmc_llm/smc/resampling.py",
      "points = (offsets + uniform(generator, weights[:, :1])) / count", "points = (offsets + 0.5) / count",
      ["tests/smc/test_smc.py", "-k", "resampling"], "systematic resampling without its random offset", quick=True),
    m("residual-draws-from-weights", "smc", "mcmc_llm/smc/resampling.py",
      "residuals = (expected - copies).clamp(min=0.0)", "residuals = expected.clamp(min=0.0)",
      ["tests/smc/test_smc.py", "-k", "resampling"], "residual resampling draws the rest from W instead of the residuals"),
    # ---- the sandbox and the HumanEval grader
    m("sandbox-no-cpu-limit", "sandbox", "mcmc_llm/sandbox/launcher.py",
      '(resource.RLIMIT_AS, cfg["memory_bytes"]), (resource.RLIMIT_CPU, cfg["cpu_s"]),',
      '(resource.RLIMIT_AS, cfg["memory_bytes"]),',
      ["tests/evaluation/test_sandbox.py", "-k", "cpu_limit"], "RLIMIT_CPU is not set in the child", quick=True),
    m("sandbox-no-file-size-limit", "sandbox", "mcmc_llm/sandbox/launcher.py",
      '(resource.RLIMIT_FSIZE, cfg["fsize_bytes"]), (resource.RLIMIT_CORE, 0),', '(resource.RLIMIT_CORE, 0),',
      ["tests/evaluation/test_sandbox.py", "-k", "file_size"], "RLIMIT_FSIZE is not set in the child"),
    m("sandbox-no-network-namespace", "sandbox", "mcmc_llm/sandbox/launcher.py",
      "for flags in (_CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET, _CLONE_NEWPID | _CLONE_NEWNET, _CLONE_NEWNET):",
      "for flags in (_CLONE_NEWNS | _CLONE_NEWPID, _CLONE_NEWPID):",
      ["tests/evaluation/test_sandbox.py", "-k", "network"], "the child keeps the host's network (only the audit hook blocks sockets)"),
    m("sandbox-guard-allows-kill", "sandbox", "mcmc_llm/sandbox/guard.py",
      'if event in ("os.kill", "os.killpg"):', "if event in ():",
      ["tests/evaluation/test_sandbox.py", "-k", "kill"], "the audit hook lets untrusted code signal other processes", quick=True),
    m("sandbox-no-memory-limit", "sandbox", "mcmc_llm/sandbox/launcher.py",
      'limits = [(resource.RLIMIT_AS, cfg["memory_bytes"]), (resource.RLIMIT_CPU, cfg["cpu_s"]),',
      'limits = [(resource.RLIMIT_CPU, cfg["cpu_s"]),',
      ["tests/evaluation/test_sandbox.py", "-k", "huge_allocation"], "RLIMIT_AS is not set in the child"),
    m("sandbox-no-open-file-limit", "sandbox", "mcmc_llm/sandbox/launcher.py",
      '(resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_NPROC, cfg["nproc"])]', '(resource.RLIMIT_NPROC, cfg["nproc"])]',
      ["tests/evaluation/test_sandbox.py", "-k", "open_file_limit"], "RLIMIT_NOFILE is not set in the child"),
    m("sandbox-no-process-limit", "sandbox", "mcmc_llm/sandbox/launcher.py",
      '(resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_NPROC, cfg["nproc"])]', '(resource.RLIMIT_NOFILE, 256)]',
      ["tests/evaluation/test_sandbox.py", "-k", "process_limit"], "RLIMIT_NPROC is not set in the child"),
    m("sandbox-no-core-limit", "sandbox", "mcmc_llm/sandbox/launcher.py",
      '(resource.RLIMIT_FSIZE, cfg["fsize_bytes"]), (resource.RLIMIT_CORE, 0),', '(resource.RLIMIT_FSIZE, cfg["fsize_bytes"]),',
      ["tests/evaluation/test_sandbox.py", "-k", "core_limit"], "RLIMIT_CORE is not set: the code may raise it and dump cores"),
    m("sandbox-no-read-only-mounts", "sandbox", "mcmc_llm/sandbox/launcher.py",
      '_read_only_everything(libc, cfg["work"], info)', "pass",
      ["tests/evaluation/test_sandbox.py", "-k", "read_only_mounts"], "the mounts are not re-mounted read-only (yet reported so)"),
    m("sandbox-no-uid-drop", "sandbox", "mcmc_llm/sandbox/launcher.py",
      "        os.setuid(uid)", "        pass",
      ["tests/evaluation/test_sandbox.py", "-k", "private_uid"], "the code keeps running as root (yet the uid is reported dropped)"),
    m("sandbox-guard-allows-writes", "sandbox", "mcmc_llm/sandbox/guard.py",
      "if writing and not inside(path):", "if False:",
      ["tests/evaluation/test_sandbox.py", "-k", "guard_alone_when_os_layers_are_off"],
      "the audit hook lets untrusted code open files outside its directory for writing"),
    m("sandbox-guard-allows-fork", "sandbox", "mcmc_llm/sandbox/guard.py",
      '"os.fork", ', "",
      ["tests/evaluation/test_sandbox.py", "-k", "guard_alone_when_os_layers_are_off"], "the audit hook lets untrusted code fork"),
    m("sandbox-guard-allows-environ", "sandbox", "mcmc_llm/sandbox/guard.py",
      'if match and match.group(1) not in (str(getpid()), "self", "thread-self"):', "if False:",
      ["tests/evaluation/test_sandbox.py", "-k", "reading_another_process_environment"],
      "the audit hook lets untrusted code read /proc/<other pid>/environ"),
    m("sandbox-code-inherits-environment", "sandbox", "mcmc_llm/sandbox/launcher.py",
      'env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": cfg["work"],',
      'env = {**os.environ, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": cfg["work"],',
      ["tests/evaluation/test_sandbox.py", "-k", "code_environment_from_scratch"],
      "the launcher passes its own environment on to the code"),
    m("sandbox-launcher-gets-environment", "sandbox", "mcmc_llm/sandbox/run.py",
      'env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}',
      'env = dict(os.environ, PATH="/usr/bin:/bin", LANG="C.UTF-8", LC_ALL="C.UTF-8")',
      ["tests/evaluation/test_sandbox.py", "-k", "scrubbed_environment"],
      "the library's environment (secrets included) reaches the launcher and the sandbox's init"),
    m("sandbox-work-dir-kept", "sandbox", "mcmc_llm/sandbox/run.py",
      "shutil.rmtree(outer, ignore_errors=True)", "pass",
      ["tests/evaluation/test_sandbox.py", "-k", "temporary_directory"], "the temporary directory is never removed"),
    m("sandbox-no-cleanup-after-run", "sandbox", "mcmc_llm/sandbox/run.py",
      '_kill_session(proc.pid, config["uid"], spare=proc.pid)', "pass",
      ["tests/evaluation/test_sandbox.py", "-k", "leaves_behind"], "processes the code leaves behind outlive run_python"),
    m("sandbox-cleanup-kills-nothing", "sandbox", "mcmc_llm/sandbox/run.py",
      "                os.kill(pid, signal.SIGKILL)", "                pass",
      ["tests/evaluation/test_sandbox.py", "-k", "leaves_behind"], "the cleanup finds the leftover processes but kills none"),
    m("sandbox-no-killpg", "sandbox", "mcmc_llm/sandbox/run.py",
      "os.killpg(session_id, signal.SIGKILL)", "pass",
      ["tests/evaluation/test_sandbox.py", "-k", "without_proc"], "without /proc nothing kills a timed-out sandbox's session"),
    m("humaneval-grader-drops-limits", "graders", "mcmc_llm/tasks/humaneval.py",
      "run_python(program, timeout_s=self.timeout_s, memory_mb=self.memory_mb)", "run_python(program)",
      ["tests/tasks/test_tasks_humaneval.py", "-k", "grader"], "the grader ignores its timeout_s and memory_mb"),
    # ---- diagnostics and the diagnose / grade commands
    m("tail-ess-is-bulk", "diagnostics", "mcmc_llm/diagnostics/summary.py",
      '        ess_tail = arviz_adapter.ess(draws, "tail")', '        ess_tail = arviz_adapter.ess(draws, "bulk")',
      ["tests/diagnostics/test_diagnostics.py"], "the tail ESS reported is the bulk ESS", quick=True),
    m("stuck-chain-not-flagged", "diagnostics", "mcmc_llm/diagnostics/summary.py",
      "            if moves and np.nansum(accepted[c]) == 0:", "            if moves and np.nansum(accepted[c]) < 0:",
      ["tests/cli/test_cli_diagnose.py"], "a chain that never accepts is not flagged"),
    m("diagnose-flag-overwritten", "diagnostics", "mcmc_llm/commands/diagnose.py",
      "            any_flag |= not summary.ok", "            any_flag = not summary.ok",
      ["tests/cli/test_cli_diagnose.py"], "a flag on an early prompt is forgotten by the final warning"),
    m("diagnose-reads-every-stage", "diagnostics", "mcmc_llm/commands/diagnose.py",
      "summary = summarize(part, stage=args.stages,", 'summary = summarize(part, stage="all",',
      ["tests/cli/test_cli_diagnose.py"], "ESS and R-hat over every stage, not the last one"),
    m("diagnose-first-prompt-only", "diagnostics", "mcmc_llm/commands/diagnose.py",
      "            rows = slice(prompt * chains, (prompt + 1) * chains)", "            rows = slice(0, chains)",
      ["tests/cli/test_cli_diagnose.py"], "every prompt's table shows the first prompt's chains"),
    m("grade-narrow-except", "graders", "mcmc_llm/commands/grade.py",
      "            except Exception as error:  # one bad record must not stop the run",
      "            except (ValueError, TypeError) as error:  # one bad record must not stop the run",
      ["tests/cli/test_cli_diagnose.py", "-k", "grade"], "a grader's RuntimeError stops the whole grading run"),
    m("grade-failure-counts-as-correct", "graders", "mcmc_llm/commands/grade.py",
      '                result = GradeResult(False, "error", f"grader failed: {error!r}")',
      '                result = GradeResult(True, "correct", f"grader failed: {error!r}")',
      ["tests/cli/test_cli_diagnose.py", "-k", "grade"], "a record whose grader crashed is scored correct"),
    m("mcse-from-draw-count", "checks", "mcmc_llm/testing/chains.py",
      "    mcse = sd / np.sqrt(ess)", "    mcse = sd / np.sqrt(values.shape[0] * values.shape[1])",
      ["tests/arviz_compat"], "the moment check's MCSE ignores autocorrelation"),
    m("ess-of-mean-is-bulk", "checks", "mcmc_llm/testing/chains.py",
      'float(ess(values[..., d], method="mean"))', 'float(ess(values[..., d], method="bulk"))',
      ["tests/arviz_compat"], "the ESS of the mean (for the MCSE) is the bulk ESS"),
    # ---- statistical checks shipped in mcmc_llm.testing
    m("chi-square-dof", "checks", "mcmc_llm/testing/discrete.py",
      "dof = bins - 1", "dof = bins", ["tests/core/test_core_checks.py"], "one degree of freedom too many (a lenient test)"),
    m("tv-threshold-doubled", "checks", "mcmc_llm/testing/discrete.py",
      "return 0.5 * math.sqrt(2.0 * (num_categories * math.log(2.0) + math.log(1.0 / rate)) / num_samples)",
      "return math.sqrt(2.0 * (num_categories * math.log(2.0) + math.log(1.0 / rate)) / num_samples)",
      ["tests/core/test_core_checks.py"], "the TV threshold is the L1 bound (twice too lenient)"),
    # ---- graders
    m("math-first-box", "graders", "mcmc_llm/tasks/math500.py",
      "for match in reversed(starts):", "for match in starts:",
      ["tests/tasks/test_tasks_math500.py"], "the first \\boxed{} is graded instead of the last", quick=True),
    m("arithmetic-first-number", "graders", "mcmc_llm/tasks/arithmetic.py",
      "value = _as_integer(numbers[-1])", "value = _as_integer(numbers[0])",
      ["tests/tasks/test_tasks_arithmetic.py"], "the fallback reads the first number, not the last"),
    m("gpqa-first-answer", "graders", "mcmc_llm/tasks/gpqa.py",
      "return hits[-1]", "return hits[0]", ["tests/tasks/test_tasks_gpqa.py"], "the first 'answer is X' is graded, not the last"),
    m("pass-at-k-ignores-k", "graders", "mcmc_llm/evaluation/bootstrap.py",
      "pass_at_k(len(v), sum(v), k)", "pass_at_k(len(v), sum(v), 1)",
      ["tests/evaluation/test_evaluation_bootstrap.py"], "pass@k of every k computed as pass@1"),
    m("forward-log-q-of-current", "sampler", "mcmc_llm/proposals/two_phase.py",
      "forward = value_at(plan.log_cut, safe_index) + proposed.suffix_sum(proposed.log_q, cut_index)",
      "forward = value_at(plan.log_cut, safe_index) + current.suffix_sum(current.log_q, cut_index)",
      ["tests/drivers/test_power_exactness.py"], "the forward proposal term reads the current suffix, not the new one"),
    m("budget-without-extension", "sampler", "mcmc_llm/drivers/power_budget.py",
      "    return length + config.mcmc_steps * resampled", "    return config.mcmc_steps * resampled",
      ["tests/proposals/test_cut_rules.py"], "the token budget leaves out the extension tokens"),
    m("smc-resampled-level-summed", "smc", "mcmc_llm/smc/power_smc.py",
      "level = torch.logsumexp(log_w[resampling], -1, keepdim=True) - math.log(count)",
      "level = torch.logsumexp(log_w[resampling], -1, keepdim=True)",
      ["tests/smc/test_smc.py", "-k", "normalising_constant"], "after resampling each particle carries the sum of the weights"),
    m("stratified-wrong-strata", "smc", "mcmc_llm/smc/resampling.py",
      "points = (offsets + uniform(generator, weights)) / count", "points = (offsets + uniform(generator, weights)) / (count + 1)",
      ["tests/smc/test_smc.py", "-k", "resampling"], "stratified points on [0, P/(P+1)) instead of [0, 1)"),
    m("rhat-not-rank-normalised", "diagnostics", "mcmc_llm/diagnostics/arviz_adapter.py",
      "return float(np.asarray(self.az.rhat(draws)))", 'return float(np.asarray(self.az.rhat(draws, method="identity")))',
      ["tests/diagnostics/test_diagnostics.py", "tests/cli/test_cli_diagnose.py"], "the classic R-hat instead of the rank-normalised one"),
    m("boxed-escaped-brace", "graders", "mcmc_llm/tasks/math500.py",
      'if text[j] == "{" and text[j - 1] != "\\\\":', 'if text[j] == "{":',
      ["tests/tasks/test_tasks_math500.py"], "an escaped \\{ inside a box counts as an opening brace"),
    m("gpqa-same-shuffle-for-all", "graders", "mcmc_llm/tasks/gpqa.py",
      'hashlib.sha256(f"{int(seed)}:{task_id}".encode())', 'hashlib.sha256(f"{int(seed)}".encode())',
      ["tests/tasks/test_tasks_gpqa.py"], "every question's choices are shuffled the same way"),
    m("humaneval-keeps-trailing-tests", "graders", "mcmc_llm/tasks/humaneval.py",
      "    return code[: match.start()] if match else code", "    return code",
      ["tests/tasks/test_tasks_humaneval.py"], "example calls after the function are run with it"),
    # ---- the runner's resume
    m("resume-redoes-everything", "runner", "mcmc_llm/evaluation/runner.py",
      "done = {record_key(r) for r in existing}", "done = set()",
      ["tests/evaluation/test_evaluation_runner.py"], "a rerun regenerates the records it already has", quick=True),
    m("resume-keeps-torn-line", "runner", "mcmc_llm/evaluation/runner.py",
      "existing = read_records(path, repair=True)", "existing = read_records(path)",
      ["tests/evaluation/test_evaluation_runner.py"], "a line cut short by kill -9 is not removed before appending"),
    m("results-file-truncated", "runner", "mcmc_llm/evaluation/results.py",
      'self._handle = self.path.open("a", encoding="utf-8")', 'self._handle = self.path.open("w", encoding="utf-8")',
      ["tests/evaluation/test_evaluation_runner.py"], "the writer truncates the results of earlier runs"),
    m("resume-ignores-fingerprints", "runner", "mcmc_llm/evaluation/runner.py",
      '    stale = sorted({r["method"] for r in records if r["method"] in expected and r.get("fingerprint") != expected[r["method"]]})',
      "    stale = []", ["tests/evaluation/test_evaluation_runner.py"], "a rerun with changed settings appends to the old results"),
    m("duplicate-records-kept", "runner", "mcmc_llm/evaluation/results.py",
      "        if key in seen:\n", "        if False:\n",
      ["tests/evaluation/test_evaluation_runner.py", "-k", "twice"], "a record written twice is counted twice"),
    m("record-key-without-sample", "runner", "mcmc_llm/evaluation/results.py",
      'return (str(record["task_id"]), str(record["method"]), int(record["sample_index"]))',
      'return (str(record["task_id"]), str(record["method"]), 0)',
      ["tests/evaluation/test_evaluation_runner.py"], "samples of one problem and method share a resume key"),
    # ---- the static-slot decoding engine (mcmc_llm.lm.hf.slots, hf_static)
    m("slot-written-one-late", "engine", "mcmc_llm/lm/hf/static.py",
      "positions = starts[:, None] + torch.arange(queries, device=device)[None]",
      "positions = starts[:, None] + 1 + torch.arange(queries, device=device)[None]",
      ["tests/lm/hf/test_static.py"], "keys and values (and rotary positions) one slot after the row's last token"),
    m("retired-tokens-not-copied", "engine", "mcmc_llm/lm/hf/static.py",
      "Encoded(arena.ids[row, :length].clone().cpu()", "Encoded(arena.ids[row, :length].cpu()",
      ["tests/lm/hf/test_static.py", "tests/lm/hf/test_backend.py"],
      "the stash keeps a view of the slots, which a later row move overwrites (on the CPU .cpu() does not copy)"),
    m("select-copies-shortest", "engine", "mcmc_llm/lm/hf/slots.py",
      "width = max(self.lengths[s] for s in sources)", "width = min(self.lengths[s] for s in sources)",
      ["tests/lm/hf/test_static.py"], "a row moved with fewer positions than it holds", quick=True),
    m("repeat-left-in-place", "engine", "mcmc_llm/lm/hf/slots.py",
      "if source < count and source not in claimed:", "if source < count:",
      ["tests/lm/hf/test_static.py"], "repeated rows (resampling) all point at one physical row, which then advances twice"),
    m("mask-skipped-for-ragged-rows", "engine", "mcmc_llm/lm/hf/static.py",
      "if queries == 1 and min(offsets) == max(offsets):", "if queries == 1:",
      ["tests/lm/hf/test_static.py", "tests/lm/hf/test_backend.py"], "rows of different lengths attend to slots past their end"),
    m("stale-state-accepted", "engine", "mcmc_llm/lm/hf/slots.py",
      "if self.version != self.arena.version:", "if False:",
      ["tests/lm/hf/test_backend.py", "-k", "persistent"], "a consumed state is read after its slots were overwritten"),
    # ---- linear layers on oneDNN-packed weights (mcmc_llm.lm.hf.packed_linear)
    m("packed-weight-never-repacked", "packed", "mcmc_llm/lm/hf/packed_linear.py",
      "if weight._version != self._packed_from[1] or weight.data_ptr() != self._packed_from[0]:", "if False:",
      ["tests/lm/hf/test_packed_linear.py"], "a weight changed in place keeps computing from its stale packed copy"),
    m("packed-bias-dropped", "packed", "mcmc_llm/lm/hf/packed_linear.py",
      "bias = None if self.bias is None else self.bias.detach()", "bias = None",
      ["tests/lm/hf/test_packed_linear.py"], "the packed product forgets the bias (Qwen2's q/k/v projections have one)"),
    m("packed-agreement-unchecked", "packed", "mcmc_llm/lm/hf/packed_linear.py",
      "if not all(_agrees(layer) for layer in packed.values()):", "if False:",
      ["tests/lm/hf/test_packed_linear.py"], "packed layers are used without checking them against torch's linear"),
)


# ------------------------------------------------------------------------------------------------
# running


@dataclasses.dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed, survived, error
    seconds: float
    detail: str


def project_files(root: Path) -> list[str]:
    """The files git knows (tracked, or untracked and not ignored); every file but caches without git."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                                capture_output=True).stdout.decode().split("\0")
        return [name for name in listed if name and (root / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache"}
        return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not skip & set(p.parts)]


def make_copy(root: Path, destination: Path) -> Path:
    for name in project_files(root):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    return destination


def pytest_command(mutation: Mutation) -> list[str]:
    marker = "slow or not slow" if mutation.slow else "not slow"
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", marker, *mutation.tests]


def copy_environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(copy), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               MPLBACKEND="Agg")
    return env


def check_import_location(copy: Path) -> None:
    where = subprocess.run([sys.executable, "-c", "import mcmc_llm; print(mcmc_llm.__file__)"], cwd=copy,
                           env=copy_environment(copy), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"mutation_battery: mcmc_llm is imported from {where}, not from the copy {copy}")


def _failures(output: str) -> str:
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)
    if failed:
        return failed[0]
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def run_tests(mutation: Mutation, copy: Path, timeout: float) -> tuple[int | None, str]:
    try:
        done = subprocess.run(pytest_command(mutation), cwd=copy, env=copy_environment(copy), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    return done.returncode, _failures(done.stdout + done.stderr)


def apply(mutation: Mutation, copy: Path) -> str:
    """Write the mutant; returns the original text (for restoring)."""
    path = copy / mutation.path
    original = path.read_text(encoding="utf-8")
    found = original.count(mutation.old)
    if found != 1:
        raise ValueError(f"{mutation.path}: the text to replace occurs {found} times (must be exactly once)")
    path.write_text(original.replace(mutation.old, mutation.new), encoding="utf-8")
    return original


def mutate_and_test(mutation: Mutation, copies: "queue.Queue[Path]", timeout: float) -> Outcome:
    copy = copies.get()
    started = time.perf_counter()
    try:
        try:
            original = apply(mutation, copy)
        except (OSError, ValueError) as error:
            return Outcome(mutation, "error", 0.0, str(error))
        try:
            code, detail = run_tests(mutation, copy, timeout)
        finally:
            (copy / mutation.path).write_text(original, encoding="utf-8")
        status = {0: "survived", 1: "killed", None: "killed"}.get(code, "error")
        if code not in (0, 1, None):
            detail = f"pytest exit code {code}: {detail}"
        elif code is None:
            detail = "killed by the timeout: " + detail
        return Outcome(mutation, status, time.perf_counter() - started, detail)
    finally:
        copies.put(copy)


def baseline(mutations: list[Mutation], copy: Path, timeout: float) -> list[str]:
    """The selected mutations' test commands on the unmutated copy: each distinct one must pass."""
    problems = []
    for tests, slow in dict.fromkeys((mutation.tests, mutation.slow) for mutation in mutations):
        probe = Mutation("baseline", "", "", "", "", tests, "", slow=slow)
        code, detail = run_tests(probe, copy, timeout)
        if code != 0:
            problems.append(f"{' '.join(tests)}: exit code {code} without any mutation ({detail})")
    return problems


def select(args: argparse.Namespace) -> list[Mutation]:
    chosen = [mutation for mutation in MUTATIONS if mutation.quick or not args.quick]
    if args.only:
        names = {mutation.name for mutation in MUTATIONS}
        unknown = sorted(set(args.only) - names)
        if unknown:
            raise SystemExit(f"mutation_battery: unknown mutation(s) {', '.join(unknown)}; see --list")
        chosen = [mutation for mutation in MUTATIONS if mutation.name in args.only]
    return chosen


def table(outcomes: list[Outcome]) -> str:
    width = max(len(o.mutation.name) for o in outcomes)
    area = max(len(o.mutation.area) for o in outcomes)
    lines = [f"{'mutation':<{width}}  {'area':<{area}}  {'result':<9} {'s':>6}  caught by / detail"]
    for o in outcomes:
        lines.append(f"{o.mutation.name:<{width}}  {o.mutation.area:<{area}}  {o.status:<9} {o.seconds:6.1f}  {o.detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the fast subset run in CI")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these mutations")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="mutants tested at once (default: 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's tests (default 600)")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the tests on the unmutated copy first")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    chosen = select(args)
    if args.list:
        for mutation in chosen:
            flags = " [quick]" if mutation.quick else ""
            print(f"{mutation.name:<34} {mutation.area:<9} {mutation.path}: {mutation.why}{flags}")
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mcmc_llm_mutants.") as scratch:
        copies: "queue.Queue[Path]" = queue.Queue()
        for worker in range(args.jobs):
            copies.put(make_copy(ROOT, Path(scratch) / f"copy{worker}"))
        first = Path(scratch) / "copy0"
        check_import_location(first)
        problems = [] if args.no_baseline else baseline(chosen, first, args.timeout)
        if problems:
            print("mutation_battery: the tests fail without any mutation, so no kill would mean anything:")
            print("\n".join("  " + p for p in problems))
            print(json.dumps({"mutations": len(chosen), "killed": 0, "survived": [], "errors": ["baseline"] ,
                              "seconds": round(time.perf_counter() - started, 1)}))
            return 1
        print(f"mutation_battery: {len(chosen)} mutations, {args.jobs} at a time", flush=True)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(mutate_and_test, mutation, copies, args.timeout) for mutation in chosen]
            outcomes = []
            for future in concurrent.futures.as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                print(f"  {outcome.status:<8} {outcome.mutation.name} ({outcome.seconds:.0f} s)", flush=True)
    order = {mutation.name: i for i, mutation in enumerate(chosen)}
    outcomes.sort(key=lambda o: order[o.mutation.name])
    print(table(outcomes))
    survived = [o.mutation.name for o in outcomes if o.status == "survived"]
    errors = [o.mutation.name for o in outcomes if o.status == "error"]
    killed = sum(o.status == "killed" for o in outcomes)
    print(json.dumps({"mutations": len(outcomes), "killed": killed, "survived": survived, "errors": errors,
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
