"""Linear layers on oneDNN-packed weights (`mcmc_llm.lm.hf.packed_linear`): the same products as
`torch.nn.functional.linear` to float32 rounding, parameters shared, repacked when a weight
changes, refused when the packed product disagrees."""

import pytest
import torch

from mcmc_llm.lm.hf import packed_linear
from mcmc_llm.lm.hf.packed_linear import PackedLinear, set_packed_linears

pytestmark = pytest.mark.skipif(not packed_linear.supported(), reason="this PyTorch build has no oneDNN")


class Tied(torch.nn.Module):
    """An embedding tied to an output layer, a biased layer and an unbiased one."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16, dtype=dtype)
        self.hidden = torch.nn.Linear(16, 24, dtype=dtype)
        self.back = torch.nn.Linear(24, 16, bias=False, dtype=dtype)
        self.head = torch.nn.Linear(16, 50, bias=False, dtype=dtype)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.back(torch.relu(self.hidden(self.embed(ids)))))


def reference(module: Tied, ids: torch.Tensor) -> torch.Tensor:
    """The module's output with `torch.nn.functional.linear` everywhere."""
    F = torch.nn.functional
    h = F.linear(module.embed(ids), module.hidden.weight, module.hidden.bias)
    return F.linear(F.linear(torch.relu(h), module.back.weight), module.head.weight)


def make(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return Tied(dtype)


def test_packed_layers_give_the_same_products_and_share_the_parameters():
    module = make()
    parameters = {name: p for name, p in module.named_parameters()}
    keys = set(module.state_dict())
    ids = torch.randint(0, 50, (5, 7))
    assert set_packed_linears(module, "on") == 3
    assert all(isinstance(layer, PackedLinear) for layer in (module.hidden, module.back, module.head))
    assert {name: p for name, p in module.named_parameters()} == parameters  # the same objects
    assert module.head.weight is module.embed.weight and set(module.state_dict()) == keys
    with torch.no_grad():
        got, expected = module(ids), reference(module, ids)
    assert got.shape == expected.shape == (5, 7, 50)
    assert (got - expected).abs().max() <= 1e-5 * (1 + expected.abs().max())
    # "off" restores plain layers on the same parameters; packing twice counts the layers once
    assert set_packed_linears(module, "off") == 0 and type(module.hidden) is torch.nn.Linear
    assert module.head.weight is module.embed.weight
    assert set_packed_linears(module, "auto") == 3 and set_packed_linears(module, "auto") == 3


def test_a_changed_weight_is_repacked_and_autograd_uses_the_plain_product():
    module = make(1)
    set_packed_linears(module, "on")
    ids = torch.randint(0, 50, (3, 4))
    with torch.no_grad():
        before = module(ids)
        module.hidden.weight.mul_(-2.0)  # in place: the packed copy is stale
        after, expected = module(ids), reference(module, ids)
    assert not torch.allclose(before, after)
    assert (after - expected).abs().max() <= 1e-5 * (1 + expected.abs().max())
    loss = module(ids).square().mean()  # weights require grad: the packed path steps aside
    loss.backward()
    assert module.hidden.weight.grad is not None and torch.isfinite(module.hidden.weight.grad).all()


def test_only_float32_cpu_layers_are_packed_and_auto_respects_its_size_limit(monkeypatch):
    assert set_packed_linears(make(dtype=torch.float64), "on") == 0
    monkeypatch.setattr(packed_linear, "AUTO_LIMIT_BYTES", 16 * 24 * 4 - 1)  # less than the weights
    module = make()
    assert set_packed_linears(module, "auto") == 0 and type(module.hidden) is torch.nn.Linear
    assert set_packed_linears(module, "on") == 3  # "on" ignores the limit
    with pytest.raises(ValueError, match=r"'fast'.*auto, on, off"):
        set_packed_linears(module, "fast")


def test_a_packed_product_that_disagrees_is_refused(monkeypatch):
    """The check `set_packed_linears` runs on every layer: a packed product that drops the bias is
    never used ("auto" leaves the layers plain, "on" raises)."""
    real = PackedLinear.forward

    def without_bias(self, x):
        out = real(self, x)
        return out if self.bias is None else out - self.bias

    monkeypatch.setattr(PackedLinear, "forward", without_bias)
    module = make(2)
    assert set_packed_linears(module, "auto") == 0 and type(module.hidden) is torch.nn.Linear
    with pytest.raises(RuntimeError, match="disagrees"):
        set_packed_linears(module, "on")


def test_the_transformers_backend_packs_by_default_and_its_log_probs_agree():
    from transformers import LlamaConfig, LlamaForCausalLM

    from mcmc_llm.lm.hf import HFLanguageModel
    from mcmc_llm.lm.protocol import TokenBatch

    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    torch.manual_seed(3)
    model = LlamaForCausalLM(config).float()
    contexts = TokenBatch.from_lists([[1, 5, 9, 11], [2, 3]])
    lm = HFLanguageModel(model)
    assert lm.packed_layers == 2 * 7 + 1 and isinstance(lm.model.lm_head, PackedLinear)
    packed = lm.advance(lm.start(contexts), torch.tensor([7, 8])).logprobs
    assert lm.pack_linear("off") == 0
    plain = lm.advance(lm.start(contexts), torch.tensor([7, 8])).logprobs
    assert (packed - plain).abs().max() < 1e-4
    with pytest.raises(ValueError, match="packed_linear"):
        HFLanguageModel(model, packed_linear="yes")


def test_packed_linear_is_a_load_model_and_config_option():
    from mcmc_llm.evaluation import ConfigError, parse_config
    from mcmc_llm.evaluation.config import PACKED_LINEAR
    from mcmc_llm.lm.registry import load_model

    assert load_model("random:llama-tiny", device="cpu", dtype="float32").packed_layers > 0  # "auto"
    assert load_model("random:llama-tiny", device="cpu", dtype="float32", packed_linear="off").packed_layers == 0
    with pytest.raises(ValueError, match="packed_linear='on' applies to transformers models"):
        load_model("toy:derail", packed_linear="on")
    with pytest.raises(ValueError, match="unknown packed_linear 'fast'"):
        load_model("random:llama-tiny", device="cpu", packed_linear="fast")
    assert PACKED_LINEAR == packed_linear.MODES  # the config keeps its own copy (it loads without torch)
    table = {"task": {"name": "arithmetic"}, "output": {"path": "x.jsonl"}, "methods": [{"name": "g", "kind": "greedy"}]}
    assert parse_config({**table, "model": {"packed_linear": "off"}}).model.packed_linear == "off"
    assert parse_config(table).fingerprint("g") == parse_config({**table, "model": {"packed_linear": "off"}}).fingerprint("g")
    with pytest.raises(ConfigError, match="model.packed_linear: must be one of auto, on, off"):
        parse_config({**table, "model": {"packed_linear": "fast"}})
