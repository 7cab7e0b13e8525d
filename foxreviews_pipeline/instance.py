"""The one Dagster instance every process of the platform shares.

Dagster finds its instance through `DAGSTER_HOME`, and every Dagster command (`dg`,
`dagster`, `dagster-webserver`, `dagster-daemon`, `dagster code-server`) reads a `.env` file
from the folder it starts in. So:

- the instance lives in `$FOXREVIEWS_HOME/dagster`, its `dagster.yaml` a copy of the
  template shipped in this package (dagster-postgres storage, URL read from
  `FOXREVIEWS_DAGSTER_DATABASE_URL`);
- `foxreviews instance` (run by `scripts/setup.sh`) writes that copy, creates Dagster's
  database `<data database>_dagster` beside the data, and records `DAGSTER_HOME` and
  `FOXREVIEWS_DAGSTER_DATABASE_URL` in a marked block of the project's `.env` (or of the
  environment file given, e.g. a systemd `EnvironmentFile`);
- `foxreviews run-day` derives the same two values from the settings itself.

Nothing here imports Dagster: the instance is configured only through `dagster.yaml`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from foxreviews_pipeline import top_level
from foxreviews_pipeline.lib.db.server import dagster_storage_url
from foxreviews_pipeline.lib.settings import Settings, project_folder

STORAGE_URL_VARIABLE = "FOXREVIEWS_DAGSTER_DATABASE_URL"
# The top-level dagster.yaml (package data in a wheel, so that an installed wheel prepares its
# instance as a checkout does).
TEMPLATE = top_level("dagster.yaml")
BLOCK_BEGIN = "# >>> foxreviews instance: written by `foxreviews instance`, do not edit >>>"
BLOCK_END = "# <<< foxreviews instance <<<"
# Pools whose limit is not the instance's default of 1 (dagster.yaml can only set the
# default): the stock's partitions write the directory two at a time, one per core.
POOL_LIMITS = {"directory_writes": 2}


def default_env_file() -> Path:
    """The project's `.env`: in the source checkout, or in the folder the command starts in
    when the package is installed from a wheel."""
    return project_folder() / ".env"


def dagster_home(settings: Settings) -> Path:
    """The instance folder: `$FOXREVIEWS_HOME/dagster`."""
    return settings.home / "dagster"


def write_instance_yaml(home: Path) -> Path:
    """Write `home/dagster.yaml` from the template (only when it differs); return its path."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    text = (
        f"# Copied from {TEMPLATE} by `foxreviews instance`: edit the template, not this copy.\n"
        + TEMPLATE.read_text(encoding="utf-8")
    )
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    return target


def prepare_instance(settings: Settings) -> dict[str, str]:
    """Make the instance usable and return the variables that point a process at it.

    Starts the embedded server when it is the data's server, creates Dagster's database if
    needed and writes `$DAGSTER_HOME/dagster.yaml`.
    """
    home = dagster_home(settings)
    write_instance_yaml(home)
    return {"DAGSTER_HOME": str(home), STORAGE_URL_VARIABLE: dagster_storage_url(settings)}


def set_pool_limits(values: dict[str, str]) -> None:
    """Record `POOL_LIMITS` in the instance `values` point at, with Dagster's own command
    (pool limits live in Dagster's database, not in dagster.yaml)."""
    dagster = Path(sys.executable).with_name("dagster")
    for pool, limit in POOL_LIMITS.items():
        subprocess.run(
            [str(dagster), "instance", "concurrency", "set", pool, str(limit)],
            env={**os.environ, **values},
            check=True,
            capture_output=True,
        )


def use_instance(settings: Settings) -> None:
    """Point this process at the platform's instance (`dg.DagsterInstance.get()` then finds it).

    The values derived from the settings win over any inherited ones, so that the data and
    Dagster's history always stay on the same server."""
    os.environ.update(prepare_instance(settings))


def _quote(value: str) -> str:
    # Single quotes mean "no escapes" for python-dotenv and systemd alike.
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_env_block(path: Path, values: dict[str, str]) -> bool:
    """Replace (or append) the marked block of `path` with `values`; keep every other line.

    Returns whether the file changed. A new file is created readable by its owner only
    (the storage URL of a real server carries its password)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if BLOCK_BEGIN in lines and BLOCK_END in lines[lines.index(BLOCK_BEGIN):]:
        start = lines.index(BLOCK_BEGIN)
        end = lines.index(BLOCK_END, start)
        kept = lines[:start] + lines[end + 1 :]
        insert_at = start
    else:
        kept = lines
        insert_at = len(lines)
    block = [BLOCK_BEGIN, *(f"{name}={_quote(value)}" for name, value in values.items()), BLOCK_END]
    new_lines = kept[:insert_at] + block + kept[insert_at:]
    text = "\n".join(new_lines) + "\n"
    if path.exists():
        # An existing file that holds a secret (the INSEE key, a password in a URL, the
        # storage URL) is made readable by its owner only, changed or not.
        if stat.S_IMODE(path.stat().st_mode) & 0o077 and _holds_secret(text):
            path.chmod(0o600)
        if path.read_text(encoding="utf-8") == text:
            return False
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
    path.write_text(text, encoding="utf-8")
    return True


# Variables whose value is, or may carry, a secret.
_SECRET_NAMES = ("FOXREVIEWS_INSEE_API_KEY", "FOXREVIEWS_DATABASE_URL", STORAGE_URL_VARIABLE)


def _holds_secret(text: str) -> bool:
    return any(
        line.strip().removeprefix("export ").lstrip().startswith(f"{name}=")
        for line in text.splitlines()
        for name in _SECRET_NAMES
    )
