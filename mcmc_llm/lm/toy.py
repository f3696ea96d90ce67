"""Exact toy language models: tiny vocabularies, so every law over S_n can be enumerated.

* `NgramLM`: next-token log-probs from a table indexed by the last `order - 1` tokens
  (missing positions at the start are a start symbol).  Vectorised: thousands of chains per call.
* `DerailLM`: the paper's composition example.  Token 1 is a "good" token whose continuation
  is predictable; tokens 3 and 4 are "error" tokens, each more likely than the good one at the
  first step, after which every later token is uniform (the text is derailed).  Per-token
  tempering (low temperature) prefers an error token; the power distribution prefers the good
  one because it weighs each token by the likelihood of its futures.

Toy models are named `toy:NAME`; `TOY_MODELS` lists them with a description.
"""

from __future__ import annotations

from typing import Callable

import torch

from mcmc_llm.lm.protocol import StatelessLM, TokenBatch


def _last_tokens(contexts: TokenBatch, count: int, start_symbol: int) -> torch.Tensor:
    """The last `count` tokens of every row, [B, count], with `start_symbol` before the start."""
    offsets = torch.arange(-count, 0, device=contexts.ids.device)[None] + contexts.lengths[:, None]
    tokens = contexts.ids.gather(1, offsets.clamp(min=0, max=contexts.ids.shape[1] - 1))
    return torch.where(offsets >= 0, tokens, start_symbol)


class NgramLM(StatelessLM):
    """`p(x_t | x_<t) = softmax(table[last order-1 tokens])`; EOS is token 0 by default.

    table: logits of shape [(V+1)^(order-1), V]; the context index is the base-(V+1) number
    formed by the last `order - 1` tokens, where digit V is the start symbol.
    """

    def __init__(self, table: torch.Tensor, order: int, eos_token_ids=(0,)):
        vocab_size = table.shape[-1]
        super().__init__(vocab_size, eos_token_ids)
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        expected = ((vocab_size + 1) ** (order - 1), vocab_size)
        if tuple(table.shape) != expected:
            raise ValueError(f"an order-{order} table over {vocab_size} tokens has shape {expected}, got {tuple(table.shape)}")
        self.order = order
        self.log_table = torch.log_softmax(table.to(torch.float64), dim=-1)

    def next_token_logprobs(self, contexts: TokenBatch) -> torch.Tensor:
        history = _last_tokens(contexts, self.order - 1, self.vocab_size)
        base = self.vocab_size + 1
        weights = base ** torch.arange(self.order - 2, -1, -1, device=history.device)
        index = (history * weights[None]).sum(-1) if self.order > 1 else torch.zeros_like(contexts.lengths)
        return self.log_table[index]

    @staticmethod
    def random(vocab_size: int, order: int, seed: int, *, eos_logit: float = 0.0, scale: float = 1.5) -> "NgramLM":
        """Seeded random table: Gaussian logits times `scale`, EOS logit shifted by `eos_logit`."""
        generator = torch.Generator().manual_seed(seed)
        table = scale * torch.randn((vocab_size + 1) ** (order - 1), vocab_size, generator=generator, dtype=torch.float64)
        table[:, 0] += eos_logit
        return NgramLM(table, order)


class DerailLM(StatelessLM):
    """Vocabulary: 0 = EOS, 1 = good, 2 = 'a', 3 and 4 = error tokens.

    First token: good 0.3, each error token 0.35.  After the good token, while no error token
    has appeared: 'a' 0.75, EOS 0.2, each error 0.025.  Once an error token has appeared,
    every token (EOS included) has probability 1/5.
    """

    GOOD, ERRORS = 1, (3, 4)

    def __init__(self):
        super().__init__(5, (0,))
        self.first = torch.log(torch.tensor([0.0, 0.3, 0.0, 0.35, 0.35], dtype=torch.float64))
        self.on_track = torch.log(torch.tensor([0.2, 0.0, 0.75, 0.025, 0.025], dtype=torch.float64))
        self.derailed = torch.full((5,), -torch.log(torch.tensor(5.0, dtype=torch.float64)).item(), dtype=torch.float64)

    def next_token_logprobs(self, contexts: TokenBatch) -> torch.Tensor:
        positions = torch.arange(contexts.ids.shape[1], device=contexts.ids.device)[None]
        inside = positions < contexts.lengths[:, None]
        errors = torch.isin(contexts.ids, torch.tensor(self.ERRORS, device=contexts.ids.device)) & inside
        derailed = errors.any(-1)
        out = torch.where(derailed[:, None], self.derailed[None], self.on_track[None])
        return torch.where((contexts.lengths == 0)[:, None], self.first[None], out)


TOY_MODELS: dict[str, tuple[str, Callable[[], StatelessLM]]] = {
    "tiny": ("bigram over 3 tokens (EOS=0), seed 0", lambda: NgramLM.random(3, 2, seed=0, eos_logit=-0.5)),
    "bigram": ("bigram over 5 tokens (EOS=0), seed 1", lambda: NgramLM.random(5, 2, seed=1, eos_logit=-1.0)),
    "trigram": ("trigram over 4 tokens (EOS=0), seed 2", lambda: NgramLM.random(4, 3, seed=2, eos_logit=-1.0)),
    "derail": ("the paper's composition example: an error token derails every later token", DerailLM),
}


def load_toy(name: str) -> StatelessLM:
    """The toy LM called `name` (see `TOY_MODELS`)."""
    if name not in TOY_MODELS:
        raise ValueError(f"unknown toy model {name!r}; available: {', '.join(sorted(TOY_MODELS))}")
    return TOY_MODELS[name][1]()
