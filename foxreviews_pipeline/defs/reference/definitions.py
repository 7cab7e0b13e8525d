import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.reference.assets import naf_nomenclature, trade_taxonomy, villes
from foxreviews_pipeline.defs.reference.checks import REFERENCE_CHECKS
from foxreviews_pipeline.lib.settings import Settings

REFERENCE_ASSETS = [naf_nomenclature, trade_taxonomy, villes]

reference_job = dg.define_asset_job(
    name="reference_data",
    selection=dg.AssetSelection.assets(*REFERENCE_ASSETS),
    description="Load the NAF nomenclature, the trade taxonomy and the communes (villes); "
    "idempotent, run by `foxreviews run-day` before each day.",
    owners=OWNERS,
)


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The reference group; it needs the shared `postgres` resource."""
    return dg.Definitions(
        assets=REFERENCE_ASSETS, asset_checks=REFERENCE_CHECKS, jobs=[reference_job]
    )
