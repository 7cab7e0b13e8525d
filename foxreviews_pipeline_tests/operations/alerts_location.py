"""The code location of the alert tests: the platform's assets, checks, jobs and resources
with a small sample day, and the alert sensors as the only sensors (no other sensor or
schedule starts runs of its own during a test)."""

from __future__ import annotations

import dagster as dg

from foxreviews_pipeline.definitions import build_defs
from foxreviews_pipeline.defs import alerts
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.settings import Settings, load_settings

SAMPLE_SIZE = 400


def location(settings: Settings) -> dg.Definitions:
    platform = build_defs(settings)
    alerting = alerts.build_definitions(settings)
    return dg.Definitions(
        assets=platform.assets,
        asset_checks=platform.asset_checks,
        jobs=platform.jobs,
        resources={
            **(platform.resources or {}),
            "sirene": SireneSource(
                sample_size=SAMPLE_SIZE,
                quota_state_path=str(settings.home / "run" / "insee_quota.sqlite"),
            ),
            **(alerting.resources or {}),
        },
        sensors=alerting.sensors,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return location(load_settings())
