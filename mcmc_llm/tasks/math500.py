"""MATH500: 500 competition problems (Lightman et al. 2023's test split of MATH), graded by math-verify.

Prompt (the paper's reference code, `PROMPT + question + COT`):

    Can you solve the following math problem? {problem} Please reason step by step, and put your final answer within \\boxed{}.

(`cot=False` replaces the last sentence by " Put your final answer within \\boxed{}.")  The reference
code writes the instruction with a doubled `\\boxed{{}}` because its string is never `.format`-ed;
we use the intended single braces (`prompt_format="default"`); `prompt_format="verbatim"` keeps the
reference code's text as it reaches the model, doubled braces included.

Grading: the content of the *last* `\\boxed{...}` (or `\\fbox{...}`, braces matched, nested braces
allowed) is the answer; none -> "no_answer".  It is compared with the reference answer by
`math_verify.verify(parse(gold), parse(pred))` (symbolic and numeric equality, intervals, sets,
tuples, `\\dfrac`, `\\left(`...), both parsed from `\\boxed{...}`.  Without math-verify installed, or
when the gold answer cannot be parsed, a normalised string comparison is used (stated in `detail`).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from mcmc_llm.tasks.base import GradeResult, Problem, read_records, take_subset

__all__ = ["Math500Task", "format_prompt", "last_boxed", "answers_equivalent", "MATH_PROMPT", "MATH_COT", "MATH_BASE",
           "PROMPT_FORMATS"]

PROMPT_FORMATS = ("default", "verbatim")

MATH_PROMPT = "Can you solve the following math problem? "
MATH_COT = " Please reason step by step, and put your final answer within \\boxed{}."
MATH_BASE = " Put your final answer within \\boxed{}."
HUB_DATASET = "HuggingFaceH4/MATH-500"


def format_prompt(problem: str, cot: bool = True, verbatim: bool = False) -> str:
    """The paper's MATH prompt: problem, then the step-by-step / \\boxed{} instruction; `verbatim`:
    with the reference code's literal `\\boxed{{}}` (its constants are never `.format`-ed)."""
    instruction = MATH_COT if cot else MATH_BASE
    return MATH_PROMPT + problem + (instruction.replace("\\boxed{}", "\\boxed{{}}") if verbatim else instruction)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` in `text` (nested braces matched).

    Also accepts the brace-less form `\\boxed 5`.  Returns None when there is no complete box.
    """
    if not text:
        return None
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
    for match in reversed(starts):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{" and text[j - 1] != "\\":
                    depth += 1
                elif text[j] == "}" and text[j - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
                j += 1
            continue  # unbalanced: try an earlier box
        if i > match.end():  # "\boxed 5"
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                return token.group(0).rstrip(".")
    return None


def _normalise(answer: str) -> str:
    s = answer.strip()
    for old in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "\\dfrac", "\\tfrac", "$", "\\displaystyle"):
        s = s.replace(old, "\\frac" if old in ("\\dfrac", "\\tfrac") else "")
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\^\{?\\circ\}?", "", s)
    return "".join(s.split()).rstrip(".")


def answers_equivalent(gold: str, predicted: str) -> tuple[bool, str]:
    """(equal?, how) for a reference answer and an extracted answer (both LaTeX, without \\boxed)."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return _normalise(gold) == _normalise(predicted), "string match (math-verify not installed)"
    # math-verify's timeouts use signal.alarm, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
    if not gold_parsed:
        return _normalise(gold) == _normalise(predicted), "string match (gold answer not parseable)"
    predicted_parsed = parse("\\boxed{" + predicted + "}", parsing_timeout=timeout)
    if not predicted_parsed:
        return _normalise(gold) == _normalise(predicted), "string match (answer not parseable)"
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=timeout)), "math-verify"


class Math500Task:
    """MATH500 with the paper's prompt and a math-verify grader.

    load(path): a local JSON list or JSONL file with fields `prompt` (or `problem`), `answer`, and
    optional `id`/`unique_id`, `source`/`subject`, `level`; without `path`, the `HuggingFaceH4/MATH-500`
    test split through `datasets` (needs the `datasets` package and network access).  Order: file order.
    """

    name = "math500"

    def __init__(self, cot: bool = True, prompt_format: str = "default"):
        self.cot = bool(cot)
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"math500: unknown prompt_format {prompt_format!r}; allowed: {', '.join(PROMPT_FORMATS)}")
        self.prompt_format = prompt_format

    def load(self, *, path: str | None = None, subset: int | None = None, seed: int = 0) -> list[Problem]:
        records = read_records(path) if path is not None else _load_hub()
        problems = []
        for index, record in enumerate(records):
            question = record.get("prompt", record.get("problem"))
            if not isinstance(question, str) or "answer" not in record:
                raise ValueError(f"MATH500 record {index} needs a 'prompt' (or 'problem') string and an 'answer'")
            task_id = str(record.get("id", record.get("unique_id", f"math500/{index}")))
            reference: dict[str, Any] = {"answer": str(record["answer"]), "problem": question}
            for key in ("source", "subject", "level"):
                if key in record:
                    reference[key] = record[key]
            problems.append(Problem(task_id, format_prompt(question, self.cot, self.prompt_format == "verbatim"), reference))
        return take_subset(problems, subset)

    def grade(self, problem: Problem, completion: str) -> GradeResult:
        extracted = last_boxed(completion or "")
        if extracted is None:
            return GradeResult(False, "no_answer", "no \\boxed{...} in the completion")
        gold = str(problem.reference["answer"])
        try:
            equal, how = answers_equivalent(gold, extracted)
        except Exception as error:  # a grader crash must not lose the record
            return GradeResult(False, "error", f"grader failed: {error!r}", extracted)
        return GradeResult(equal, "correct" if equal else "wrong", f"expected {gold!r} ({how})", extracted)


def _load_hub() -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "math500 needs a data file: pass path=... (a JSON list or JSONL with 'prompt'/'problem' and "
            f"'answer' fields), or install `datasets` to read {HUB_DATASET} from the hub"
        ) from None
    return [dict(row) for row in datasets.load_dataset(HUB_DATASET, split="test")]
