"""A small verifiable CPU task: seeded arithmetic word problems with integer answers.

Meant for laptop-scale runs with the embedded SmolLM2-135M-Instruct, where MATH500 is far out of
reach: the model gets some but not all of these right (measured base accuracies in docs/tasks.md).

Difficulty knobs (`difficulty=[2, 3]` interleaves two levels, each from its own stream):
  1  one step, addition of two numbers 1..9        "Tom has 3 apples. He buys 4 more apples. ..."
  2  one step, add or subtract, numbers <= 20       "Sam has 18 books. He gives 8 books to a friend. ..."
  3  two steps: add/subtract twice, or multiply     "... finds 9 more apples and then gives 2 apples to a
     then add/subtract                                friend. ..." / "... buys 6 cartons with 8 eggs in each ..."

Prompt: the MATH prompt in its short form (the reference code's `BASE`; `cot=True` gives the step-by-step
form of MATH500 instead):
    Can you solve the following math problem? {question} Put your final answer within \\boxed{}.
The short form is the default because the 135M model's step-by-step answers run past a 128-token cap more
often (greedy accuracy at difficulty 1: 21% short vs 17% step-by-step; docs/tasks.md).

Grading (`extract_integer`, first rule that yields an integer; `detail` names it):
  "boxed"        the last `\\boxed{...}` holding an integer (commas, `$`, `\\text{14 eggs}`, `.0` tolerated);
  "answer is"    the last "answer is N" / "answer: N" / "#### N" (the GSM8K-style endings small models use);
  "last number"  the last integer in the completion (`fallback_last_number`, on by default).
No integer at all -> "no_answer".
"""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

from mcmc_llm.tasks.base import GradeResult, Problem, read_records, take_subset
from mcmc_llm.tasks.math500 import format_prompt, last_boxed

__all__ = ["ArithmeticTask", "generate_problem", "extract_integer", "DEFAULT_DIFFICULTY"]

DEFAULT_DIFFICULTY = 1
DEFAULT_COT = False
_NAMES = [("Tom", "He"), ("Anna", "She"), ("Ben", "He"), ("Lucy", "She"), ("Sam", "He"), ("Mia", "She"),
          ("Leo", "He"), ("Emma", "She"), ("Max", "He"), ("Zoe", "She")]
_ITEMS = [("apples", "bags"), ("pencils", "boxes"), ("stickers", "packs"), ("cookies", "jars"), ("marbles", "bags"),
          ("books", "boxes"), ("cards", "packs"), ("eggs", "cartons")]
_GAIN = ["buys {n} more {item}", "finds {n} more {item}", "gets {n} more {item} from a friend"]
_LOSS = ["gives {n} {item} to a friend", "loses {n} {item}", "uses {n} {item}"]


def _one_step(rng: random.Random, name: str, pronoun: str, item: str, low: int, high: int) -> tuple[str, int]:
    a, b = rng.randint(low, high), rng.randint(2, 9)
    ask = f"How many {item} does {name} have now?"
    if rng.random() < 0.5:
        return f"{name} has {a} {item}. {pronoun} {rng.choice(_GAIN).format(n=b, item=item)}. {ask}", a + b
    b = rng.randint(2, a - 1)
    return f"{name} has {a} {item}. {pronoun} {rng.choice(_LOSS).format(n=b, item=item)}. {ask}", a - b


def generate_problem(rng: random.Random, difficulty: int) -> tuple[str, int]:
    """One (question, integer answer) drawn from `rng` at the given difficulty (1, 2 or 3)."""
    name, pronoun = rng.choice(_NAMES)
    item, containers = rng.choice(_ITEMS)
    ask = f"How many {item} does {name} have now?"
    if difficulty == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return f"{name} has {a} {item}. {pronoun} {rng.choice(_GAIN).format(n=b, item=item)}. {ask}", a + b
    if difficulty == 2:
        return _one_step(rng, name, pronoun, item, 5, 20)
    if difficulty == 3:
        if rng.random() < 0.5:  # add/subtract, then add/subtract
            a = rng.randint(5, 20)
            first_gain = rng.random() < 0.5
            b = rng.randint(2, 9) if first_gain else rng.randint(2, min(9, a - 2))
            total = a + b if first_gain else a - b
            second_gain = rng.random() < 0.5
            c = rng.randint(2, 9) if second_gain else rng.randint(1, min(9, total - 1))
            step1 = (rng.choice(_GAIN) if first_gain else rng.choice(_LOSS)).format(n=b, item=item)
            step2 = (rng.choice(_GAIN) if second_gain else rng.choice(_LOSS)).format(n=c, item=item)
            answer = total + c if second_gain else total - c
            return f"{name} has {a} {item}. {pronoun} {step1} and then {step2}. {ask}", answer
        a, b = rng.randint(2, 6), rng.randint(2, 9)  # multiply, then add/subtract
        start = f"{name} buys {a} {containers} with {b} {item} in each of them."
        if rng.random() < 0.5:
            c = rng.randint(2, 9)
            return f"{start} {pronoun} {rng.choice(_GAIN).format(n=c, item=item)}. {ask}", a * b + c
        c = rng.randint(1, min(9, a * b - 1))
        return f"{start} {pronoun} {rng.choice(_LOSS).format(n=c, item=item)}. {ask}", a * b - c
    raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")


_INTEGER = re.compile(r"-?\d[\d,]*(?:\.0+)?(?!\d)")


