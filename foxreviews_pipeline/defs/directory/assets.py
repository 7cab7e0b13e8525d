"""The directory the web app reads: establishments and their ProLocalisations, per day."""


import time


import dagster as dg

from foxreviews_pipeline.defs.resources import LandingZone, PostgresResource
from foxreviews_pipeline.defs.sirene.partitions import daily_partitions
from foxreviews_pipeline.lib.directory.checks import (
    MIN_TRADE_SHARE,
    MIN_VILLE_SHARE,
    audit_entreprises,
    share,
)
from foxreviews_pipeline.lib.directory.daily import (
    apply_entreprises,
    apply_prolocalisations,
    partition_sirets,
)
from foxreviews_pipeline.lib.sirene.landing import read_partition

RAW_DATASET = "etablissements"


def _markdown_counts(title: str, counts: dict[str, int]) -> str:
    if not counts:
        return f"**{title}**: none"
    lines = [f"**{title}**", "", "| reason | rows |", "|---|---:|"]
    lines += [f"| {reason} | {n} |" for reason, n in counts.items()]
    return "\n".join(lines)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetKey("etablissements_raw"), dg.AssetKey("naf_nomenclature")],
    group_name="directory",
    kinds={"postgres"},
    code_version="1",
    check_specs=[
        dg.AssetCheckSpec(
            "valid_identifiers", asset="entreprises", blocking=True,
            description="Every SIRET and SIREN of the day is valid (Luhn; La Poste's rule).",
        ),
        dg.AssetCheckSpec(
            "one_row_per_siret", asset="entreprises", blocking=True,
            description="The day's landed records and stored rows hold each SIRET once.",
        ),
        dg.AssetCheckSpec(
            "no_nd_stored", asset="entreprises", blocking=True,
            description="INSEE's [ND] mask never reaches the table as if it were data.",
        ),
    ],
)
def entreprises(
    context: dg.AssetExecutionContext, postgres: PostgresResource, landing_zone: LandingZone
) -> dg.MaterializeResult:
    """Establishments (table `enterprise_entreprise`, one row per SIRET) upserted from the
    day's landed SIRENE records.

    Names, address, NAF code and activity follow SIRENE's current period; `[ND]` (masked by
    INSEE) is stored as empty. Contact details and Google data belong to the web app and are
    never touched. The day is written in one transaction; data older than what is stored is
    never applied, and re-running the day changes no row.
    """
    started = time.perf_counter()
    day = context.partition_key
    landed = read_partition(landing_zone.path(RAW_DATASET), day)
    sirets = partition_sirets(landed.records)
    with postgres.connection() as conn:
        result = apply_entreprises(conn, landed.records, partition=day, run_id=context.run.run_id)
        audit = audit_entreprises(conn, sirets)
    counts = result.counts
    checks = [
        dg.AssetCheckResult(
            check_name="valid_identifiers",
            passed=not audit.invalid_identifiers,
            metadata={"invalid": dg.MetadataValue.int(len(audit.invalid_identifiers)),
                      "sample": dg.MetadataValue.json(audit.invalid_identifiers[:20])},
        ),
        dg.AssetCheckResult(
            check_name="one_row_per_siret",
            passed=audit.duplicate_sirets == 0 and len(sirets) == len(landed.records),
            metadata={"landed_records": dg.MetadataValue.int(len(landed.records)),
                      "distinct_sirets": dg.MetadataValue.int(len(sirets)),
                      "duplicate_rows": dg.MetadataValue.int(audit.duplicate_sirets)},
        ),
        dg.AssetCheckResult(
            check_name="no_nd_stored",
            passed=audit.nd_rows == 0,
            metadata={"rows_with_nd": dg.MetadataValue.int(audit.nd_rows)},
        ),
    ]
    if result.rejected:
        context.log.warning(f"{result.rejected} record(s) rejected: {result.rejected_by_reason}")
    return dg.MaterializeResult(
        metadata={
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
        },
        check_results=checks,
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[entreprises, dg.AssetKey("trade_taxonomy"), dg.AssetKey("villes")],
    group_name="directory",
    kinds={"postgres"},
    code_version="1",
    check_specs=[
        dg.AssetCheckSpec(
            "villes_resolved", asset="pro_localisations", blocking=True,
            description=f"At least {MIN_VILLE_SHARE:.0%} of the day's active establishments resolve to a ville.",
        ),
        dg.AssetCheckSpec(
            "trades_resolved", asset="pro_localisations", blocking=True,
            description=f"At least {MIN_TRADE_SHARE:.0%} of the day's active establishments map to a trade.",
        ),
    ],
)
def pro_localisations(
    context: dg.AssetExecutionContext, postgres: PostgresResource, landing_zone: LandingZone
) -> dg.MaterializeResult:
    """ProLocalisations (table `enterprise_prolocalisation`): one business × trade × town
    page, e.g. "Plombier à Lyon", for each active establishment of the day whose NAF code
    maps to a trade and whose commune resolves to a town.

    A ProLocalisation whose establishment closed, changed trade or moved is set inactive
    with the reason, never deleted: its reviews belong to the web app.
    """
    started = time.perf_counter()
    day = context.partition_key
    landed = read_partition(landing_zone.path(RAW_DATASET), day)
    with postgres.connection() as conn:
        counts = apply_prolocalisations(conn, partition_sirets(landed.records), partition=day)
    ville_share = share(counts.ville_resolved, counts.active)
    trade_share = share(counts.trade_resolved, counts.active)
    unmatched = dg.MetadataValue.json(counts.unmatched_by_reason)
    checks = [
        dg.AssetCheckResult(
            check_name="villes_resolved",
            passed=ville_share >= MIN_VILLE_SHARE,
            metadata={"share": dg.MetadataValue.float(round(ville_share, 4)),
                      "active": dg.MetadataValue.int(counts.active),
                      "resolved": dg.MetadataValue.int(counts.ville_resolved),
                      "unmatched_by_reason": unmatched},
        ),
        dg.AssetCheckResult(
            check_name="trades_resolved",
            passed=trade_share >= MIN_TRADE_SHARE,
            metadata={"share": dg.MetadataValue.float(round(trade_share, 4)),
                      "active": dg.MetadataValue.int(counts.active),
                      "resolved": dg.MetadataValue.int(counts.trade_resolved),
                      "unmatched_by_reason": unmatched},
        ),
    ]
    return dg.MaterializeResult(
        metadata={
            "establishments": dg.MetadataValue.int(counts.establishments),
            "desired": dg.MetadataValue.int(counts.desired),
            "created": dg.MetadataValue.int(counts.created),
            "reactivated": dg.MetadataValue.int(counts.reactivated),
            "deactivated": dg.MetadataValue.int(counts.deactivated),
            "deactivated_by_reason": dg.MetadataValue.json(counts.deactivated_by_reason),
            "unmatched": dg.MetadataValue.int(counts.unmatched),
            "unmatched_by_reason": dg.MetadataValue.json(counts.unmatched_by_reason),
            "summary": dg.MetadataValue.md(_markdown_counts("Unmatched", counts.unmatched_by_reason)),
            "duration_s": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        },
        check_results=checks,
    )
