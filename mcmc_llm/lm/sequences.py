"""Token sequences as MCMC positions.

A `SequenceBatch` holds one generated sequence per chain, after a fixed per-chain prompt, in a
fixed-capacity right-padded layout so chains of different lengths batch together and the MH
kernel can select per chain.  Beside the tokens it caches, per token `x_t`:

* `log_p[t] = log p(x_t | prompt, x_<t)` under the reference (target) model,
* `log_q[t] = log p_prop(x_t | prompt, x_<t)` under the proposal's sampling rule,
* `entropy[t] = H(p(. | prompt, x_<t))`,
* `log_q_law[t]`: the `sampling_law` id of the proposal law `log_q[t]` is under (0: unknown),

which are exactly what the generation path reports, so no sequence is ever re-scored.
`ended[c]` says whether chain c's sequence ends with an EOS token.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from mcmc_llm.lm.generation import Continuation, SamplingRule, score_continuations
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch


@dataclasses.dataclass(frozen=True)
class SequenceBatch:
    prompts: TokenBatch
    tokens: torch.Tensor
    lengths: torch.Tensor
    log_p: torch.Tensor
    log_q: torch.Tensor
    entropy: torch.Tensor
    ended: torch.Tensor
    log_q_law: torch.Tensor | None = None  # None: unknown laws (zeros)

    def __post_init__(self):
        if self.log_q_law is None:
            object.__setattr__(self, "log_q_law", torch.zeros_like(self.tokens))

    @property
    def capacity(self) -> int:
        return self.tokens.shape[1]

    @property
    def num_chains(self) -> int:
        return self.tokens.shape[0]

    @staticmethod
    def empty(prompts: TokenBatch, capacity: int) -> "SequenceBatch":
        """Every chain at its prompt with nothing generated yet."""
        chains, device = len(prompts), prompts.ids.device
        zeros = torch.zeros(chains, capacity, dtype=torch.float64, device=device)
        return SequenceBatch(
            prompts=prompts,
            tokens=torch.zeros(chains, capacity, dtype=torch.long, device=device),
            lengths=torch.zeros(chains, dtype=torch.long, device=device),
            log_p=zeros,
            log_q=zeros.clone(),
            entropy=zeros.clone(),
            ended=torch.zeros(chains, dtype=torch.bool, device=device),
            log_q_law=torch.zeros(chains, capacity, dtype=torch.long, device=device),
        )

    @staticmethod
    def from_sequences(
        lm: LanguageModel,
        rule: SamplingRule,
        prompts: TokenBatch,
        sequences: Sequence[Sequence[int]],
        capacity: int,
    ) -> "SequenceBatch":
        """Positions at given generated sequences, scored once under `lm` and `rule`."""
        if len(sequences) != len(prompts):
            raise ValueError(f"got {len(sequences)} sequences for {len(prompts)} prompts; they must match")
        longest = max((len(s) for s in sequences), default=0)
        if longest > capacity:
            raise ValueError(f"a sequence has {longest} tokens, more than the capacity {capacity}")
        generated = TokenBatch.from_lists(sequences, device=prompts.ids.device)
        scored = score_continuations(lm, prompts, generated, rule)
        return SequenceBatch.empty(prompts, capacity).splice(torch.zeros_like(generated.lengths), scored)

    def generated_tokens(self) -> TokenBatch:
        return TokenBatch(self.tokens, self.lengths)

    def contexts(self, cut_index: torch.Tensor) -> TokenBatch:
        """Prompt followed by the first `cut_index[c]` generated tokens, for every chain."""
        return self.prompts.concat(TokenBatch(self.tokens, cut_index))

    def suffixes(self, cut_index: torch.Tensor) -> TokenBatch:
        """The generated tokens from `cut_index[c]` to the end of every chain's sequence."""
        lengths = (self.lengths - cut_index).clamp(min=0)
        source = (torch.arange(self.capacity, device=self.tokens.device)[None] + cut_index[:, None]).clamp(max=self.capacity - 1)
        ids = self.tokens.gather(1, source)
        return TokenBatch(torch.where(torch.arange(self.capacity, device=ids.device)[None] < lengths[:, None], ids, 0), lengths)

    def splice(self, cut_index: torch.Tensor, continuation: Continuation) -> "SequenceBatch":
        """Keep tokens before `cut_index[c]` and write `continuation[c]` from there on."""
        new_lengths = cut_index + continuation.tokens.lengths
        if bool((new_lengths > self.capacity).any()):
            raise ValueError(f"a spliced sequence has {int(new_lengths.max())} tokens, more than the capacity {self.capacity}")
        positions = torch.arange(self.capacity, device=self.tokens.device)[None]
        offset = positions - cut_index[:, None]
        from_new = (offset >= 0) & (positions < new_lengths[:, None])
        keep = offset < 0
        source = offset.clamp(0, continuation.tokens.ids.shape[1] - 1)

        def merge(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            gathered = new.gather(1, source)
            return torch.where(from_new, gathered, torch.where(keep, old, torch.zeros_like(old)))

        has_new = continuation.tokens.lengths > 0
        return SequenceBatch(
            prompts=self.prompts,
            tokens=merge(self.tokens, continuation.tokens.ids),
            lengths=new_lengths,
            log_p=merge(self.log_p, continuation.log_p),
            log_q=merge(self.log_q, continuation.log_q),
            entropy=merge(self.entropy, continuation.entropy),
            ended=torch.where(has_new, continuation.ended, self.ended & (cut_index >= self.lengths)),
            log_q_law=merge(self.log_q_law, continuation.laws().to(self.tokens.device)[:, None].expand_as(continuation.log_q)),
        )

    def suffix_sum(self, values: torch.Tensor, cut_index: torch.Tensor) -> torch.Tensor:
        """`sum_{cut_index[c] <= t < length[c]} values[c, t]` for every chain."""
        positions = torch.arange(self.capacity, device=values.device)[None]
        inside = (positions >= cut_index[:, None]) & (positions < self.lengths[:, None])
        return torch.where(inside, values, torch.zeros_like(values)).sum(-1)

    def total(self, values: torch.Tensor) -> torch.Tensor:
        """`sum_{t < length[c]} values[c, t]`: a per-token statistic summed over each sequence."""
        return self.suffix_sum(values, torch.zeros_like(self.lengths))

    def total_log_p(self) -> torch.Tensor:
        """`log p(x)` of every chain's generated sequence given its prompt."""
        return self.total(self.log_p)

    def in_support(self, max_new_tokens: int) -> torch.Tensor:
        """Membership of S_n: ended with EOS within n tokens, or exactly n tokens without EOS."""
        return (self.lengths <= max_new_tokens) & (self.ended | (self.lengths == max_new_tokens))

    def to_lists(self) -> list[list[int]]:
        return self.generated_tokens().to_lists()
