"""The protocols every sampler is made of (`protocols`), explicit random streams (`random`),
chain-batched trees (`tree`), traces (`trace`) and the one recorder of traces (`recorder`).

Import from the modules (`from mcmc_llm.core.protocols import Move`); the most used names are also
importable from `mcmc_llm` itself.  Nothing is imported here, so `mcmc_llm.core.trace` (numpy only)
works where torch is absent.
"""
