"""The reference group: NAF nomenclature, trade taxonomy and villes, every later asset's joins."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

import dagster as dg
import psycopg
from pydantic import Field

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.defs.results import (
    held_results,
    metadata,
    outcome_results,
    table_metadata,
    table_name,
)
from foxreviews_pipeline.lib.asset_keys import NAF_NOMENCLATURE, TRADE_TAXONOMY, VILLES
from foxreviews_pipeline.lib.directory.prolocalisations import sync_prolocalisations
from foxreviews_pipeline.lib.publish import PublicationHeld, publish
from foxreviews_pipeline.lib.reference import geo_api
from foxreviews_pipeline.lib.reference.checks import audit_reference, checks_of
from foxreviews_pipeline.lib.reference.communes import load_aliases, load_communes
from foxreviews_pipeline.lib.reference.load import (
    LoadCounts,
    TaxonomyCounts,
    VillesCounts,
    load_naf_nomenclature,
    load_trade_taxonomy,
    load_villes,
)
from foxreviews_pipeline.lib.reference.naf import NAF_REV2, load_naf
from foxreviews_pipeline.lib.reference.naf2025 import (
    NAF_2025,
    Naf2025Coverage,
    learn_naf2025_mapping,
    load_correspondence,
    load_correspondence_table,
    load_naf2025,
    naf2025_sirets_to_resync,
    write_review_file,
)
from foxreviews_pipeline.lib.reference.taxonomy import load_taxonomy

GROUP = "reference"
# The table each reference asset is named by in the catalog (trade_taxonomy also writes the
# categories and trades: its table is the NAF → trade mapping they serve).
TABLES = {
    NAF_NOMENCLATURE: "ref_naf_nomenclature",
    TRADE_TAXONOMY: "ref_naf_mapping",
    VILLES: "location_ville",
}
_Loaded = TypeVar("_Loaded")
_Results = Iterator[dg.MaterializeResult | dg.AssetCheckResult]


def _check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(c.name, asset=asset, blocking=c.blocking, description=c.description)
        for c in checks_of(asset)
    ]


def _publish(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    asset: str,
    load: Callable[[psycopg.Connection], _Loaded],
    describe: Callable[[_Loaded], dict[str, dg.MetadataValue]],
) -> _Results:
    """Load a reference table, audit it with its checks in the same transaction, and publish
    or hold (`lib/publish.py`): a failed blocking check leaves the table as it was. Its
    changes to what the web app shows (the towns) go to the change feed under the asset's
    name and the run's id."""
    try:
        with postgres.connection() as conn:
            published = publish(
                conn, load, audit_reference(asset), partition=asset, run_id=context.run.run_id
            )
            table = table_metadata(conn, TABLES[asset])
    except PublicationHeld as held:
        yield from held_results(held, f"{asset}:")
    # The towns are shown by the web app: their changes go to the change feed (docs/change-feed.md).
    changes = {"changes": dg.MetadataValue.json(published.changes)} if asset == VILLES else {}
    yield dg.MaterializeResult(
        asset_key=asset, metadata={**describe(published.result), **table, **changes}
    )
    yield from outcome_results(published.outcomes)


def _counts_metadata(counts: LoadCounts) -> dict[str, dg.MetadataValue]:
    return {
        "rows": dg.MetadataValue.int(counts.rows),
        "inserted": dg.MetadataValue.int(counts.inserted),
        "updated": dg.MetadataValue.int(counts.updated),
        "deactivated": dg.MetadataValue.int(counts.deactivated),
    }


def _table(rows: dict[str, LoadCounts]) -> str:
    lines = ["| table | rows | inserted | updated | deactivated | deleted |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {c.rows} | {c.inserted} | {c.updated} | {c.deactivated} | {c.deleted} |"
              for name, c in rows.items()]
    return "\n".join(lines)


@dg.asset(
    group_name=GROUP, kinds={"postgres"}, code_version="2", owners=OWNERS,
    check_specs=_check_specs(NAF_NOMENCLATURE), metadata=table_name(TABLES[NAF_NOMENCLATURE]),
)
def naf_nomenclature(context: dg.AssetExecutionContext, postgres: PostgresResource) -> _Results:
    """The 732 sous-classes of INSEE's NAF rév. 2 and the 747 of NAF 2025, the APE
    nomenclature from 2027-01-01 (table `ref_naf_nomenclature`, keyed by nomenclature and
    code), with their labels and their section / division / groupe / classe, and INSEE's
    correspondence between the two (`ref_naf_correspondence`).

    Every establishment's activity code is shown with its label from here (never a
    placeholder such as "Activité 62.01Z"). Source: the shipped snapshots, labels as INSEE
    publishes them.
    """

    def load(conn: psycopg.Connection) -> tuple[LoadCounts, LoadCounts, int]:
        return (
            load_naf_nomenclature(conn, load_naf(), NAF_REV2),
            load_naf_nomenclature(conn, load_naf2025(), NAF_2025),
            load_correspondence_table(conn, load_correspondence()),
        )

    def describe(loaded: tuple[LoadCounts, LoadCounts, int]) -> dict[str, dg.MetadataValue]:
        counts, counts_2025, pairs = loaded
        return {
            **_counts_metadata(counts + counts_2025),
            "nomenclature": dg.MetadataValue.text(NAF_REV2),
            "rows_naf_rev2": dg.MetadataValue.int(counts.rows),
            "rows_naf2025": dg.MetadataValue.int(counts_2025.rows),
            "correspondence_pairs": dg.MetadataValue.int(pairs),
        }

    yield from _publish(context, postgres, NAF_NOMENCLATURE, load, describe)


