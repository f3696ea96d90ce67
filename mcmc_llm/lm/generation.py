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

from typing import Sequence

import torch

from mcmc_llm.core.random import Source, Streams, inverse_cdf, random_keys, stream_uniforms
from mcmc_llm.lm.early_stop import EarlyStop
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sampling import Continuation, SamplingRule, is_eos, token_statistics, sampling_law

__all__ = ["Continuation", "ContinuousBatch", "SamplingRule", "sample_continuations", "sampling_law", "score_continuations"]


class ContinuousBatch:
    """Generation requests served from one decoding batch that is refilled as rows finish.

    `submit(keys, contexts, caps, rules=..., streams=...)` queues one request per row: continue
    `contexts[i]` with `rules[i]` (default: the engine's `rule`) until EOS or `caps[i]` new tokens.
    Row i's t-th token is drawn by inverse CDF from its own stream, `streams[i].split(t)`
    (`mcmc_llm.core.random.Streams`), so what a request draws does not depend on which other
    requests share the batch; without `streams`, keys are drawn from the engine's `generator`.
    Every `step()` is one decoding step:

    1. one forward pass appends the tokens drawn at the previous step to the rows still running
       and, in the same call, admits the queued requests (`lm.admit`);
    2. a token is drawn for every live row; rows that drew EOS or reached their cap are finished
       (handed to `lm.retire`) and dropped.

    It returns the requests that finished as `(keys, Continuation)`; requests with cap 0 finish at
    the next step with an empty continuation.  A request may carry a stop rule (`submit(stop=)`,
    `mcmc_llm.lm.early_stop.EarlyStop`): once its running bound falls below its threshold the row
    finishes at once, flagged in `Continuation.stopped_early`, and its tokens are also counted in
    `counter.tokens_rejected_early`.  Because the forward pass is deferred to the next call, a
    request submitted in reply to a finished one takes the freed row at once: the batch stays full
    while callers have work (the asynchronous power sampler relies on this).

    Finish reads (`read_every` = k, default `lm.finish_read_interval`, else 1).  Which rows are
    done is decided on the device at every step, but the host reads it, and retires those rows,
    only every k-th step: the one host synchronisation of a step.  A row done between reads stays
    in the batch until the read, unrecorded (its tokens, log-probs, count and stop score stay as
    at its end); the up to k - 1 pushes made for it move from `tokens_encoded` to
    `counter.tokens_overrun`.  Each row's t-th token still comes from its own stream, so draws,
    continuations and token counters are those of k = 1; only when a request is reported differs.
    """

    _FIELDS = ("tokens", "log_p", "log_q", "entropy")  # what is recorded per generated token
    _ROW_FIELDS = ("caps", "rule_index", "streams", "starts") + tuple(f"stop_{name}" for name in EarlyStop._fields)  # per live row
    _FINISH = ("alive", "ended", "early", "overrun")  # per live row, on the device: where each row stands between reads
    _NONE_FINISHED = ([], {}, None, None, None, None)  # what `_draw` returns when no row finishes
    def __init__(self, lm: LanguageModel, rule: SamplingRule | None = None, generator: torch.Generator | None = None,
                 read_every: int | None = None):
        self.lm, self.rule, self.generator = lm, rule if rule is not None else SamplingRule(), generator
        self.read_every = int(read_every if read_every is not None else getattr(lm, "finish_read_interval", 1))
        if self.read_every < 1:
            raise ValueError(f"read_every must be a positive number of steps, got {read_every!r}")
        self._since_read = 0  # steps since the host last read which rows are done
        device = lm.device
        self._rules: list[SamplingRule] = []  # the distinct rules requests asked for; rows hold an index
        self._rule_laws = torch.zeros(0, dtype=torch.long)
        self._state = None  # decoding state of the live rows, before their `_pending` tokens
        self._pending: torch.Tensor | None = None  # tokens drawn for the live rows, not yet pushed through the model
        # Live rows, in batch order: keys, per-row settings, tokens drawn so far, per-token records [R, W].
        self._keys: list = []
        self._rows_by_key: dict | None = None  # key -> live row, rebuilt after the rows change
        self._row = {
            "caps": torch.zeros(0, dtype=torch.long, device=device),
            "rule_index": torch.zeros(0, dtype=torch.long),
            "streams": torch.zeros(0, dtype=torch.int64, device=device),  # every row's key, hashed on the device
            "starts": torch.zeros(0, dtype=torch.long, device=device),  # context lengths (where a row's pushes start)
            **{f"stop_{name}": value for name, value in EarlyStop.never(0, device)._asdict().items()},
        }
        self._counts = torch.zeros(0, dtype=torch.long, device=device)
        self._score = torch.zeros(0, dtype=torch.float64, device=device)  # running sum of the stop rule's increments
        self._finish = {name: torch.zeros(0, dtype=torch.long if name == "overrun" else torch.bool, device=device)
                        for name in self._FINISH}
        self._sampled = torch.zeros((), dtype=torch.long, device=device)  # tokens drawn by running rows since the last read
        self._records = {name: torch.zeros(0, 1, dtype=self._dtype(name), device=device) for name in self._FIELDS}
        self._queue_keys: list = []
        self._queue: list[tuple[TokenBatch, dict[str, torch.Tensor]]] = []  # (contexts, per-row settings)
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

    def _rule_id(self, rule: SamplingRule) -> int:
        if rule not in self._rules:
            self._rules.append(rule)
            self._rule_laws = torch.cat([self._rule_laws, torch.as_tensor([sampling_law(self.lm, rule)])])
        return self._rules.index(rule)

    def _keep_live(self, kept: torch.Tensor) -> None:
        """Keep only live rows `kept` (an index tensor) in the per-row bookkeeping."""
        self._keys = [self._keys[i] for i in kept.tolist()]
        self._rows_by_key = None
        self._row = {name: value[kept.to(value.device)] for name, value in self._row.items()}
        self._counts = self._counts[kept]
        self._score = self._score[kept.to(self._score.device)]
        self._finish = {name: value[kept.to(value.device)] for name, value in self._finish.items()}
        self._records = {name: record[kept] for name, record in self._records.items()}

    def cancel(self, keys) -> None:
        """Withdraw unfinished requests (queued or live): their rows leave the batch at once, without
        `lm.retire`, and the tokens they drew count as discarded (`ComputeCounter.discard`)."""
        drop = set(keys)
        if drop.intersection(self._queue_keys):
            contexts, settings = self._merge_queue()
            keep = torch.as_tensor([key not in drop for key in self._queue_keys])
            self._queue_keys = [key for key in self._queue_keys if key not in drop]
            self._queue = []
            if self._queue_keys:
                rows = keep.to(contexts.ids.device)
                self._queue.append((
                    TokenBatch(contexts.ids[rows], contexts.lengths[rows]),
                    {name: value[keep.to(value.device)] for name, value in settings.items()},
                ))
        self._empty = [key for key in self._empty if key not in drop]
        gone = [key in drop for key in self._keys]
        if not any(gone):
            return
        device = self._counts.device
        kept = torch.as_tensor([i for i, g in enumerate(gone) if not g], dtype=torch.long, device=device)
        self._count_sampled()
        self.lm.counter.discard(int(self._counts[torch.as_tensor(gone, device=device)].sum()))
        if len(kept) == 0:
            self._state = self._pending = None
        else:
            self._state, self._pending = self.lm.select_rows(self._state, kept), self._pending[kept]
        self._keep_live(kept)

    def submit(
        self,
        keys,
        contexts: TokenBatch,
        caps: torch.Tensor | int,
        *,
        rules: SamplingRule | Sequence[SamplingRule] | None = None,
        streams: Streams | None = None,
        stop: EarlyStop | None = None,
    ) -> None:
        """Queue one request per context (see the class docstring); `rules` one rule for all or one
        per row; `streams` one stream per row (required unless the engine has a generator); `stop`
        one early-stop rule per row (default: never)."""
        keys = list(keys)
        count = len(contexts)
        if len(keys) != count:
            raise ValueError(f"got {len(keys)} keys for {count} contexts; they must match")
        caps = torch.as_tensor(caps, dtype=torch.long).to(self._row["caps"].device).expand(count)
        if bool((caps < 0).any()):
            raise ValueError(f"max_new_tokens must be >= 0, got {int(caps.min())}")
        if rules is None or isinstance(rules, SamplingRule):
            rules = [rules if rules is not None else self.rule] * count
        if len(rules) != count:
            raise ValueError(f"got {len(rules)} sampling rules for {count} contexts; they must match")
        if streams is None:
            if self.generator is None:
                raise ValueError("submit needs one random stream per request (`streams`) when the engine has no generator")
            streams = random_keys(self.generator, count)
        if len(streams) != count:
            raise ValueError(f"got {len(streams)} random streams for {count} contexts; they must match")
        device = self._score.device
        stop = EarlyStop.never(count, device) if stop is None else EarlyStop(*(torch.as_tensor(v, dtype=torch.float64).to(device) for v in stop))
        if len(stop.threshold) != count:
            raise ValueError(f"got {len(stop.threshold)} stop rules for {count} contexts; they must match")
        settings = {"caps": caps, "rule_index": torch.as_tensor([self._rule_id(rule) for rule in rules], dtype=torch.long),
                    "streams": streams.keys.to(device), "starts": contexts.lengths.to(device=device, dtype=torch.long),
                    **{f"stop_{name}": value for name, value in stop._asdict().items()}}
        positive = caps > 0
        self._empty += [key for key, keep in zip(keys, positive.tolist()) if not keep]
        if bool(positive.any()):
            longest = int((contexts.lengths.to(caps.device) + caps).max()) + self.read_every - 1  # a done row's pushes until the read
            self.lm.reserve(self.rows + int(positive.sum()), longest)
            rows = positive.nonzero().squeeze(-1)
            self._queue_keys += [keys[i] for i in rows.tolist()]
            index = rows.to(contexts.ids.device)
            self._queue.append((
                TokenBatch(contexts.ids[index], contexts.lengths[index]),
                {name: value[rows.to(value.device)] for name, value in settings.items()},
            ))

    def _merge_queue(self) -> tuple[TokenBatch, dict[str, torch.Tensor]]:
        """The queued contexts and their per-row settings, each as one batch."""
        width = max(part.ids.shape[1] for part, _ in self._queue)
        contexts = TokenBatch(
            torch.cat([torch.nn.functional.pad(part.ids, (0, width - part.ids.shape[1])) for part, _ in self._queue]),
            torch.cat([part.lengths for part, _ in self._queue]),
        )
        return contexts, {name: torch.cat([settings[name] for _, settings in self._queue]) for name in self._ROW_FIELDS}

    def _take_queue(self) -> TokenBatch:
        """The queued contexts as one batch; their requests become live rows after the current ones."""
        contexts, settings = self._merge_queue()
        self._queue = []
        self._keys += self._queue_keys
        self._rows_by_key = None
        self._queue_keys = []
        self._row = {name: torch.cat([self._row[name], settings[name]]) for name in self._ROW_FIELDS}
        added = len(settings["caps"])
        self._counts = torch.cat([self._counts, torch.zeros_like(settings["caps"])])
        self._score = torch.cat([self._score, torch.zeros_like(settings["stop_threshold"])])
        self._finish = {name: torch.cat([value, value.new_full((added,), name == "alive")]) for name, value in self._finish.items()}
        columns = max(int(settings["caps"].max()), self._records["tokens"].shape[1])
        for name, record in self._records.items():
            grown = torch.nn.functional.pad(record, (0, columns - record.shape[1]))
            self._records[name] = torch.cat([grown, grown.new_zeros(added, columns)])
        return contexts

    def step(self) -> tuple[list, Continuation]:
        lm = self.lm
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._state = lm.admit(self._state, pending, self._take_queue()) if self._queue_keys else lm.advance(self._state, pending)
        elif self._queue_keys:
            self._state = lm.start(self._take_queue())
        finished = self._draw() if self._keys else self._NONE_FINISHED
        empty, self._empty = self._empty, []
        return self._collect(finished, empty)

    def _proposal_logprobs(self, logprobs: torch.Tensor) -> torch.Tensor:
        """log p_prop of every live row under its own rule ([R, V], float64)."""
        rule_index = self._row["rule_index"]
        used = torch.unique(rule_index).tolist()
        if len(used) == 1:
            return self._rules[used[0]].proposal_logprobs(logprobs)
        proposal = torch.empty_like(logprobs)
        for index in used:
            rows = (rule_index == index).nonzero().squeeze(-1).to(logprobs.device)
            proposal[rows] = self._rules[index].proposal_logprobs(logprobs[rows])
        return proposal

    def _count_sampled(self) -> None:
        """Add the tokens drawn by running rows since the last read to the counter (a host read)."""
        self.lm.counter.tokens_sampled += int(self._sampled)
        self._sampled.zero_()

    def _draw(self) -> tuple[list, dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw a token for every live row and record it for the rows still running; every
        `read_every`-th step, finish and drop the rows that are done.  Returns the finished rows'
        keys, records, token counts, EOS flags, laws and early-stop flags."""
        lm, state, finish = self.lm, self._state, self._finish
        logprobs = state.logprobs.to(torch.float64)
        proposal = self._proposal_logprobs(logprobs)
        drawn = inverse_cdf(proposal, stream_uniforms(self._row["streams"], self._counts))
        running = finish["alive"]
        rows = torch.arange(len(self._keys), device=drawn.device)
        values = {"tokens": drawn, **token_statistics(logprobs, drawn, self.rule, proposal)}
        column = self._counts.clamp(max=self._records["tokens"].shape[1] - 1)
        for name, record in self._records.items():
            record[rows, column] = torch.where(running, values[name].to(record.dtype), record[rows, column])
        finish["overrun"] += ~running  # this step's forward pass pushed a token for every row already done
        self._counts = self._counts + running
        self._sampled += running.sum()
        stop = is_eos(drawn, lm.eos_token_ids) & running
        complete = stop | (running & (self._counts >= self._row["caps"]))
        rule = EarlyStop(*(self._row[f"stop_{name}"] for name in EarlyStop._fields))
        self._score = self._score + torch.where(running, rule.increments(values["log_p"], values["log_q"]), 0.0)
        early = running & rule.stops(self._score, self._counts) & ~complete
        finish["ended"] |= stop
        finish["early"] |= early
        finish["alive"] = running & ~(complete | early)
        self._since_read += 1
        if self._since_read < self.read_every:
            self._pending = drawn
            return self._NONE_FINISHED
        self._since_read = 0
        return self._retire_done(drawn)

    def _retire_done(self, drawn: torch.Tensor):
        """The host read: finish the rows that are done (handed to `lm.retire`, dropped from the batch)."""
        lm, finish = self.lm, self._finish
        done = (~finish["alive"]).nonzero().squeeze(-1)
        self._count_sampled()
        if len(done) == 0:
            self._pending = drawn
            return self._NONE_FINISHED
        counts, early_done = self._counts[done], finish["early"][done]
        lm.counter.tokens_rejected_early += int(counts[early_done].sum())
        lm.counter.record_overrun(self._row["starts"][done] + counts - 1, finish["overrun"][done])
        finished = (
            [self._keys[i] for i in done.tolist()],
            {name: record[done] for name, record in self._records.items()},
            counts,
            finish["ended"][done],
            self._rule_laws[self._row["rule_index"][done.cpu()]],
            early_done,
        )
        lm.retire(self._state, done)
        kept = finish["alive"].nonzero().squeeze(-1)
        if len(kept) == 0:
            self._state = None
        else:
            self._state, self._pending = lm.select_rows(self._state, kept), drawn[kept]
        self._keep_live(kept)
        return finished

    def _collect(self, finished, empty: list) -> tuple[list, Continuation]:
        """Finished live rows, then finished cap-0 requests, as keys and one right-padded `Continuation`."""
        device = self._counts.device
        keys, records, counts, ended, laws, early = finished
        width = max(int(counts.max()) if keys else 0, 1)
        parts = {}
        for name in self._FIELDS:
            live = records[name][:, :width] if keys else torch.zeros(0, width, dtype=self._dtype(name), device=device)
            live = torch.nn.functional.pad(live, (0, width - live.shape[1]))
            parts[name] = torch.cat([live, torch.zeros(len(empty), width, dtype=live.dtype, device=device)])
        no_tokens = torch.zeros(len(empty), dtype=torch.long, device=device)
        lengths = torch.cat([counts if keys else no_tokens[:0], no_tokens])
        ended = torch.cat([ended if keys else no_tokens[:0].bool(), no_tokens.bool()])
        law = torch.cat([laws.to(device) if keys else no_tokens[:0], no_tokens])
        stopped = torch.cat([early.to(device) if keys else no_tokens[:0].bool(), no_tokens.bool()])
        continuation = Continuation(TokenBatch(parts["tokens"], lengths), parts["log_p"], parts["log_q"], parts["entropy"], ended, law,
                                    stopped)
        return keys + empty, continuation


def sample_continuations(
    lm: LanguageModel,
    contexts: TokenBatch,
    max_new_tokens: torch.Tensor | int,
    rule: SamplingRule | Sequence[SamplingRule],
    source: Source,
    stop: EarlyStop | None = None,
) -> Continuation:
    """Draw one continuation per context from `lm`, until EOS, the row's cap or its early-stop rule.

    Parameters: `contexts` [B], each row's prompt and kept prefix; `max_new_tokens`, the caps (an int
    or [B]; a row with cap 0 gets an empty continuation); `rule`, one `SamplingRule` for every row or
    one per row; `source`, per-row `Streams` (row i's t-th token from `source[i].split(t)`) or a
    shared generator that keys the rows; `stop`, an optional `EarlyStop` (one bound per row).

    Finished rows are handed to `lm.retire` (a backend may keep their encoding for later contexts
    that extend them, such as the prefix `x_<m` of the next MH proposal) and dropped from the batch
    (`lm.select_rows`); this is `ContinuousBatch` with every request submitted at once.
    """
    batch = len(contexts)
    caps = torch.as_tensor(max_new_tokens, dtype=torch.long).expand(batch)
    streams = source if isinstance(source, Streams) else random_keys(source, batch)
    engine = ContinuousBatch(lm)
    engine.submit(range(batch), contexts, caps, rules=rule, streams=streams, stop=stop)  # validates the caps
    width = max(int(caps.max()) if batch else 0, 1)
    device = contexts.ids.device
    tokens = torch.zeros(batch, width, dtype=torch.long, device=device)
    stats = {name: torch.zeros(batch, width, dtype=torch.float64, device=device) for name in ("log_p", "log_q", "entropy")}
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    ended = torch.zeros(batch, dtype=torch.bool, device=device)
    law = torch.zeros(batch, dtype=torch.long, device=device)
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)
    while engine.busy:
        keys, done = engine.step()
        if not keys:
            continue
        rows = torch.as_tensor(keys, device=device)
        span = done.tokens.ids.shape[1]
        tokens[rows, :span] = done.tokens.ids.to(device)
        for name, values in stats.items():
            values[rows, :span] = getattr(done, name).to(device)
        lengths[rows], ended[rows], law[rows] = done.tokens.lengths.to(device), done.ended.to(device), done.laws().to(device)
        stopped[rows] = done.stopped().to(device)
    return Continuation(TokenBatch(tokens, lengths), stats["log_p"], stats["log_q"], stats["entropy"], ended, law, stopped)


def score_continuations(lm: LanguageModel, contexts: TokenBatch, continuations: TokenBatch, rule: SamplingRule) -> Continuation:
    """Per-token statistics of given continuations (no sampling), as `sample_continuations` reports them."""
    stats = lm.positionwise(contexts, continuations, lambda lp, tok: token_statistics(lp, tok, rule))
    lengths = continuations.lengths
    last = continuations.ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    ended = (lengths > 0) & is_eos(last, lm.eos_token_ids)
    law = torch.full_like(lengths, sampling_law(lm, rule))
    return Continuation(continuations, stats["log_p"], stats["log_q"], stats["entropy"], ended, law)
