"""What the repository's scripts (`experiments/*.py`, `paper_figures/*.py`) share: one-line Ctrl-C
and where a quick run writes.

* `script_main(main)` runs a script's `main()` with stdout line-buffered (a progress line reaches a
  pipe or log file when it is printed, not when a buffer fills).  Ctrl-C ends the script with one
  line on stderr, `SCRIPT: interrupted (Ctrl-C)[; DETAIL]`, and exit status 130 (as `mcmc-llm`
  does), never a traceback.  DETAIL is the text the KeyboardInterrupt carries; `keeping` sets it.
* `keeping(path, resume)` wraps the part of a script that writes `path` as it goes (append-only
  results): an interrupt inside it reports "partial results kept in PATH" and, if given, how to
  resume (e.g. "rerun with --out PATH to resume").
* `quick_output(name)` is where a quick (smoke) run writes unless the user names a place: a fresh
  temporary directory outside the repository, so a smoke run never leaves files in the checkout.

The CPU thread policy of a script is the CLI's (`mcmc_llm.lm.threads`): a `--threads N` flag
(`mcmc_llm.commands.common.add_threads_argument`) passed to `load_model(spec, threads=N)`, or to
`configure_threads(N, "cpu")` by a script that builds a toy LM itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's status for a command stopped by Ctrl-C


def script_main(main: Callable[[], object]) -> None:
    """Run `main()` (stdout line-buffered); on Ctrl-C write one line naming the script (and the
    interrupt's detail) and exit 130."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        main()
    except KeyboardInterrupt as interrupt:
        detail = str(interrupt).strip()
        name = Path(sys.argv[0]).name or "script"
        sys.stdout.flush()
        sys.stderr.write(f"{name}: interrupted (Ctrl-C){'; ' + detail if detail else ''}\n")
        sys.exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def keeping(path: str | os.PathLike, resume: str | None = None) -> Iterator[None]:
    """Within the block, Ctrl-C says that what was already written to `path` is kept (and `resume`)."""
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"partial results kept in {os.fspath(path)}{'; ' + resume if resume else ''}") from None


def quick_output(name: str) -> Path:
    """A new, empty directory for a quick run's outputs, under the system's temporary directory
    ($TMPDIR, else /tmp), named after `name`."""
    return Path(tempfile.mkdtemp(prefix=f"mcmc_llm_{name}_quick_"))


__all__ = ["EXIT_INTERRUPTED", "keeping", "quick_output", "script_main"]
