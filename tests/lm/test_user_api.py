"""What a Hugging Face user expects of the Python API and `mcmc-llm sample`: one thread policy for
every entry point, text prompts in `power_sample`, prompts from a file or stdin, the chat-template
switch, EOS ids and one-token stop strings, special tokens left out of decoded text, and per-token
log-probabilities that sum to `log_p`.  Toy LMs and a tiny random-weight transformers model with a
six-word tokenizer (`tests.lm.hf.test_backend.word_tokenizer`), all seeded."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from mcmc_llm.cli import build_parser, main
from mcmc_llm.commands.common import load_model_and_prompts
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.hf import HFLanguageModel
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.registry import load_model, random_model
from mcmc_llm.lm.text import stop_token_ids
from tests.lm.hf.test_backend import word_tokenizer

TOY = ["--model", "toy:trigram", "--max-new-tokens", "4", "--block-size", "2", "--mcmc-steps", "1"]
CONFIG = PowerSamplerConfig(alpha=4.0, block_size=3, max_new_tokens=6, mcmc_steps=2)
HELLO, WORLD, USER, BOT, EOS = 4, 5, 2, 3, 1  # ids of the word tokenizer


@pytest.fixture
def single_thread_after(monkeypatch):
    """No thread variables in the environment; torch's thread count restored afterwards."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def word_model(chat_template: bool = False) -> HFLanguageModel:
    """A random-weight Llama over the six words of `word_tokenizer` (EOS `<eos>` = 1)."""
    model = random_model("llama-tiny", device="cpu", dtype="float32", seed=0, vocab_size=6, eos_token_id=EOS).model
    return HFLanguageModel(model, word_tokenizer(), chat_template=chat_template, name="words")


@pytest.fixture(scope="module")
def word_model_dir(tmp_path_factory):
    """`word_model` saved as a local model directory (a `--model` spec)."""
    directory = tmp_path_factory.mktemp("words")
    lm = word_model()
    lm.model.save_pretrained(directory)
    lm.tokenizer.save_pretrained(directory)
    return directory


