"""The transformers backend: a Hugging Face causal LM as a `LanguageModel` (`HFLanguageModel`).

* `language_model`: `HFLanguageModel`, batched and KV-cached, with prompt-prefix and
  retired-sequence reuse; it picks a decoding engine (`engine=`) and packs linear layers.
* `static`, `slots`: the static-slot engine (`engine="static"`, the default where supported):
  key/value slots preallocated per layer and written in place; linear states.
* `decode_step`: the static engine's static-shape decoding step (`graphs=`), eager, compiled or
  captured as CUDA graphs.
* `dynamic`, `layout`: the dynamic engine (`engine="dynamic"`): immutable states, the slot layout
  of a batch (masked holes, explicit positions).
* `reuse`: the caches both engines share, `PrefixCache` (registered prompts) and `SequenceStash`
  (retired rows).
* `packed_linear`: float32 CPU linear layers on weights packed once for oneDNN (`packed_linear=`).

Device and dtype names (`mcmc_llm.lm.devices`) and the CPU thread policy (`mcmc_llm.lm.threads`)
are not transformers-specific and stay in `mcmc_llm.lm`; `mcmc_llm.lm.registry.load_model` builds
an `HFLanguageModel` from a model spec.
"""

from mcmc_llm.lm.hf.language_model import HFLanguageModel

__all__ = ["HFLanguageModel"]
