"""Old names kept at the outer edges: a CLI flag, a config key or a constructor keyword that was
renamed still works, with one message naming its new name (docs/api.md, "Old names").

The message is a `FutureWarning` (shown by default, unlike `DeprecationWarning`); the CLI prints
each as one line, `mcmc-llm: deprecated: ...` (`one_line_warnings`).
"""

from __future__ import annotations

import sys
import warnings


class OldNameWarning(FutureWarning):
    """A renamed setting was given under its old name."""


def deprecated_name(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that `old` is the old name of `new` (both as the user wrote them)."""
    warnings.warn(f"{old} is the old name of {new}; use {new} (the old name will be removed)", OldNameWarning,
                  stacklevel=stacklevel)


def one_line_warnings(prog: str) -> None:
    """Print every `OldNameWarning` as one line `PROG: deprecated: MESSAGE` on stderr (installed once;
    a later call only changes PROG)."""
    previous = warnings.showwarning
    if getattr(previous, "one_line_prog", None) is not None:
        previous.one_line_prog[0] = prog
        return
    name = [prog]

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, OldNameWarning):
            return previous(message, category, filename, lineno, file, line)
        sys.stderr.write(f"{name[0]}: deprecated: {message}\n")

    show.one_line_prog = name
    warnings.showwarning = show


__all__ = ["OldNameWarning", "deprecated_name", "one_line_warnings"]
