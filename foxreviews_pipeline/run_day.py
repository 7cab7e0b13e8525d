"""The main job, as `foxreviews run-day` runs it: reference data, one SIRENE day end to end,
then ville_stats — through Dagster, so every run shows in the web UI afterwards."""

from __future__ import annotations

import logging
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg

from foxreviews_pipeline.defs.sirene.definitions import sirene_source
from foxreviews_pipeline.defs.sirene.jobs import SIRENE_DAILY_ASSETS, sirene_daily_job
from foxreviews_pipeline.defs.sirene.readiness import (
    PublicationUnknown,
    is_published,
    publications,
)
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.instance import use_instance
from foxreviews_pipeline.lib.asset_keys import (
    ENTREPRISES,
    ETABLISSEMENTS_RAW,
    NAF_NOMENCLATURE,
    PRO_LOCALISATIONS,
    TRADE_TAXONOMY,
    VILLE_STATS,
    VILLES,
)
from foxreviews_pipeline.lib.constants import PARIS
from foxreviews_pipeline.lib.db.database import reachable_database_url
from foxreviews_pipeline.lib.db.errors import (
    DatabaseUnreachable,
    connection_error_in,
    looks_like_connection_error,
    one_line_cause,
    probe,
)
from foxreviews_pipeline.lib.db.server import DAGSTER_DATABASE_SUFFIX, database_name, with_database
from foxreviews_pipeline.lib.settings import Settings
from foxreviews_pipeline.lib.sirene.landing import RAW_DATASET, remove_stale_spools
from foxreviews_pipeline.recovery import (
    PoolWaitTimeout,
    PoolWatchdog,
    StopOnSignal,
    process_tags,
    sweep_dead_runs,
    wait_for_pools,
)

REFERENCE_ASSETS = (NAF_NOMENCLATURE, TRADE_TAXONOMY, VILLES)
DAILY_ASSETS = SIRENE_DAILY_ASSETS
REFERENCE_JOB, DAILY_JOB, VILLE_STATS_JOB = "reference_data", sirene_daily_job.name, "ville_stats_refresh"
# INSEE publishes a day around 06:00–08:00 Paris time the next morning: until then `run-day`
# asks again every 20 minutes, for at most 8 hours, before it starts the day's runs.
PUBLICATION_CHECK_S = 20 * 60
PUBLICATION_MAX_WAIT = timedelta(hours=8)


