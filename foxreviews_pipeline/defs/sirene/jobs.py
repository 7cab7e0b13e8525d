"""Jobs over the SIRENE chain, shared by the sensor, the schedule and the UI's launchpad."""

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS

SIRENE_DAILY_ASSETS = ("etablissements_raw", "entreprises", "pro_localisations")

sirene_daily_job = dg.define_asset_job(
    name="sirene_daily",
    selection=dg.AssetSelection.assets(*SIRENE_DAILY_ASSETS),
    description="Land one day of SIRENE changes, upsert the establishments, sync their ProLocalisations.",
    owners=OWNERS,
)
