"""What the commands share: output-path checks, safe writes, model flags, threads, progress, prompts.

Every path a command will write is checked by `check_output_path` before any model is loaded, so
a bad path is a one-line error naming the path and the reason, never a traceback after the work is
done.  Files are written whole or not at all (`write_jsonl`: a temporary file renamed into place),
and a command replaces an existing file only when it holds that command's own records
(`check_replaceable`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable


def positive_int(name: str, minimum: int = 1):
    """argparse type: an int >= minimum, with an error naming the flag and the bad value."""
    allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {value}")
        return value

    return parse


def add_threads_argument(parser: argparse.ArgumentParser, default_text: str = "1 on a CPU") -> None:
    parser.add_argument("--threads", type=positive_int("--threads"), default=None, metavar="N",
                        help=f"torch CPU threads (default: OMP_NUM_THREADS when set, else {default_text}; "
                             "see docs/performance.md)")


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show progress bars on stderr (default: only when stderr is a terminal)")


def progress_enabled(args: argparse.Namespace) -> bool:
    """--progress / --no-progress if given; off with --quiet; else on when stderr is a terminal."""
    choice = getattr(args, "progress", None)
    if choice is not None:
        return bool(choice)
    if getattr(args, "quiet", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def quiet_libraries(progress: bool) -> None:
    """Hide transformers' and the Hub's own progress bars (weight loading) unless progress is on."""
    if progress:
        return
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except Exception:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except Exception:
        pass


def check_output_path(path: str | os.PathLike, what: str, *, replace: bool = False) -> Path:
    """`path` as a Path if a file can be written there; ValueError naming it and the reason otherwise
    (it is a directory, a parent is a regular file, the directory cannot be written, ...).  Nothing
    is created: missing parent directories are made only when the file is written.  replace: the
    file will be replaced by renaming a new one onto it (`write_jsonl`), so its directory must be
    writable too, not just the file."""
    text = os.fspath(path)
    path = Path(text)
    if not text or text.endswith(os.sep):
        raise ValueError(f"{what} {text!r} names a directory, not a file")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory, not a file")
    if path.exists():
        if not path.is_file():
            raise ValueError(f"{what} {path} exists and is not a regular file")
        try:
            with path.open("ab"):
                pass
        except OSError as error:
            raise ValueError(f"{what} {path} cannot be written: {error.strerror or error}") from None
        if not replace:
            return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {parent} is a file, not a directory")
    if not parent.exists():
        raise ValueError(f"{what} {path} cannot be created: {parent} does not exist")
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if any(len(part.encode()) > limit for part in path.parts):
        raise ValueError(f"{what} {path} cannot be created: a name is longer than {limit} bytes")
    try:
        handle, probe = tempfile.mkstemp(prefix=".mcmc-llm-write-test-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be created: cannot write in {parent} ({error.strerror or error})") from None
    return path


def jsonl_holds(path: Path, is_own: Callable[[dict], bool]) -> bool:
    """True when every non-blank line of `path` is a JSON object for which `is_own` holds."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not is_own(record):
                    return False
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return True


