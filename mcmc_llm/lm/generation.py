"""The one generation path: sample or score continuations with their per-token statistics.

Proposals, baselines and benchmarks all call these two functions.  For every token `x_t` of a
continuation they return, from the same forward pass:

* `log_p[t]  = log p(x_t | x_<t)`, the untempered base model;
* `log_q[t]  = log p_prop(x_t | x_<t)`, the distribution the token was actually drawn from
  (temperature, then optional top-k / top-p truncation, renormalised);
* `entropy[t] = H(p(. | x_<t))`, the base model's next-token entropy (for entropy cuts).

With temperature `tau` and no truncation, `log p_prop(v) = log p(v)/tau - log sum_u p(u)^(1/tau)`.
A continuation stops after an EOS token or after its row's `max_new_tokens`.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from mcmc_llm.core.random import categorical
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch


@dataclasses.dataclass(frozen=True)
class SamplingRule:
    """How the proposal draws a token from the base next-token distribution.

    temperature: tau > 0 divides the log-probs; tau = 0 means greedy (argmax, probability 1).
    top_k / top_p: optional truncation of the tempered distribution (applied in that order);
        the reported `log_q` are then the truncated, renormalised probabilities, and tokens
        outside the kept set have probability zero (the chain cannot propose them).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        if not isinstance(self.temperature, (int, float)) or not (0 <= self.temperature < math.inf):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k!r}")
        if self.top_p is not None and not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p!r}")

    @property
    def full_support(self) -> bool:
        return self.temperature > 0 and self.top_k is None and (self.top_p is None or self.top_p == 1)

    def proposal_logprobs(self, logprobs: torch.Tensor) -> torch.Tensor:
        """Normalised log p_prop [B, V] from base log-probs [B, V] (float64)."""
        logprobs = logprobs.to(torch.float64)
        if self.temperature == 0:
            greedy = torch.full_like(logprobs, -math.inf)
            return greedy.scatter_(-1, logprobs.argmax(-1, keepdim=True), 0.0)
        scores = logprobs / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if self.top_p is not None and self.top_p < 1:
            sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
            probs = torch.softmax(sorted_scores, dim=-1)
            mass_before = torch.cumsum(probs, dim=-1) - probs
            drop_sorted = mass_before >= self.top_p
            drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, -math.inf)
        return torch.log_softmax(scores, dim=-1)


@dataclasses.dataclass(frozen=True)
class Continuation:
    """Continuations of B contexts: tokens (right-padded) and per-token statistics [B, W]."""

    tokens: TokenBatch
    log_p: torch.Tensor
    log_q: torch.Tensor
    entropy: torch.Tensor
    ended: torch.Tensor


