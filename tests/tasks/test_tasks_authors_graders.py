"""The reference code's GPQA and HumanEval graders (`mcmc_llm.tasks.authors_graders`) and
`mcmc-llm grade --grader authors`: hand-built records on which they and our graders disagree.

GPQA: the reference takes the last standalone A-D of the upper-cased text, so a lowercase article
"a" after a boxed answer overrides it.  HumanEval: the reference appends the body of the first
`def <entry_point>` in "prompt + completion" (baselines) or in the decoded "prompt + generation"
(power records); a SentencePiece-style tokenizer (Metaspace decoder, built offline) drops the leading
space of a generation decoded alone, so the two texts differ by one space of indentation."""

from __future__ import annotations

import csv
import json

import pytest

from mcmc_llm.cli import main
from mcmc_llm.tasks import Problem, get_task
from mcmc_llm.tasks.authors_graders import authors_choice, authors_code, authors_response, check_grader, grade_authors

PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
ADD = Problem("toy/add", PROMPT, {"prompt": PROMPT, "test": TEST, "entry_point": "add"})


def _gpqa_problem(gold: str) -> Problem:
    return Problem("q", "Question?", {"correct_letter": gold})


def test_gpqa_article_a_counts_for_the_authors():
    text = "The mass is conserved, so the answer is \\boxed{B}. This was a tricky one."
    task = get_task("gpqa")
    ours = task.grade(_gpqa_problem("B"), text)
    theirs = grade_authors(task, _gpqa_problem("B"), {"completion": text})
    assert (ours.passed, ours.extracted) == (True, "B")
    assert (theirs.passed, theirs.status, theirs.extracted) == (False, "wrong", "A")
    # and the other way: a bare letter in prose, which our grader does not read as an answer
    prose = "Comparing the energies, the best choice is C."
    assert task.grade(_gpqa_problem("C"), prose).status == "no_answer"
    assert grade_authors(task, _gpqa_problem("C"), {"completion": prose}).passed
    assert authors_choice("no letter here") is None and authors_choice("pick (d)") == "D"
    assert grade_authors(task, _gpqa_problem("C"), {"completion": "nothing"}).status == "no_answer"


def test_humaneval_code_rules():
    assert authors_code("```python\ndef add(a, b):\n    return a + b\n```\nMore text", "add") == "    return a + b"
    body = authors_code(PROMPT + "    return a + b\n\nprint(add(1, 2))\n", "add")
    assert body == '    """Return a + b."""\n    return a + b'  # stops at the first unindented line
    assert authors_code("just text", "add") == "    just text"


def test_humaneval_redeclared_function_ours_passes_theirs_fails():
    """A completion that stubs the body and then re-declares the function at top level: our grader
    runs the re-declaration; the reference keeps the body of the prompt's `def` (the stub)."""
    task = get_task("humaneval")
    completion = "    pass\n\ndef add(a, b):\n    return a + b\n"
    assert task.grade(ADD, completion).passed
    theirs = grade_authors(task, ADD, {"completion": completion, "kind": "base"})
    assert (theirs.passed, theirs.status) == (False, "wrong")