def project_instance(settings: Settings) -> dg.DagsterInstance:
    """The platform's instance, `$FOXREVIEWS_HOME/dagster`: the one the webserver, the daemon
    and every `dg`/`dagster` command started from the project folder use."""
    use_instance(settings)
    return dg.DagsterInstance.get()


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        found[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    checks = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    found["__checks__"] = {
        "passed": sum(1 for c in checks if c.passed),
        "failed": [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed],
    }
    return found


class RunFailed(RuntimeError):
    """A run of `run-day` failed; the message is one line (details are in the run's events)."""


def _run(
    job: dg.JobDefinition,
    instance,
    keys,
    partition_key=None,
    *,
    guard: RunGuard,
) -> dict[str, dict]:
    run_id = str(uuid.uuid4())
    pools = guard.pools_of(keys)
    if pools:
        wait_for_pools(instance, pools, timeout_s=guard.pool_wait_s, say=guard.say)
    watchdog = PoolWatchdog(instance, run_id, pools, timeout_s=guard.pool_wait_s, say=guard.say)
    if pools:
        watchdog.start()
    if guard.stopper is not None:
        guard.stopper.run_id = run_id
    try:
        result = job.execute_in_process(
            # The console stays quiet: warnings are printed after the run, failures in one line.
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            instance=instance,
            asset_selection=[dg.AssetKey(k) for k in keys],
            partition_key=partition_key,
            raise_on_error=False,
            run_id=run_id,
            tags=guard.tags,
        )
    finally:
        if pools:
            watchdog.stop()
    if not result.success:
        raise _run_failure(result)
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is None and entry.level >= logging.WARNING:
            guard.say(f"{entry.step_key or 'run'}: {entry.user_message.splitlines()[0]}")
    return _metadata(result)


def _run_failure(result: dg.ExecuteInProcessResult) -> Exception:
    for event in result.all_events:
        if not (event.is_step_failure and event.step_failure_data.error):
            continue
        error = event.step_failure_data.error
        link = error
        while True:
            if looks_like_connection_error(link.cls_name or "", link.message):
                return _LostDatabase(one_line_cause(link.message))
            following = link.cause or link.context
            if following is None:
                break
            link = following
        return RunFailed(
            f"run {result.run_id} failed at step {event.step_key}: {one_line_cause(error.message)}"
        )
    return RunFailed(f"run {result.run_id} failed (see it in the web UI)")


class _LostDatabase(RuntimeError):
    """A step lost its database connection; `run_day` probes the server to name the cause."""


@dataclass
class RunGuard:
    """What every run of `run-day` shares: its process tags, the pool bound, the operator's
    stream, and the pools of each asset."""

    tags: dict[str, str]
    pool_wait_s: float
    say: Callable[[str], None]
    asset_pools: dict[str, str]
    stopper: StopOnSignal | None = None

    def pools_of(self, keys) -> list[str]:
        return sorted({self.asset_pools[k] for k in keys if k in self.asset_pools})


@contextmanager
def _diagnostics_to(path: Path) -> Iterator[None]:
    """Driver retries, tracebacks and Dagster's own stderr messages go to `path`, not to the
    operator's terminal, which gets one line per outcome."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with redirect_stderr(stream):
                yield
        finally:
            root.removeHandler(handler)


def _explain(exc: BaseException, data_url: str | None, log_path: Path) -> Exception:
    """The one-line error `run-day` ends with."""
    if isinstance(exc, (RunFailed, PoolWaitTimeout, DatabaseUnreachable)):
        return exc
    lost = isinstance(exc, _LostDatabase) or connection_error_in(exc) is not None
    if lost and data_url is not None:
        cause = probe(data_url)
        if cause is not None:
            return DatabaseUnreachable(data_url, cause)
        # The data answers: the connection lost may be Dagster's own storage, beside it.
        storage_url = with_database(data_url, database_name(data_url) + DAGSTER_DATABASE_SUFFIX)
        storage_cause = probe(storage_url)
        if storage_cause is not None:
            return DatabaseUnreachable(storage_url, storage_cause, "Dagster's database")
        if isinstance(exc, _LostDatabase):
            fallback = str(exc)
        else:
            fallback = one_line_cause(str(connection_error_in(exc)))
        return DatabaseUnreachable(data_url, f"connection lost ({fallback})")
    with open(log_path, "a", encoding="utf-8") as stream:
        traceback.print_exception(exc, file=stream)
    return RunFailed(
        f"unexpected {type(exc).__name__}: {one_line_cause(str(exc))} (traceback in {log_path})"
    )


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def wait_for_publication(
    sirene: SireneSource,
    day: date,
    say: Callable[[str], None],
    *,
    check_every_s: float = PUBLICATION_CHECK_S,
    max_wait: timedelta = PUBLICATION_MAX_WAIT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once the source has published `day`, asking every `check_every_s` and saying
    what it waits for; fail after `max_wait` (the sample and a stock file never wait)."""
    started, since = clock(), datetime.now(PARIS)
    bound = max_wait.total_seconds()
    checks = 0
    while True:
        try:
            publication = publications(sirene, [day])[day]
        except PublicationUnknown as exc:
            raise RunFailed(str(exc)) from None
        waited = clock() - started
        if is_published(publication):
            if checks:
                say(f"INSEE has published {day}, after waiting {_span(waited)}")
            return
        assert publication is not None
        checks += 1
        if waited >= bound:
            raise RunFailed(
                f"INSEE has still not published {day} after waiting {_span(waited)} since "
                f"{since:%Y-%m-%d %H:%M:%S %Z} (the bound is {_span(bound)}): {publication.describe()}"
            )
        pause = min(check_every_s, bound - waited)
        say(
            f"waiting for INSEE to publish {day}: {publication.describe()}; check {checks} "
            f"(waiting since {since:%H:%M:%S %Z}), next in {_span(pause)}, "
            f"gives up after {_span(bound)}"
        )
        sleep(pause)


def run_day(
    day: str | None,
    settings: Settings,
    *,
    publication_check_s: float = PUBLICATION_CHECK_S,
    publication_max_wait: timedelta = PUBLICATION_MAX_WAIT,
) -> int:
    from foxreviews_pipeline.definitions import build_defs

    defs = build_defs(settings)
    paris_today = datetime.now(PARIS).date()
    target = date.fromisoformat(day) if day else paris_today - timedelta(days=1)
    last = paris_today - timedelta(days=1)
    if not settings.partitions_start <= target <= last:
        raise RunFailed(
            f"--date {target} is outside the SIRENE partitions, which run from "
            f"{settings.partitions_start} (FOXREVIEWS_PARTITIONS_START) to {last} "
            "(yesterday, Paris time)"
        )
    started = time.perf_counter()
    terminal = sys.stderr

    def say(message: str) -> None:
        print(f"foxreviews: {message}", file=terminal, flush=True)

    guard = RunGuard(
        tags=process_tags(),
        pool_wait_s=settings.pool_wait_timeout_s,
        say=say,
        asset_pools={
            k: pool
            for k in (*REFERENCE_ASSETS, *DAILY_ASSETS, VILLE_STATS)
            if (pool := defs.resolve_assets_def(k).op.pool)
        },
    )
    log_path = settings.home / "logs" / "run-day.log"
    data_url = reachable_database_url(settings)
    try:
        with (
            _diagnostics_to(log_path),
            project_instance(settings) as instance,
            StopOnSignal(instance, say) as stopper,
        ):
            guard.stopper = stopper
            sweep_dead_runs(instance, say)
            remove_stale_spools(settings.home / "landing" / RAW_DATASET, say)
            # Not the step's job: it fails at once on a day not published yet.
            wait_for_publication(
                sirene_source(settings, settings.insee_api_key), target, say,
                check_every_s=publication_check_s, max_wait=publication_max_wait,
            )
            print(f"foxreviews: materializing reference data, then SIRENE day {target} ({settings.sirene_source} source)")
            # Named jobs, so that these runs show on the jobs' pages in the UI.
            ref = _run(defs.resolve_job_def(REFERENCE_JOB), instance, REFERENCE_ASSETS, guard=guard)
            daily = _run(
                defs.resolve_job_def(DAILY_JOB), instance, DAILY_ASSETS,
                partition_key=target.isoformat(), guard=guard,
            )
            stats = _run(defs.resolve_job_def(VILLE_STATS_JOB), instance, (VILLE_STATS,), guard=guard)
    except Exception as exc:  # every failure ends as one line
        raise _explain(exc, data_url, log_path) from exc
    elapsed = time.perf_counter() - started

    raw = daily.get(ETABLISSEMENTS_RAW, {})
    ent = daily.get(ENTREPRISES, {})
    pl = daily.get(PRO_LOCALISATIONS, {})
    vs = stats.get(VILLE_STATS, {})
    tx = ref.get(TRADE_TAXONOMY, {})
    n25 = pl.get("naf2025") or {}
    positions = ent.get("positions") or {}
    centres = vs.get("villes_positioned_by_source") or {}
    checks = [ref["__checks__"], daily["__checks__"], stats["__checks__"]]
    passed = sum(c["passed"] for c in checks)
    failed = [name for c in checks for name in c["failed"]]
    lines = [
        f"Day {target}: done in {elapsed:.1f} s",
        f"  reference      NAF codes {ref.get('naf_nomenclature', {}).get('rows_naf_rev2', '?')} rév. 2 "
        f"+ {ref.get('naf_nomenclature', {}).get('rows_naf2025', '?')} NAF 2025, "
        f"villes {ref.get('villes', {}).get('rows', '?')}",
        f"  landed         {raw.get('rows', 0)} records in {raw.get('api_calls', 0)} API calls "
        f"({raw.get('retries', 0)} retries, {raw.get('http_429', 0)} × 429)",
        f"  entreprises    {ent.get('inserted', 0)} inserted, {ent.get('updated', 0)} updated, "
        f"{ent.get('closed', 0)} closed, {ent.get('unchanged', 0)} unchanged, {ent.get('rejected', 0)} rejected",
        f"  positions      {positions.get('positioned', 0)} of {sum(positions.values())} establishments "
        f"positioned, {positions.get('outside_territory', 0)} outside their territory; towns "
        f"{sum(centres.values())} with a centre, {vs.get('villes_without_position', '?')} without",
        f"  ProLocalisations {pl.get('created', 0)} created, {pl.get('reactivated', 0)} reactivated, "
        f"{pl.get('deactivated', 0)} retired, {pl.get('unmatched', 0)} unmatched",
        f"  NAF 2025       {n25.get('stated_naf2025', 0)} active establishments stated in NAF 2025 "
        f"({n25.get('kept_rev2_trade', 0)} kept their rév. 2 trade, {n25.get('mapped_naf2025', 0)} mapped "
        f"through NAF 2025, {n25.get('naf2025_unmapped', 0)} waiting for a mapping); mapping "
        f"{tx.get('naf2025_mapped', '?')} of {tx.get('naf2025_codes', '?')} codes, "
        f"{tx.get('naf2025_to_review', '?')} to review",
        f"  ville_stats    {vs.get('total_entreprises_actives', '?')} active entreprises, "
        f"{vs.get('total_prolocalisations_actives', '?')} active ProLocalisations",
        f"  checks         {passed} passed" + (f", FAILED: {', '.join(failed)}" if failed else ""),
    ]
    print("\n".join(lines))
    sys.stdout.flush()
    return 0
