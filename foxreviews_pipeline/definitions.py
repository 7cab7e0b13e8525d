"""The code location: every asset, check, job, schedule, sensor and resource of the platform.

Settings are validated on import, so a wrong environment variable stops `dagster dev`,
`dagster asset materialize` and the daemon at start-up with a message naming it.
"""

from __future__ import annotations

import importlib

import dagster as dg

from foxreviews_pipeline.defs.resources import build_resources
from foxreviews_pipeline.lib.settings import load_dotenv_file, load_settings

load_dotenv_file()
settings = load_settings()

_DOMAINS = ("reference", "sirene", "directory", "uploads", "maintenance")


def _domain_definitions() -> list[dg.Definitions]:
    found = []
    for domain in _DOMAINS:
        try:
            module = importlib.import_module(f"foxreviews_pipeline.defs.{domain}.definitions")
        except ModuleNotFoundError as exc:
            if exc.name != f"foxreviews_pipeline.defs.{domain}.definitions":
                raise
            continue
        found.append(module.build_definitions(settings))
    return found


defs = dg.Definitions.merge(
    *_domain_definitions(),
    dg.Definitions(resources=build_resources(settings)),
)
