#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. Idempotent: re-running it
# only installs what changed. Needs Python 3.11+ and pip; everything else comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# uv installs the ~150 packages of Dagster ten times faster than pip.
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi
# --compile-bytecode: Dagster starts several processes; without .pyc files each re-compiles.
.venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python -e '.[test]'
echo "setup: .venv ready ($(.venv/bin/python --version))"