def _token_statistics(
    logprobs: torch.Tensor, tokens: torch.Tensor, rule: SamplingRule, proposal: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-position statistics from base log-probs [..., V] and the tokens taken [...]; `proposal`:
    `rule.proposal_logprobs(logprobs)` when the caller already has it."""
    logprobs = logprobs.to(torch.float64)
    if proposal is None:
        proposal = rule.proposal_logprobs(logprobs.reshape(-1, logprobs.shape[-1])).reshape(logprobs.shape)
    index = tokens.unsqueeze(-1)
    entropy = -(torch.exp(logprobs) * torch.nan_to_num(logprobs, neginf=0.0)).sum(-1)
    return {
        "log_p": logprobs.gather(-1, index).squeeze(-1),
        "log_q": proposal.gather(-1, index).squeeze(-1),
        "entropy": entropy,
    }


def _is_eos(tokens: torch.Tensor, eos_token_ids: tuple[int, ...]) -> torch.Tensor:
    return torch.isin(tokens, torch.as_tensor(eos_token_ids, device=tokens.device))


class ContinuousBatch:
    """Generation requests served from one decoding batch that is refilled as rows finish.

    `submit(keys, contexts, caps)` queues one request per row: continue `contexts[i]` from `rule`
    until EOS or `caps[i]` new tokens.  Every `step()` is one decoding step:

    1. one forward pass appends the tokens drawn at the previous step to the rows still running
       and, in the same call, admits the queued requests (`lm.admit`);
    2. a token is drawn for every live row (one `categorical` over the live rows, in the order
       they were admitted); rows that drew EOS or reached their cap are finished (handed to
       `lm.retire`) and dropped.

    It returns the requests that finished as `(keys, Continuation)`; requests with cap 0 finish at
    the next step with an empty continuation.  Because the forward pass is deferred to the next
    call, a request submitted in reply to a finished one takes the freed row at once: the batch
    stays full for as long as callers have work (the asynchronous power sampler relies on this;
    `sample_continuations` submits everything at once).
    """

    _FIELDS = ("tokens", "log_p", "log_q", "entropy")  # what is recorded per generated token

    def __init__(self, lm: LanguageModel, rule: SamplingRule, generator: torch.Generator):
        self.lm, self.rule, self.generator = lm, rule, generator
        device = lm.device
        self._state = None  # decoding state of the live rows, before their `_pending` tokens
        self._pending: torch.Tensor | None = None  # tokens drawn for the live rows, not yet pushed through the model
        # Live rows, in batch order: keys, caps, tokens drawn so far, and per-token records [R, W].
        self._keys: list = []
        self._rows_by_key: dict | None = None  # key -> live row, rebuilt after the rows change
        self._caps = torch.zeros(0, dtype=torch.long, device=device)
        self._counts = torch.zeros(0, dtype=torch.long, device=device)
        self._records = {name: torch.zeros(0, 1, dtype=self._dtype(name), device=device) for name in self._FIELDS}
        self._queue_keys: list = []
        self._queue_caps: list[torch.Tensor] = []
        self._queue_contexts: list[TokenBatch] = []
        self._empty: list = []  # keys of cap-0 requests, finished at the next step

    @staticmethod
    def _dtype(name: str) -> torch.dtype:
        return torch.long if name == "tokens" else torch.float64

    @property
    def busy(self) -> bool:
        return bool(self._keys or self._queue_keys or self._empty)

    @property
    def rows(self) -> int:
        """Rows the next step decodes: the live requests and the queued ones."""
        return len(self._keys) + len(self._queue_keys)

    def drawn(self, key) -> torch.Tensor | None:
        """Tokens drawn so far for the live request `key`; None when it is queued, finished or unknown."""
        if self._rows_by_key is None:
            self._rows_by_key = {k: row for row, k in enumerate(self._keys)}
        row = self._rows_by_key.get(key)
        return None if row is None else self._records["tokens"][row, : int(self._counts[row])]

    def cancel(self, keys) -> None:
        """Withdraw unfinished requests (queued or live): their rows leave the batch at once, without
        `lm.retire`, and the tokens they drew count as discarded (`ComputeCounter.discard`)."""
        drop = set(keys)
        if drop.intersection(self._queue_keys):
            contexts, caps = self._merge_queue()
            keep = torch.as_tensor([key not in drop for key in self._queue_keys])
            self._queue_keys = [key for key in self._queue_keys if key not in drop]
            self._queue_caps, self._queue_contexts = [], []
            if self._queue_keys:
                self._queue_caps.append(caps[keep.to(caps.device)])
                rows = keep.to(contexts.ids.device)
                self._queue_contexts.append(TokenBatch(contexts.ids[rows], contexts.lengths[rows]))
        self._empty = [key for key in self._empty if key not in drop]
        gone = [key in drop for key in self._keys]
        if not any(gone):
            return
        kept = torch.as_tensor([i for i, g in enumerate(gone) if not g], dtype=torch.long, device=self._caps.device)
        self.lm.counter.discard(int(self._counts[torch.as_tensor(gone, device=self._caps.device)].sum()))
        if len(kept) == 0:
            self._state = self._pending = None
        else:
            self._state, self._pending = self.lm.select_rows(self._state, kept), self._pending[kept]
        self._keys = [key for key, g in zip(self._keys, gone) if not g]
        self._rows_by_key = None
        self._caps, self._counts = self._caps[kept], self._counts[kept]
        self._records = {name: record[kept] for name, record in self._records.items()}

    def submit(self, keys, contexts: TokenBatch, caps: torch.Tensor | int) -> None:
        keys = list(keys)
        if len(keys) != len(contexts):
            raise ValueError(f"got {len(keys)} keys for {len(contexts)} contexts; they must match")
        caps = torch.as_tensor(caps, dtype=torch.long).to(self._caps.device).expand(len(contexts))
        if bool((caps < 0).any()):
            raise ValueError(f"max_new_tokens must be >= 0, got {int(caps.min())}")
        positive = caps > 0
        self._empty += [key for key, keep in zip(keys, positive.tolist()) if not keep]
        if bool(positive.any()):
            rows = positive.nonzero().squeeze(-1)
            self._queue_keys += [keys[i] for i in rows.tolist()]
            self._queue_caps.append(caps[rows])
            index = rows.to(contexts.ids.device)
            self._queue_contexts.append(TokenBatch(contexts.ids[index], contexts.lengths[index]))

    def _merge_queue(self) -> tuple[TokenBatch, torch.Tensor]:
        """The queued contexts and caps, each as one batch."""
        parts = self._queue_contexts
        width = max(part.ids.shape[1] for part in parts)
        contexts = TokenBatch(
            torch.cat([torch.nn.functional.pad(part.ids, (0, width - part.ids.shape[1])) for part in parts]),
            torch.cat([part.lengths for part in parts]),
        )
        return contexts, torch.cat(self._queue_caps)

    def _take_queue(self) -> TokenBatch:
        """The queued contexts as one batch; their requests become live rows after the current ones."""
        contexts, caps = self._merge_queue()
        self._queue_contexts = []
        self._keys += self._queue_keys
        self._rows_by_key = None
        self._queue_keys, self._queue_caps = [], []
        self._caps = torch.cat([self._caps, caps])
        self._counts = torch.cat([self._counts, torch.zeros_like(caps)])
        columns = max(int(caps.max()), self._records["tokens"].shape[1])
        for name, record in self._records.items():
            grown = torch.nn.functional.pad(record, (0, columns - record.shape[1]))
            self._records[name] = torch.cat([grown, grown.new_zeros(len(caps), columns)])
        return contexts

    def step(self) -> tuple[list, Continuation]:
        lm = self.lm
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._state = lm.admit(self._state, pending, self._take_queue()) if self._queue_keys else lm.advance(self._state, pending)
        elif self._queue_keys:
            self._state = lm.start(self._take_queue())
        finished = self._draw() if self._keys else None
        empty, self._empty = self._empty, []
        return self._collect(finished, empty)

    def _draw(self) -> tuple[list, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Draw a token for every live row; finish and drop the rows that are done.  Returns the
        finished rows' keys, records, token counts and EOS flags."""
        lm, state = self.lm, self._state
        logprobs = state.logprobs.to(torch.float64)
        proposal = self.rule.proposal_logprobs(logprobs)
        drawn = categorical(self.generator, proposal)
        rows = torch.arange(len(self._keys), device=drawn.device)
        values = {"tokens": drawn, **_token_statistics(logprobs, drawn, self.rule, proposal)}
        for name, record in self._records.items():
            record[rows, self._counts] = values[name].to(record.dtype)
        self._counts = self._counts + 1
        lm.counter.tokens_sampled += len(self._keys)
        stop = _is_eos(drawn, lm.eos_token_ids)
        done_mask = stop | (self._counts >= self._caps)
        done = done_mask.nonzero().squeeze(-1)
        finished = (
            [self._keys[i] for i in done.tolist()],
            {name: record[done] for name, record in self._records.items()},
            self._counts[done],
            stop[done],
        )
        if len(done) == 0:
            self._pending = drawn
            return finished
        lm.retire(state, done)
        kept = (~done_mask).nonzero().squeeze(-1)
        if len(kept) == 0:
            self._state = None
        else:
            self._state, self._pending = lm.select_rows(state, kept), drawn[kept]
        self._keys = [self._keys[i] for i in kept.tolist()]
        self._rows_by_key = None
        self._caps, self._counts = self._caps[kept], self._counts[kept]
        self._records = {name: record[kept] for name, record in self._records.items()}
        return finished

    def _collect(self, finished, empty: list) -> tuple[list, Continuation]:
        """Finished live rows, then finished cap-0 requests, as keys and one right-padded `Continuation`."""
        device = self._caps.device
        keys, records, counts, ended = finished if finished is not None else ([], {}, None, None)
        width = max(int(counts.max()) if keys else 0, 1)
        parts = {}
        for name in self._FIELDS:
            live = records[name][:, :width] if keys else torch.zeros(0, width, dtype=self._dtype(name), device=device)
            live = torch.nn.functional.pad(live, (0, width - live.shape[1]))
            parts[name] = torch.cat([live, torch.zeros(len(empty), width, dtype=live.dtype, device=device)])
        no_tokens = torch.zeros(len(empty), dtype=torch.long, device=device)
        lengths = torch.cat([counts if keys else no_tokens[:0], no_tokens])
        ended = torch.cat([ended if keys else no_tokens[:0].bool(), no_tokens.bool()])
        continuation = Continuation(TokenBatch(parts["tokens"], lengths), parts["log_p"], parts["log_q"], parts["entropy"], ended)
        return keys + empty, continuation


def sample_continuations(
    lm: LanguageModel,
    contexts: TokenBatch,
    max_new_tokens: torch.Tensor | int,
    rule: SamplingRule,
    generator: torch.Generator,
) -> Continuation:
    """Draw one continuation per context from `rule` applied to `lm`, until EOS or the row's cap.

    Rows whose cap is 0 get an empty continuation.  Finished rows are handed to `lm.retire` (a
    backend may keep their encoding for later contexts that extend them, such as the prefix `x_<m`
    of the next MH proposal) and dropped from the batch (`lm.select_rows`), so no compute is spent
    on them.  This is `ContinuousBatch` with every request submitted at once.
    """
    batch = len(contexts)
    caps = torch.as_tensor(max_new_tokens, dtype=torch.long).expand(batch)
    engine = ContinuousBatch(lm, rule, generator)
    engine.submit(range(batch), contexts, caps)  # validates the caps
    width = max(int(caps.max()) if batch else 0, 1)
    device = contexts.ids.device
    tokens = torch.zeros(batch, width, dtype=torch.long, device=device)
    stats = {name: torch.zeros(batch, width, dtype=torch.float64, device=device) for name in ("log_p", "log_q", "entropy")}
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    ended = torch.zeros(batch, dtype=torch.bool, device=device)
    while engine.busy:
        keys, done = engine.step()
        if not keys:
            continue
        rows = torch.as_tensor(keys, device=device)
        span = done.tokens.ids.shape[1]
        tokens[rows, :span] = done.tokens.ids.to(device)
        for name, values in stats.items():
            values[rows, :span] = getattr(done, name).to(device)
        lengths[rows], ended[rows] = done.tokens.lengths.to(device), done.ended.to(device)
    return Continuation(TokenBatch(tokens, lengths), stats["log_p"], stats["log_q"], stats["entropy"], ended)


def score_continuations(
    lm: LanguageModel, contexts: TokenBatch, continuations: TokenBatch, rule: SamplingRule
) -> Continuation:
    """Per-token statistics of given continuations (no sampling), as `sample_continuations` reports them."""
    stats = lm.positionwise(contexts, continuations, lambda lp, tok: _token_statistics(lp, tok, rule))
    lengths = continuations.lengths
    last = continuations.ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    ended = (lengths > 0) & _is_eos(last, lm.eos_token_ids)
    return Continuation(continuations, stats["log_p"], stats["log_q"], stats["entropy"], ended)