def _metaspace_tokenizer(text: str):
    """A word-level tokenizer over the pieces of `text` with SentencePiece's space handling: spaces
    become "▁", a "▁" is prepended to the text, and decoding drops the first token's leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    pieces = ["<unk>"] + sorted({piece for piece, _ in pre.pre_tokenize_str(text)})
    model = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    model.pre_tokenizer = pre
    model.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", clean_up_tokenization_spaces=False)


def test_humaneval_power_record_is_graded_on_the_decoded_prompt_plus_generation():
    """The same generated ids: decoded alone they lose one space of indentation (what a baseline's
    stored completion holds), decoded after the prompt they keep it (the reference's MCMC text)."""
    generation = "    return a + b\n"
    tokenizer = _metaspace_tokenizer(PROMPT + generation)
    prompt_ids = tokenizer(PROMPT).input_ids
    joint_ids = tokenizer(PROMPT + generation).input_ids
    assert joint_ids[: len(prompt_ids)] == prompt_ids
    tokens = joint_ids[len(prompt_ids):]
    alone = tokenizer.decode(tokens)
    assert alone == "   return a + b\n"  # 3 spaces: prompt + completion != decoded prompt + generation
    assert tokenizer.decode(joint_ids) == PROMPT + generation

    task = get_task("humaneval")
    base = {"completion": alone, "tokens": tokens, "kind": "base"}
    power = {"completion": alone, "tokens": tokens, "kind": "power"}
    assert authors_response(ADD, base, tokenizer) == PROMPT + alone
    assert authors_response(ADD, power, tokenizer) == PROMPT + generation
    assert not task.grade(ADD, alone).passed  # ours: prompt + completion, an indentation error
    assert not grade_authors(task, ADD, base, tokenizer).passed
    assert grade_authors(task, ADD, power, tokenizer).passed
    assert not grade_authors(task, ADD, power).passed  # no tokenizer: prompt text + completion


def test_unknown_task_or_grader_is_a_clear_error():
    with pytest.raises(ValueError, match=r"task 'math500' has no authors' grader here; tasks with one: gpqa, humaneval"):
        check_grader("authors", "math500")
    with pytest.raises(ValueError, match=r"--grader 'mine'.*allowed: ours, authors"):
        check_grader("mine", "gpqa")


def _gpqa_csv(path) -> str:
    columns = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerow({"Record ID": "r0", "Question": "Which?", "Correct Answer": "yes",
                         "Incorrect Answer 1": "no", "Incorrect Answer 2": "nope", "Incorrect Answer 3": "never"})
    return str(path)


def _grade(capsys, argv):
    code = main(argv)
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    return code, lines[:-1], lines[-1]["summary"]


def test_grade_command_regrades_with_either_grader(tmp_path, capsys):
    data = _gpqa_csv(tmp_path / "gpqa.csv")
    gold = get_task("gpqa").load(path=data)[0].reference["correct_letter"]
    other = next(letter for letter in "BCD" if letter != gold)
    rows = [{"task_id": "r0", "method": "power", "kind": "power", "completion": f"\\boxed{{{gold}}} is a guess"},
            {"task_id": "r0", "method": "base", "kind": "base", "completion": f"Answer: {gold}. Not {other}."}]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["grade", "--task", "gpqa", "--input", str(inputs), "--data", data]
    code, ours, summary = _grade(capsys, argv)
    assert code == 0 and summary["grader"] == "ours" and [r["passed"] for r in ours] == [True, True]
    code, theirs, summary = _grade(capsys, argv + ["--grader", "authors"])
    assert code == 0 and summary["grader"] == "authors" and "no --tokenizer" in summary["grader_note"]
    assert [r["extracted"] for r in theirs] == ["A", other] and [r["passed"] for r in theirs] == [gold == "A", False]
    assert summary["by_method"]["base"]["accuracy"] == 0.0


def test_grade_command_decodes_with_the_tokenizer(tmp_path, capsys):
    """`--tokenizer DIR`: the stored ids are decoded as the reference did, so the power record (prompt
    and generation decoded together) passes and the baseline (generation decoded alone) does not."""
    generation = "    return a + b\n"
    tokenizer = _metaspace_tokenizer(PROMPT + generation)
    tokenizer.save_pretrained(tmp_path / "tok")
    prompt_ids = tokenizer(PROMPT).input_ids
    tokens = tokenizer(PROMPT + generation).input_ids[len(prompt_ids):]
    data = tmp_path / "humaneval.jsonl"
    data.write_text(json.dumps({"task_id": "toy/add", "prompt": PROMPT, "test": TEST, "entry_point": "add"}) + "\n")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"task_id": "toy/add", "method": kind, "kind": kind, "tokens": tokens,
                                          "completion": tokenizer.decode(tokens)}) + "\n" for kind in ("base", "power")))
    argv = ["grade", "--task", "humaneval", "--input", str(inputs), "--data", str(data), "--grader", "authors"]
    code, records, summary = _grade(capsys, argv + ["--tokenizer", str(tmp_path / "tok")])
    assert code == 0 and [r["passed"] for r in records] == [False, True]
    assert str(tmp_path / "tok") in summary["grader_note"]
    code, records, _ = _grade(capsys, argv)  # without it: the completion and the prompt text
    assert [r["passed"] for r in records] == [False, False]
    with pytest.raises(SystemExit) as info:
        main(argv + ["--tokenizer", str(tmp_path / "no-such-tokenizer")])
    assert info.value.code == 2 and "--tokenizer" in capsys.readouterr().err
