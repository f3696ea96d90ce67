"""What the block-wise power sampler returns: `PowerSampleResult` (final sequences, trace, compute)
and `token_log_probs`, the per-token base log-probabilities of a sequence batch.
`mcmc_llm.drivers.power` re-exports both.
"""

from __future__ import annotations

import dataclasses

from mcmc_llm.core.trace import Trace
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.lm.text import completion_text


def token_log_probs(batch: SequenceBatch) -> list[list[float]]:
    """`log p(x_t | prompt, x_<t)` of every generated token of each chain, under the reference model
    (the cached per-token `log_p`); row c sums to `batch.total_log_p()[c]`."""
    log_p = batch.log_p.cpu()
    return [log_p[row, :length].tolist() for row, length in enumerate(batch.lengths.tolist())]


@dataclasses.dataclass
class PowerSampleResult:
    """Final sequences (one per chain; chains of prompt i are rows i*C .. i*C + C - 1), the
    per-step trace (chain, draw) over all stages, the LM's compute counters, and the reference
    model `lm` (which decodes the sequences)."""

    final: SequenceBatch
    trace: Trace | None
    chains_per_prompt: int
    compute: dict[str, int]
    lm: LanguageModel | None = dataclasses.field(default=None, repr=False, compare=False)

    def sequences(self) -> list[list[int]]:
        return self.final.to_lists()

    def texts(self, *, skip_special_tokens: bool = True) -> list[str]:
        """Each chain's generated text (`mcmc_llm.lm.text.completion_text`): special tokens such as
        EOS left out unless skip_special_tokens=False (as transformers' `decode`)."""
        if self.lm is None:
            raise ValueError("this result holds no model to decode with; decode `sequences()` with the model's decode")
        return [completion_text(self.lm, tokens, skip_special_tokens) for tokens in self.sequences()]

    def token_logprobs(self) -> list[list[float]]:
        """Each chain's per-token base log-probabilities `log p(x_t | prompt, x_<t)`, one per token of
        `sequences()`; each list sums to the chain's `log p(x)` (`token_log_probs`)."""
        return token_log_probs(self.final)

    def chain_trace(self, prompt_index: int) -> Trace | None:
        """The trace of one prompt's chains (for R-hat / ESS across them)."""
        if self.trace is None:
            return None
        rows = slice(prompt_index * self.chains_per_prompt, (prompt_index + 1) * self.chains_per_prompt)
        return Trace(
            samples={name: value[rows] for name, value in self.trace.samples.items()},
            stats={name: value[rows] for name, value in self.trace.stats.items()},
        )


__all__ = ["PowerSampleResult", "token_log_probs"]
