import dagster as dg

from foxreviews_pipeline.defs.reference.assets import naf_nomenclature, trade_taxonomy, villes
from foxreviews_pipeline.defs.reference.checks import REFERENCE_CHECKS
from foxreviews_pipeline.lib.settings import Settings

REFERENCE_ASSETS = [naf_nomenclature, trade_taxonomy, villes]


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The reference group; it needs the shared `postgres` resource."""
    return dg.Definitions(assets=REFERENCE_ASSETS, asset_checks=REFERENCE_CHECKS)
