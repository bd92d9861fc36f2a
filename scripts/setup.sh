#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its test/fixture extras. Sourced by the others.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch is pinned in the extras (2.13.0: the CPU build); see pyproject.toml
python -m pip install -q -e ".[test]"