def _as_integer(text: str) -> int | None:
    cleaned = re.sub(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}", r"\1", text)
    cleaned = re.sub(r"\\(?:,|!|;|\$)|\$", " ", cleaned).strip()
    match = re.fullmatch(r"\s*(-?\d[\d,]*)(?:\.0+)?\s*[A-Za-z ]*\.?\s*", cleaned)
    if not match:
        return None
    digits = match.group(1).replace(",", "")
    return int(digits) if re.fullmatch(r"-?\d+", digits) else None


_ANSWER_IS = re.compile(r"(?:(?i:answer)\s*(?i:is)?\s*[:=]?|####)\s*\**\s*\$?\s*(-?\d[\d,]*(?:\.0+)?)(?![\d.]*\d)")


def extract_integer(completion: str, fallback_last_number: bool = True) -> tuple[int | None, str]:
    """(answer, rule) where rule is "boxed", "answer is", "last number" or "none"."""
    boxed = last_boxed(completion or "")
    if boxed is not None:
        value = _as_integer(boxed)
        if value is not None:
            return value, "boxed"
    stated = _ANSWER_IS.findall(completion or "")
    if stated:
        value = _as_integer(stated[-1])
        if value is not None:
            return value, "answer is"
    if fallback_last_number:
        numbers = _INTEGER.findall(completion or "")
        if numbers:
            value = _as_integer(numbers[-1])
            if value is not None:
                return value, "last number"
    return None, "none"


class ArithmeticTask:
    """Seeded arithmetic word problems; `load(seed=s)` gives the same problems for the same
    (seed, difficulty, num_problems) on every machine (random.Random seeded with a string)."""

    name = "arithmetic"

    def __init__(self, difficulty: int | Sequence[int] = DEFAULT_DIFFICULTY, num_problems: int = 200,
                 fallback_last_number: bool = True, cot: bool = DEFAULT_COT):
        levels = [difficulty] if isinstance(difficulty, int) and not isinstance(difficulty, bool) else difficulty
        if (not isinstance(levels, (list, tuple)) or not levels
                or any(isinstance(d, bool) or d not in (1, 2, 3) for d in levels) or len(set(levels)) != len(levels)):
            raise ValueError(f"difficulty must be 1, 2 or 3, or a list of distinct ones such as [2, 3], got {difficulty!r}")
        if int(num_problems) < 1:
            raise ValueError(f"num_problems must be >= 1, got {num_problems}")
        self.difficulties = tuple(int(d) for d in levels)
        self.difficulty = self.difficulties[0] if len(self.difficulties) == 1 else list(self.difficulties)
        self.num_problems = int(num_problems)
        self.fallback_last_number = bool(fallback_last_number)
        self.cot = bool(cot)

    def load(self, *, path: str | None = None, subset: int | None = None, seed: int = 0) -> list[Problem]:
        """The problems; with several difficulties [d_1, ..., d_k], problem i is problem i // k of
        difficulty d_(i mod k)'s own seeded stream, so each keeps the id and text it has alone."""
        if path is not None:
            return take_subset(self._from_file(path), subset)
        count = self.num_problems if subset is None else max(int(subset), 0)
        streams = {d: random.Random(f"mcmc_llm.arithmetic:{int(seed)}:{d}") for d in self.difficulties}
        drawn = {d: 0 for d in self.difficulties}
        problems = []
        for index in range(count):
            level = self.difficulties[index % len(self.difficulties)]
            question, answer = generate_problem(streams[level], level)
            reference: dict[str, Any] = {"answer": answer, "question": question, "difficulty": level}
            problem_id = f"arithmetic/d{level}/s{int(seed)}/{drawn[level]}"
            problems.append(Problem(problem_id, format_prompt(question, self.cot), reference))
            drawn[level] += 1
        return take_subset(problems, subset)

    def problem_from_id(self, task_id: str) -> Problem | None:
        """Regenerate the problem named "arithmetic/d<difficulty>/s<seed>/<index>" (None if not such a name)."""
        match = re.fullmatch(r"arithmetic/d([123])/s(-?\d+)/(\d+)", str(task_id))
        if not match:
            return None
        difficulty, seed, index = int(match.group(1)), int(match.group(2)), int(match.group(3))
        if index >= 100_000:
            return None
        task = ArithmeticTask(difficulty, index + 1, self.fallback_last_number, self.cot)
        return task.load(seed=seed)[index]

    def _from_file(self, path: str) -> list[Problem]:
        problems = []
        for index, record in enumerate(read_records(path)):
            question = record.get("question", record.get("prompt"))
            if not isinstance(question, str) or "answer" not in record:
                raise ValueError(f"arithmetic record {index} needs a 'question' (or 'prompt') and an integer 'answer'")
            reference = {"answer": int(record["answer"]), "question": question}
            problems.append(Problem(str(record.get("id", f"arithmetic/{index}")), format_prompt(question, self.cot), reference))
        return problems

    def grade(self, problem: Problem, completion: str) -> GradeResult:
        value, rule = extract_integer(completion, self.fallback_last_number)
        if value is None:
            return GradeResult(False, "no_answer", "no integer in \\boxed{} or in the text")
        gold = int(problem.reference["answer"])
        ok = value == gold
        return GradeResult(ok, "correct" if ok else "wrong", f"expected {gold} ({rule})", str(value))
