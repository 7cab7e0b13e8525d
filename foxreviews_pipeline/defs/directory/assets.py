"""The directory the web app reads: establishments and their ProLocalisations, per day.

Both tables are written, audited and published by one step in one transaction
(write–audit–publish): a day whose blocking checks fail leaves them exactly as they were.
"""

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS, held_back
from foxreviews_pipeline.defs.resources import LandingZone, PostgresResource
from foxreviews_pipeline.defs.sirene.partitions import DAILY_FRESHNESS, daily_partitions
from foxreviews_pipeline.lib.directory.checks import (
    BLOCKING_CHECKS,
    ENTREPRISES,
    PRO_LOCALISATIONS,
    CheckOutcome,
    PublicationHeld,
    audit_publication,
    hold,
)
from foxreviews_pipeline.lib.directory.daily import (
    EntreprisesResult,
    apply_entreprises,
    apply_prolocalisations,
    landed_sirets,
)
from foxreviews_pipeline.lib.directory.prolocalisations import ProLocalisationCounts
from foxreviews_pipeline.lib.sirene.landing import RAW_DATASET, read_columns


def _markdown_counts(title: str, counts: dict[str, int]) -> str:
    if not counts:
        return f"**{title}**: none"
    lines = [f"**{title}**", "", "| reason | rows |", "|---|---:|"]
    lines += [f"| {reason} | {n} |" for reason, n in counts.items()]
    return "\n".join(lines)


def _metadata_value(
    value: bool | int | float | Sequence[Any] | Mapping[str, Any],
) -> dg.MetadataValue:
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    return dg.MetadataValue.json(value)


def check_result(outcome: CheckOutcome, assets: Mapping[str, str] | None = None) -> dg.AssetCheckResult:
    """The Dagster result of a check outcome; `assets` renames the asset it belongs to."""
    return dg.AssetCheckResult(
        asset_key=(assets or {}).get(outcome.asset, outcome.asset),
        check_name=outcome.name,
        passed=outcome.passed,
        metadata={k: _metadata_value(v) for k, v in outcome.metadata.items()},
    )


def _entreprises_metadata(result: EntreprisesResult, started: float) -> dict:
    counts = result.counts
    return {
        "records": dg.MetadataValue.int(result.records),
        "inserted": dg.MetadataValue.int(counts.inserted),
        "updated": dg.MetadataValue.int(counts.updated),
        "closed": dg.MetadataValue.int(counts.closed),
        "reopened": dg.MetadataValue.int(counts.reopened),
        "unchanged": dg.MetadataValue.int(counts.unchanged),
        "stale_skipped": dg.MetadataValue.int(counts.stale),
        "rejected": dg.MetadataValue.int(result.rejected),
        "rejected_by_reason": dg.MetadataValue.json(result.rejected_by_reason),
        "rejected_sample": dg.MetadataValue.json(result.rejected_sample),
        "duration_s": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
    }


def _prolocalisations_metadata(counts: ProLocalisationCounts, started: float) -> dict:
    return {
        "establishments": dg.MetadataValue.int(counts.establishments),
        "desired": dg.MetadataValue.int(counts.desired),
        "created": dg.MetadataValue.int(counts.created),
        "reactivated": dg.MetadataValue.int(counts.reactivated),
        "deactivated": dg.MetadataValue.int(counts.deactivated),
        "deactivated_by_reason": dg.MetadataValue.json(counts.deactivated_by_reason),
        "not_published": dg.MetadataValue.int(counts.not_published),
        "unmatched": dg.MetadataValue.int(counts.unmatched),
        "unmatched_by_reason": dg.MetadataValue.json(counts.unmatched_by_reason),
        "naf2025": dg.MetadataValue.json(counts.naf2025),
        "summary": dg.MetadataValue.md(_markdown_counts("Unmatched", counts.unmatched_by_reason)),
        "duration_s": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
    }


def directory_spec(key: str, deps: list[str], description: str, **more: Any) -> dg.AssetSpec:
    """One of the two directory assets a step publishes together (a day, a stock partition)."""
    return dg.AssetSpec(
        key,
        deps=deps,
        group_name="directory",
        kinds={"postgres"},
        owners=OWNERS,
        code_version="2",
        description=description,
        **more,
    )


def _daily_spec(key: str, deps: list[str], description: str) -> dg.AssetSpec:
    return directory_spec(key, deps, description, freshness_policy=DAILY_FRESHNESS)


@dg.multi_asset(
    name="directory_day",
    partitions_def=daily_partitions,
    specs=[
        _daily_spec(
            ENTREPRISES,
            ["etablissements_raw", "naf_nomenclature"],
            "Establishments (table `enterprise_entreprise`, one row per SIRET) from the "
            "day's landed SIRENE records, under INSEE's diffusion policy. Contact details "
            "and Google data belong to the web app and are never touched.",
        ),
        _daily_spec(
            PRO_LOCALISATIONS,
            [ENTREPRISES, "trade_taxonomy", "villes"],
            "ProLocalisations (table `enterprise_prolocalisation`): one business × trade × "
            "town page, e.g. \"Plombier à Lyon\". A page no longer wanted is retired with "
            "its reason, never deleted.",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)
        for (asset, name), description in BLOCKING_CHECKS.items()
    ],
)
def directory_day(
    context: dg.AssetExecutionContext, postgres: PostgresResource, landing_zone: LandingZone
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Writes the day's establishments and ProLocalisations, audits them with the blocking
    checks inside the same transaction, and publishes both only when every check passes."""
    started = time.perf_counter()
    day = context.partition_key
    landed = read_columns(landing_zone.path(RAW_DATASET), day).table
    batch_sirets = landed_sirets(landed)
    sirets = list(dict.fromkeys(batch_sirets))
    try:
        with postgres.connection() as conn:
            result = apply_entreprises(conn, landed, partition=day, run_id=context.run.run_id)
            entreprises_done = time.perf_counter()
            counts = apply_prolocalisations(conn, sirets, partition=day)
            outcomes = audit_publication(
                conn,
                batch_sirets,
                records=landed.num_rows,
                invalid_rejected=result.invalid_sirets,
                unusable_rejected=result.unusable_sirets,
                prolocalisations=counts,
            )
            hold(outcomes)  # raising here rolls the transaction back: nothing is published
    except PublicationHeld as held:
        for outcome in held.outcomes:
            yield check_result(outcome)
        context.log.error(f"Day {day}: {held}")
        raise held_back(held, f"Day {day}") from None
    if result.rejected:
        context.log.warning(f"{result.rejected} record(s) rejected: {result.rejected_by_reason}")
    yield dg.MaterializeResult(
        asset_key=ENTREPRISES, metadata=_entreprises_metadata(result, started)
    )
    yield dg.MaterializeResult(
        asset_key=PRO_LOCALISATIONS, metadata=_prolocalisations_metadata(counts, entreprises_done)
    )
    for outcome in outcomes:
        yield check_result(outcome)
