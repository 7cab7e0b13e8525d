"""Freshness: an import that has not succeeded for 36 hours shows as stale.

The policy is evaluated by Dagster's own freshness daemon iteration (what `dagster-daemon`
runs when `freshness: enabled` is set in dagster.yaml) with the clock moved forward. Dagster
offers no public entry point to one daemon iteration, so this test alone reaches into
Dagster's test utilities.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import time_machine

from foxreviews_pipeline.defs.directory.assets import directory_day
from foxreviews_pipeline.defs.sirene.assets import etablissements_raw
from foxreviews_pipeline.defs.sirene.partitions import DAILY_FRESHNESS, STALE_AFTER
from foxreviews_pipeline.lib.settings import PROJECT_ROOT

DAILY = ("etablissements_raw", "entreprises", "pro_localisations")


def test_each_daily_asset_carries_the_36_hour_policy():
    from foxreviews_pipeline.definitions import defs

    graph = defs().resolve_asset_graph()
    for key in DAILY:
        assert graph.get(dg.AssetKey(key)).freshness_policy == DAILY_FRESHNESS
    assert STALE_AFTER == timedelta(hours=36)


def test_the_project_instance_enables_freshness():
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert config["freshness"] == {"enabled": True}


@pytest.mark.slow
def test_an_import_stale_for_36_hours_is_reported_failing(platform_env, database_url, dagster_storage_db):
    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.freshness import FreshnessDaemon

    from foxreviews_pipeline.defs.resources import build_resources
    from foxreviews_pipeline.defs.sirene.resources import SireneSource
    from foxreviews_pipeline.lib.settings import load_settings
    from foxreviews_pipeline_tests.pipeline.conftest import load_reference

    load_reference(database_url)
    resources = {**build_resources(load_settings()), "sirene": SireneSource(sample_size=300)}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [etablissements_raw, directory_day], partition_key="2026-11-20",
            resources=resources, instance=instance,
        )
        assert result.success
        target = ModuleTarget(
            module_name="foxreviews_pipeline.definitions", attribute="defs",
            working_directory=str(PROJECT_ROOT), location_name="foxreviews",
        )

        def states() -> dict[str, str]:
            with create_test_daemon_workspace_context(target, instance) as context:
                list(FreshnessDaemon().run_iteration(context))
            records = instance.get_freshness_state_records([dg.AssetKey(k) for k in DAILY])
            return {k.to_user_string(): r.freshness_state for k, r in records.items()}

        now = datetime.now(UTC)
        assert set(states().values()) == {FreshnessState.PASS}
        with time_machine.travel(now + timedelta(hours=31), tick=False):
            assert set(states().values()) == {FreshnessState.WARN}
        with time_machine.travel(now + timedelta(hours=37), tick=False):
            assert set(states().values()) == {FreshnessState.FAIL}