@dg.asset(
    group_name=GROUP, kinds={"postgres"}, deps=[naf_nomenclature], code_version="1", owners=OWNERS,
    check_specs=_check_specs(TRADE_TAXONOMY), metadata=table_name(TABLES[TRADE_TAXONOMY]),
)
def trade_taxonomy(context: dg.AssetExecutionContext, postgres: PostgresResource) -> _Results:
    """FoxReviews' categories and trades and the NAF → trade mapping (tables
    `category_categorie`, `subcategory_souscategorie`, `ref_naf_mapping`), from the reviewed
    files `trade_taxonomy.yaml` and `naf_mapping.csv`. Every NAF code is mapped or excluded
    with a reason; a trade removed from the file is deactivated, never deleted.
    """
    taxonomy = load_taxonomy()
    naf2025 = load_naf2025()

    def load(conn: psycopg.Connection) -> tuple[TaxonomyCounts, Naf2025Coverage, int]:
        counts = load_trade_taxonomy(conn, taxonomy)
        coverage = learn_naf2025_mapping(conn, [c.code for c in naf2025])
        # Establishments mapped through NAF 2025 whose code's mapping changed: a code just
        # mapped publishes the establishments that waited for it.
        resynced = sync_prolocalisations(
            conn, naf2025_sirets_to_resync(conn, coverage.changed_codes), partition="trade_taxonomy"
        )
        return counts, coverage, resynced.created + resynced.reactivated

    def describe(loaded: tuple[TaxonomyCounts, Naf2025Coverage, int]) -> dict[str, dg.MetadataValue]:
        counts, coverage, resynced = loaded
        review_file = write_review_file(
            Path(postgres.home) / "review" / "naf2025_review.csv",
            coverage.review,
            {c.code: c.libelle for c in naf2025},
        )
        mapped = sum(1 for m in taxonomy.mappings if m.sous_categorie and m.nomenclature == NAF_REV2)
        rev2_rows = sum(1 for m in taxonomy.mappings if m.nomenclature == NAF_REV2)
        return {
            **metadata(coverage.as_dict()),
            "naf2025_review_file": dg.MetadataValue.path(str(review_file)),
            "naf2025_to_review_top": dg.MetadataValue.md(_review_table(coverage)),
            "naf2025_prolocalisations_created": dg.MetadataValue.int(resynced),
            **_counts_metadata(counts.total),
            "rows": dg.MetadataValue.int(counts.sous_categories.rows),
            "categories": dg.MetadataValue.int(counts.categories.rows),
            "sous_categories": dg.MetadataValue.int(counts.sous_categories.rows),
            "naf_codes_mapped": dg.MetadataValue.int(mapped),
            "naf_codes_excluded": dg.MetadataValue.int(rev2_rows - mapped),
            "by_table": dg.MetadataValue.md(_table({
                "category_categorie": counts.categories,
                "subcategory_souscategorie": counts.sous_categories,
                "ref_naf_mapping": counts.mapping,
            })),
        }

    yield from _publish(context, postgres, TRADE_TAXONOMY, load, describe)


def _review_table(coverage: Naf2025Coverage, limit: int = 20) -> str:
    if not coverage.review:
        return "No NAF 2025 code left to review."
    lines = [
        f"{coverage.to_review} NAF 2025 codes to review (the {min(limit, coverage.to_review)} "
        "with most establishments):", "",
        "| code | establishments | evidence | reason |", "|---|---:|---|---|",
    ]
    lines += [
        f"| {d.code} | {d.establishments} | "
        f"{'; '.join(f'{k}: {n}' for k, n in d.evidence.items()) or '—'} | {d.reason} |"
        for d in coverage.review[:limit]
    ]
    return "\n".join(lines)


class VillesConfig(dg.Config):
    source: Literal["snapshot", "geo_api"] = Field(
        default="snapshot",
        description="`snapshot`: the shipped COG 2026 file (offline, no coordinates); "
        "`geo_api`: geo.api.gouv.fr (online, fills lat/lng).",
    )
    geo_api_base_url: str = Field(default=geo_api.DEFAULT_BASE_URL, description="geo.api.gouv.fr base URL")


@dg.asset(
    group_name=GROUP, kinds={"postgres"}, code_version="1", owners=OWNERS,
    check_specs=_check_specs(VILLES), metadata=table_name(TABLES[VILLES]),
)
def villes(context: dg.AssetExecutionContext, config: VillesConfig, postgres: PostgresResource) -> _Results:
    """French communes (table `location_ville`, one row per current commune, keyed by INSEE
    code) and `location_commune_alias`, which resolves arrondissements, communes déléguées
    and former codes to their current commune.
    """
    communes = load_communes()
    skipped: dict[str, int] = {}
    if config.source == "geo_api":
        result = geo_api.fetch_communes(
            config.geo_api_base_url, fallback_regions={c.code_insee: c.region for c in communes}
        )
        communes, skipped = result.communes, result.skipped
        if skipped:
            context.log.warning(f"geo.api.gouv.fr communes skipped: {skipped}")
    aliases = load_aliases()

    def describe(counts: VillesCounts) -> dict[str, dg.MetadataValue]:
        return {
            **_counts_metadata(counts.villes),
            "source": dg.MetadataValue.text(config.source),
            "with_coordinates": dg.MetadataValue.int(sum(1 for c in communes if c.lat is not None)),
            "aliases": dg.MetadataValue.int(counts.aliases.rows),
            "skipped_by_reason": dg.MetadataValue.json(skipped),
            "by_table": dg.MetadataValue.md(_table({
                "location_ville": counts.villes, "location_commune_alias": counts.aliases,
            })),
        }

    yield from _publish(context, postgres, VILLES, lambda conn: load_villes(conn, communes, aliases), describe)
