"""Start-up refuses folders it cannot use and a stock file that is not there, in one line
naming the variable, for `foxreviews check` as for every other command."""

from __future__ import annotations

from pathlib import Path

import pytest

from foxreviews_pipeline.lib.settings import ConfigurationError, load_settings

from .conftest import run_foxreviews, subprocess_env


def _cases(tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    return {
        "home is a file": ({"FOXREVIEWS_HOME": str(a_file)}, "FOXREVIEWS_HOME must be a folder"),
        "home inside a file": (
            {"FOXREVIEWS_HOME": str(a_file / "home")}, "FOXREVIEWS_HOME cannot be created"
        ),
        # /proc refuses new files even to root, for whom permission bits mean nothing.
        "home not writable": ({"FOXREVIEWS_HOME": "/proc"}, "FOXREVIEWS_HOME is not writable"),
        "upload dir is a file": (
            {"FOXREVIEWS_UPLOAD_DIR": str(a_file)}, "FOXREVIEWS_UPLOAD_DIR must be a folder"
        ),
        "upload dir cannot be created": (
            {"FOXREVIEWS_UPLOAD_DIR": "/proc/uploads"}, "FOXREVIEWS_UPLOAD_DIR cannot be created in /proc"
        ),
        "stock path missing": (
            {"FOXREVIEWS_SIRENE_SOURCE": "stock",
             "FOXREVIEWS_SIRENE_STOCK_PATH": str(tmp_path / "StockEtablissement_utf8.zip")},
            "FOXREVIEWS_SIRENE_STOCK_PATH does not exist",
        ),
        "stock path is a folder": (
            {"FOXREVIEWS_SIRENE_SOURCE": "stock", "FOXREVIEWS_SIRENE_STOCK_PATH": str(tmp_path)},
            "FOXREVIEWS_SIRENE_STOCK_PATH is not a file",
        ),
    }


CASES = [
    "home is a file", "home inside a file", "home not writable", "upload dir is a file",
    "upload dir cannot be created", "stock path missing", "stock path is a folder",
]


@pytest.mark.parametrize("case", CASES)
def test_load_settings_refuses(case, tmp_path):
    env, message = _cases(tmp_path)[case]
    env = {"FOXREVIEWS_HOME": str(tmp_path / "home"), **env}
    with pytest.raises(ConfigurationError, match=message):
        load_settings(env)


@pytest.mark.parametrize("command", [("check",), ("run-day", "--date", "2026-11-20")])
@pytest.mark.parametrize("case", ["home is a file", "upload dir is a file", "home not writable", "stock path missing"])
def test_commands_refuse_in_one_line(platform_env, tmp_path, case, command):
    env, message = _cases(tmp_path)[case]
    done = run_foxreviews(*command, env=subprocess_env(**env), timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"foxreviews: {message}"), done.stderr


def test_usable_folders_that_do_not_exist_yet_are_accepted(tmp_path):
    settings = load_settings({
        "FOXREVIEWS_HOME": str(tmp_path / "new" / "home"),
        "FOXREVIEWS_UPLOAD_DIR": str(tmp_path / "new" / "uploads"),
    })
    assert settings.home == tmp_path / "new" / "home"
    assert not (tmp_path / "new").exists()  # validating creates nothing


def test_check_passes_on_a_reachable_database(platform_env):
    done = run_foxreviews("check", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Settings(database=postgresql://")


@pytest.mark.parametrize(
    ("date", "rc", "message"),
    [
        ("2026-02-30", 2, "foxreviews: --date must be a day YYYY-MM-DD, got '2026-02-30' (day is out of range for month)"),
        ("20261120", 2, "foxreviews: --date must be a day YYYY-MM-DD, got '20261120' (not of the form YYYY-MM-DD)"),
        ("2025-06-01", 1, "foxreviews: --date 2025-06-01 is outside the SIRENE partitions, which run from "
                          "2026-11-01 (FOXREVIEWS_PARTITIONS_START) to "),
        ("2099-01-01", 1, "foxreviews: --date 2099-01-01 is outside the SIRENE partitions"),
    ],
)
def test_a_wrong_date_is_one_line_naming_the_valid_range(platform_env, date, rc, message):
    done = run_foxreviews("run-day", "--date", date)
    assert done.returncode == rc
    assert done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr


def test_dg_check_defs_with_a_bad_variable_names_it_on_the_first_line(tmp_path):
    """`dg check defs` in a project folder of its own (the project's `.env` would point it at
    the project's instance): the first line it prints to stderr names the variable."""
    import os
    import shutil
    import subprocess
    import sys

    from foxreviews_pipeline.lib.settings import PROJECT_ROOT

    venv = Path(sys.executable).parent.parent
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project / "pyproject.toml")
    (project / "foxreviews_pipeline").symlink_to(PROJECT_ROOT / "foxreviews_pipeline")
    (project / ".venv").symlink_to(venv)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXREVIEWS_")}
    env.update(
        FOXREVIEWS_SIRENE_SOURCE="bogus", FOXREVIEWS_HOME=str(tmp_path / "fx"),
        VIRTUAL_ENV=str(project / ".venv"), DAGSTER_HOME=str(home),
    )
    done = subprocess.run(
        [str(venv / "bin" / "dg"), "check", "defs"], cwd=project, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0
    first = next(line for line in done.stderr.splitlines() if line.strip())
    assert first == "foxreviews: FOXREVIEWS_SIRENE_SOURCE must be one of sample, api, stock, got 'bogus'"
