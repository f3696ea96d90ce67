"""The protocols every sampler is made of (`protocols`), explicit random streams (`random`),
chain-batched trees (`tree`), traces (`trace`), the one recorder of traces (`recorder`) and the
checks of numeric arguments, with one wording for their messages (`validate`).

Import from the modules (`from mcmc_llm.core.protocols import Move`); the most used names are also
importable from `mcmc_llm` itself.  Nothing is imported here, so `mcmc_llm.core.trace` (numpy only)
works where torch is absent.
"""
