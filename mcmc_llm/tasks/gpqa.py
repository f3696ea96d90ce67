"""GPQA-Diamond: 198 graduate-level multiple-choice questions (Rein et al. 2023), from a local CSV.

The dataset is gated (https://huggingface.co/datasets/Idavidrein/gpqa, file `gpqa_diamond.csv`), so
`load` needs `path`.  Columns used: `Question`, `Correct Answer`, `Incorrect Answer 1..3`, optional
`Record ID` (the task id; else "gpqa/<row>").  Order: file order.

Choices are shuffled per question with `random.Random(seed_int)`, where `seed_int` is the first 8 bytes of
sha256(f"{seed}:{task_id}") (independent of Python's hash randomisation), then labelled A-D.

Prompt:
    Answer the following multiple choice question. The last line of your response should be of the following format: '\\boxed{$LETTER}' (without quotes) where LETTER is one of ABCD (ex. '\\boxed{A}'). Think step by step before answering.

    {Question}

    A) {A}
    B) {B}
    C) {C}
    D) {D}

Grading (`extract_choice`): the last of, in this order of preference, `\\boxed{X}` (also `\\boxed{\\text{(X)}}`),
"answer is (X)" / "Answer: X" / "answer: **X**", a final line that is only "X", "(X)" or "X)"; the
letter is compared with the stored correct letter.  None found -> "no_answer".
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from pathlib import Path

from mcmc_llm.tasks.base import GradeResult, Problem, take_subset
from mcmc_llm.tasks.math500 import last_boxed

__all__ = ["GPQATask", "extract_choice", "shuffle_seed", "GPQA_TEMPLATE"]

LETTERS = "ABCD"
GPQA_TEMPLATE = (
    "Answer the following multiple choice question. The last line of your response should be of the following "
    "format: '\\boxed{{$LETTER}}' (without quotes) where LETTER is one of ABCD (ex. '\\boxed{{A}}'). Think step by "
    "step before answering.\n\n{Question}\n\nA) {A}\nB) {B}\nC) {C}\nD) {D}"
)
_COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


def shuffle_seed(seed: int, task_id: str) -> int:
    """Deterministic per-question seed from (seed, task_id)."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{task_id}".encode()).digest()[:8], "big")


_ANSWER = re.compile(r"(?i:answer)\s*(?i:is)?\s*[:\-]?\s*(?i:option\s*)?[\*\(\[\s]*([ABCD])\b")


def extract_choice(completion: str) -> str | None:
    """The chosen letter A-D, or None (see the module docstring for the rules)."""
    text = completion or ""
    boxed = last_boxed(text)
    if boxed is not None:
        inner = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", boxed)
        match = re.fullmatch(r"\s*\(?\s*([A-Da-d])\s*\)?\s*(?:[\).:].*)?", inner)
        if match:
            return match.group(1).upper()
    hits = _ANSWER.findall(text)
    if hits:
        return hits[-1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines:
        match = re.fullmatch(r"\**\(?([ABCD])[\)\.]?\**", lines[-1])
        if match:
            return match.group(1)
    return None


class GPQATask:
    """GPQA-Diamond multiple choice from a local CSV, choices shuffled per (seed, task_id)."""

    name = "gpqa"

    def load(self, *, path: str | None = None, subset: int | None = None, seed: int = 0) -> list[Problem]:
        if path is None:
            raise ValueError(
                "gpqa needs a local CSV: GPQA is gated; accept its terms at "
                "https://huggingface.co/datasets/Idavidrein/gpqa, download gpqa_diamond.csv and pass its path"
            )
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"data file not found: {file}")
        with open(file, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{file}: missing GPQA columns {missing}; found {reader.fieldnames}")
            rows = list(reader)
        problems = []
        for index, row in enumerate(rows):
            task_id = (row.get("Record ID") or "").strip() or f"gpqa/{index}"
            choices = [row["Correct Answer"].strip()] + [row[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)]
            order = list(range(4))
            random.Random(shuffle_seed(seed, task_id)).shuffle(order)
            shown = [choices[i] for i in order]
            correct_letter = LETTERS[order.index(0)]
            prompt = GPQA_TEMPLATE.format(Question=row["Question"].strip(), A=shown[0], B=shown[1], C=shown[2], D=shown[3])
            reference = {"correct_letter": correct_letter, "choices": shown, "correct_answer": choices[0], "seed": int(seed)}
            problems.append(Problem(task_id, prompt, reference))
        return take_subset(problems, subset)

    def grade(self, problem: Problem, completion: str) -> GradeResult:
        letter = extract_choice(completion)
        if letter is None:
            return GradeResult(False, "no_answer", "no answer letter A-D found")
        gold = problem.reference["correct_letter"]
        ok = letter == gold
        return GradeResult(ok, "correct" if ok else "wrong", f"expected {gold}", letter)