def sample_records(tmp_path, *flags) -> list[dict]:
    out = tmp_path / "out.jsonl"
    assert main(["sample", *flags, "--quiet", "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def user_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and len(error.strip().splitlines()) <= 2  # a flag's error adds a --help pointer
    return error.splitlines()[0]


def base_log_probs(lm, prompt: list[int], tokens: list[int]) -> list[float]:
    """`log p(x_t | prompt, x_<t)` of each token, one forward step at a time."""
    state, values = lm.start(TokenBatch.from_lists([prompt])), []
    for token in tokens:
        values.append(float(state.logprobs[0, token]))
        state = lm.advance(state, torch.tensor([token]))
    return values


# ------------------------------------------------------------------ threads
def test_load_model_applies_the_cpu_thread_policy(single_thread_after, monkeypatch):
    torch.set_num_threads(2)
    load_model("toy:trigram")
    assert torch.get_num_threads() == 1  # the CPU default replaces torch's own
    load_model("toy:trigram", threads=2)
    assert torch.get_num_threads() == 2  # an explicit request wins
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    load_model("toy:trigram")
    assert torch.get_num_threads() == 2  # the environment is left to torch
    with pytest.raises(ValueError, match="threads must be a positive integer or None, got 0"):
        load_model("toy:trigram", threads=0)


@pytest.mark.parametrize("command", [["sample", *TOY, "--quiet"], ["exact", "--model", "toy:tiny", "--max-new-tokens", "2"]])
def test_commands_keep_their_threads_flag_through_load_model(single_thread_after, command, capsys):
    torch.set_num_threads(1)
    assert main([*command, "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2


# ------------------------------------------------------------------ prompts in Python
def test_power_sample_encodes_text_prompts_with_the_tokenizer_and_its_chat_template():
    for chat, encoded in ((True, [USER, HELLO, WORLD, BOT]), (False, [HELLO, WORLD])):
        lm = word_model(chat_template=chat)
        from_text = power_sample(lm, ["hello world", [WORLD]], CONFIG, chains_per_prompt=2, seed=3)
        assert from_text.final.prompts.to_lists() == [encoded, encoded, [WORLD], [WORLD]]
        from_ids = power_sample(lm, [encoded, [WORLD]], CONFIG, chains_per_prompt=2, seed=3)
        assert from_text.sequences() == from_ids.sequences()


def test_power_sample_on_a_model_without_tokenizer_takes_ids_and_names_bad_text():
    lm = load_model("toy:trigram")
    with pytest.raises(ValueError, match=r"no tokenizer: a prompt is token ids, e\.g\. '3 1 4', got 'What is 12 \+ 30\?'"):
        power_sample(lm, ["What is 12 + 30?"], CONFIG)
    with pytest.raises(ValueError, match="single string 'What is'.*wrap it in a list"):
        power_sample(lm, "What is", CONFIG)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 4\)"):
        power_sample(lm, [[1, 7]], CONFIG)
    as_ids = power_sample(lm, [[1, 2], (3,)], CONFIG, seed=1)
    assert as_ids.sequences() == power_sample(lm, ["1 2", "3"], CONFIG, seed=1).sequences()
    assert as_ids.final.prompts.to_lists() == [[1, 2], [3]]


def test_power_sample_checks_prompts_against_the_context():
    model = random_model("llama-tiny", device="cpu", seed=0, vocab_size=6, eos_token_id=EOS,
                         max_position_embeddings=10).model
    lm = HFLanguageModel(model, word_tokenizer())
    prompt = "hello world " * 3  # 6 tokens; room for 10 - 6 = 4
    with pytest.raises(ValueError, match=r"prompt 0 is 6 tokens.*context \(10 tokens\).*\(6\) = 4"):
        power_sample(lm, [prompt], CONFIG)
    kept = power_sample(lm, [prompt], CONFIG, truncate_prompt="left")
    assert kept.final.prompts.to_lists() == [[HELLO, WORLD, HELLO, WORLD]]


# ------------------------------------------------------------------ decoding and per-token log p in Python
def test_result_texts_skip_special_tokens_unless_asked():
    lm = word_model()
    result = power_sample(lm, ["hello"], CONFIG, chains_per_prompt=6, seed=0)
    ended = [row for row, tokens in enumerate(result.sequences()) if tokens and tokens[-1] == EOS]
    assert ended, "no chain ended with EOS: choose another seed"
    skipped, kept = result.texts(), result.texts(skip_special_tokens=False)
    for row in ended:
        assert kept[row].endswith("<eos>") and "<eos>" not in skipped[row]
        assert skipped[row] == lm.tokenizer.decode(result.sequences()[row], skip_special_tokens=True)
    toy = load_model("toy:trigram")
    toy_result = power_sample(toy, [[1]], CONFIG, chains_per_prompt=3)
    assert toy_result.texts() == [toy.decode(tokens) for tokens in toy_result.sequences()]


def test_result_token_logprobs_are_the_base_log_probs_and_sum_to_log_p():
    lm = load_model("toy:trigram")
    result = power_sample(lm, [[1], [2, 3]], CONFIG, chains_per_prompt=3, seed=2)
    total = result.final.total_log_p().tolist()
    for row, (tokens, values) in enumerate(zip(result.sequences(), result.token_logprobs())):
        prompt = result.final.prompts.to_lists()[row]
        assert len(values) == len(tokens) > 0
        assert values == pytest.approx(base_log_probs(lm, prompt, tokens), abs=1e-9)
        assert math.fsum(values) == pytest.approx(total[row], abs=1e-9)


# ------------------------------------------------------------------ `mcmc-llm sample`
def test_sample_reads_prompts_from_stdin_and_a_jsonl_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("1 2\n\n3\n"))
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text('{"prompt": "2"}\n\n{"prompt": "1 1", "id": 7}\n')
    records = sample_records(tmp_path, *TOY, "--prompt", "3 3", "--prompt", "-", "--prompt-file", str(prompts_file))
    assert [r["prompt"] for r in records] == ["3 3", "1 2", "3", "2", "1 1"]
    assert [r["prompt_index"] for r in records] == [0, 1, 2, 3, 4]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "1"}\n{"text": "1"}\n')
    assert "bad.jsonl line 2" in user_error(capsys, "sample", *TOY, "--prompt-file", str(tmp_path / "bad.jsonl"))
    assert "no such file" in user_error(capsys, "sample", *TOY, "--prompt-file", str(tmp_path / "none.jsonl")).lower()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert "standard input holds no prompt" in user_error(capsys, "sample", *TOY, "--prompt", "-")


def test_sample_chat_template_switch(word_model_dir):
    def encoded(*flags):
        args = build_parser().parse_args(["sample", "--model", str(word_model_dir), "--device", "cpu",
                                          "--prompt", "hello world", "--max-new-tokens", "4", *flags])
        return load_model_and_prompts(args)[2]

    assert encoded() == encoded("--no-chat-template") == [[HELLO, WORLD]]  # off for a local model, as before
    assert encoded("--chat-template") == [[USER, HELLO, WORLD, BOT]]


def test_sample_chat_template_on_a_model_without_tokenizer_is_an_error(capsys):
    error = user_error(capsys, "sample", *TOY, "--chat-template")
    assert "--chat-template" in error and "toy:trigram" in error


def test_sample_eos_token_ids_replace_the_eos_set(tmp_path, capsys):
    records = sample_records(tmp_path, *TOY, "--eos-token-id", "3", "--chains", "12", "--prompt", "1")
    assert any(r["ended_with_eos"] for r in records) and any(0 in r["tokens"] for r in records)
    for r in records:
        assert 3 not in r["tokens"][:-1] and r["ended_with_eos"] == (r["tokens"][-1:] == [3])
    assert "EOS token id 9" in user_error(capsys, "sample", *TOY, "--eos-token-id", "9")
    assert "--eos-token-id" in user_error(capsys, "sample", *TOY, "--eos-token-id", "-1")


def test_sample_stop_strings_of_one_token_join_the_eos_set(tmp_path, capsys, word_model_dir):
    records = sample_records(tmp_path, *TOY, "--stop", "2", "--chains", "12", "--prompt", "1")
    assert any(r["tokens"][-1:] == [2] for r in records)
    for r in records:
        assert not {0, 2} & set(r["tokens"][:-1]) and r["ended_with_eos"] == (r["tokens"][-1:] in ([0], [2]))
    error = user_error(capsys, "sample", *TOY, "--stop", "1 2")
    assert "'1 2' is 2 tokens" in error and "exactly one token" in error
    words = word_model()
    assert stop_token_ids(words, ["world", "hello", "world"]) == [WORLD, HELLO]
    with pytest.raises(ValueError, match="'hello world' is 2 tokens"):
        stop_token_ids(words, ["hello world"])


def test_sample_text_skips_special_tokens_unless_kept(tmp_path, word_model_dir):
    flags = ["--model", str(word_model_dir), "--device", "cpu", "--prompt", "hello", "--max-new-tokens", "6",
             "--block-size", "3", "--mcmc-steps", "1", "--chains", "6"]
    skipped, kept = sample_records(tmp_path, *flags), sample_records(tmp_path, *flags, "--keep-special-tokens")
    assert [r["tokens"] for r in skipped] == [r["tokens"] for r in kept]
    ended = [row for row, r in enumerate(kept) if r["ended_with_eos"]]
    assert ended, "no chain ended with EOS: choose another seed"
    for row in ended:
        assert kept[row]["text"].endswith("<eos>") and "<eos>" not in skipped[row]["text"]


@pytest.mark.parametrize("sampler", ["mh", "smc"])
def test_sample_token_logprobs_sum_to_log_p(tmp_path, sampler):
    records = sample_records(tmp_path, *TOY, "--prompt", "1", "--chains", "4", "--sampler", sampler, "--token-logprobs")
    lm = load_model("toy:trigram")
    for r in records:
        assert len(r["token_logprobs"]) == len(r["tokens"]) > 0
        assert math.fsum(r["token_logprobs"]) == pytest.approx(r["log_p"], abs=1e-9)
        assert r["token_logprobs"] == pytest.approx(base_log_probs(lm, [1], r["tokens"]), abs=1e-9)
    assert "token_logprobs" not in sample_records(tmp_path, *TOY, "--prompt", "1")[0]
