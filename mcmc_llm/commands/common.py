"""What the commands share: output-path checks, safe writes, model flags, threads, progress, prompts, records.

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

from mcmc_llm.core.validate import argparse_integer


def old_flag(new: str) -> type[argparse.Action]:
    """An argparse action for a renamed flag: stores like `new` and prints one deprecation line."""

    class OldFlag(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            from mcmc_llm.core.deprecation import deprecated_name

            deprecated_name(option_string, new)
            setattr(namespace, self.dest, values)

    return OldFlag


def add_threads_argument(parser: argparse.ArgumentParser, default_text: str = "1 on a CPU") -> None:
    parser.add_argument("--threads", type=argparse_integer("--threads"), default=None, metavar="N",
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


def read_prompts(args: argparse.Namespace) -> list[str | None]:
    """The prompt texts of a `sample` run, in order: each `--prompt TEXT` (`--prompt -`: standard
    input, one prompt per line), then the `"prompt"` field of each line of `--prompt-file FILE`
    (JSONL); blank lines are skipped.  [None] (the empty prompt) when none is given.  ValueError
    naming the file and line of anything unreadable."""
    texts: list[str | None] = []
    flags = list(getattr(args, "prompt", None) or [])
    if flags.count("-") > 1:
        raise ValueError("--prompt - (standard input) can be given once")
    for text in flags:
        if text != "-":
            texts.append(text)
            continue
        lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not lines:
            raise ValueError("--prompt -: standard input holds no prompt (one prompt per line)")
        texts += lines
    path = getattr(args, "prompt_file", None)
    if path is not None:
        texts += read_prompt_file(Path(path))
    return texts or [None]


def read_prompt_file(path: Path) -> list[str]:
    """The `"prompt"` strings of a JSONL file, one object per non-blank line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--prompt-file {path} cannot be read: {getattr(error, 'strerror', None) or error}") from None
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"--prompt-file {path} line {number}: expected a JSON object with a string \"prompt\" "
                             f"field, got {line[:80]!r}")
        prompts.append(record["prompt"])
    if not prompts:
        raise ValueError(f"--prompt-file {path} holds no prompt (one JSON object with a \"prompt\" field per line)")
    return prompts


def add_sample_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The prompt, chat-template, EOS and output-text flags of `sample` (read by
    `load_model_and_prompts` and `sequence_fields`)."""
    parser.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                        help="prompt text (repeat for several prompts, batched together); '-' reads prompts from "
                             "standard input, one per line; for models without a tokenizer, space-separated token "
                             "ids (default: the empty prompt for toy models)")
    parser.add_argument("--prompt-file", type=Path, default=None, metavar="FILE",
                        help="JSONL file of prompts, one object per line with a string \"prompt\" field (other "
                             "fields ignored); read after any --prompt")
    parser.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap each text prompt as one user turn in the tokenizer's chat template (default: on "
                             "for the embedded instruct model, off for other models)")
    parser.add_argument("--eos-token-id", type=argparse_integer("--eos-token-id", 0), action="append", default=None,
                        metavar="ID", help="a token id that ends a sequence (repeat for several): replaces the "
                                           "model's EOS set (default: the model's own)")
    parser.add_argument("--stop", action="append", default=None, metavar="TEXT",
                        help="a stop string: it must be exactly one token, which joins the EOS set (the sequence ends "
                             "at that token; the same text made of other tokens does not end it)")
    parser.add_argument("--keep-special-tokens", action="store_true",
                        help="keep special tokens (EOS, <|im_end|>) in the printed and recorded text (default: left "
                             "out, as decode(..., skip_special_tokens=True); `tokens` always holds every token)")
    parser.add_argument("--token-logprobs", action="store_true",
                        help="add to each record `token_logprobs`: the base model's log-probability of each "
                             "generated token (they sum to `log_p`)")


def load_model_and_prompts(args: argparse.Namespace):
    """(lm, prompt texts, prompt ids): the prompts read (`read_prompts`), `--model` loaded with the
    thread policy, `--chat-template`, `--eos-token-id` and `--stop` (`stop_token_ids`), and each
    prompt encoded and checked against the model's context (`encode_prompts`, `--truncate-prompt`)."""
    from mcmc_llm.lm.prompts import encode_prompts
    from mcmc_llm.lm.registry import load_model, with_eos_token_ids
    from mcmc_llm.lm.text import stop_token_ids

    texts = read_prompts(args)
    chat_template = getattr(args, "chat_template", None)
    lm = load_model(args.model, device=args.device, dtype=args.dtype, chat_template=chat_template,
                    eos_token_ids=getattr(args, "eos_token_id", None), threads=getattr(args, "threads", None))
    if chat_template and not getattr(getattr(lm, "tokenizer", None), "chat_template", None):
        raise ValueError(f"--chat-template needs a tokenizer with a chat template; model {args.model or 'default'!r} "
                         "has none (use --no-chat-template)")
    stops = stop_token_ids(lm, getattr(args, "stop", None) or [])
    if stops:
        lm = with_eos_token_ids(lm, list(lm.eos_token_ids) + [t for t in stops if t not in lm.eos_token_ids])
    prompts = encode_prompts(lm, texts, args.max_new_tokens, getattr(args, "truncate_prompt", None))
    return lm, texts, prompts


def sequence_fields(final, lm, args: argparse.Namespace) -> list[dict]:
    """Per row of the SequenceBatch `final`: `tokens` (EOS included if emitted), `text` (special
    tokens left out unless --keep-special-tokens), `length`, `ended_with_eos`, `log_p`, and with
    --token-logprobs `token_logprobs` (per-token base log-probabilities summing to `log_p`)."""
    from mcmc_llm.drivers.power_result import token_log_probs
    from mcmc_llm.lm.text import completion_text

    skip = not getattr(args, "keep_special_tokens", False)
    log_p = final.total_log_p().tolist()
    per_token = token_log_probs(final) if getattr(args, "token_logprobs", False) else None
    rows = []
    for row, tokens in enumerate(final.to_lists()):
        fields = {"tokens": tokens, "text": completion_text(lm, tokens, skip), "length": len(tokens),
                  "ended_with_eos": bool(final.ended[row]), "log_p": log_p[row]}
        if per_token is not None:
            fields["token_logprobs"] = per_token[row]
        rows.append(fields)
    return rows


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


def print_records(records: list[dict]) -> None:
    """The decoded samples (each record's `text`), one header line each."""
    for record in records:
        particle = f" particle {record['particle']}" if "particle" in record else ""
        print(f"--- prompt {record['prompt_index']} chain {record['chain']}{particle} "
              f"(log p = {record['log_p']:.2f}, {record['length']} tokens)")
        print(record["text"])


__all__ = [
    "add_model_arguments", "add_sample_model_arguments", "is_sample_record", "load_model_and_prompts",
    "prepare_model_run", "prepare_sample_run", "print_records", "read_prompt_file", "read_prompts", "sequence_fields",
    "add_progress_arguments", "add_threads_argument", "check_output_path", "check_replaceable",
    "jsonl_holds", "progress_enabled", "quiet_libraries", "write_jsonl",
]
