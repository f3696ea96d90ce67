#!/usr/bin/env bash
# The ArviZ 1.x leg: tests/arviz_compat in a fresh Python 3.12 venv with arviz>=1 (DataTree API).
# torch is not installed (no wheel is needed: the diagnostics import numpy, ArviZ and matplotlib only),
# so mcmc_llm is installed with --no-deps.  Run from anywhere; it works in the repository root.
# Without Python 3.12 it skips (exit 0) on a workstation, but fails (exit 1) under CI (CI set, e.g. CI=true),
# so that a CI image that lost Python 3.12 cannot silently drop the ArviZ 1.x leg.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

find_python312() {
    local root candidate
    if command -v pyenv >/dev/null 2>&1; then root="$(pyenv root)"; else root="${PYENV_ROOT:-$HOME/.pyenv}"; fi
    # the newest pyenv 3.12.x, then any python3.12 on PATH
    candidate="$(ls -d "$root"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$candidate" ]; then candidate="$(command -v python3.12 || true)"; fi
    printf '%s' "$candidate"
}

python312="$(find_python312)"
if [ -z "$python312" ]; then
    case "${CI:-}" in
        "" | 0 | false | FALSE | False | no)
            echo "arviz1.sh: SKIPPED the ArviZ 1.x tests: no Python 3.12 found (pyenv versions/3.12* or python3.12 on PATH)"
            exit 0 ;;
        *)
            echo "arviz1.sh: FAILED: CI=$CI but no Python 3.12 found (pyenv versions/3.12* or python3.12 on PATH);" \
                 "the ArviZ 1.x tests cannot run. Install Python 3.12 in the CI image." >&2
            exit 1 ;;
    esac
fi
echo "arviz1.sh: using $python312 ($("$python312" --version 2>&1))"

venv="$(mktemp -d "${TMPDIR:-/tmp}/mcmc_llm_arviz1.XXXXXX")"
trap 'rm -rf "$venv"' EXIT
"$python312" -m venv "$venv"
"$venv/bin/python" -m pip install -q "arviz>=1" numpy scipy matplotlib pytest h5netcdf h5py   # scipy: mcmc_llm.testing; h5netcdf, h5py: netCDF
"$venv/bin/python" -m pip install -q --no-deps -e .
"$venv/bin/python" -c 'import arviz, sys; print(f"arviz1.sh: arviz {arviz.__version__} on Python {sys.version.split()[0]}")'
# --noconftest: a conftest.py of the main suite may import torch, which this venv does not have.
MPLBACKEND=Agg "$venv/bin/python" -m pytest tests/arviz_compat -q --noconftest -p no:cacheprovider
