"""Evaluation: sampling methods, TOML experiment configs, a resumable runner, summaries, scale-out.

    from mcmc_llm.evaluation import load_config, run_experiment
    report = run_experiment(load_config("experiments/configs/quick_arithmetic.toml"))
    print(report.table())

Command line: `mcmc-llm run CONFIG.toml` (see docs/evaluation.md).
"""

from mcmc_llm.evaluation.config import (
    ConfigError, ExperimentConfig, ModelConfig, OutputConfig, SamplingConfig, ScaleoutConfig, TaskConfig, load_config,
    parse_config, read_document, smoke_document,
)
from mcmc_llm.evaluation.method_config import MethodConfig
from mcmc_llm.evaluation.methods import (
    METHOD_KINDS, BaseSampling, BestOfN, GreedyDecoding, LowTemperatureSampling, MajorityVote, Method, MethodSample,
    PowerSampling, RolloutSampling, SMCSampling, matched_n, power_token_budget,
)
from mcmc_llm.evaluation.results import MethodSummary, ResultsWriter, format_summary, read_records, summarize
from mcmc_llm.evaluation.executor import UnitExecutor, WorkUnit
from mcmc_llm.evaluation.runner import RunReport, record_content, run_experiment, unit_seed

__all__ = [
    "ConfigError", "ExperimentConfig", "MethodConfig", "ModelConfig", "OutputConfig", "SamplingConfig", "ScaleoutConfig",
    "TaskConfig", "load_config", "parse_config", "read_document", "smoke_document",
    "METHOD_KINDS", "BaseSampling", "BestOfN", "GreedyDecoding", "LowTemperatureSampling", "MajorityVote", "Method",
    "MethodSample", "PowerSampling", "RolloutSampling", "SMCSampling", "matched_n", "power_token_budget",
    "MethodSummary", "ResultsWriter", "format_summary", "read_records", "summarize",
    "RunReport", "UnitExecutor", "WorkUnit", "record_content", "run_experiment", "unit_seed",
]
