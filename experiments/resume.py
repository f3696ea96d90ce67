"""Resuming experiment scripts: which runs an append-only JSONL results file already holds."""

from __future__ import annotations

import json
from pathlib import Path


def completed_keys(path: Path, fields: tuple[str, ...]) -> set[tuple]:
    """`{(row[f] for f in fields)}` over the complete rows of `path`; a torn last line is skipped."""
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done.add(tuple(row[field] for field in fields))
    return done
