#!/usr/bin/env bash
# Creates .venv, installs the project with its test tools and prepares the Dagster instance
# ($FOXREVIEWS_HOME/dagster, recorded in .env for every Dagster command). Idempotent:
# re-running it only installs what changed. Needs Python 3.11+ and pip; everything else
# comes from PyPI.
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
# setuptools came with the venv, not through uv, so uv's cache lacks it although a dependency
# needs it: installed once more through uv, every dependency is in the cache, and the wheel
# test installs the built package offline from it.
.venv/bin/uv pip install --quiet --python .venv/bin/python --reinstall-package setuptools setuptools
# The instance: $FOXREVIEWS_HOME/dagster/dagster.yaml, Dagster's database beside the data,
# DAGSTER_HOME in .env. A database that does not answer yet is not fatal to the set-up.
if ! .venv/bin/foxreviews instance; then
  echo "setup: the Dagster instance is not prepared yet; run .venv/bin/foxreviews instance" \
       "once the database answers" >&2
fi
echo "setup: .venv ready ($(.venv/bin/python --version))"
