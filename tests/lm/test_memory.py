"""The row budget from free memory (`mcmc_llm.lm.memory`): key/value bytes per token read from a
transformers config, rows = fraction x free / (tokens x bytes per token + logits), the CPU cap, and
the fallback for models without a config."""

from __future__ import annotations

import pytest
import torch

from mcmc_llm.lm import memory
from mcmc_llm.lm.registry import load_model


@pytest.fixture(scope="module")
def tiny():
    return load_model("random:llama-tiny", device="cpu", dtype="float32")


def test_kv_bytes_per_token_is_read_from_the_config(tiny):
    config = tiny.model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    assert memory.kv_bytes_per_token(tiny) == 2 * config.num_hidden_layers * kv_heads * head_dim * 4


def test_the_budget_divides_free_memory_by_a_row_s_bytes(tiny, monkeypatch):
    per_token = memory.kv_bytes_per_token(tiny)
    row = 100 * per_token + 2 * 4 * tiny.vocab_size
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10 * row)
    assert memory.row_budget(tiny, 100, fraction=0.5) == 5
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10**6 * row)
    assert memory.row_budget(tiny, 100) == memory.CPU_ROWS  # a CPU batch is capped
    monkeypatch.setattr(memory, "free_bytes", lambda device: row // 4)
    assert memory.row_budget(tiny, 100) == 1  # never below one row


def test_models_without_a_config_get_the_fallback():
    toy = load_model("toy:bigram")
    assert memory.kv_bytes_per_token(toy) is None
    assert memory.row_budget(toy, 100) == memory.FALLBACK_ROWS


def test_free_bytes_reads_this_machine():
    free = memory.free_bytes(torch.device("cpu"))
    assert free is None or free > 0
