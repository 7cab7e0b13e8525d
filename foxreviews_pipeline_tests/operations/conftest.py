"""A project folder as an operator has it after `scripts/setup.sh`, pointed at this test's
database: the project's `pyproject.toml` and workspace files, a `.env` with the operator's
settings and the block `foxreviews instance` writes. Commands run in it with nothing else
in their environment, as in a fresh shell (the package comes from the installed venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foxreviews_pipeline.lib.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent


def bare_env(**extra: str) -> dict[str, str]:
    """A fresh shell's environment: PATH and HOME, nothing of Dagster or FoxReviews."""
    env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is not installed (run scripts/setup.sh)"
    return str(path)


@pytest.fixture
def dagster_storage_db(pg_server_url: str, database_url: str):
    """Dagster's own database beside the test database (created by the instance), dropped after."""
    from foxreviews_pipeline.lib.db.server import database_name
    from foxreviews_pipeline_tests.conftest import drop_database

    name = database_name(database_url) + "_dagster"
    yield name
    drop_database(pg_server_url, name)


@pytest.fixture
def project_folder(platform_env: dict[str, str], tmp_path: Path, dagster_storage_db: str) -> Path:
    folder = tmp_path / "project"
    (folder / "deploy").mkdir(parents=True)
    for name in ("pyproject.toml", "workspace.yaml", "deploy/workspace.yaml"):
        shutil.copy(PROJECT_ROOT / name, folder / name)
    (folder / ".env").write_text(
        "# the operator's settings\n" + "".join(f"{k}={v}\n" for k, v in platform_env.items())
    )
    result = subprocess.run(
        [tool("foxreviews"), "instance", "--env-file", str(folder / ".env")],
        cwd=folder, env=bare_env(**platform_env), capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder
