"""mcmc_llm: Markov chain Monte Carlo over language-model outputs."""

__version__ = "0.1.0"
