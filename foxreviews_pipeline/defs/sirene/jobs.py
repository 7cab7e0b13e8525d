"""Jobs over the SIRENE chain, shared by the sensor, the schedule and the UI's launchpad."""

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.lib.asset_keys import ENTREPRISES, ETABLISSEMENTS_RAW, PRO_LOCALISATIONS

SIRENE_DAILY_ASSETS = (ETABLISSEMENTS_RAW, ENTREPRISES, PRO_LOCALISATIONS)

sirene_daily_job = dg.define_asset_job(
    name="sirene_daily",
    selection=dg.AssetSelection.assets(*SIRENE_DAILY_ASSETS),
    description="Land one day of SIRENE changes, upsert the establishments, sync their ProLocalisations.",
    owners=OWNERS,
)
