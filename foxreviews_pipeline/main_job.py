"""The main job, as `foxreviews run-day` runs it: reference data, one SIRENE day end to end,
then ville_stats — through Dagster, so every run shows in the web UI afterwards."""

from __future__ import annotations

import sys
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from foxreviews_pipeline.instance import use_instance
from foxreviews_pipeline.lib.settings import Settings

REFERENCE_ASSETS = ("naf_nomenclature", "trade_taxonomy", "villes")
DAILY_ASSETS = ("etablissements_raw", "entreprises", "pro_localisations")
REFERENCE_JOB, DAILY_JOB, VILLE_STATS_JOB = "reference_data", "sirene_daily", "ville_stats_refresh"


def project_instance(settings: Settings) -> dg.DagsterInstance:
    """The platform's instance, `$FOXREVIEWS_HOME/dagster`: the one the webserver, the daemon
    and every `dg`/`dagster` command started from the project folder use."""
    use_instance(settings)
    return dg.DagsterInstance.get()


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        found[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    found["__checks__"] = {
        "passed": sum(1 for c in checks if c.passed),
        "failed": [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed],
    }
    return found


def _run(job: dg.JobDefinition, instance, keys, partition_key=None) -> dict[str, dict]:
    result = job.execute_in_process(
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        instance=instance,
        asset_selection=[dg.AssetKey(k) for k in keys],
        partition_key=partition_key,
        raise_on_error=False,
    )
    if not result.success:
        failures = [
            f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
            for e in result.all_events
            if e.is_step_failure and e.event_specific_data and e.event_specific_data.error
        ]
        raise SystemExit("foxreviews: run failed\n" + "\n".join(failures))
    return _metadata(result)


def run_day(day: str | None, settings: Settings) -> int:
    from foxreviews_pipeline.definitions import defs

    paris_today = datetime.now(ZoneInfo("Europe/Paris")).date()
    target = date.fromisoformat(day) if day else paris_today - timedelta(days=1)
    started = time.perf_counter()
    # Named jobs, so that these runs show on the jobs' pages in the UI.
    with project_instance(settings) as instance:
        print(f"foxreviews: materializing reference data, then SIRENE day {target} ({settings.sirene_source} source)")
        ref = _run(defs.resolve_job_def(REFERENCE_JOB), instance, REFERENCE_ASSETS)
        daily = _run(
            defs.resolve_job_def(DAILY_JOB), instance, DAILY_ASSETS, partition_key=target.isoformat()
        )
        stats = _run(defs.resolve_job_def(VILLE_STATS_JOB), instance, ("ville_stats",))
    elapsed = time.perf_counter() - started

    raw = daily.get("etablissements_raw", {})
    ent = daily.get("entreprises", {})
    pl = daily.get("pro_localisations", {})
    vs = stats.get("ville_stats", {})
    checks = [ref["__checks__"], daily["__checks__"], stats["__checks__"]]
    passed = sum(c["passed"] for c in checks)
    failed = [name for c in checks for name in c["failed"]]
    lines = [
        f"Day {target}: done in {elapsed:.1f} s",
        f"  reference      NAF codes {ref.get('naf_nomenclature', {}).get('rows', '?')}, "
        f"villes {ref.get('villes', {}).get('rows', '?')}",
        f"  landed         {raw.get('rows', 0)} records in {raw.get('api_calls', 0)} API calls "
        f"({raw.get('retries', 0)} retries, {raw.get('http_429', 0)} × 429)",
        f"  entreprises    {ent.get('inserted', 0)} inserted, {ent.get('updated', 0)} updated, "
        f"{ent.get('closed', 0)} closed, {ent.get('unchanged', 0)} unchanged, {ent.get('rejected', 0)} rejected",
        f"  ProLocalisations {pl.get('created', 0)} created, {pl.get('reactivated', 0)} reactivated, "
        f"{pl.get('deactivated', 0)} retired, {pl.get('unmatched', 0)} unmatched",
        f"  ville_stats    {vs.get('total_entreprises_actives', '?')} active entreprises, "
        f"{vs.get('total_prolocalisations_actives', '?')} active ProLocalisations",
        f"  checks         {passed} passed" + (f", FAILED: {', '.join(failed)}" if failed else ""),
    ]
    print("\n".join(lines))
    sys.stdout.flush()
    return 0