def check_replaceable(path: Path, what: str, is_own: Callable[[dict], bool], whose: str) -> None:
    """ValueError unless `path` is absent, empty, or holds only records for which `is_own` holds
    (the command's own earlier output): any other file is left alone, never overwritten."""
    if path.is_file() and path.stat().st_size > 0 and not jsonl_holds(path, is_own):
        raise ValueError(f"{what} {path} exists and does not hold {whose}; refusing to overwrite it "
                         "(choose another path or remove the file)")


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Write `records` to `path`, one JSON line each, whole or not at all (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fit_prompt(ids: list[int], max_context: int | None, max_new_tokens: int, truncate: str | None,
               index: int = 0) -> list[int]:
    """The prompt's ids if they fit in the model's context with `max_new_tokens` after them; with
    truncate="left", its last tokens that fit; otherwise ValueError naming both numbers."""
    if max_context is None:
        return ids
    if max_new_tokens >= max_context:
        raise ValueError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt: the model's context "
                         f"is {max_context} tokens")
    room = max_context - max_new_tokens
    if len(ids) <= room:
        return ids
    if truncate == "left":
        return ids[-room:]
    raise ValueError(f"prompt {index} is {len(ids)} tokens, more than the model's context ({max_context} tokens) "
                     f"minus --max-new-tokens ({max_new_tokens}) = {room}; shorten it, lower --max-new-tokens, "
                     "or pass --truncate-prompt left")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype and --threads: the flags of every command that loads a model."""
    from mcmc_llm.lm.registry import MODEL_SPEC_HELP

    parser.add_argument("--model", default=None, metavar="SPEC", help=MODEL_SPEC_HELP)
    parser.add_argument("--device", default="auto", help="torch device for transformers models: auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="weights dtype for transformers models: auto, float32, bfloat16, float16")
    add_threads_argument(parser)


def prepare_model_run(args: argparse.Namespace, outputs: dict[str, Path | None]) -> bool:
    """Everything that can fail before a model is loaded: the output paths (`{flag: path}`), the
    device and dtype names, the thread policy (`mcmc_llm.lm.threads`).  Returns whether progress
    bars are on."""
    from mcmc_llm.lm.devices import resolve_device, resolve_dtype
    from mcmc_llm.lm.threads import configure_threads

    for what, path in outputs.items():
        if path is not None:
            check_output_path(path, what, replace=True)
    device = resolve_device(getattr(args, "device", "auto"))
    resolve_dtype(getattr(args, "dtype", "auto"), device)
    configure_threads(getattr(args, "threads", None), device)
    progress = progress_enabled(args)
    quiet_libraries(progress)
    return progress


def load_model_and_prompts(args: argparse.Namespace):
    """(lm, prompt texts, prompt ids): `--model` loaded, each `--prompt` encoded and checked against the
    model's context (`fit_prompt`, `--truncate-prompt`)."""
    from mcmc_llm.lm.registry import load_model

    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    texts = args.prompt or [None]
    truncate = getattr(args, "truncate_prompt", None)
    prompts = [fit_prompt(lm.encode_prompt(text), getattr(lm, "max_context", None), args.max_new_tokens, truncate, i)
               for i, text in enumerate(texts)]
    return lm, texts, prompts


def is_sample_record(record: dict) -> bool:
    """A record `mcmc-llm sample` writes (what its --out may replace)."""
    return {"prompt_index", "chain", "tokens", "log_p"} <= record.keys()


def prepare_sample_run(args: argparse.Namespace, trace: Path | None = None) -> bool:
    """`sample`: checks --out (and the trace file beside it) before any model is loaded, then the device
    and the threads (`prepare_model_run`); returns whether progress bars are on."""
    outputs = {"--out": args.out}
    if args.out is not None:
        outputs["--save-trace: trace file"] = trace
        check_replaceable(args.out, "--out", is_sample_record, "`mcmc-llm sample` records")
    return prepare_model_run(args, outputs)


def print_records(records: list[dict], lm) -> None:
    """The decoded samples, one header line each (special tokens left out of the text)."""
    for record in records:
        particle = f" particle {record['particle']}" if "particle" in record else ""
        print(f"--- prompt {record['prompt_index']} chain {record['chain']}{particle} "
              f"(log p = {record['log_p']:.2f}, {record['length']} tokens)")
        print(display_text(lm, record["tokens"]))


def display_text(lm, tokens) -> str:
    """Generated tokens as text for a terminal: special tokens (`<|im_end|>`, EOS) left out."""
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is not None:
        try:
            return tokenizer.decode(list(tokens), skip_special_tokens=True)
        except Exception:
            pass
    return lm.decode(tokens)


__all__ = [
    "add_model_arguments", "display_text", "is_sample_record", "load_model_and_prompts", "prepare_model_run",
    "prepare_sample_run", "print_records",
    "add_progress_arguments", "add_threads_argument", "check_output_path", "check_replaceable", "fit_prompt",
    "jsonl_holds", "positive_int", "progress_enabled", "quiet_libraries", "write_jsonl",
]
